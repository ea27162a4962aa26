"""Registration of LinChain with PEFT's method registry."""

from __future__ import annotations

from peft import mapping

from .config import LINCHAIN, LinChainConfig
from .model import LinChainModel, guard_lora_only_tools

__all__ = ["register"]


def register() -> None:
    """Make PEFT know ``peft_type="LINCHAIN"`` (idempotent).

    PEFT's ``register_peft_method`` only accepts members of its closed ``PeftType`` enum, so the
    config class, tuner class and parameter prefix go straight into the dicts of
    ``peft.mapping`` that ``get_peft_model``, saving and loading consult (tested with the PEFT
    range pinned in pyproject.toml).
    """
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[LINCHAIN] = LinChainConfig
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[LINCHAIN] = LinChainModel
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[LINCHAIN] = LinChainModel.prefix
    guard_lora_only_tools()
