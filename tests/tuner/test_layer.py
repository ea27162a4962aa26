"""Each adapted layer against a plain-torch reference, PEFT LoRA (k=0) and the MoSLoRA formula (k=1)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers.pytorch_utils import Conv1D

from linchain import LinChainConfig, LinChainLayer
from tests.conftest import MODELS, TEST_DTYPES, copy_factors_to_lora, layer_factors, reference_delta


def _randomise(model, seed=3):
    """Non-zero random factors everywhere (B included), so nothing matches trivially."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "linchain_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _capture_inputs(model, layers):
    seen = {}
    hooks = [
        layer.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, (i[0].detach(), o.detach())))
        for key, layer in layers.items()
    ]
    return seen, hooks


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("r", [2, 4])
def test_every_layer_matches_reference_fp32(arch, k, bias, r, tokens):
    build, targets = MODELS[arch]
    model = get_peft_model(
        build(),
        LinChainConfig(r=r, alpha=2 * r + 1, num_mixers=k, mixer_bias=bias, target_modules=targets, init_weights=False),
    )
    _randomise(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LinChainLayer)}
    assert len(layers) > 0
    seen, hooks = _capture_inputs(model, layers)
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    for name, layer in layers.items():
        x, y = seen[name]
        with torch.no_grad():
            base = layer.base_layer(x)
        A, mixers, B = layer_factors(layer)
        assert A.abs().sum() > 0 and B.abs().sum() > 0
        expected = base.double() + reference_delta(x, A, mixers, B, (2 * r + 1) / r)
        torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5, msg=name)
        # the adapter really changes the output
        assert (y - base).abs().max() > 1e-3


#: Forward tolerance per base dtype: the fp32 adapter output is added to the base output and rounded
#: once to the base dtype (bf16: 8-bit mantissa, rel. 2^-8; fp16: 11 bits, rel. 2^-11).
FORWARD_TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


@pytest.mark.device
@pytest.mark.parametrize("dtype", TEST_DTYPES, ids=str)
@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_forward_per_dtype_keeps_dtype_and_matches_reference(k, bias, dtype, device, tokens):
    build, targets = MODELS["llama"]
    model = get_peft_model(
        build().to(device=device, dtype=dtype),
        LinChainConfig(r=4, alpha=8, num_mixers=k, mixer_bias=bias, target_modules=targets, init_weights=False),
    )
    _randomise(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LinChainLayer)}
    seen, hooks = _capture_inputs(model, layers)
    with torch.no_grad():
        model(tokens.to(device))
    for h in hooks:
        h.remove()
    rtol, atol = FORWARD_TOL[dtype]
    for name, layer in layers.items():
        assert layer.linchain_A["default"].weight.dtype == torch.float32  # adapters stay fp32, as PEFT
        x, y = seen[name]
        assert y.dtype == dtype and y.device.type == device.type
        A, mixers, B = layer_factors(layer)
        with torch.no_grad():
            expected = layer.base_layer(x).double() + reference_delta(x, A, mixers, B, 2.0)
        torch.testing.assert_close(y.double(), expected, rtol=rtol, atol=atol, msg=name)
        assert (y.double() - layer.base_layer(x).double()).abs().max() > 1e-2  # the adapter really acts


def test_k0_equals_peft_lora_with_the_same_factors(tokens):
    build, targets = MODELS["llama"]
    ours = get_peft_model(
        build(), LinChainConfig(r=4, alpha=12, num_mixers=0, target_modules=targets, init_weights=False)
    )
    _randomise(ours)
    lora = get_peft_model(build(), LoraConfig(r=4, lora_alpha=12, target_modules=targets, init_lora_weights=False))
    copy_factors_to_lora(ours, lora)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, lora(tokens).logits, rtol=1e-5, atol=1e-5)
        assert (ours(tokens).logits - build()(tokens).logits).abs().max() > 1e-3


def test_k1_equals_moslora_formula():
    torch.manual_seed(0)
    base = torch.nn.Linear(20, 12)
    layer = LinChainLayer(base, "default", r=5, alpha=10, num_mixers=1, init_weights=False)
    x = torch.randn(7, 20)
    A = layer.linchain_A["default"].weight
    M = layer.linchain_mixers["default"][0].weight
    B = layer.linchain_B["default"].weight
    moslora = base(x) + (10 / 5) * x @ (B @ M @ A).T  # y = W0 x + (alpha/r) B M A x
    torch.testing.assert_close(layer(x), moslora, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("base_cls", ["linear", "conv1d"])
def test_delta_weight_and_bias_reproduce_forward(k, bias, base_cls):
    torch.manual_seed(k)
    base = torch.nn.Linear(16, 10) if base_cls == "linear" else Conv1D(10, 16)
    if base_cls == "conv1d":
        torch.nn.init.normal_(base.weight)
    layer = LinChainLayer(base, "default", r=4, alpha=6, num_mixers=k, mixer_bias=bias, init_weights=False)
    x = torch.randn(5, 16)
    dw = layer.get_delta_weight("default")
    db = layer.get_delta_bias("default")
    assert dw.shape == base.weight.shape
    assert (db is not None) == (bias and k > 0)
    dense = dw.T if base_cls == "conv1d" else dw
    expected = base(x) + x @ dense.T + (db if db is not None else 0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("init", ["kaiming", "orthogonal", "identity"])
def test_mixer_init(init):
    torch.manual_seed(0)
    layer = LinChainLayer(
        torch.nn.Linear(16, 16), "default", r=6, alpha=6, num_mixers=2, mixer_bias=True, mixer_init=init
    )
    for m in layer.linchain_mixers["default"]:
        W = m.weight.detach()
        if init == "identity":
            torch.testing.assert_close(W, torch.eye(6))
        elif init == "orthogonal":
            torch.testing.assert_close(W @ W.T, torch.eye(6), atol=1e-5, rtol=0)
        else:
            assert W.abs().max() <= 1 / 6**0.5 + 1e-6 and not torch.allclose(W @ W.T, torch.eye(6), atol=1e-2)
        if init != "kaiming":
            assert m.bias.abs().max() == 0
        else:
            assert m.bias.abs().max() > 0
    assert layer.linchain_B["default"].weight.abs().max() == 0  # init_weights=True: starts as the base layer


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_every_factor_trains(k, bias, tokens):
    build, targets = MODELS["llama"]
    model = get_peft_model(build(), LinChainConfig(r=4, alpha=8, num_mixers=k, mixer_bias=bias, target_modules=targets))
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("linchain_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainable.items()}
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        model(tokens, labels=tokens).loss.backward()
        opt.step()
    for n, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {n}"
        assert not torch.equal(p.detach(), before[n]), f"{n} did not change"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("q_proj.base_layer.weight" in n for n in frozen)


def test_rank_larger_than_a_layer_is_accepted_as_by_lora_and_refused_by_the_commands(tokens):
    """Issue 19 item 6: PEFT LoRA accepts r above a layer's smaller side; so does the library (with a
    warning naming r and the layer), giving LoRA's output for k=0; the commands refuse it before allocating."""
    from linchain.tuner.layer import refuse_rank_above_layer

    build, _ = MODELS["llama"]
    with pytest.warns(UserWarning, match=r"r=40 .*self_attn.k_proj"):
        ours = get_peft_model(
            build(), LinChainConfig(r=40, alpha=8, num_mixers=0, target_modules=["k_proj"], init_weights=False)
        )
    lora = get_peft_model(build(), LoraConfig(r=40, lora_alpha=8, target_modules=["k_proj"], init_lora_weights=False))
    copy_factors_to_lora(ours, lora)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, lora(tokens).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"r=40 .*self_attn.k_proj.*exclude_modules"), refuse_rank_above_layer():
        get_peft_model(build(), LinChainConfig(r=40, target_modules=["k_proj"]))


def test_target_matching_nothing_lists_existing_layers():
    build, _ = MODELS["llama"]
    with pytest.raises(ValueError) as err:
        get_peft_model(build(), LinChainConfig(target_modules=["query", "value"]))
    message = str(err.value)
    assert "target_modules" in message and "'query'" in message
    assert "q_proj" in message and "down_proj" in message


def test_default_targets_per_architecture():
    build, _ = MODELS["llama"]
    model = get_peft_model(build(), LinChainConfig())
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LinChainLayer)}
    assert adapted == {"q_proj", "v_proj"}  # PEFT LoRA's default for llama


def test_all_linear_and_exclude():
    build, _ = MODELS["llama"]
    model = get_peft_model(build(), LinChainConfig(target_modules="all-linear", exclude_modules=["down_proj"]))
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LinChainLayer)}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"}
