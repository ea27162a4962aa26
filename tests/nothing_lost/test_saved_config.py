"""A saved adapter's config is checked once, for every command that reads it (export-lora, analyze,
merge, eval): a missing field or a value LinChainConfig refuses is one line naming the file, never a
KeyError, a silent default or a broken export; and merge refuses a layer whose weight is tied."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaForCausalLM

from linchain import LinChainConfig
from linchain.cli.main import main as cli
from tests.conftest import tiny_llama

from .helpers import copy_adapter, error_line, reader_argv

COMMANDS = ["export-lora", "analyze", "merge", "eval"]


def _edited(adapter: Path, dest: Path, drop: str = "", **values) -> Path:
    """A copy of ``adapter`` whose config lacks ``drop`` and has ``values`` set."""
    folder = copy_adapter(adapter, dest)
    config = json.loads((folder / "adapter_config.json").read_text())
    config.pop(drop, None)
    (folder / "adapter_config.json").write_text(json.dumps({**config, **values}))
    return folder


def _refused(command: str, folder: Path, model_dir: Path, tmp_path: Path, capsys) -> str:
    """Run ``command`` on ``folder``: exit 2, one error line (returned), nothing written."""
    assert cli(reader_argv(command, folder, model_dir, tmp_path / "out")) == 2
    line = error_line(capsys, command)
    assert not (tmp_path / "out").exists()
    return line


# ------------------------------------------------------------------------------- 1. a missing field
@pytest.mark.parametrize("field", ["alpha", "r", "use_rslora"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_config_without_a_field_the_chain_needs_is_refused_naming_it(
    command, field, tiny_model_dir, adapter, tmp_path, capsys
):
    """Before: export-lora and analyze crashed with KeyError: 'alpha'; merge merged with alpha = 8."""
    folder = _edited(adapter, tmp_path / "a", drop=field)
    line = _refused(command, folder, tiny_model_dir, tmp_path, capsys)
    assert f"adapter_config.json lacks '{field}'" in line and str(folder) in line


@pytest.mark.parametrize("field", ["num_mixers", "mixer_bias"])
@pytest.mark.parametrize("command", ["merge", "eval"])
def test_loading_through_peft_names_a_field_it_would_fill_with_a_default(
    command, field, tiny_model_dir, adapter, tmp_path, capsys
):
    """PEFT fills a missing field with LinChainConfig's default, not from the tensors: name the field."""
    folder = _edited(adapter, tmp_path / "a", drop=field)
    assert f"adapter_config.json lacks '{field}'" in _refused(command, folder, tiny_model_dir, tmp_path, capsys)


def test_readers_of_factors_take_the_chain_length_from_the_tensors(adapter, tmp_path):
    """export-lora and analyze read num_mixers from the tensors, so a config without it is no error there."""
    folder = _edited(adapter, tmp_path / "a", drop="num_mixers")
    assert cli(["export-lora", str(folder), str(tmp_path / "lora")]) == 0
    assert cli(["analyze", str(folder), "--out", str(tmp_path / "analysis")]) == 0


# ------------------------------------------------------------------------------- 2. a value LinChainConfig refuses
BAD_VALUES = [
    ({"alpha": -1}, "LinChainConfig.alpha must be a positive finite number, got alpha=-1"),
    ({"r": 2.0}, "LinChainConfig.r must be a positive integer, got r=2.0"),
    ({"use_rslora": "yes"}, "LinChainConfig.use_rslora must be True or False, got use_rslora='yes'"),
    ({"dropout": 2}, "LinChainConfig.dropout must be in [0, 1), got dropout=2"),
    ({"mixer_init": "foo"}, "LinChainConfig.mixer_init must be one of"),
    (
        {"target_modules": ["q_proj"]},
        "target_modules=['q_proj'] does not cover base_model.model.model.layers.0.self_attn.v_proj",
    ),
]


@pytest.mark.parametrize("values, message", BAD_VALUES, ids=[next(iter(v)) for v, _ in BAD_VALUES])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_config_value_linchain_refuses_is_refused_by_every_reader(
    command, values, message, tiny_model_dir, adapter, tmp_path, capsys
):
    """Before: export-lora wrote a LoRA with lora_alpha -1, r 2.0, use_rslora 'yes', ... or one whose
    target_modules left four of five module types out (stock PEFT then loads q_proj alone, silently)."""
    folder = _edited(adapter, tmp_path / "a", **values)
    line = _refused(command, folder, tiny_model_dir, tmp_path, capsys)
    assert f"{folder / 'adapter_config.json'}: " in line and message in line


def test_target_modules_as_a_regex_or_all_linear_is_left_to_the_loader(adapter, tmp_path):
    """Only a list of names can be checked against the tensors without the base model."""
    for name, targets in (("regex", r".*\.(q_proj|v_proj)"), ("all", "all-linear")):
        folder = _edited(adapter, tmp_path / name, target_modules=targets)
        assert cli(["export-lora", str(folder), str(tmp_path / f"{name}-lora")]) == 0


# ------------------------------------------------------------------------------- 3. merging a tied weight
def _tied_base(folder: Path, tied: bool) -> Path:
    """A tiny Llama whose lm_head is (or is not) the embedding's Parameter, with no tokenizer."""
    tiny_llama(tie_word_embeddings=tied).save_pretrained(folder)
    return folder


def _lm_head_adapter(base: Path, folder: Path) -> Path:
    model = LlamaForCausalLM.from_pretrained(base)
    cfg = LinChainConfig(r=2, alpha=4, num_mixers=1, init_weights=False, target_modules=["lm_head"])
    get_peft_model(model, cfg).save_pretrained(folder)
    return folder


def test_merge_refuses_an_adapter_on_a_tied_weight(tmp_path, capsys):
    """Before: merge wrote a model whose embedding had changed with lm_head, and reported success."""
    base = _tied_base(tmp_path / "base", tied=True)
    model = LlamaForCausalLM.from_pretrained(base)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # the premise: one Parameter
    adapter = _lm_head_adapter(base, tmp_path / "adapter")
    before = sorted(os.listdir(tmp_path))
    argv = ["merge", "--adapter", str(adapter), "--base_model", str(base), "--output_dir", str(tmp_path / "m")]
    assert cli(argv) == 2
    line = error_line(capsys, "merge")
    assert "the adapted layer lm_head shares its weight with model.embed_tokens" in line
    assert "keep the adapter unmerged" in line and "train without lm_head" in line
    assert sorted(os.listdir(tmp_path)) == before


def test_merge_of_an_untied_lm_head_still_works(tmp_path):
    base = _tied_base(tmp_path / "base", tied=False)
    adapter = _lm_head_adapter(base, tmp_path / "adapter")
    argv = ["merge", "--adapter", str(adapter), "--base_model", str(base), "--output_dir", str(tmp_path / "m")]
    assert cli(argv) == 0
    assert (tmp_path / "m" / "config.json").exists()


def test_scoring_a_merged_adapter_on_a_tied_weight_is_refused_too(tmp_path):
    """`linchain eval --merge_adapter` merges through the same loader as `linchain merge`."""
    from linchain.loading import load_adapted

    base = _tied_base(tmp_path / "base", tied=True)
    adapter = _lm_head_adapter(base, tmp_path / "adapter")
    with pytest.raises(ValueError, match="the adapted layer lm_head shares its weight with model.embed_tokens"):
        load_adapted(str(base), adapter, torch.float32, merge=True)
    unmerged = load_adapted(str(base), adapter, torch.float32)  # unmerged, the chain is exact: accepted
    assert any("linchain_A" in name for name, _ in unmerged.named_parameters())
