"""What a run leaves behind besides the adapter: metrics.jsonl, a loss-curve PNG, a summary line."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from transformers import TrainerCallback

from .. import runs
from ..io import atomic_write_text, strict_json

__all__ = ["METRICS_FILE", "PLOT_FILE", "SUMMARY_FILE", "MetricsJsonl", "plot_loss_curve", "read_metrics"]

METRICS_FILE, PLOT_FILE, SUMMARY_FILE = runs.METRICS, runs.PLOT, runs.SUMMARY_TXT  # the layout: linchain/runs.py


def _finite(record: dict) -> dict:
    """Strict JSON: a non-finite logged value (HF may log a NaN grad norm) is written as null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


class MetricsJsonl(TrainerCallback):
    """Appends every Trainer log (train loss, lr, grad norm, eval loss, tokens/s) as one JSON line.

    On resume the lines after the checkpoint's step, and the end-of-training records an interrupted
    part wrote (the Trainer's ``train_loss`` line, linchain's summary), are dropped first, so the
    file reads as one uninterrupted run that ends once.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        kept = (
            [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step and not _ends_a_run(r)]
            if state.global_step
            else []
        )
        atomic_write_text(self.path, "".join(strict_json(r) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.append({**logs, "step": state.global_step, "time": round(time.time(), 3)})

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(strict_json(_finite(record)) + "\n")


def _ends_a_run(record: dict[str, Any]) -> bool:
    """The Trainer's end-of-training log (the part's ``train_loss``, no step ``loss``) or linchain's summary."""
    return "summary" in record or ("train_loss" in record and "loss" not in record)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl. A line that is not a JSON object (the half-written last line
    of a killed run, a hand edit) is dropped, saying so: the records around it still count, and a
    resumed run rewrites the file without it."""
    path = Path(path)
    if not path.exists():
        return []
    records, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        print(
            f"linchain: {path}: dropped {len(bad)} malformed line(s) (line {', '.join(map(str, bad[:5]))}"
            f"{' ...' if len(bad) > 5 else ''}; a run cut short mid-write leaves one)",
            file=sys.stderr,
            flush=True,
        )
    return records


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Optional[Path]:
    """Training and validation loss against the step; None (and nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
