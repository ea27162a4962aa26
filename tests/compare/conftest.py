"""The tiny Llama of tests/train, one torch thread (faster for tiny tensors), and tiny true/false data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ..eval.conftest import _one_thread  # noqa: F401  (autouse: one torch thread)


def boolq_rows(n: int, seed: int) -> list[dict]:
    """'Is N even?' in LLM-Adapters' boolq layout (answers true/false)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randrange(1000)
        answer = "true" if k % 2 == 0 else "false"
        rows.append(
            {
                "instruction": f"Is {k} even? Answer format: true/false",
                "input": "",
                "output": f"the correct answer is {answer}",
                "answer": answer,
            }
        )
    return rows


@pytest.fixture(scope="session")
def boolq_dir(tmp_path_factory) -> Path:
    """<dir>/boolq/train.json (60 rows) and <dir>/boolq/test.json (12 rows)."""
    folder = tmp_path_factory.mktemp("llm-adapters")
    (folder / "boolq").mkdir()
    (folder / "boolq" / "train.json").write_text(json.dumps(boolq_rows(60, seed=1)))
    (folder / "boolq" / "test.json").write_text(json.dumps(boolq_rows(12, seed=2)))
    return folder
