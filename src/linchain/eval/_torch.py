"""Small torch helpers shared by the scorers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["NonFiniteLogitsError", "eval_mode", "model_device"]


class NonFiniteLogitsError(ValueError):
    """The model gave NaN or +inf logits for the row at ``index`` (of the scored examples): finite
    weights can still overflow (a huge adapter value), and a NaN score ranks or decodes as garbage
    that would be reported as an accuracy. :func:`linchain.eval.scoring.evaluate_task` names the data
    file and row."""

    def __init__(self, index: int, what: str = "logits") -> None:
        super().__init__(f"the model's {what} are not finite (NaN or inf) for row index {index}")
        self.index, self.what = index, what


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Dropout off while scoring; a model that was training (a before/after check inside a
    training loop) is put back in training mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
