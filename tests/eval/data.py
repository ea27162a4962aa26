"""Where the real LLM-Adapters files live (shared, read-only; never copied into the repo)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

#: the one name the presets read too (linchain.compare.presets.data_dir; README, "Data")
DATA_DIR = Path(os.environ.get("LINCHAIN_DATA_DIR", Path(__file__).resolve().parents[3] / "shared/data/llm-adapters"))


@lru_cache(maxsize=None)
def rows(task: str) -> list:
    path = DATA_DIR / task / "test.json"
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (set LINCHAIN_DATA_DIR)")
    return json.loads(path.read_text(encoding="utf-8"))
