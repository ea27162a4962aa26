"""Training: ``linchain train`` on the Hugging Face Trainer (see :mod:`linchain.train.engine`)."""

from .accuracy import mc_accuracy
from .args import DataArguments, LinChainTrainingArguments, ModelArguments
from .engine import RunResult, find_complete_checkpoint, run_training

__all__ = [
    "DataArguments",
    "LinChainTrainingArguments",
    "ModelArguments",
    "RunResult",
    "find_complete_checkpoint",
    "mc_accuracy",
    "run_training",
]
