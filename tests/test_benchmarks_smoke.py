"""Tiny runs of the benchmark scripts so they do not rot (no speed is asserted: timings are noisy)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_tiny(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--model", "tiny", "--batch", "2", "--seq-len", "8",
         "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["training"]]
    assert names[:2] == ["floor", "peft-lora"] and "linchain-k3" in names and "full-ft" in names
    for r in report["training"]:
        assert r["median_s"] > 0 and r["memory_mb"] > 0 and r["saved_activations_mb"] >= 0
    assert {"base", "linchain-k3 (merged)"} <= set(report["inference"])
    assert any("k=3 step time / PEFT LoRA" in t["what"] for t in report["targets"])
    assert "Targets (issue #5)" in proc.stdout


def test_dropout_microbenchmark_tiny():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dropout_micro.py"), "--tokens", "16", "--features", "32",
         "--r", "4", "--repeats", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("bare x @ A.T", "linchain (positions)", "F.dropout + matmul", "draw: positions"):
        assert row in proc.stdout
