"""Where the real LLM-Adapters files live (shared, read-only; never copied into the repo)."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("LINCHAIN_LLM_ADAPTERS", Path(__file__).resolve().parents[3] / "shared/data/llm-adapters"))


@lru_cache(maxsize=None)
def rows(task: str) -> list:
    path = DATA_DIR / task / "test.json"
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (set LINCHAIN_LLM_ADAPTERS)")
    return json.loads(path.read_text(encoding="utf-8"))
