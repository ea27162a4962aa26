"""Effective-rank math against hand-computed values, and `linchain analyze` on tiny saved adapters."""

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from linchain import LinChainConfig, LinChainLayer
from linchain.analysis import (
    analyze_adapter,
    effective_rank,
    load_adapter_layers,
    method_parameter_counts,
    spectrum_stats,
    stable_rank,
)
from linchain.cli.main import main as cli_main
from tests.conftest import MODELS, tiny_llama

TARGETS = MODELS["llama"][1]


# ------------------------------------------------------------------ the math, by hand
def test_effective_rank_identity_is_n():
    for n in (1, 2, 5, 16):
        s = torch.linalg.svdvals(torch.eye(n))
        assert effective_rank(s) == pytest.approx(n, rel=1e-12)


def test_effective_rank_rank_one_is_one():
    u, v = torch.randn(7, 1, dtype=torch.float64), torch.randn(1, 5, dtype=torch.float64)
    assert effective_rank(torch.tensor([5.0, 0.0, 0.0])) == 1.0
    assert spectrum_stats(u @ v)["effective_rank"] == pytest.approx(1.0, abs=1e-9)


def test_effective_rank_diag_3_1():
    # p = (3/4, 1/4): H = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623351446, exp(H) = 1.7547653
    assert effective_rank(torch.tensor([3.0, 1.0])) == pytest.approx(1.7547653, abs=1e-6)
    assert stable_rank(torch.tensor([3.0, 1.0])) == pytest.approx(10 / 9)


def test_zero_spectrum_and_zeros_ignored():
    assert effective_rank(torch.zeros(4)) == 0.0 and stable_rank(torch.zeros(4)) == 0.0
    assert effective_rank(torch.tensor([2.0, 2.0, 0.0, 0.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        effective_rank(torch.tensor([1.0, -1.0]))


def test_spectrum_stats_of_a_known_matrix():
    W = torch.diag(torch.tensor([3.0, 1.0, 0.0]))
    st = spectrum_stats(W)
    assert st["numerical_rank"] == 2
    assert st["frobenius_norm"] == pytest.approx(math.sqrt(10))
    assert st["spectral_norm"] == pytest.approx(3.0)
    assert st["effective_rank"] == pytest.approx(1.7547653, abs=1e-6)
    # a rank-r float32 product: the rounding-noise tail must not inflate the rank
    g = torch.Generator().manual_seed(0)
    low = torch.randn(40, 4, generator=g) @ torch.randn(4, 30, generator=g)
    assert spectrum_stats(low)["numerical_rank"] == 4


# ------------------------------------------------------------------ saved adapters
def _save_linchain(tmp_path, name, k, bias, r=4):
    torch.manual_seed(3)
    model = get_peft_model(tiny_llama(), LinChainConfig(r=r, alpha=8, num_mixers=k, mixer_bias=bias,
                                                        target_modules=TARGETS, init_weights=False))
    model.save_pretrained(tmp_path / name)
    return model, tmp_path / name


@pytest.mark.parametrize("k, bias", [(0, False), (3, False), (3, True)])
def test_rebuilt_delta_equals_the_live_layer(tmp_path, k, bias):
    model, path = _save_linchain(tmp_path, "a", k, bias)
    _, layers = load_adapter_layers(path)
    live = {n.removeprefix("base_model.model."): m for n, m in model.named_modules() if isinstance(m, LinChainLayer)}
    assert set(layers) == set(live)
    for name, (layer, extra) in layers.items():
        assert extra is None
        torch.testing.assert_close(layer.get_delta_weight("default"), live[name].get_delta_weight("default"))
        want_b = live[name].get_delta_bias("default")
        got_b = layer.get_delta_bias("default")
        assert (want_b is None) == (got_b is None) == (not bias)
        if bias:
            torch.testing.assert_close(got_b, want_b)
    result = analyze_adapter(path)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert result.total_params == trainable
    assert all(0 < x.effective_rank <= 4 + 1e-9 and x.numerical_rank <= 4 for x in result.layers)
    assert all((x.delta_bias_norm is not None) == bias for x in result.layers)


def test_peft_lora_adapter_is_read_as_k0(tmp_path):
    torch.manual_seed(4)
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
    model.save_pretrained(tmp_path / "lora")
    _, layers = load_adapter_layers(tmp_path / "lora")
    live = {n.removeprefix("base_model.model."): m for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert set(layers) == set(live) and layers
    for name, (layer, _) in layers.items():
        torch.testing.assert_close(layer.get_delta_weight("default"), live[name].get_delta_weight("default"))
    assert analyze_adapter(tmp_path / "lora").method == "PEFT LoRA r=4"


def test_parameter_counts_match_real_models():
    shapes = [(m.out_features, m.in_features) for n, m in tiny_llama().named_modules()
              if n.rsplit(".", 1)[-1] in TARGETS]
    counts = method_parameter_counts(shapes, r=4)

    def trainable(cfg):
        return sum(p.numel() for p in get_peft_model(tiny_llama(), cfg).parameters() if p.requires_grad)

    assert counts["LoRA r=4"] == trainable(LoraConfig(r=4, target_modules=TARGETS))
    assert counts["LoRA r=8"] == trainable(LoraConfig(r=8, target_modules=TARGETS))
    assert counts["MoSLoRA r=4"] == trainable(LinChainConfig(r=4, num_mixers=1, target_modules=TARGETS))
    assert counts["LinChain k=3 r=4 +bias"] == trainable(LinChainConfig(r=4, num_mixers=3, mixer_bias=True, target_modules=TARGETS))


def test_cli_two_adapters_side_by_side(tmp_path, capsys):
    _save_linchain(tmp_path, "lc", 3, False)
    torch.manual_seed(4)
    get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)).save_pretrained(tmp_path / "lora")
    out = tmp_path / "out"
    rc = cli_main(["analyze", str(tmp_path / "lora"), str(tmp_path / "lc"), "--out", str(out), "--labels", "lora", "lc"])
    assert rc == 0
    report = json.loads((out / "analysis.json").read_text())
    assert [a["label"] for a in report["adapters"]] == ["lora", "lc"]
    comp = report["comparison"]
    assert comp["shared_layers"] == 10 and comp["second_higher"] + comp["second_lower"] <= 10
    assert 0 < comp["sign_test_p"] <= 1
    assert (out / "spectra.png").stat().st_size > 1000 and (out / "effective_rank.png").stat().st_size > 1000
    layer0 = report["adapters"][1]["layers"][0]
    assert {"effective_rank", "stable_rank", "frobenius_norm", "singular_values"} <= set(layer0)
    assert "LinChain k=3" in capsys.readouterr().out


def test_cli_rejects_a_missing_folder(tmp_path, capsys):
    assert cli_main(["analyze", str(tmp_path / "nope"), "--no-plots", "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
