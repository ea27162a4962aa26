"""QLinChain: LinChain on bitsandbytes 4-bit/8-bit bases (tiny Llama quantized on CPU), and the refusal of
torchao/HQQ bases at injection (fake classes: neither package is needed)."""

from __future__ import annotations

import functools
import logging
import warnings

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from linchain import LinChainConfig, LinChainLayer
from tests.conftest import layer_factors, reference_delta

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
#: quantization settings under test: 8-bit, and 4-bit nf4/fp4 with and without double quantization
QUANT = {
    "8bit": dict(load_in_8bit=True),
    "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
    "nf4-dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    "fp4-dq": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True),
}


@pytest.fixture(autouse=True)
def _quiet():
    # bitsandbytes warns on every 8-bit matmul (fp32 inputs cast to fp16) and about optional CPU kernels
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def bnb():
    return pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny Llama saved once. 64 wide, not 32 as elsewhere: bitsandbytes' CPU inference kernel (used in
    eval mode on AVX512-BF16 CPUs) needs in_features to be a multiple of its 64-element block."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny-llama-64")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def quantized(base_dir, kind: str):
    from transformers import BitsAndBytesConfig

    settings = dict(QUANT[kind])
    if "load_in_4bit" in settings:
        settings["bnb_4bit_compute_dtype"] = torch.float32
    config = BitsAndBytesConfig(**settings)
    return AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=config, dtype=torch.float32).eval()


def randomise(model, seed: int = 5) -> None:
    """Non-zero adapters whose delta s B M A is about as large as the base weights (std ~0.02 either way):
    large enough to move the logits 5x more than 4-bit quantization does, small enough not to widen the
    quantization blocks' range much (which would inflate the requantization error)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "linchain_mixers" in name and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[0] ** 0.5)  # keeps the chain's norm ~1
            elif "linchain_" in name or "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.07)


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@pytest.fixture
def tokens():
    return torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(1))


@functools.lru_cache(maxsize=None)
def _quant_error(base_dir, kind, tokens: tuple) -> float:
    tokens = torch.tensor(tokens)
    fp = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    return (logits(quantized(base_dir, kind), tokens) - logits(fp, tokens)).abs().max().item()


def quant_error(base_dir, kind, tokens) -> float:
    """How far quantizing the base moves the logits: the scale of one quantization's error."""
    return _quant_error(base_dir, kind, tuple(map(tuple, tokens.tolist())))


def dequant(bnb, layer) -> torch.Tensor:
    """The layer's weight dequantized with bitsandbytes' functions (independent of linchain.tuner.quant); train mode only."""
    w = layer.weight
    if type(w).__name__ == "Params4bit":
        return bnb.functional.dequantize_4bit(w.data, w.quant_state).float()
    scales = w.SCB if w.SCB is not None else layer.state.SCB
    return w.data.float() * scales.float()[:, None] / 127


def requant(bnb, layer, dense: torch.Tensor) -> torch.Tensor:
    """``dense`` quantized with ``layer``'s settings and dequantized again, with bitsandbytes' functions."""
    w = layer.weight
    if type(w).__name__ == "Params4bit":
        q, state = bnb.functional.quantize_4bit(
            dense,
            blocksize=w.blocksize,
            compress_statistics=w.compress_statistics,
            quant_type=w.quant_type,
            quant_storage=w.quant_storage,
        )
        return bnb.functional.dequantize_4bit(q, state).float()
    codes, scales, _ = bnb.functional.int8_vectorwise_quant(dense.half())
    return codes.float() * scales.float()[:, None] / 127


def _linchain_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LinChainLayer)]


# ------------------------------------------------------------------ merging into quantized bases
@pytest.mark.parametrize("kind", list(QUANT))
@pytest.mark.parametrize("k, bias", [(3, False), (3, True), (1, True)])
def test_merge_dequantizes_adds_delta_and_bias_and_requantizes(bnb, base_dir, kind, k, bias):
    """Weight level, against bitsandbytes' own quantize/dequantize functions and a float64 plain-torch chain.

    Train mode: bitsandbytes repacks 4-bit weights for its CPU kernel in eval mode, which changes the
    codes the reference would read (merging after that is covered by the logits tests below)."""
    model = get_peft_model(
        quantized(base_dir, kind), LinChainConfig(r=4, alpha=8, num_mixers=k, mixer_bias=bias, target_modules=TARGETS)
    )
    randomise(model)
    model.train()
    expected = {}
    for name, layer in _linchain_layers(model):
        A, mixers, B = layer_factors(layer)
        zero = reference_delta(torch.zeros(1, layer.in_features), A, mixers, B, layer.scaling["default"])[0]  # (out,)
        delta = (reference_delta(torch.eye(layer.in_features), A, mixers, B, layer.scaling["default"]) - zero).T
        base = layer.base_layer
        old_bias = base.bias.detach().double() if base.bias is not None else torch.zeros_like(zero)
        expected[name] = (requant(bnb, base, dequant(bnb, base) + delta.float()), (old_bias + zero) if bias else None)
    model.merge_adapter(safe_merge=True)
    for name, layer in _linchain_layers(model):
        base = layer.base_layer
        assert type(base.weight).__name__ == ("Int8Params" if kind == "8bit" else "Params4bit")
        assert base.weight.dtype == (torch.int8 if kind == "8bit" else torch.uint8)
        weight, new_bias = expected[name]
        torch.testing.assert_close(dequant(bnb, base), weight, rtol=0, atol=1e-6, msg=name)
        if bias:
            torch.testing.assert_close(base.bias.double(), new_bias, rtol=0, atol=1e-6, msg=name)
        else:
            assert base.bias is None
        assert all(p.dtype == torch.float32 for n, p in layer.named_parameters() if "linchain_" in n)


@pytest.mark.parametrize("kind, bias", [("8bit", True), ("nf4", False), ("nf4-dq", True), ("fp4-dq", False)])
def test_merge_unmerge_merge_and_unload_keep_the_outputs_within_quantization_error(
    bnb, base_dir, kind, bias, tokens, tmp_path
):
    """Logits level, eval mode (as a user merges after evaluating). Tolerances, in units of q = how far
    quantizing the base moves the logits (measured per kind): each requantization adds an error of the
    same kind as the base's own, so after n of them (n + 1) q: merge 2q (measured <= 1.8q), unmerge 3q
    (<= 2.5q), merging again 4q. The adapter moves the logits by more than 5q, so a merge that drops
    the delta (the old 8-bit behaviour) fails."""
    q = quant_error(base_dir, kind, tokens)
    model = get_peft_model(
        quantized(base_dir, kind), LinChainConfig(r=4, alpha=8, num_mixers=3, mixer_bias=bias, target_modules=TARGETS)
    )
    randomise(model)
    with model.disable_adapter():
        base = logits(model, tokens)
    adapted = logits(model, tokens)
    tol = 2 * q
    assert (adapted - base).abs().max() > 2 * tol
    model.merge_adapter()
    torch.testing.assert_close(logits(model, tokens), adapted, rtol=0, atol=tol)
    layer = _linchain_layers(model)[0][1]
    codes = layer.base_layer.weight.detach().clone()
    model.merge_adapter()  # merging twice changes nothing (not requantized again)
    assert torch.equal(layer.base_layer.weight, codes)
    model.unmerge_adapter()
    assert all(m.base_layer.bias is None for _, m in _linchain_layers(model))  # the bias merging created is gone
    torch.testing.assert_close(logits(model, tokens), adapted, rtol=0, atol=3 * q)
    merged = model.merge_and_unload(safe_merge=True)
    assert not _linchain_layers(merged)
    assert type(merged.model.layers[0].self_attn.q_proj.weight).__name__ in ("Int8Params", "Params4bit")
    out = logits(merged, tokens)
    torch.testing.assert_close(out, adapted, rtol=0, atol=4 * q)  # the third requantization since loading
    if bias:
        # the affine constant sits in the biases; o_proj/gate_proj get zero biases so that the config can declare them
        assert merged.config.attention_bias and merged.config.mlp_bias
        assert merged.model.layers[0].self_attn.o_proj.bias.shape == (64,)
    if bias:
        # a merged quantized model saves and reloads (quantized) as a plain transformers model
        merged.save_pretrained(tmp_path / "merged")
        again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        torch.testing.assert_close(logits(again, tokens), out, rtol=0, atol=tol / 2)


@pytest.mark.parametrize("kind", ["nf4", "nf4-dq", "fp4-dq"])
def test_merge_after_eval_reads_the_4bit_weights_back(bnb, base_dir, kind, tokens):
    """On CPUs with AVX512-BF16 a 4-bit layer's first eval forward without grad repacks its weight for
    bitsandbytes' CPU kernel (block scales rounded to bf16). Merging must read those weights back;
    bitsandbytes' own inverse (0.50.2) misplaces the scales of weights without double quantization once
    a row has several blocks (down_proj here: 128 inputs), a 30% error. With B = 0 the merge must give
    the weights back up to the bf16 / double-quantized scale rounding (1% of the largest weight).
    Without AVX512-BF16 nothing is repacked and this checks the plain path."""
    model = get_peft_model(
        quantized(base_dir, kind), LinChainConfig(r=4, alpha=8, num_mixers=1, target_modules=TARGETS)
    )
    layers = [m.base_layer for _, m in _linchain_layers(model)]
    before = [dequant(bnb, layer) for layer in layers]
    logits(model, tokens)
    model.merge_adapter()
    for layer, weight in zip(layers, before):
        torch.testing.assert_close(dequant(bnb, layer), weight, rtol=0, atol=0.01 * weight.abs().max().item())


def test_safe_merge_refuses_nan_and_leaves_the_quantized_base_untouched(bnb, base_dir):
    model = get_peft_model(
        quantized(base_dir, "nf4-dq"), LinChainConfig(r=4, alpha=8, num_mixers=2, target_modules=TARGETS)
    )
    randomise(model)
    layer = _linchain_layers(model)[0][1]
    codes = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        layer.linchain_B["default"].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer.merge(safe_merge=True)
    assert torch.equal(layer.base_layer.weight, codes) and not layer.merged


@pytest.mark.parametrize("kind", ["8bit", "nf4-dq", "fp4-dq"])
def test_k0_merges_like_peft_lora_on_the_same_quantized_base(bnb, base_dir, kind, tokens):
    """LinChain with k=0 is LoRA: with the same A and B, PEFT LoRA's merged quantized model is the reference.
    Same dequantize-add-requantize, so the merged codes agree (up to fp32 rounding of the delta)."""
    ours = get_peft_model(quantized(base_dir, kind), LinChainConfig(r=4, alpha=8, num_mixers=0, target_modules=TARGETS))
    lora = get_peft_model(quantized(base_dir, kind), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    randomise(ours)
    lora_params = dict(lora.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "linchain_" in name:
                lora_params[name.replace("linchain_", "lora_")].copy_(p)
    # train mode: PEFT 0.21 cannot dequantize the eval-mode CPU repacking of 4-bit weights (its merge then
    # silently corrupts the layer), so neither model runs in eval mode before merging
    ours.train(), lora.train()
    torch.testing.assert_close(logits(ours, tokens), logits(lora, tokens), rtol=1e-5, atol=1e-5)
    ours_merged, lora_merged = ours.merge_and_unload(), lora.merge_and_unload()
    for (name, a), b in zip(ours_merged.named_modules(), lora_merged.modules()):
        if name.endswith(tuple(TARGETS)):
            torch.testing.assert_close(dequant(bnb, a), dequant(bnb, b), rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(
        logits(ours_merged.eval(), tokens), logits(lora_merged.eval(), tokens), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["8bit", "nf4-dq"])
def test_kbit_training_save_load_and_merge(bnb, base_dir, kind, tokens, tmp_path):
    """The QLoRA recipe: prepare_model_for_kbit_training, a few AdamW steps, save/load, merge."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(quantized(base_dir, kind))
    model = get_peft_model(model, LinChainConfig(r=4, alpha=8, num_mixers=3, mixer_bias=True, target_modules=TARGETS))
    codes = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype in (torch.int8, torch.uint8)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # adapters in fp32, never quantized
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    batch = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(2))
    losses = []
    for _ in range(4):
        loss = model(batch, labels=batch).loss
        loss.backward()
        grads = [p.grad for p in trainable]
        assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, codes[n]) for n, p in model.named_parameters() if n in codes)  # base frozen
    model.eval()
    adapted = logits(model, tokens)
    model.save_pretrained(tmp_path / "adapter")
    again = PeftModel.from_pretrained(quantized(base_dir, kind), tmp_path / "adapter").eval()
    torch.testing.assert_close(logits(again, tokens), adapted, rtol=0, atol=1e-5)
    tol = 2 * quant_error(base_dir, kind, tokens)  # one requantization (see the test above)
    torch.testing.assert_close(logits(again.merge_and_unload(), tokens), adapted, rtol=0, atol=tol)


# ------------------------------------------------------------------ torchao / HQQ / other quantized layers: refused at injection
class AffineQuantizedTensor(torch.Tensor):
    """Stands in for torchao's quantized weight subclass (only its class's module path matters)."""


AffineQuantizedTensor.__module__ = "torchao.dtypes.affine_quantized_tensor"


class HQQLinear(nn.Module):
    """Stands in for hqq's HQQLinear (an nn.Module, not an nn.Linear)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.linear = linear

    def forward(self, x):
        return self.linear(x)


HQQLinear.__module__ = "hqq.core.quantize"


def _tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )


def test_torchao_base_is_refused_at_injection():
    model = _tiny()
    q_proj = model.model.layers[0].self_attn.q_proj
    q_proj.weight = nn.Parameter(q_proj.weight.detach().as_subclass(AffineQuantizedTensor), requires_grad=False)
    for targets in (TARGETS, "all-linear"):
        with pytest.raises(
            ValueError,
            match=r"'model\.layers\.0\.self_attn\.q_proj'.*torchao-quantized Linear \(weight: AffineQuantizedTensor\).*bitsandbytes",
        ):
            get_peft_model(model, LinChainConfig(r=2, target_modules=targets))


def test_hqq_base_is_refused_at_injection():
    model = _tiny()
    attention = model.model.layers[0].self_attn
    attention.v_proj = HQQLinear(attention.v_proj)
    with pytest.raises(
        ValueError, match=r"'model\.layers\.0\.self_attn\.v_proj'.*HQQ-quantized HQQLinear.*bitsandbytes"
    ):
        get_peft_model(model, LinChainConfig(r=2, target_modules=["q_proj", "v_proj"]))


def test_integer_weights_of_an_unknown_quantizer_are_refused_at_injection():
    model = _tiny()
    up = model.model.layers[0].mlp.up_proj
    up.weight = nn.Parameter(torch.zeros(up.weight.shape, dtype=torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.up_proj'.*torch\.int8 weights"):
        get_peft_model(model, LinChainConfig(r=2, target_modules=["up_proj"]))


# ------------------------------------------------------------------ linchain train --load_in_4bit / --load_in_8bit
@pytest.fixture(scope="module")
def train_model_dir(tmp_path_factory):
    """tests/train's tiny Llama and tokenizer, 64 wide (see base_dir for why)."""
    from tests.train.conftest import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-llama-train-64"))
    config = LlamaConfig.from_pretrained(folder)
    config.hidden_size, config.intermediate_size, config.head_dim = 64, 128, 16
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "flags, layer_type",
    [
        (
            ["--load_in_4bit", "true", "--bnb_4bit_quant_type", "fp4", "--bnb_4bit_use_double_quant", "false"],
            "Linear4bit",
        ),
        (["--load_in_8bit", "true"], "Linear8bitLt"),
    ],
)
def test_train_cli_quantized_base_is_the_qlora_recipe(bnb, train_model_dir, tmp_path, flags, layer_type):
    import json

    from linchain.cli.main import main as cli
    from linchain.cli.train import parse_args
    from linchain.train.engine import build_model
    from tests.train.conftest import base_args, make_rows

    data = tmp_path / "even.json"
    data.write_text(json.dumps(make_rows(48)))
    args = base_args(
        train_model_dir,
        data,
        tmp_path / "run",
        "--num_mixers",
        "2",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        *flags,
    )
    model_args, _, train_args = parse_args(args)
    model, _, _ = build_model(model_args, train_args)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, LinChainLayer) and type(q_proj.base_layer).__name__ == layer_type
    if layer_type == "Linear4bit":
        assert (q_proj.base_layer.weight.quant_type, q_proj.base_layer.weight.compress_statistics) == ("fp4", False)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    if layer_type == "Linear8bitLt":
        return  # one end-to-end run is enough (a few seconds on a loaded CPU); build_model is the only branch
    assert cli(["train", *args]) == 0
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LINCHAIN" and adapter["num_mixers"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--load_in_4bit", "true", "--load_in_8bit", "true"], "not both"),
        (["--load_in_8bit", "true", "--method", "full"], "--method='full'"),
        (["--bnb_4bit_quant_type", "int4"], "--bnb_4bit_quant_type='int4'"),
        (["--bnb_4bit_compute_dtype", "float64"], "--bnb_4bit_compute_dtype='float64'"),
    ],
)
def test_train_cli_refuses_bad_quantization_flags(flags, message, capsys):
    from linchain.cli.main import main as cli

    assert cli(["train", "--output_dir", "o", *flags]) == 2
    assert message in capsys.readouterr().err


def test_quantized_loading_without_bitsandbytes_names_the_extra(monkeypatch, capsys):
    import importlib.util
    from types import SimpleNamespace

    from linchain.cli.main import main as cli
    from linchain.tuner.quant import load_base_model

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a)
    )
    assert cli(["train", "--output_dir", "o", "--load_in_8bit", "true"]) == 2  # before any data or model is loaded
    assert "--load_in_8bit=True: needs bitsandbytes" in capsys.readouterr().err
    with pytest.raises(ImportError, match=r"--load_in_4bit needs bitsandbytes.*pip install 'linchain\[quant\]'"):
        load_base_model("unused", torch.float32, SimpleNamespace(load_in_4bit=True))


@pytest.mark.slow
def test_quant_memory_benchmark_tiny(bnb, tmp_path):
    """benchmarks/quant_memory.py end to end on the tiny shapes, so that it does not rot (nothing timed is asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "quant.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quant_memory.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--model",
            "tiny",
            "--steps",
            "1",
            "--batch",
            "2",
            "--seq-len",
            "16",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["memory"]] == ["fp32", "8bit", "4bit", "8bit+lora", "4bit+lora"]
    weights = {r["variant"]: r["weight_mb"] for r in report["memory"]}
    assert weights["4bit"] < weights["8bit"] < weights["fp32"]
    assert [r["base"] for r in report["requant"]] == ["8bit", "nf4", "nf4-dq", "fp4"]
    assert all(r["merged_q"] < 2 and r["adapter_effect_q"] > 2 for r in report["requant"])
