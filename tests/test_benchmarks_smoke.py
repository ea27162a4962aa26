"""Tiny runs of the benchmark scripts so they do not rot (no speed is asserted: timings are noisy)."""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_speed_benchmark_tiny(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "speed.py"),
            "--model",
            "tiny",
            "--batch",
            "2",
            "--seq-len",
            "8",
            "--repeats",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["training"]]
    assert names[:2] == ["floor", "peft-lora"] and "linchain-k3" in names and "full-ft" in names
    for r in report["training"]:
        assert r["median_s"] > 0 and r["memory_mb"] > 0 and r["saved_activations_mb"] >= 0
    assert {"base", "linchain-k3 (merged)"} <= set(report["inference"])
    assert any("k=3 step time / PEFT LoRA" in t["what"] for t in report["targets"])
    assert "Targets (issue 18)" in proc.stdout and "linchain-k3-reference" in names


def test_dropout_microbenchmark_tiny():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dropout_micro.py"),
            "--tokens",
            "16",
            "--features",
            "32",
            "--r",
            "4",
            "--repeats",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("bare x @ A.T", "linchain (positions)", "F.dropout + matmul", "draw: positions"):
        assert row in proc.stdout


def _gpu_sh(*args, env=None, timeout=60):
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


def test_gpu_script_plan(tmp_path):
    """The plan gpu.sh prints: tests on the device with the marker and JUnit XML, the speed rows, caps <= 9 min."""
    cuda = _gpu_sh("--cuda", "--dry-run", env={"OUT": str(tmp_path)})
    assert cuda.returncode == 0, cuda.stderr
    assert (
        f"LINCHAIN_TEST_DEVICE=cuda {sys.executable} -m pytest -q -m device --junitxml {tmp_path}/tests.xml"
        in cuda.stdout
    )
    for run in ("llama-1b", "llama3-8b-8layers", "llama-1b-4layers-compiled"):
        assert f"speed {run}: {sys.executable} benchmarks/speed.py --device cuda --dtype bf16" in cuda.stdout
    caps = [int(c) for c in re.findall(r"\[cap (\d+)s\]", cuda.stdout)]
    assert len(caps) == 6 and f"time caps: {sum(caps)} s in all" in cuda.stdout and sum(caps) <= 540
    cpu = _gpu_sh("--cpu", "--dry-run")
    assert (
        cpu.returncode == 0
        and "LINCHAIN_TEST_DEVICE=cpu" in cpu.stdout
        and "--device cpu --dtype fp32 --model tiny" in cpu.stdout
    )
    wrong = _gpu_sh("--gpu")
    assert wrong.returncode == 2 and "unknown argument '--gpu'" in wrong.stderr


@pytest.mark.slow
def test_gpu_script_cpu_smoke(tmp_path):
    """gpu.sh's CPU smoke run (~40 s on 2 cores): every step runs and writes its few files."""
    proc = _gpu_sh("--cpu", env={"OUT": str(tmp_path), "GPU_WHEELS": str(tmp_path / "none")}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "speed.json",
        "speed.log",
        "tests.log",
        "tests.xml",
        "versions.txt",
    ]
    versions = (tmp_path / "versions.txt").read_text()
    for line in (
        "python ",
        "torch ",
        "transformers ",
        "peft ",
        "device cpu",
        "requirements of transformers, peft: all met",
    ):
        assert line in versions, versions
    assert str(ROOT / "src" / "linchain") in versions  # imported from src/, not from an installed copy
    ET.parse(tmp_path / "tests.xml")
    runs = json.loads((tmp_path / "speed.json").read_text())["runs"]
    assert list(runs) == ["tiny-cpu"] and runs["tiny-cpu"]["machine"]["device"] == "cpu"
    assert [r["name"] for r in runs["tiny-cpu"]["training"]][:2] == ["floor", "peft-lora"]


def test_gpu_script_profile_mode_cpu_smoke(tmp_path):
    """gpu.sh --profile (a second device call): profile_step.py's tables per row, the rows named in order."""
    proc = _gpu_sh("--cpu", "--profile", env={"OUT": str(tmp_path), "GPU_WHEELS": str(tmp_path / "none")}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.log", "profile.txt", "versions.txt"]
    heads = [
        line.split(":")[0] for line in (tmp_path / "profile.txt").read_text().splitlines() if line.startswith("## ")
    ]
    assert heads == ["## floor", "## peft-lora", "## linchain-k0", "## linchain-k3"]
    assert "aten ops and 0 kernels a step" in (tmp_path / "profile.txt").read_text()
    plan = _gpu_sh("--cuda", "--profile", "--dry-run")
    assert plan.returncode == 0 and "benchmarks/profile_step.py" in plan.stdout
