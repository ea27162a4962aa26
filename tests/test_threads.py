"""The default CPU thread count follows the idle cores (linchain.threads)."""

from __future__ import annotations

import pytest
import torch

from linchain import threads


@pytest.mark.parametrize("busy, cpus, expected", [(0.0, 2, 2), (1.0, 2, 1), (1.6, 2, 1), (5.0, 2, 1), (2.2, 8, 6), (None, 2, 2)])
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
