"""The saved adapter every table of these tests reads, and fixtures shared with other test folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from linchain import LinChainConfig

from ..nlu.test_seq_cls import encoder_dir  # noqa: F401  (the NLU tests' offline encoder, a fixture)


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A saved LinChain adapter (random non-zero factors, k = 1, r = 2 on q_proj and v_proj) inside a
    run folder that holds a train_config.yaml and a metrics.jsonl, as a run leaves them."""
    torch.manual_seed(0)
    cfg = LinChainConfig(r=2, alpha=4, num_mixers=1, init_weights=False, target_modules=["q_proj", "v_proj"])
    run = tmp_path_factory.mktemp("run")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg).save_pretrained(run / "adapter")
    (run / "train_config.yaml").write_text("r: 2\n")
    (run / "metrics.jsonl").write_text("{}\n")
    return run / "adapter"
