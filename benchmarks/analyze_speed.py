"""`linchain analyze` from the factors vs from the dense update (issue 18).

Saves two adapters of SmolLM2-135M's shapes with random non-zero factors (hidden 576,
intermediate 1536, 30 layers; q/k/v/up/down_proj; r = 16): PEFT LoRA and LinChain k = 3, on a
randomly initialised Llama of those shapes (no download). Then, for each thread count, it times
both adapters in this process, measured the two ways:

- dense (before): each layer's ``ΔW = get_delta_weight()`` (out x in, float32), ``svdvals`` in
  float64: what ``linchain analyze`` did before;
- factors (now): :func:`linchain.analysis.analyze_adapter`: QR of B and of A_f^T, SVD of the
  r x r core, in float64;

and prints the ratio factors / dense and the largest difference between the two spectra,
relative to each layer's largest singular value (the dense path rounds ΔW to float32). ``--cli``
also times the whole command, ``python -m linchain analyze A B --num_threads N`` (start-up,
reading, JSON and plots):

    python benchmarks/analyze_speed.py                 # 1 and 2 threads
    python benchmarks/analyze_speed.py --threads 1 --cli
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from linchain.threads import busy_cores

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def save_adapters(folder: Path, args) -> list[Path]:
    """A PEFT LoRA and a LinChain k = ``args.k`` adapter, random non-zero factors (seeded)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from linchain import LinChainConfig

    def base():
        torch.manual_seed(0)
        heads = max(1, args.hidden // 64)
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=128,
                hidden_size=args.hidden,
                intermediate_size=args.intermediate,
                num_hidden_layers=args.layers,
                num_attention_heads=heads,
                num_key_value_heads=heads // 3 or 1,
            )
        )

    configs = {
        "lora": LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=TARGETS, init_lora_weights=False),
        f"linchain-k{args.k}": LinChainConfig(
            r=args.r, alpha=2 * args.r, num_mixers=args.k, target_modules=TARGETS, init_weights=False
        ),
    }
    paths = []
    for name, config in configs.items():
        get_peft_model(base(), config).save_pretrained(folder / name)
        paths.append(folder / name)
    return paths


@torch.no_grad()
def dense_spectra(path: Path) -> dict[str, list[float]]:
    """The path before: the dense float32 ΔW of every layer, its float64 SVD."""
    from linchain.analysis import load_adapter_layers, spectrum_stats
    from linchain.tuner.saved import ADAPTER

    _, layers = load_adapter_layers(path)
    return {
        name: spectrum_stats(layer.get_delta_weight(ADAPTER).float())["singular_values"]
        for name, (layer, _) in layers.items()
    }


def factor_spectra(path: Path) -> dict[str, list[float]]:
    from linchain.analysis import analyze_adapter

    return {x.name: x.singular_values for x in analyze_adapter(path).layers}


def timed(fn, paths: list[Path], repeats: int) -> tuple[float, list[dict]]:
    """Median seconds over ``repeats`` of ``fn`` on every adapter, and the last results."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        results = [fn(p) for p in paths]
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


def largest_difference(dense: list[dict], factors: list[dict]) -> float:
    """max over layers of max_i |s_i(dense) - s_i(factors)| / s_1(factors)."""
    worst = 0.0
    for d, f in zip(dense, factors):
        for name, s in f.items():
            diff = max(abs(a - b) for a, b in zip(d[name], s))
            worst = max(worst, diff / (s[0] or 1.0))
    return worst


def cli_seconds(paths: list[Path], threads: int, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "linchain",
            "analyze",
            *map(str, paths),
            "--out",
            str(out),
            "--num_threads",
            str(threads),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time (default: 1 2)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repeats of the factor path (the dense path runs once)"
    )
    ap.add_argument("--cli", action="store_true", help="also time the whole command in a fresh process")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--intermediate", type=int, default=1536)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="analyze-speed-") as tmp:
        paths = save_adapters(Path(tmp), args)
        layers = args.layers * len(TARGETS)
        print(
            f"2 adapters (PEFT LoRA, LinChain k={args.k}), {layers} layers each, hidden {args.hidden}, intermediate "
            f"{args.intermediate}, r={args.r}; torch {torch.__version__}",
            flush=True,
        )
        for threads in args.threads:
            torch.set_num_threads(threads)
            busy = busy_cores()  # other jobs make the dense path's threads wait on each other: say how many ran
            factor_s, factors = timed(factor_spectra, paths, args.repeats)
            dense_s, dense = timed(dense_spectra, paths, 1)
            line = (
                f"{threads} thread(s), {busy:.1f} cores busy before: dense (before) {dense_s:7.2f} s, factors (now) {factor_s:6.3f} s, "
                f"factors / dense {factor_s / dense_s:.4f}; largest spectrum difference {largest_difference(dense, factors):.1e} of s_1"
            )
            if args.cli:
                line += f"; whole command {cli_seconds(paths, threads, Path(tmp) / f'out-{threads}'):.1f} s"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
