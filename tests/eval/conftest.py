"""Evaluation tests run tiny models: one intra-op thread is faster than two for such small
tensors, and much faster when the machine is shared (two spinning threads on a busy core)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
