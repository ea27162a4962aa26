"""Effective-rank math against hand-computed values, the spectrum from the factors against a dense
SVD, and `linchain analyze` on tiny saved adapters."""

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

from linchain import LinChainConfig, LinChainLayer
from linchain.analysis import (
    analyze_adapter,
    effective_rank,
    factor_singular_values,
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


# ------------------------------------------------------------------ the spectrum from the factors
#: factor spectra vs a dense float64 SVD: |difference| <= RTOL * the largest singular value
RTOL = 1e-10


def _random_chain(out: int, inp: int, r: int, k: int, bias: bool, seed: int, rank_one_mixer: bool = False):
    """float64 factors with B non-zero: A (r, in), [(W_i (r, r), b_i (r,) or None)], B (out, r)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, inp, generator=g, dtype=torch.float64)
    B = torch.randn(out, r, generator=g, dtype=torch.float64)
    mixers = []
    for i in range(k):
        W = torch.randn(r, r, generator=g, dtype=torch.float64) / math.sqrt(r)
        if rank_one_mixer and i == k // 2:
            W = torch.randn(r, 1, generator=g, dtype=torch.float64) @ torch.randn(
                1, r, generator=g, dtype=torch.float64
            )
        mixers.append((W, torch.randn(r, generator=g, dtype=torch.float64) if bias else None))
    return A, mixers, B


def _dense_reference(A, mixers, B, s):
    """(s B W_k ... W_1 A, s B (W_k(...(W_1 0 + b_1)...) + b_k) or None), in plain float64 torch."""
    chain, const = A, None
    for W, b in mixers:
        chain = W @ chain
        if b is not None:
            const = b if const is None else W @ const + b
    return s * B @ chain, None if const is None else s * B @ const


def _write_linchain(folder, layers: dict, alpha: float, r: int, bias: bool):
    """An adapter folder as save_pretrained writes it, from {module path: (A, mixers, B)} (dtype kept)."""
    tensors = {}
    for name, (A, mixers, B) in layers.items():
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.linchain_A.weight"], tensors[f"{prefix}.linchain_B.weight"] = A, B
        for i, (W, b) in enumerate(mixers):
            tensors[f"{prefix}.linchain_mixers.{i}.weight"] = W
            if b is not None:
                tensors[f"{prefix}.linchain_mixers.{i}.bias"] = b
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LINCHAIN", "r": r, "alpha": alpha, "use_rslora": False, "mixer_bias": bias}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _assert_spectrum_matches(stats, dense: torch.Tensor, max_values: int = 64):
    """``stats`` against svdvals of ``dense`` (the independent reference), values below the documented
    tolerance max(s) * max(out, in) * eps(float32) counted as zeros."""
    ref = torch.linalg.svdvals(dense)  # (min(out, in),)
    top = float(ref[0])
    ref = torch.where(ref > top * max(dense.shape) * torch.finfo(torch.float32).eps, ref, torch.zeros_like(ref))
    got = torch.tensor(stats.singular_values, dtype=torch.float64)
    assert got.numel() == min(max_values, ref.numel())  # the dense SVD's length, as before
    assert float((got - ref[: got.numel()]).abs().max()) <= RTOL * top
    assert stats.spectral_norm == pytest.approx(top, rel=RTOL)
    assert stats.frobenius_norm == pytest.approx(float(ref.norm()), rel=RTOL)
    kept = ref[ref > 0]
    assert stats.numerical_rank == kept.numel()
    p = kept / kept.sum()
    assert stats.effective_rank == pytest.approx(math.exp(-float((p * p.log()).sum())), rel=1e-9)
    assert stats.stable_rank == pytest.approx(float((kept**2).sum() / top**2), rel=1e-9)


@pytest.mark.parametrize("r", [1, 4, 8])
@pytest.mark.parametrize("k, bias", [(0, False), (1, False), (1, True), (3, False), (3, True)])
def test_factor_spectrum_equals_a_dense_svd(tmp_path, k, r, bias):
    alpha = 3.0  # scaling s = alpha / r
    layers = {
        "model.layers.0.mlp.up_proj": _random_chain(24, 40, r, k, bias, seed=10 * k + r),
        "model.layers.0.mlp.down_proj": _random_chain(40, 24, r, k, bias, seed=10 * k + r + 1),
    }
    result = analyze_adapter(_write_linchain(tmp_path / "a", layers, alpha, r, bias))
    assert sorted(x.name for x in result.layers) == sorted(layers)
    for stats in result.layers:
        dense, const = _dense_reference(*layers[stats.name], alpha / r)
        assert stats.shape == tuple(dense.shape) and stats.num_mixers == k and stats.r == r
        _assert_spectrum_matches(stats, dense)
        assert stats.frobenius_norm == pytest.approx(float(torch.linalg.matrix_norm(dense)), rel=1e-8)
        if bias:
            assert stats.delta_bias_norm == pytest.approx(float(const.norm()), rel=1e-12)
        else:
            assert stats.delta_bias_norm is None


def test_factor_spectrum_of_a_rank_deficient_chain(tmp_path):
    # a rank-one mixer in the middle of k = 3: the update has rank 1 although r = 6
    layers = {"model.layers.0.self_attn.q_proj": _random_chain(30, 20, 6, 3, False, seed=7, rank_one_mixer=True)}
    (stats,) = analyze_adapter(_write_linchain(tmp_path / "a", layers, 12.0, 6, False)).layers
    dense, _ = _dense_reference(*layers["model.layers.0.self_attn.q_proj"], 12.0 / 6)
    _assert_spectrum_matches(stats, dense)
    assert stats.numerical_rank == 1 and stats.effective_rank == 1.0 and stats.singular_values[1:] == [0.0] * 19


@pytest.mark.parametrize("k", [0, 1, 3])
def test_factor_spectrum_when_r_equals_a_dimension(tmp_path, k):
    # r = out = 5, the largest r a layer allows (r > min(out, in) is refused when the layer is built)
    layers = {"model.layers.0.self_attn.k_proj": _random_chain(5, 12, 5, k, False, seed=20 + k)}
    (stats,) = analyze_adapter(_write_linchain(tmp_path / "a", layers, 5.0, 5, False)).layers
    dense, _ = _dense_reference(*layers["model.layers.0.self_attn.k_proj"], 1.0)
    _assert_spectrum_matches(stats, dense)
    assert len(stats.singular_values) == 5


def test_factor_singular_values_is_not_fooled_by_order_or_scale():
    # the reference would catch a dropped scaling or a transposed factor: check the function can fail
    A, _, B = _random_chain(9, 7, 3, 0, False, seed=3)
    ref = torch.linalg.svdvals(2.5 * B @ A)
    torch.testing.assert_close(factor_singular_values(B, A, 2.5), ref, rtol=0, atol=RTOL * float(ref[0]))
    assert not torch.allclose(factor_singular_values(B, A, 1.0), ref)
    with pytest.raises(ValueError, match=r"B \(9, 3\) and A_f \(7, 3\) do not chain"):
        factor_singular_values(B, A.T, 1.0)


def test_peft_lora_factors_with_bias_equal_a_dense_svd(tmp_path):
    g = torch.Generator().manual_seed(5)
    A, B, b = (
        torch.randn(4, 16, generator=g, dtype=torch.float64),
        torch.randn(12, 4, generator=g, dtype=torch.float64),
        torch.randn(12, generator=g, dtype=torch.float64),
    )
    folder = tmp_path / "lora"
    folder.mkdir()
    save_file(
        {
            "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight": A,
            "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight": B,
            "base_model.model.model.layers.0.self_attn.v_proj.lora_B.bias": b,
        },
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 6}))
    (stats,) = analyze_adapter(folder).layers
    _assert_spectrum_matches(stats, 1.5 * B @ A)
    assert stats.delta_bias_norm == pytest.approx(float((1.5 * b).norm()), rel=1e-12)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_factors_are_refused_naming_the_tensor(tmp_path, value):
    A, mixers, B = _random_chain(6, 5, 2, 3, True, seed=1)
    mixers[1][1][0] = float(value)
    folder = _write_linchain(tmp_path / "bad", {"model.layers.0.mlp.up_proj": (A, mixers, B)}, 4.0, 2, True)
    bad = "NaN" if value == "nan" else "inf"
    with pytest.raises(
        ValueError,
        match=rf"adapter_model.safetensors: base_model.model.model.layers.0.mlp.up_proj"
        rf".linchain_mixers.1.bias holds {bad} values",
    ):
        analyze_adapter(folder)


# ------------------------------------------------------------------ saved adapters
def _save_linchain(tmp_path, name, k, bias, r=4):
    torch.manual_seed(3)
    model = get_peft_model(
        tiny_llama(),
        LinChainConfig(r=r, alpha=8, num_mixers=k, mixer_bias=bias, target_modules=TARGETS, init_weights=False),
    )
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
    for stats, (layer, _) in zip(result.layers, layers.values()):  # float32 factors: the old dense path agrees
        dense = spectrum_stats(layer.get_delta_weight("default"))
        assert stats.numerical_rank == dense["numerical_rank"] and len(stats.singular_values) == len(
            dense["singular_values"]
        )
        torch.testing.assert_close(
            torch.tensor(stats.singular_values),
            torch.tensor(dense["singular_values"]),
            rtol=0,
            atol=1e-5 * dense["spectral_norm"],
        )
        assert stats.effective_rank == pytest.approx(dense["effective_rank"], rel=1e-5)
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
    shapes = [
        (m.out_features, m.in_features) for n, m in tiny_llama().named_modules() if n.rsplit(".", 1)[-1] in TARGETS
    ]
    counts = method_parameter_counts(shapes, r=4)

    def trainable(cfg):
        return sum(p.numel() for p in get_peft_model(tiny_llama(), cfg).parameters() if p.requires_grad)

    assert counts["LoRA r=4"] == trainable(LoraConfig(r=4, target_modules=TARGETS))
    assert counts["LoRA r=8"] == trainable(LoraConfig(r=8, target_modules=TARGETS))
    assert counts["MoSLoRA r=4"] == trainable(LinChainConfig(r=4, num_mixers=1, target_modules=TARGETS))
    assert counts["LinChain k=3 r=4 +bias"] == trainable(
        LinChainConfig(r=4, num_mixers=3, mixer_bias=True, target_modules=TARGETS)
    )


def test_cli_two_adapters_side_by_side(tmp_path, capsys):
    _save_linchain(tmp_path, "lc", 3, False)
    torch.manual_seed(4)
    get_peft_model(
        tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    ).save_pretrained(tmp_path / "lora")
    out = tmp_path / "out"
    rc = cli_main(
        ["analyze", str(tmp_path / "lora"), str(tmp_path / "lc"), "--out", str(out), "--labels", "lora", "lc"]
    )
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
