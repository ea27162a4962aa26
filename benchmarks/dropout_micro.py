"""Microbenchmark of one adapter input path: dropout + A, forward and backward, on one layer's input.

    python benchmarks/dropout_micro.py [--tokens 1024] [--features 576 1536] [--r 16] [--p 0.05]

Rows, each timed in this process (interleaved, median of ``--repeats``), with ratios to the bare
matmul:

- ``bare x @ A.T``: no dropout, the least the A side can cost;
- ``linchain (positions)``: ``_draw_dropped`` + ``_DropoutLinear`` as the layer runs them;
- ``F.dropout + matmul``: how PEFT LoRA computes ``lora_A(dropout(x))``;
- ``draw: rand_like < p`` and ``draw: positions``: the mask draws alone.

A random (not expanded) output gradient is used: ``y.sum().backward()`` would hand the matmuls a
stride-0 gradient that they copy first, which is not what a model's backward sees.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Callable

import torch
from torch.nn import functional as F

__all__ = ["main"]


def _rows(x: torch.Tensor, A: torch.Tensor, g: torch.Tensor, p: float) -> dict[str, Callable[[], object]]:
    from linchain.tuner.dropout import _draw_dropped, _DropoutLinear

    def bare():
        (x @ A.t()).backward(g)

    def ours():
        _DropoutLinear.apply(x, A, _draw_dropped(x, p), 1.0 / (1.0 - p)).backward(g)

    def peft():
        (F.dropout(x, p, True) @ A.t()).backward(g)

    return {
        "bare x @ A.T": bare,
        "linchain (positions)": ours,
        "F.dropout + matmul": peft,
        "draw: rand_like < p": lambda: torch.rand_like(x) < p,
        "draw: positions": lambda: _draw_dropped(x, p),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1024, help="rows of x (batch x length; default: %(default)s)")
    ap.add_argument("--features", type=int, nargs="+", default=[576, 1536], help="input widths (default: %(default)s)")
    ap.add_argument("--r", type=int, default=16, help="rank (default: %(default)s)")
    ap.add_argument("--p", type=float, default=0.05, help="dropout (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=50, help="timed rounds (default: %(default)s)")
    args = ap.parse_args(argv)
    from speed import rotated, timed  # benchmarks/ is on sys.path when this script runs

    torch.manual_seed(0)
    print(
        f"[dropout_micro] {args.tokens} tokens, r={args.r}, p={args.p}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    for d in args.features:
        x = torch.randn(args.tokens, d, requires_grad=True)
        A = torch.randn(args.r, d, requires_grad=True)
        g = torch.randn(args.tokens, args.r)
        rows = _rows(x, A, g, args.p)
        times: dict[str, list[float]] = {k: [] for k in rows}
        names = list(rows)
        for i in range(args.repeats + 3):
            for k in rotated(names, i):
                t = timed(rows[k])
                if i >= 3:  # the first rounds warm up the allocator and caches
                    times[k].append(t)
            x.grad = A.grad = None
        base = statistics.median(times["bare x @ A.T"])
        print(f"\n  in = {d}: {'ms':>8} {'vs bare':>9}")
        for k in names:
            m = statistics.median(times[k])
            print(f"  {k:<24} {m * 1e3:>8.3f} {m / base:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
