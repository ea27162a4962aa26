"""NLU with encoders (the paper's GLUE experiments): LinChain sequence classification.

``linchain eval --task_type seq_cls`` (and ``linchain train --task_type seq_cls``) run
:func:`run_seq_cls`; from Python use :func:`train_seq_cls` / :func:`evaluate_seq_cls`.
"""

from .args import OFFLINE_ENCODER, NLUArguments
from .data import SeqClsData, load_seq_cls
from .metrics import GLUE_METRICS, compute_metrics
from .presets import DEBERTA_V3_GLUE, PRESETS, GluePreset
from .train import evaluate_seq_cls, run_seq_cls, train_seq_cls

__all__ = [
    "DEBERTA_V3_GLUE",
    "GLUE_METRICS",
    "GluePreset",
    "NLUArguments",
    "OFFLINE_ENCODER",
    "PRESETS",
    "SeqClsData",
    "compute_metrics",
    "evaluate_seq_cls",
    "load_seq_cls",
    "run_seq_cls",
    "train_seq_cls",
]
