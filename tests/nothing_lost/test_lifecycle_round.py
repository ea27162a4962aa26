"""Findings of a break-it round on the adapter lifecycle (save, load, merge, export, analyze) from the
README and the CLI alone: each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from linchain import LinChainConfig
from linchain.cli.main import main as cli
from tests.conftest import tiny_llama

from .helpers import error_line


def _adapter_without_base(folder: Path) -> Path:
    """An adapter saved from a model built from a config: PEFT writes base_model_name_or_path null."""
    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(), LinChainConfig(r=2, alpha=4, num_mixers=1, target_modules=["q_proj"]))
    model.save_pretrained(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] in (None, "")
    return folder


@pytest.mark.parametrize("saved", [None, ""])
def test_merge_without_a_named_base_does_not_take_the_current_folder(saved, tmp_path, monkeypatch, capsys):
    """Before: merge resolved "" to the current folder and merged into whatever model lay there."""
    adapter = _adapter_without_base(tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = saved
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    other = tmp_path / "other_model"
    tiny_llama().save_pretrained(other)
    monkeypatch.chdir(other)
    assert cli(["merge", "--adapter", str(adapter), "--output_dir", str(tmp_path / "merged")]) == 2
    assert "names no base model: pass --base_model" in error_line(capsys, "merge")
    assert not (tmp_path / "merged").exists()


def test_an_empty_model_name_is_refused():
    from linchain.resolve import resolve_model_path

    with pytest.raises(ValueError, match="--base_model: empty"):
        resolve_model_path("  ", "--base_model")


def _lora_norms_as_peft_loads_them(folder: Path) -> dict[str, float]:
    """Each adapted layer's ||delta W||_F from PEFT itself, the adapter loaded back from ``folder``."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_llama(), folder)
    norms = {}
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "scaling", {}):
            with torch.no_grad():
                norms[name] = module.get_delta_weight("default").norm().item()
    return norms


@pytest.mark.parametrize(
    "targets, alpha_pattern",
    [
        (["q_proj"], {r"^model\.layers\.1\.self_attn\.q_proj": 40}),  # a regex anchored at the path's start
        (["q_proj"], {r".*\.1\.self_attn\.q_proj": 40}),
        (["q_proj"], {"proj": 40}),  # not a whole trailing part: PEFT does not apply it
        (["embed_tokens", "q_proj"], {}),  # an embedding's LoRA (lora_embedding_A/B): was skipped
    ],
)
def test_analyze_reads_a_lora_adapter_as_peft_does(targets, alpha_pattern, tmp_path):
    """Before: alpha_pattern keys were matched by suffix, not by PEFT's rule (one layer's norm 5x too
    small, another 4x too large), and embedding LoRA layers were dropped without a word."""
    from peft import LoraConfig

    from linchain.analysis import analyze_adapter

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, alpha_pattern=alpha_pattern, init_lora_weights=False)
    model = get_peft_model(tiny_llama(), config)
    model.save_pretrained(tmp_path / "lora")
    want = _lora_norms_as_peft_loads_them(tmp_path / "lora")
    got = {layer.name: layer.frobenius_norm for layer in analyze_adapter(tmp_path / "lora").layers}
    assert sorted(got) == sorted(want)
    for name, norm in want.items():
        assert got[name] == pytest.approx(norm, rel=1e-5), name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert analyze_adapter(tmp_path / "lora").total_params == trainable


def test_an_output_folder_given_as_a_symlink_is_written_through(tmp_path):
    """Before: the user's link was renamed to a hidden .NAME.tmp-...-old-... beside it and a real folder
    written in its place, its target left empty."""
    adapter = _adapter_without_base(tmp_path / "adapter")
    target = tmp_path / "bigdisk" / "exports"
    target.mkdir(parents=True)
    link = tmp_path / "lora_out"
    link.symlink_to(target, target_is_directory=True)
    assert cli(["export-lora", str(adapter), str(link)]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert (target / "adapter_model.safetensors").exists() and (target / "adapter_config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "bigdisk", "lora_out"]
    assert [p.name for p in target.parent.iterdir()] == ["exports"]  # no lock or temporary left beside it


def test_a_positional_given_twice_is_refused(tmp_path, capsys):
    """Before: `export-lora SRC A --dst B` wrote B and dropped A without a word."""
    adapter = _adapter_without_base(tmp_path / "adapter")
    argv = ["export-lora", str(adapter), str(tmp_path / "A"), "--dst", str(tmp_path / "B")]
    assert cli(argv) == 2
    assert "DST given twice" in error_line(capsys, "export-lora")
    assert not (tmp_path / "A").exists() and not (tmp_path / "B").exists()


def test_merge_errors_name_merges_own_flags(tmp_path, monkeypatch, capsys):
    """--torch_dtype by its flag (was MergeArguments.torch_dtype); an adapter folder given as the base
    in one line (was a 30-line UnboundLocalError from transformers); a saved base path that does not
    resolve names where it came from (was --model_name_or_path, which merge lacks)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = _adapter_without_base(tmp_path / "adapter")
    base = tmp_path / "base"
    tiny_llama().save_pretrained(base)
    out = ["--output_dir", str(tmp_path / "m")]
    assert cli(["merge", "--adapter", str(adapter), "--base_model", str(base), "--torch_dtype", "float64", *out]) == 2
    assert "--torch_dtype 'float64': must be one of" in error_line(capsys, "merge")
    assert cli(["merge", "--adapter", str(adapter), "--base_model", str(adapter), *out]) == 2
    assert "an adapter folder (adapter_config.json), not a model" in error_line(capsys, "merge")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "relative/base"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert cli(["merge", "--adapter", str(adapter), *out]) == 2
    line = error_line(capsys, "merge")
    assert "adapter_config.json's base_model_name_or_path (--base_model) relative/base" in line
    assert not (tmp_path / "m").exists()


def test_export_of_a_bf16_adapter_stays_exact(tmp_path):
    """Before: the folded A' = M_k...M_1 A of a bf16 adapter was stored rounded to bf16, ~1e3 x fp32
    rounding off the adapter it came from. Now it is stored in fp32: loaded by PEFT onto an fp32 base,
    the export and the LinChain adapter agree to fp32 rounding (1e-5 of the logits' scale)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from linchain import export_lora

    model = get_peft_model(
        tiny_llama().to(torch.bfloat16),
        LinChainConfig(r=4, alpha=8, num_mixers=3, target_modules=["q_proj", "v_proj"]),
        autocast_adapter_dtype=False,
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "linchain" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(tmp_path / "chain")
    export_lora(tmp_path / "chain", tmp_path / "lora")
    exported = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    assert {v.dtype for k, v in exported.items() if "lora_A" in k} == {torch.float32}
    x = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        chain = PeftModel.from_pretrained(tiny_llama(), tmp_path / "chain").eval()(x).logits
        lora = PeftModel.from_pretrained(tiny_llama(), tmp_path / "lora").eval()(x).logits
    torch.testing.assert_close(lora, chain, rtol=1e-5, atol=1e-5 * chain.abs().max().item())


def test_ctrl_c_while_a_command_starts_is_one_line(tmp_path):
    """Before: Ctrl-C in a command's first seconds (importing torch, PEFT, transformers) printed a 40-100
    line KeyboardInterrupt traceback. The signal is sent 1 s in, well inside those imports (~3 s+)."""
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "linchain", "export-lora", str(tmp_path / "nothing"), str(tmp_path / "out")]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as an interactive shell starts it
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["linchain: interrupted while starting; nothing was written"]
    assert not (tmp_path / "out").exists()


def test_an_output_inside_a_runs_checkpoint_is_refused(adapter, tmp_path, capsys):
    """An export (or merge, analysis) written into RUN/checkpoint-N would be deleted with that
    checkpoint by the Trainer's rotation (save_total_limit) or replaced by a resume."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(adapter.parent, run)
    (run / "checkpoint-1").mkdir()
    assert cli(["export-lora", str(run / "adapter"), str(run / "checkpoint-1" / "lora")]) == 2
    assert "lies inside the adapter's run's checkpoint checkpoint-1" in error_line(capsys, "export-lora")
    assert not (run / "checkpoint-1" / "lora").exists()
    assert cli(["export-lora", str(run / "adapter"), str(run / "exports" / "lora")]) == 0  # elsewhere in the run


def test_an_output_path_through_a_symlink_and_dotdot_is_the_physical_folder(tmp_path, monkeypatch):
    """LINK/../out, LINK a symlink to far/inner: the output is far/out, as `mkdir LINK/../out` makes it
    (before: the checks and the staging folder disagreed and the write failed with a raw errno)."""
    adapter = _adapter_without_base(tmp_path / "adapter")
    (tmp_path / "far" / "inner").mkdir(parents=True)
    (tmp_path / "jump").symlink_to(tmp_path / "far" / "inner", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert cli(["export-lora", str(adapter), "jump/../out"]) == 0
    assert (tmp_path / "far" / "out" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "out").exists()


def test_an_output_inside_any_training_checkpoint_or_a_symlink_loop_is_refused(adapter, tmp_path, capsys):
    """Another adapter exported into a run's checkpoint-12 was accepted (only the exported adapter's own
    run was checked), as was a Trainer folder's checkpoint-0012; a symlink loop as the output was a
    RuntimeError traceback."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(adapter.parent, run)
    (run / "checkpoint-12").mkdir()
    other = tmp_path / "trainer_out" / "checkpoint-0012"
    other.mkdir(parents=True)
    (other / "trainer_state.json").write_text("{}")
    source = _adapter_without_base(tmp_path / "elsewhere")
    for out in (run / "checkpoint-12" / "y", other / "x"):
        assert cli(["export-lora", str(source), str(out)]) == 2
        assert "lies inside the training checkpoint" in error_line(capsys, "export-lora")
        assert not out.exists()
    (tmp_path / "loopa").symlink_to(tmp_path / "loopb")
    (tmp_path / "loopb").symlink_to(tmp_path / "loopa")
    assert cli(["export-lora", str(source), str(tmp_path / "loopa")]) == 2
    assert "cannot be resolved" in error_line(capsys, "export-lora")
