"""Spectra and effective rank of adapter updates, read from saved adapter folders alone.

For every adapted layer the update ``ΔW = s B A_f`` (out x in; ``A_f = M_k ... M_1 A``, r x in,
folded by :meth:`LinChainLayer._fold`, the code forward and merging use) is measured: its singular
values, effective rank (Roy & Vetterli 2007), stable rank and Frobenius norm. No base model is
needed: a LinChain layer is rebuilt around an empty ("meta") base layer. PEFT LoRA adapters
(``lora_A``/``lora_B``) are read too, as the k = 0 chain, so LoRA and LinChain can be compared
side by side (the paper's "expands the effective rank" claim).

The dense ``ΔW`` is never built. With thin QR factorisations ``B = Q_B R_B`` and
``A_f^T = Q_A R_A`` (Q with orthonormal columns),

    ΔW = s B A_f = Q_B (s R_B R_A^T) Q_A^T,

so the non-zero singular values of ΔW are those of the small core ``s R_B R_A^T``
(min(out, r) x min(in, r)), and ``||ΔW||_F = ||s R_B R_A^T||_F``: O((out + in) r^2) per layer in
float64 instead of an SVD of the out x in matrix.

Note the algebra: without mixer biases ``ΔW = s B M_k ... M_1 A`` has rank <= r for every k; a
higher effective rank means the r singular values are spread more evenly, not that more than r
directions are used.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from .tuner.saved import ADAPTER as _ADAPTER
from .tuner.saved import SavedLayer, saved_layers

__all__ = [
    "AdapterAnalysis",
    "LayerStats",
    "analyze_adapter",
    "compare",
    "effective_rank",
    "factor_singular_values",
    "load_adapter_layers",
    "method_parameter_counts",
    "plot_analysis",
    "spectrum_stats",
    "stable_rank",
]


# ---------------------------------------------------------------------------------------- math
def effective_rank(singular_values: torch.Tensor) -> float:
    """Effective rank ``exp(H(p))``, ``p_i = s_i / sum_j s_j``, ``H(p) = -sum_i p_i log p_i``.

    Roy & Vetterli (2007). ``singular_values``: 1-D, non-negative, shape (n,). Zeros contribute
    nothing (0 log 0 = 0), so the result lies in [1, number of non-zero values]; an all-zero
    spectrum (e.g. a LoRA update before training, B = 0) returns 0.0 by convention.
    """
    s = singular_values.detach().double().flatten()
    if (s < 0).any():
        raise ValueError("effective_rank expects non-negative singular values.")
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(singular_values: torch.Tensor) -> float:
    """Stable rank ``||W||_F^2 / ||W||_2^2 = sum_i s_i^2 / max_i s_i^2``; 0.0 for an all-zero spectrum."""
    s = singular_values.detach().double().flatten()
    top = s.max() if s.numel() else torch.tensor(0.0, dtype=torch.float64)
    if top <= 0:
        return 0.0
    return float((s**2).sum() / top**2)


@dataclass
class LayerStats:
    """Measurements of one layer's update ``ΔW = s B A_f`` (out x in), from its factors."""

    name: str  #: module path with PEFT's ``base_model.model.`` prefix removed
    shape: tuple[int, int]  #: (out, in) of ΔW (nn.Linear orientation)
    r: int
    num_mixers: int
    mixer_bias: bool
    params: int  #: trainable adapter parameters of this layer
    effective_rank: float
    stable_rank: float
    numerical_rank: int  #: singular values above max(s) * max(out, in) * eps(float32)
    frobenius_norm: float
    spectral_norm: float
    delta_bias_norm: Optional[float]  #: ||Δb|| of an affine chain (or LoRA's lora_B bias), else None
    singular_values: list[float] = field(repr=False)  #: the largest ones, descending


def _spectrum_measures(s: torch.Tensor, shape: tuple[int, int], max_values: int) -> dict:
    """The measures of an out x in matrix (``shape``) from its singular values ``s`` (float64, descending,
    min(out, in) of them).

    Values below ``max(s) * max(out, in) * eps(float32)`` are treated as exact zeros: adapters are
    stored in float32 (or less), so anything smaller is rounding noise of a rank-deficient product
    (the same tolerance as ``numpy.linalg.matrix_rank``, with float32's epsilon).
    """
    tol = (s.max() if s.numel() else 0.0) * max(shape) * torch.finfo(torch.float32).eps
    s = torch.where(s > tol, s, torch.zeros_like(s))
    return {
        "effective_rank": effective_rank(s),
        "stable_rank": stable_rank(s),
        "numerical_rank": int((s > 0).sum()),
        "frobenius_norm": float(s.norm()),
        "spectral_norm": float(s.max()) if s.numel() else 0.0,
        "singular_values": [float(v) for v in s[:max_values]],
    }


def spectrum_stats(delta: torch.Tensor, max_values: int = 64) -> dict:
    """Singular values (float64) of a dense ``delta`` (out, in) and the scalar measures derived from
    them (see :func:`_spectrum_measures` for the rounding tolerance). Adapters are measured from their
    factors instead (:func:`factor_singular_values`); this is for any other matrix."""
    return _spectrum_measures(torch.linalg.svdvals(delta.detach().double()), tuple(delta.shape), max_values)


def factor_singular_values(B: torch.Tensor, A_f: torch.Tensor, scaling: float) -> torch.Tensor:
    """Singular values of ``s B A_f`` without forming it: (min(out, in),), float64, descending.

    ``B``: (out, r); ``A_f``: (r, in). Thin QR ``B = Q_B R_B`` and ``A_f^T = Q_A R_A`` give
    ``s B A_f = Q_B (s R_B R_A^T) Q_A^T`` with orthonormal columns in Q_B and Q_A, so the singular
    values are those of the core ``s R_B R_A^T`` (min(out, r) x min(in, r)), followed by zeros up
    to min(out, in) (the length an SVD of the dense out x in update gives).
    """
    if B.dim() != 2 or A_f.dim() != 2 or B.shape[1] != A_f.shape[0]:
        raise ValueError(
            f"factor_singular_values: B {tuple(B.shape)} and A_f {tuple(A_f.shape)} do not chain as (out, r) @ (r, in)"
        )
    _, R_B = torch.linalg.qr(B.detach().double(), mode="r")  # (min(out, r), r)
    _, R_A = torch.linalg.qr(A_f.detach().double().T, mode="r")  # (min(in, r), r)
    s = torch.linalg.svdvals(scaling * (R_B @ R_A.T))  # min(out, in, r) values
    full = min(B.shape[0], A_f.shape[1])
    return torch.cat([s, s.new_zeros(full - s.numel())])


# ---------------------------------------------------------------------------------------- reading
def _short(name: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def load_adapter_layers(path: Union[str, os.PathLike]) -> tuple[dict, dict[str, SavedLayer]]:
    """Read an adapter folder written by ``save_pretrained`` (LinChain or PEFT LoRA), see
    :func:`linchain.tuner.saved.saved_layers`; layer names lose PEFT's ``base_model.model.`` prefix."""
    config, layers = saved_layers(path)
    return config, {_short(name): entry for name, entry in layers.items()}


# ---------------------------------------------------------------------------------------- analysis
@dataclass
class AdapterAnalysis:
    """All measurements of one adapter folder."""

    path: str
    label: str
    method: str  #: e.g. "LoRA r=16", "LinChain k=3 r=16 +bias"
    total_params: int
    layers: list[LayerStats]

    def summary(self) -> dict:
        """Means over layers, overall and per module type (the last name component, e.g. q_proj)."""

        def agg(items: list[LayerStats]) -> dict:
            n = len(items)
            return {
                "layers": n,
                "mean_effective_rank": sum(x.effective_rank for x in items) / n,
                "mean_stable_rank": sum(x.stable_rank for x in items) / n,
                "mean_frobenius_norm": sum(x.frobenius_norm for x in items) / n,
            }

        by_type: dict[str, list[LayerStats]] = {}
        for x in self.layers:
            by_type.setdefault(x.name.rsplit(".", 1)[-1], []).append(x)
        return {"all": agg(self.layers), "by_module": {k: agg(v) for k, v in sorted(by_type.items())}}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "method": self.method,
            "total_params": self.total_params,
            "summary": self.summary(),
            "layers": [asdict(x) for x in self.layers],
        }


def _method_name(config: dict, layers: dict) -> str:
    r = config.get("r")
    if config.get("peft_type") == "LORA":
        return f"PEFT LoRA r={r}"
    layer = next(iter(layers.values()))[0]
    k = len(layer.linchain_mixers[_ADAPTER])
    bias = " +bias" if config.get("mixer_bias") else ""
    alias = {0: " (=LoRA)", 1: " (=MoSLoRA)"}.get(k, "")
    return f"LinChain k={k}{alias} r={r}{bias}"


def _layer_stats(name: str, layer, extra_bias: Optional[torch.Tensor], max_values: int) -> LayerStats:
    """One layer's measures from its factors (float64 throughout; the dense ΔW is never built)."""
    params = sum(p.numel() for p in layer.parameters() if p.device.type != "meta")
    layer.double()  # the fold, the QR and the constant in float64: exact up to float64 rounding
    A_f, _ = layer._fold(_ADAPTER)  # (r, in): M_k ... M_1 A
    B = layer.linchain_B[_ADAPTER].weight  # (out, r)
    shape = (B.shape[0], A_f.shape[1])
    spec = _spectrum_measures(factor_singular_values(B, A_f, layer.scaling[_ADAPTER]), shape, max_values)
    # the affine constant s B c of a chain with mixer biases, plus LoRA's own lora_B bias
    delta_bias = layer.get_delta_bias(_ADAPTER)
    if extra_bias is not None:
        delta_bias = extra_bias.double() if delta_bias is None else delta_bias + extra_bias.double()
    mixers = layer.linchain_mixers[_ADAPTER]
    return LayerStats(
        name=name,
        shape=shape,
        r=layer.r[_ADAPTER],
        num_mixers=len(mixers),
        mixer_bias=any(m.bias is not None for m in mixers),
        params=params,
        delta_bias_norm=None if delta_bias is None else float(delta_bias.norm()),
        **spec,
    )


@torch.no_grad()
def analyze_adapter(
    path: Union[str, os.PathLike], label: Optional[str] = None, max_values: int = 64
) -> AdapterAnalysis:
    """Measure every layer of the adapter in ``path``; ``max_values`` singular values are kept per layer.

    Raises ``ValueError`` naming the file and tensor when a factor holds NaN or inf."""
    config, layers = load_adapter_layers(path)
    stats = [_layer_stats(name, layer, extra_bias, max_values) for name, (layer, extra_bias) in layers.items()]
    return AdapterAnalysis(
        path=str(path),
        label=label or Path(path).name,
        method=_method_name(config, layers),
        total_params=sum(x.params for x in stats),
        layers=stats,
    )


def _sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(first: AdapterAnalysis, second: AdapterAnalysis) -> dict:
    """Per-layer effective ranks of two adapters over the layers they share, and a sign test.

    ``verdict`` says whether ``second`` has a higher effective rank than ``first`` in a clear
    majority of layers (sign test p < 0.05), a lower one, or neither.
    """
    a = {x.name: x for x in first.layers}
    b = {x.name: x for x in second.layers}
    shared = [n for n in a if n in b]
    rows = [
        {
            "name": n,
            "first": a[n].effective_rank,
            "second": b[n].effective_rank,
            "diff": b[n].effective_rank - a[n].effective_rank,
        }
        for n in shared
    ]
    wins = sum(r["diff"] > 1e-9 for r in rows)
    losses = sum(r["diff"] < -1e-9 for r in rows)
    p = _sign_test_p(wins, losses)
    if p < 0.05:
        verdict = (
            f"{second.label} has the higher effective rank"
            if wins > losses
            else f"{first.label} has the higher effective rank"
        )
    else:
        verdict = "no clear difference (sign test p >= 0.05)"
    mean = (sum(r["diff"] for r in rows) / len(rows)) if rows else float("nan")
    return {
        "first": first.label,
        "second": second.label,
        "shared_layers": len(shared),
        "only_first": sorted(set(a) - set(b)),
        "only_second": sorted(set(b) - set(a)),
        "second_higher": wins,
        "second_lower": losses,
        "mean_diff_second_minus_first": mean,
        "sign_test_p": p,
        "verdict": verdict,
        "per_layer": rows,
    }


def method_parameter_counts(shapes: list[tuple[int, int]], r: int) -> dict[str, int]:
    """Trainable parameters of each method on the same layers: ``shapes`` lists (out, in) per layer.

    LoRA: r(in + out); a chain of k mixers adds k r^2 (+ k r with biases); LoRA at 2r for the
    "fewer parameters" comparison.
    """
    base = sum(r * (o + i) for o, i in shapes)
    n = len(shapes)
    counts = {f"LoRA r={r}": base, f"MoSLoRA r={r}": base + n * r * r}
    for k in (2, 3, 4):
        counts[f"LinChain k={k} r={r}"] = base + n * k * r * r
        counts[f"LinChain k={k} r={r} +bias"] = base + n * k * (r * r + r)
    counts[f"LoRA r={2 * r}"] = sum(2 * r * (o + i) for o, i in shapes)
    return counts


# ---------------------------------------------------------------------------------------- plots
def plot_analysis(analyses: list[AdapterAnalysis], out_dir: Union[str, os.PathLike]) -> list[Path]:
    """Write ``spectra.png`` (normalised spectra per module type) and ``effective_rank.png`` (per layer)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    types = sorted({x.name.rsplit(".", 1)[-1] for a in analyses for x in a.layers})
    cols = min(3, len(types))
    rows = math.ceil(len(types) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, t in zip(axes.flat, types):
        for ci, a in enumerate(analyses):
            spectra = [x.singular_values for x in a.layers if x.name.rsplit(".", 1)[-1] == t]
            for j, s in enumerate(spectra):
                top = s[0] if s and s[0] > 0 else 1.0
                ax.plot(
                    range(1, len(s) + 1),
                    [v / top for v in s],
                    color=colors[ci % len(colors)],
                    alpha=0.25,
                    lw=0.8,
                    label=a.label if j == 0 else None,
                )
        ax.set_title(t)
        ax.set_xlabel("index i")
        ax.set_ylabel("s_i / s_1")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 1.5)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(types) :]:
        ax.axis("off")
    fig.suptitle("Singular values of the update, normalised (one line per layer)")
    fig.tight_layout()
    spectra_png = out_dir / "spectra.png"
    fig.savefig(spectra_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 3.5))
    for ci, a in enumerate(analyses):
        ax.plot(
            [x.effective_rank for x in a.layers],
            marker=".",
            lw=0.8,
            color=colors[ci % len(colors)],
            label=f"{a.label} ({a.method}), mean {a.summary()['all']['mean_effective_rank']:.2f}",
        )
    ax.set_xlabel("adapted layer (file order)")
    ax.set_ylabel("effective rank")
    ax.legend(fontsize=8)
    fig.tight_layout()
    erank_png = out_dir / "effective_rank.png"
    fig.savefig(erank_png, dpi=110)
    plt.close(fig)
    return [spectra_png, erank_png]
