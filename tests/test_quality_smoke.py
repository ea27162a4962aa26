"""benchmarks/quality.py is a thin wrapper over `linchain compare`: its quick/full grids must still
translate into the settings the original script ran with (linchain compare itself is tested in
tests/compare/, end to end on a tiny Llama)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from linchain.cli.compare import parse_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_grid_translates_to_compare(quality, tmp_path):
    argv = quality.compare_argv(
        ["--preset", "quick", "--data_dir", str(tmp_path / "d"), "--seeds", "0", "--max_steps", "20"], tmp_path
    )
    c, m, d, t = parse_args(argv)
    assert (c.methods, c.seeds, c.validation_size, c.eval_limit, c.scorer) == (
        "lora,moslora,linchain-k3",
        "0",
        0,
        40,
        "loglik",
    )
    assert t.max_steps == 20 and t.learning_rate == 1e-3 and t.warmup_steps == 3 and d.max_train_samples == 240
    assert [Path(p).parent.name for p in c.eval_data] == list(quality.EVAL_TASKS)
    assert [Path(p).parent.name for p in d.data] == list(quality.TRAIN_TASKS) and m.r == 16 and m.alpha == 32


def test_full_grid_and_bad_preset(quality, tmp_path):
    c, _, d, t = parse_args(quality.compare_argv(["--preset", "full", "--data_dir", str(tmp_path)], tmp_path))
    assert "lora-2r" in c.methods and "linchain-k4-bias" in c.methods and t.max_steps == 300 and c.eval_limit == 200
    with pytest.raises(SystemExit, match="use quick or full"):
        quality.compare_argv(["--preset", "huge"], tmp_path)
