"""The layer's fused dropout + A path (_DropoutLinear): same values, gradients and distribution as nn.Dropout + A."""

import pytest
import torch
from torch import nn

from linchain.layer import LinChainLayer, _DropoutLinear


def test_matches_dropout_then_linear_exactly():
    torch.manual_seed(0)
    x = torch.randn(3, 50, 40, dtype=torch.float64, requires_grad=True)
    A = torch.randn(8, 40, dtype=torch.float64, requires_grad=True)
    p = 0.3
    torch.manual_seed(5)
    h = _DropoutLinear.apply(x, A, p)
    torch.manual_seed(5)
    keep = torch.rand_like(x) >= p  # the same draw (dropped where uniform < p)
    ref = (x * keep / (1 - p)) @ A.T
    torch.testing.assert_close(h, ref)
    g = torch.randn_like(h)
    for got, want in zip(torch.autograd.grad(h, (x, A), g), torch.autograd.grad(ref, (x, A), g)):
        torch.testing.assert_close(got, want)


def test_gradcheck():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    A = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    def f(x, A):
        torch.manual_seed(1)  # the same mask on every evaluation
        return _DropoutLinear.apply(x, A, 0.4)

    assert torch.autograd.gradcheck(f, (x, A))


def test_distribution_and_scale():
    torch.manual_seed(2)
    x = torch.ones(400_000, 1)
    A = torch.ones(1, 1)
    h = _DropoutLinear.apply(x, A, 0.05)
    kept = h != 0
    assert abs(kept.float().mean().item() - 0.95) < 0.002  # 6 standard deviations
    torch.testing.assert_close(h[kept], torch.full_like(h[kept], 1 / 0.95))


def test_saves_a_bool_mask_not_a_float_copy():
    x = torch.randn(16, 32, requires_grad=True)
    A = torch.randn(4, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        _DropoutLinear.apply(x, A, 0.1)
    big = sorted(str(t.dtype) for t in saved if t.shape == x.shape)
    assert big == ["torch.bool", "torch.float32"]  # the mask and x itself, no dropped float copy
    assert any(t is x for t in saved)


@pytest.mark.parametrize("bias", [False, True])
def test_layer_uses_it_only_when_training_with_grad(bias):
    torch.manual_seed(3)
    layer = LinChainLayer(nn.Linear(12, 10), "default", r=4, alpha=8, num_mixers=2, mixer_bias=bias, dropout=0.5)
    with torch.no_grad():
        layer.linchain_B["default"].weight.normal_()
    x = torch.randn(5, 12)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))  # no dropout in eval
    layer.train()
    y1, y2 = layer(x), layer(x)
    assert not torch.allclose(y1, y2)  # dropout active
    # the fused path equals dropout + A with the same mask, mixers and biases included
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)
    keep = torch.rand_like(x) >= 0.5
    h = layer.linchain_A["default"](x * keep / 0.5)
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
