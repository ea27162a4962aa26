"""One resolution of models, adapters, tokenizers and dtypes (linchain.resolve) for every command."""

from __future__ import annotations

import json

import pytest
import torch

from linchain.resolve import (
    OFFLINE_MODELS,
    adapter_base_model,
    find_adapter_dir,
    resolve_model_path,
    tokenizer_source,
    torch_dtype,
)


def test_adapter_folder_or_run_folder(tmp_path):
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    assert find_adapter_dir(adapter) == adapter
    assert find_adapter_dir(tmp_path / "run") == adapter
    assert adapter_base_model(tmp_path / "run" / "adapter") == "/models/base"
    with pytest.raises(FileNotFoundError, match="--adapter .*nope: folder not found"):
        find_adapter_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match="SRC .*: no adapter_config.json there"):
        find_adapter_dir(tmp_path, flag="SRC")


def test_corrupt_adapter_config_names_the_file(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json: not a valid JSON adapter config"):
        adapter_base_model(tmp_path)


def test_tokenizer_from_the_adapter_when_it_has_one(tmp_path):
    assert tokenizer_source(tmp_path, "/base") == "/base"
    assert tokenizer_source(None, "/base") == "/base"
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert tokenizer_source(tmp_path, "/base") == str(tmp_path)


def test_names_and_dtypes(tmp_path, monkeypatch):
    assert set(OFFLINE_MODELS) == {"smollm2", "minilm"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    assert resolve_model_path("local") == str(tmp_path / "local")  # absolute: adapters record it
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: f"/cache/{repo}/{name}")
    assert resolve_model_path("some/hub-id") == "some/hub-id"  # cached hub ids pass unchanged
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="--model_name_or_path some/hub-id: not a local folder.*HF_HUB_OFFLINE"):
        resolve_model_path("some/hub-id")
    assert torch_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="--dtype='fp8': must be one of float32, bfloat16, float16"):
        torch_dtype("fp8", flag="--dtype")
