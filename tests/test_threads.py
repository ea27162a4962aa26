"""The default CPU thread count follows the idle cores, and commands wait passively (linchain.threads)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from linchain import threads


@pytest.mark.parametrize(
    "busy, cpus, expected", [(0.0, 2, 2), (1.0, 2, 1), (1.6, 2, 1), (5.0, 2, 1), (2.2, 8, 6), (None, 2, 2)]
)
def test_default_threads_are_the_idle_cores(busy, cpus, expected, monkeypatch):
    monkeypatch.setattr(threads, "busy_cores", lambda interval=0.25: busy)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cpus)
    assert threads.default_threads(cores=cpus) == expected


def test_busy_cores_reads_the_kernel_counters():
    busy = threads.busy_cores(interval=0.05)
    assert busy is None or 0.0 <= busy <= (threads.os.cpu_count() or 1) + 1e-6


def test_set_threads_explicit_wins_and_auto_says_why(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1, "prog") == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "busy_cores", lambda interval=0.25: 1.0)
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
        assert threads.set_threads(None, "prog") == 1
        assert "prog: 1 of 2 cores are busy with other work: using 1 CPU thread(s)" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------- wait policy
@pytest.mark.parametrize(
    "environ, busy, added",
    [
        ({}, 1.5, {"OMP_WAIT_POLICY": "PASSIVE"}),  # other jobs running: sleep while waiting
        ({}, None, {"OMP_WAIT_POLICY": "PASSIVE"}),  # unknown load counts as busy
        ({}, 0.1, {}),  # an idle machine keeps OpenMP's own (faster) spin
        ({"OMP_WAIT_POLICY": "ACTIVE"}, 1.5, {}),  # the user's choice stays, whatever it is
        ({"GOMP_SPINCOUNT": "100000"}, 1.5, {}),
        ({"KMP_BLOCKTIME": "200"}, 1.5, {}),
        ({"OMP_NUM_THREADS": "1"}, 1.5, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ],
)
def test_passive_wait_when_busy_unless_the_user_set_a_wait_variable(environ, busy, added):
    assert threads.passive_wait_env(environ, busy) == added


@pytest.mark.parametrize(
    "argv, orig_argv, expected",
    [
        (["/venv/bin/linchain", "train"], ["/venv/bin/python", "/venv/bin/linchain", "train"], True),  # console script
        (["-m", "train"], ["python", "-m", "linchain", "train"], True),  # while Python imports the -m module
        (["-m"], ["python", "-u", "-W", "ignore", "-m", "linchain.cli.analyze"], True),  # torchrun's workers add -u
        (["-m"], ["python", "-mlinchain"], True),
        (["-m", "-q"], ["python", "-m", "pytest", "-q"], False),
        (["-m"], ["python", "-m", "linchain_tools"], False),
        (["-c"], ["python", "-c", "import linchain"], False),
        (["train.py"], ["python", "train.py", "-m", "linchain"], False),  # a user's script that imports linchain
        (["/home/u/linchain/run.py"], ["python", "/home/u/linchain/run.py"], False),
    ],
)
def test_command_processes_are_told_apart_from_library_use(argv, orig_argv, expected):
    assert threads.is_command_process(argv, orig_argv) is expected


# sitecustomize runs at start-up: it records OMP_WAIT_POLICY at the moment torch is first imported, then exits
_PROBE = """
import os, sys
class _Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("at torch import:", os.environ.get("OMP_WAIT_POLICY"), flush=True)
            os._exit(0)
sys.meta_path.insert(0, _Probe())
"""


def _launch(tmp_path, argv, **env) -> str:
    (tmp_path / "sitecustomize.py").write_text(_PROBE)
    environ = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), environ.get("PYTHONPATH")]))
    proc = subprocess.run(argv, env={**environ, **env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@contextlib.contextmanager
def _busy_processes(n: int):
    """``n`` busy-looping processes (other jobs on the machine) while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # let them reach the CPU before the command samples the load
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.parametrize("launch", ["console script", "python -m linchain"])
def test_commands_wait_passively_from_before_torch_loads(tmp_path, launch):
    script = Path(sys.executable).with_name("linchain")
    if launch == "console script" and not script.exists():
        pytest.skip(f"no console script beside {sys.executable}")
    argv = [str(script)] if launch == "console script" else [sys.executable, "-m", "linchain"]
    # the decision follows the load when the command starts: busy -> PASSIVE, idle -> OpenMP's default
    assert _launch(tmp_path, [*argv, "analyze", "--help"]) in ("at torch import: PASSIVE", "at torch import: None")
    with _busy_processes(2):
        assert _launch(tmp_path, [*argv, "analyze", "--help"]) == "at torch import: PASSIVE"
    assert _launch(tmp_path, [*argv, "analyze", "--help"], OMP_WAIT_POLICY="ACTIVE") == "at torch import: ACTIVE"
    assert _launch(tmp_path, [*argv, "analyze", "--help"], GOMP_SPINCOUNT="1000") == "at torch import: None"


def test_library_use_leaves_the_wait_policy_alone(tmp_path):
    assert _launch(tmp_path, [sys.executable, "-c", "import linchain"]) == "at torch import: None"
