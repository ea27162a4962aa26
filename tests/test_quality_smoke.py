"""A tiny run of benchmarks/quality.py so it does not rot: a tiny Llama from a config, tiny data in
LLM-Adapters layout, two methods x one seed, a few steps; then a second call that must reuse the
finished runs (resumability). No accuracy is asserted: a tiny random model scores noise."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

from tests.train.conftest import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TASK_LABELS = {
    "boolq": ("true", "false"), "piqa": ("solution1", "solution2"), "social_i_qa": ("answer1", "answer2", "answer3"),
    "ARC-Easy": ("answer1", "answer2", "answer3", "answer4"), "ARC-Challenge": ("answer1", "answer2", "answer3", "answer4"),
    "openbookqa": ("answer1", "answer2", "answer3", "answer4"),
}


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _rows(task: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    labels = TASK_LABELS[task]
    rows = []
    for _ in range(n):
        answer = rng.choice(labels)
        rows.append({"instruction": f"Is {rng.randrange(100)} even? Answer format: {'/'.join(labels)}", "input": "",
                     "output": f"the correct answer is {answer}", "answer": answer})
    return rows


@pytest.fixture(scope="module")
def quality():
    return _load_quality()


def test_steps_to_target_uses_the_smoothed_loss(quality):
    losses = [(1, 3.0), (2, 1.0), (3, 2.0), (4, 0.5), (5, 0.5)]
    assert quality.smooth(losses, 2) == [(1, 3.0), (2, 2.0), (3, 1.5), (4, 1.25), (5, 0.5)]
    assert quality.steps_to_target(losses, 1.5, 2) == 3  # the single step-2 dip to 1.0 does not count
    assert quality.steps_to_target(losses, 0.1, 2) is None


def test_quality_benchmark_tiny_run_and_resume(quality, tmp_path, capsys):
    model_dir = build_tiny_model(tmp_path / "model")
    data = tmp_path / "data"
    for i, task in enumerate(TASK_LABELS):
        (data / task).mkdir(parents=True)
        (data / task / "test.json").write_text(json.dumps(_rows(task, 6, seed=i)))
        if task in quality.TRAIN_TASKS:
            (data / task / "train.json").write_text(json.dumps(_rows(task, 12, seed=100 + i)))
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(model_dir), "--data_dir", str(data), "--output_dir", str(out),
            "--methods", "lora,linchain-k3", "--seeds", "0", "--max_steps", "3", "--train_samples", "16",
            "--eval_limit", "3", "--batch_size", "2", "--grad_accum", "1", "--cutoff_len", "96", "--r", "2", "--alpha", "4"]
    assert quality.main(argv) == 0
    report = json.loads((out / "quality_results.json").read_text())
    assert report["methods_order"] == ["lora", "linchain-k3"]
    for name in ("lora", "linchain-k3"):
        m = report["methods"][name]
        assert set(m["per_task"]) == set(quality.EVAL_TASKS)
        assert all(0.0 <= acc <= 1.0 for acc, _ in m["per_task"].values())
        assert m["trainable_params"] > 0 and len(m["steps_to_target"]) == 1
        assert (out / name / "seed0" / "eval" / "results.json").exists()
    # same rank, k=3 adds three r x r mixers per layer
    assert report["methods"]["linchain-k3"]["trainable_params"] > report["methods"]["lora"]["trainable_params"]
    assert report["base"] is not None and report["target_loss"] is not None
    assert report["effective_rank"]["lora_vs"][0]["second"] == "linchain-k3-s0"
    assert (out / "convergence.png").stat().st_size > 0
    assert "| lora |" in (out / "quality_results.md").read_text()
    capsys.readouterr()

    # A second invocation reuses every finished run (nothing is trained again).
    assert quality.main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == 2 and "linchain train:" not in err
