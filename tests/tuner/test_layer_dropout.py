"""The layer's fused dropout + A path (linchain.tuner.dropout): same values, gradients and distribution as nn.Dropout + A.

_draw_dropped decides what is dropped (dropped positions on CPU for p <= 0.25, a bool mask
otherwise); _DropoutLinear applies a given record. Both are checked against plain torch. The
layer takes this path whenever dropout is active, with or without autograd, so both draw the
same elements from the same RNG state (what gradient checkpointing's recompute relies on).
"""

import math

import pytest
import torch
from torch import nn

from linchain import LinChainLayer
from linchain.tuner import dropout
from linchain.tuner.dropout import _SPARSE_DROP_MAX_P, _draw_dropped, _DropoutLinear
from tests.conftest import TEST_DTYPES


def _keep_mask(drop: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Independent rebuild of the keep mask from either record kind."""
    if drop.dtype == torch.bool:
        return ~drop
    keep = torch.ones(like.numel(), dtype=torch.bool, device=like.device)
    keep[drop] = False
    return keep.view(like.shape)


@pytest.mark.device
@pytest.mark.parametrize("p", [0.05, 0.5])
def test_matches_dropout_then_linear_exactly(p, device):
    torch.manual_seed(0)
    x = torch.randn(3, 50, 40, dtype=torch.float64, device=device, requires_grad=True)
    A = torch.randn(8, 40, dtype=torch.float64, device=device, requires_grad=True)
    drop = _draw_dropped(x, p)
    positions = device.type == "cpu" and p <= _SPARSE_DROP_MAX_P
    assert drop.dtype == (torch.int64 if positions else torch.bool)
    h = _DropoutLinear.apply(x, A, drop, 1 / (1 - p))
    keep = _keep_mask(drop, x)
    ref = (x * keep / (1 - p)) @ A.T
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(h)
    for got, want in zip(torch.autograd.grad(h, (x, A), g), torch.autograd.grad(ref, (x, A), g)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_non_contiguous_input():
    torch.manual_seed(1)
    x = torch.randn(40, 30, dtype=torch.float64).t().requires_grad_()  # (30, 40), transposed strides
    A = torch.randn(4, 40, dtype=torch.float64, requires_grad=True)
    drop = _draw_dropped(x, 0.2)
    h = _DropoutLinear.apply(x, A, drop, 1.25)
    ref = (x * _keep_mask(drop, x) * 1.25) @ A.T
    torch.testing.assert_close(h, ref)
    g = torch.randn_like(h)
    for got, want in zip(torch.autograd.grad(h, (x, A), g), torch.autograd.grad(ref, (x, A), g)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("p", [0.1, 0.4])
def test_gradcheck(p):
    torch.manual_seed(2)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    drop = _draw_dropped(x, p)
    assert torch.autograd.gradcheck(lambda x, A: _DropoutLinear.apply(x, A, drop, 1 / (1 - p)), (x, A))


@pytest.mark.device
@pytest.mark.parametrize("p", [0.01, 0.05, 0.25, 0.5])
def test_draw_is_bernoulli(p, device):
    """Rate within 6 standard deviations; rate in each of 10 blocks (no position bias); adjacent
    pairs both dropped at p^2 (independence); the indices sorted, unique and in range."""
    torch.manual_seed(3)
    n = 400_000
    x = torch.empty(n // 400, 400, device=device)
    drop = _draw_dropped(x, p)
    keep = _keep_mask(drop, x).view(-1)
    dropped = (~keep).double()
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(dropped.mean().item() - p) < 6 * sd
    for block in dropped.view(10, -1):
        assert abs(block.mean().item() - p) < 6 * sd * math.sqrt(10)
    pairs = (dropped[:-1] * dropped[1:]).mean().item()
    assert abs(pairs - p * p) < 6 * math.sqrt(p * p * (1 - p * p) / n) * 2  # pairs overlap: loose
    if drop.dtype == torch.int64:
        assert bool((drop[1:] > drop[:-1]).all()) and drop[0] >= 0 and drop[-1] < n


def test_draw_edges_and_tiny_p(monkeypatch):
    """The first and last element are dropped with probability p (no off-by-one at either end);
    a vanishing p draws nothing without overflowing. (The position draw on tensors this small:
    by default they take the bool mask, see the next test.)"""
    monkeypatch.setattr(dropout, "_SPARSE_DROP_MIN_NUMEL", 0)
    torch.manual_seed(7)
    x = torch.empty(10)
    hits = torch.zeros(10)
    trials = 20_000
    for _ in range(trials):
        hits[_draw_dropped(x, 0.2)] += 1
    sd = math.sqrt(0.2 * 0.8 / trials)
    assert (hits / trials - 0.2).abs().max() < 6 * sd
    assert len(_draw_dropped(torch.empty(1000), 1e-300)) == 0


def test_small_tensors_draw_a_mask_large_ones_positions():
    """Below 4,096 elements one mask draw is cheaper than the position draw's dozen small ops."""
    assert _draw_dropped(torch.empty(4095), 0.05).dtype == torch.bool
    assert _draw_dropped(torch.empty(4096), 0.05).dtype == torch.int64
    assert _draw_dropped(torch.empty(4096), 0.3).dtype == torch.bool  # p above the sparse limit


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_small_tensor_mask_is_bernoulli(p):
    """The CPU mask of a small tensor (fewer than 4,096 elements): rate within 6 standard deviations
    over 200 draws, per position as well (no element favoured), adjacent pairs at p^2."""
    torch.manual_seed(8)
    x = torch.empty(63, 64)
    draws = torch.stack([_draw_dropped(x, p) for _ in range(200)]).double().view(200, -1)
    n = draws.numel()
    assert abs(draws.mean().item() - p) < 6 * math.sqrt(p * (1 - p) / n)
    per_position = draws.mean(0)
    assert (per_position - p).abs().max().item() < 6 * math.sqrt(p * (1 - p) / 200)
    pairs = (draws[:, :-1] * draws[:, 1:]).mean().item()
    assert abs(pairs - p * p) < 6 * math.sqrt(p * p * (1 - p * p) / n) * 2


def test_draw_extends_when_the_first_batch_falls_short():
    torch.manual_seed(4)
    x = torch.empty(200_000)
    drop = _draw_dropped(x, 0.05, _first_batch=7)  # ~10_000 needed: many extra rounds
    assert bool((drop[1:] > drop[:-1]).all()) and drop[-1] < x.numel()
    assert abs(len(drop) / x.numel() - 0.05) < 6 * math.sqrt(0.05 * 0.95 / x.numel())


def test_draw_follows_the_seed():
    x = torch.empty(1000)
    torch.manual_seed(5)
    a = _draw_dropped(x, 0.05)
    torch.manual_seed(5)
    torch.testing.assert_close(a, _draw_dropped(x, 0.05))


def test_distribution_and_scale():
    torch.manual_seed(6)
    x = torch.ones(400_000, 1)
    A = torch.ones(1, 1)
    h = _DropoutLinear.apply(x, A, _draw_dropped(x, 0.05), 1 / 0.95)
    kept = h != 0
    assert abs(kept.float().mean().item() - 0.95) < 0.002  # 6 standard deviations
    torch.testing.assert_close(h[kept], torch.full_like(h[kept], 1 / 0.95))


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_what_backward_keeps(p):
    """Dropped positions (CPU, small p): the dropped copy of x plus the indices (~p of the
    elements), no mask; bool mask: x itself plus the 1-byte mask, no float copy."""
    torch.manual_seed(8)
    x = torch.randn(64, 128, requires_grad=True)
    A = torch.randn(4, 128, requires_grad=True)
    drop = _draw_dropped(x, p)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _DropoutLinear.apply(x, A, drop, 1 / (1 - p))
    others = [t for t in saved if t is not A]
    assert len(others) == 2 and any(t is drop for t in others)
    (kept_x,) = [t for t in others if t is not drop]
    if drop.dtype == torch.bool:
        assert kept_x is x
    else:
        assert drop.numel() < 0.1 * x.numel()
        torch.testing.assert_close(kept_x, x.detach() * _keep_mask(drop, x))


@pytest.mark.device
@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("bias", [False, True])
def test_layer_uses_it_when_training(bias, p, device):
    torch.manual_seed(3)
    layer = LinChainLayer(nn.Linear(12, 10), "default", r=4, alpha=8, num_mixers=2, mixer_bias=bias, dropout=p).to(
        device
    )
    with torch.no_grad():
        layer.linchain_B["default"].weight.normal_()
    x = torch.randn(5, 12, device=device)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))  # no dropout in eval
    layer.train()
    y1, y2 = layer(x), layer(x)
    assert not torch.allclose(y1, y2)  # dropout active
    # the fused path equals dropout + A with the same mask, mixers and biases included
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)
    keep = _keep_mask(_draw_dropped(x, p), x)
    h = layer.linchain_A["default"](x * keep / (1 - p))
    for m in layer.linchain_mixers["default"]:
        h = m(h)
    want = layer.base_layer(x) + layer.linchain_B["default"](h * layer.scaling["default"])
    torch.testing.assert_close(got, want)


def test_mixed_precision_autocast_trains_with_dropout():
    """--bf16 training runs under autocast: the fused path must give fp32 gradients for fp32
    inputs and agree with plain autocast math on the same mask (here: p so small nothing drops)."""
    torch.manual_seed(0)
    layer = LinChainLayer(nn.Linear(32, 16), "default", r=4, alpha=8, num_mixers=3, dropout=1e-9, init_weights=False)
    x = torch.randn(2, 5, 32, requires_grad=True)
    grads = {}
    for mode in ("train", "eval"):  # train: fused _DropoutLinear; eval: plain F.linear
        getattr(layer, mode)()
        layer.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.float().pow(2).sum().backward()
        grads[mode] = (x.grad.clone(), layer.linchain_A["default"].weight.grad.clone())
    assert grads["train"][0].dtype == torch.float32 and grads["train"][1].dtype == torch.float32
    for got, want in zip(grads["train"], grads["eval"]):
        # both paths compute in bf16 (8-bit mantissa); rounding order differs slightly
        torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)
        assert got.abs().max() > 0


@pytest.mark.device
@pytest.mark.parametrize("dtype", TEST_DTYPES, ids=str)
@pytest.mark.parametrize("p", [0.1, 0.5])  # on CPU: dropped positions, then a bool mask
def test_no_grad_and_grad_draw_the_same_elements(p, dtype, device):
    """From the same RNG state the layer drops the same elements whether autograd records or not
    (reentrant checkpointing runs the forward under no_grad, then recomputes it with grad), and
    leaves the generator in the same state (the next layers' draws match too)."""
    torch.manual_seed(0)
    layer = (
        LinChainLayer(
            nn.Linear(24, 16), "default", r=4, alpha=8, num_mixers=2, mixer_bias=True, dropout=p, init_weights=False
        )
        .to(device=device, dtype=dtype)
        .train()
    )
    x = torch.randn(3, 7, 24, device=device, dtype=dtype, requires_grad=True)
    torch.manual_seed(1)
    with torch.no_grad():
        y_no_grad = layer(x)
    after_no_grad = torch.rand(4, device=device)
    torch.manual_seed(1)
    y_grad = layer(x)
    after_grad = torch.rand(4, device=device)
    assert y_grad.grad_fn is not None
    assert torch.equal(y_no_grad, y_grad.detach())
    assert torch.equal(after_no_grad, after_grad)
    # and dropout really acts: another seed drops other elements
    torch.manual_seed(2)
    with torch.no_grad():
        assert not torch.equal(layer(x), y_no_grad)
