"""Autograd uses beyond one backward, through the public API, against PEFT LoRA (k=0, the same weights)
or plain torch: each case was found by a break-it round on the fused path (hand-written backward).

- a second differentiation (Hessian-vector products, gradient penalties) is refused with a message
  naming the way round, and that way round (``use_fused(False)``, dropout inactive) gives LoRA's answer;
- backward hooks on the adapter's modules and on the base layer run, as in LoRA;
- the output can be modified in place (``nn.ReLU(inplace=True)``);
- torch.func transforms and forward-mode AD run, as in LoRA;
- merging an fp32 adapter into a bf16/fp16 base rounds once, as LoRA's ``weight.data += delta``;
- an in-place change of a tensor backward needs fails with torch's own message; of one it does not
  need (the frozen base weight when x needs no gradient), it does not fail.
Tolerances: fp32, 1e-5 relative and 1e-5 of the largest value absolute, unless stated.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.autograd import forward_ad

from linchain import LinChainConfig
from linchain.tuner.fused import use_fused
from linchain.tuner.grad_guard import SECOND_DERIVATIVE


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin0, self.lin1 = nn.Linear(16, 32), nn.Linear(32, 8)

    def forward(self, x):
        return self.lin1(torch.tanh(self.lin0(x)))


def _pair(dropout: float = 0.0, dtype=torch.float32):
    """LinChain k=0 and PEFT LoRA on copies of one MLP, with the same random non-zero factors."""
    torch.manual_seed(0)
    base = _MLP().to(dtype)
    twin = _MLP().to(dtype)
    twin.load_state_dict(base.state_dict())
    ours = get_peft_model(
        base, LinChainConfig(r=4, alpha=8, num_mixers=0, dropout=dropout, target_modules=["lin0", "lin1"])
    )
    lora = get_peft_model(twin, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["lin0", "lin1"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
                ours.get_parameter(name.replace("lora_", "linchain_")).copy_(p)
    return ours, lora


def _close(got, want, rtol=1e-5):
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * max(1.0, want.abs().max().item()))


def _hvp(model, x):
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(model(x).pow(2).sum(), params, create_graph=True)
    return torch.autograd.grad(sum(g.sum() for g in grads), params)


def _penalty_grad(model, x):
    """The parameters' gradient of a gradient penalty |dy/dx|^2."""
    x = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(gx.pow(2).sum(), params)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("second", [_hvp, _penalty_grad])
def test_second_derivative_refused_then_right_on_the_plain_path(second, dropout):
    ours, lora = _pair(dropout)
    x = torch.randn(5, 16)
    with pytest.raises(RuntimeError, match="cannot be differentiated a second time"):
        second(ours, x)
    # the way round the message names: the plain path with dropout inactive gives LoRA's answer
    ours.eval(), lora.eval()
    with use_fused(False):
        got = second(ours, x)
    for a, b in zip(got, second(lora, x)):
        _close(a, b, rtol=1e-4)  # a second derivative sums more rounding


def test_the_refusal_names_the_way_round():
    assert "use_fused(False)" in SECOND_DERIVATIVE and "create_graph=True" in SECOND_DERIVATIVE


def test_create_graph_without_a_second_differentiation_still_works():
    ours, lora = _pair()
    x = torch.randn(5, 16)
    got = torch.autograd.grad(
        ours(x).pow(2).sum(), [p for p in ours.parameters() if p.requires_grad], create_graph=True
    )
    want = torch.autograd.grad(lora(x).pow(2).sum(), [p for p in lora.parameters() if p.requires_grad])
    for a, b in zip(got, want):
        _close(a, b)


@pytest.mark.parametrize("where", ["B pre-hook", "A hook", "base pre-hook"])
def test_backward_hooks_run_as_in_peft_lora(where):
    results = []
    for model in _pair():
        layer = model.base_model.model.lin0
        is_lora = hasattr(layer, "lora_A")
        A = (layer.lora_A if is_lora else layer.linchain_A)["default"]
        B = (layer.lora_B if is_lora else layer.linchain_B)["default"]
        fired = []
        if where == "B pre-hook":
            B.register_full_backward_pre_hook(lambda m, go: (fired.append(1), (go[0] * 0,))[1])
        elif where == "A hook":
            A.register_full_backward_hook(lambda m, gi, go: (fired.append(1), (gi[0] * 2,))[1])
        else:
            layer.base_layer.register_full_backward_pre_hook(lambda m, go: (fired.append(1), (go[0] * 0,))[1])
        x = torch.randn(5, 16, generator=torch.Generator().manual_seed(3)).requires_grad_()
        model(x).pow(2).sum().backward()
        results.append((len(fired), x.grad, A.weight.grad))
    (n_ours, gx_ours, gA_ours), (n_lora, gx_lora, gA_lora) = results
    assert n_ours == n_lora == 1
    _close(gx_ours, gx_lora)
    _close(gA_ours, gA_lora)


@pytest.mark.parametrize("base", ["linear", "linear without bias", "conv1d"])
@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("shape", [(5, 16), (2, 5, 16), (2, 1, 5, 16)])
def test_output_modified_in_place(k, shape, base):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(4)
    first = {
        "linear": nn.Linear(16, 16),
        "linear without bias": nn.Linear(16, 16, bias=False),
        "conv1d": Conv1D(16, 16),
    }
    model = get_peft_model(
        nn.Sequential(first[base], nn.ReLU(inplace=True), nn.Linear(16, 4)),
        LinChainConfig(r=4, alpha=8, num_mixers=k, target_modules=["0"], init_weights=False),
    )
    x = torch.randn(*shape)
    grads = []
    for fused_on in (True, False):
        with use_fused(fused_on):
            h = model.base_model.model[0](x)
            h += x  # in place on the adapted layer's output
            loss = model.base_model.model[2](torch.relu_(h)).pow(2).sum()
        params = [p for p in model.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(loss, params))
    for a, b in zip(*grads):
        _close(a, b)


def test_torch_func_transforms_and_forward_ad_as_in_peft_lora():
    ours, lora = _pair()
    ours.eval(), lora.eval()
    x, v = torch.randn(5, 16), torch.randn(5, 16)

    def forward_tangent(model):
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(model(forward_ad.make_dual(x, v))).tangent

    checks = {
        "vmap": lambda m: torch.func.vmap(m)(x.unsqueeze(1)),
        "jacrev": lambda m: torch.func.jacrev(m)(x[0]),
        "jvp": lambda m: torch.func.jvp(m, (x,), (v,))[1],
        "forward AD": forward_tangent,
    }
    for name, run in checks.items():
        _close(run(ours), run(lora))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_merge_into_a_low_precision_base_rounds_once_as_lora(dtype):
    ours, lora = _pair(dtype=dtype)
    for model in (ours, lora):  # fp32 adapters on the low-precision base, as PEFT makes them by default
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.data = p.data.float()
    layer = ours.base_model.model.lin0
    exact = layer.base_layer.weight.float() + layer.get_delta_weight("default").float()
    ours.merge_adapter(), lora.merge_adapter()
    merged = ours.base_model.model.lin0.base_layer.weight
    assert torch.equal(merged, exact.to(dtype))
    assert torch.equal(merged, lora.base_model.model.lin0.base_layer.weight)


def test_in_place_changes_before_backward():
    """x modified in place after the forward (dropout on: backward keeps x): torch's own message.
    The frozen base weight modified while x needs no gradient: backward does not need it, no error."""
    ours, _ = _pair(dropout=0.1)
    x = torch.randn(40, 16, requires_grad=True)
    h = x * 1  # an intermediate the layer keeps
    y = ours.base_model.model.lin0(h)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    ours, lora = _pair()
    for model in (ours, lora):
        layer = model.base_model.model.lin0
        y = layer(torch.randn(5, 16, generator=torch.Generator().manual_seed(2)))
        with torch.no_grad():
            layer.base_layer.weight.add_(1.0)
        y.pow(2).sum().backward()
    _close(
        ours.base_model.model.lin0.linchain_A["default"].weight.grad,
        lora.base_model.model.lin0.lora_A["default"].weight.grad,
    )
