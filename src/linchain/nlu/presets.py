"""The reference's GLUE settings (DeBERTa-v3-base with LinChain), as far as they are known.

Source: the public reference repository's GLUE setup, summarised in
``shared/reference/linchain-facts.md``. Only the values stated there are filled in; anything
else (alpha, batch size, the learning rates and epochs of the other GLUE tasks) is not in our
sources and is left to the user rather than invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

__all__ = ["DEBERTA_V3_GLUE", "GluePreset", "PRESETS"]


@dataclass(frozen=True)
class GluePreset:
    """Settings of one published setup: model, chain shape, targets, and per-task schedules."""

    model_name_or_path: str
    r: int
    num_mixers: int
    target_modules: Tuple[str, ...]
    #: task -> (learning rate, epochs)
    schedules: Dict[str, Tuple[float, int]] = field(default_factory=dict)

    def schedule(self, task: str) -> Optional[Tuple[float, int]]:
        return self.schedules.get(task.lower())


DEBERTA_V3_GLUE = GluePreset(
    model_name_or_path="microsoft/deberta-v3-base",
    r=8,
    num_mixers=3,
    target_modules=("query_proj", "key_proj", "value_proj", "intermediate.dense"),
    schedules={"rte": (1.2e-3, 50), "mnli": (2e-4, 10)},
)

PRESETS = {"deberta-v3-glue": DEBERTA_V3_GLUE}
