"""Where a training step's time goes, per row: torch.profiler tables of the floor, PEFT LoRA and linchain k=3.

    python benchmarks/profile_step.py [--model llama-1b --device cuda --dtype bf16 --batch 8 --seq-len 512]
    python benchmarks/profile_step.py --model tiny --batch 2 --seq-len 16     # CPU smoke run, seconds

The same models, tokens and step as ``speed.py`` (its ``load_model``, ``build_rows`` and ``make_step``):
after ``--warmup`` steps per row, ``--steps`` steps of each row run under torch.profiler. Printed (and
written to ``--out``): per row the host time and device time of a step, ops dispatched and kernels
launched per step, and the top ops by self device time and by self host time, so a GPU session can read
in one call where k = 3's time over PEFT LoRA's goes (launch count, memory-bound passes, or Python).
Speed itself is ``speed.py``'s job (interleaved rounds, ratios); these tables are for attribution.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import speed  # noqa: E402  (benchmarks/speed.py: the same models, rows and step)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", choices=["smollm2", *speed.MODEL_PRESETS])
    p.add_argument("--layers", type=int, help="keep only this many transformer layers")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--rows", nargs="+", default=["linchain-k0", "linchain-k3"], help="besides the floor and PEFT LoRA")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row first")
    p.add_argument("--steps", type=int, default=3, help="profiled steps per row")
    p.add_argument("--top", type=int, default=15, help="ops per table")
    p.add_argument("--out", help="also write the tables to this file")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # what speed.build_rows reads besides these
    args.compile, args.no_full_ft = False, True
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    base, desc = speed.load_model(args.model, dtype, args.layers, fallback=True)
    base.to(device)
    rows = speed.build_rows(base, args, device)
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, base.config.vocab_size, (args.batch, args.seq_len), generator=g).to(device)
    steps = {r.name: speed.make_step(r, batch, device) for r in rows}
    for name, step in steps.items():
        for _ in range(args.warmup):
            step()

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    lines = [
        f"# {desc}; {args.batch}x{args.seq_len} tokens, r={args.r}, dropout={args.dropout}, {args.dtype} on {device}"
    ]
    for name, step in steps.items():
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
        wall = (time.perf_counter() - start) / args.steps
        events = prof.key_averages()
        n = args.steps
        ops = sum(e.count for e in events if e.key.startswith("aten::")) / n
        kernels = sum(e.count for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA) / n
        device_us = sum(getattr(e, "self_device_time_total", 0) for e in events) / n
        host_us = sum(e.self_cpu_time_total for e in events) / n
        lines.append(
            f"\n## {name}: {wall * 1e3:.1f} ms a step under the profiler; host (self CPU) {host_us / 1e3:.1f} ms, "
            f"device {device_us / 1e3:.1f} ms; {ops:.0f} aten ops and {kernels:.0f} kernels a step"
        )
        sort_keys = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
        for key in sort_keys:
            lines.append(f"\n### {name}, by {key}\n")
            lines.append(events.table(sort_by=key, row_limit=args.top, max_name_column_width=60))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
