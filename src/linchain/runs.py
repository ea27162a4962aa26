"""The layout of a training run's folder, in one place: what ``linchain train`` writes where, and how
the other commands find it (an adapter given as its run folder, the run an adapter belongs to).

    RUN/adapter/              adapter_config.json + adapter_model.safetensors + tokenizer (adapter methods)
    RUN/model/                the whole model (--method full)
    RUN/train_config.yaml     what defines the run (``linchain train --config`` reads it back)
    RUN/metrics.jsonl         one JSON line per log, then the summary
    RUN/summary.json, .txt    the result, as data and as one line
    RUN/loss_curve.png        the losses
    RUN/checkpoint-N/         the Trainer's checkpoints (``--resume``)
    RUN/pissa-init/           --method pissa: the adapter as initialised
    RUN/analysis/             ``linchain analyze RUN``'s default output (an output of its own)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "ADAPTER",
    "CHECKPOINT",
    "CHECKPOINTS",
    "CONFIG",
    "METRICS",
    "MODEL",
    "PISSA_INIT",
    "PLOT",
    "SUMMARY_JSON",
    "SUMMARY_TXT",
    "RunFolder",
]

ADAPTER = "adapter"
MODEL = "model"
CONFIG = "train_config.yaml"
METRICS = "metrics.jsonl"
PLOT = "loss_curve.png"
SUMMARY_TXT = "summary.txt"
SUMMARY_JSON = "summary.json"
PISSA_INIT = "pissa-init"
CHECKPOINT = "checkpoint-"  #: checkpoint-N: the Trainer's name for the checkpoint after step N
CHECKPOINTS = CHECKPOINT + "*"  #: every checkpoint, as a glob
ANALYSIS = "analysis"


class RunFolder:
    """A training run's folder: the paths of what it holds (which may not exist yet)."""

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def plot(self) -> Path:
        return self.path / PLOT

    @property
    def summary_json(self) -> Path:
        return self.path / SUMMARY_JSON

    @property
    def summary_txt(self) -> Path:
        return self.path / SUMMARY_TXT

    @property
    def pissa_init(self) -> Path:
        return self.path / PISSA_INIT

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS

    def weights(self, full: bool) -> Path:
        """Where the trained weights are: ``model/`` for --method full, else ``adapter/``."""
        return self.model if full else self.adapter

    @classmethod
    def of_adapter(cls, adapter_dir: Union[str, os.PathLike]) -> Optional["RunFolder"]:
        """The run an adapter folder belongs to (``RUN/adapter`` of a folder with a run's marker or
        train_config.yaml), or None for an adapter folder of its own."""
        from .outputs import read_marker

        folder = Path(adapter_dir)
        if folder.name != ADAPTER:
            return None
        run = cls(folder.parent)
        if (read_marker(run.path) or {}).get("kind") in ("train", "seq-cls") or run.config.is_file():
            return run
        return None
