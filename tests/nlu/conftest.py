"""Tiny models run faster on one intra-op thread (see tests/eval/conftest.py)."""

from tests.eval.conftest import _one_thread  # noqa: F401  (an autouse fixture)
