"""Fixtures shared with other test folders."""

from ..nlu.test_seq_cls import encoder_dir  # noqa: F401  (the NLU tests' offline encoder, a fixture)
