"""Nothing lost, nothing silent: the first round (issue 11; kept, and changed where issue 17 changed
the rules), as a table: each case runs a real command on a tiny model and checks the exit status,
that stderr ends in ONE line naming the flag, file or value (no traceback), and that nothing the
user did not ask to replace was touched."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from linchain.cli.main import main as cli
from linchain.io import atomic_dir, atomic_write_json
from linchain.outputs import OutputFolder

from ..train.conftest import base_args, make_rows
from .helpers import copy_adapter, error_line, reader_argv, tree


@pytest.fixture
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture
def data(even_data) -> Path:
    return even_data


# ------------------------------------------------------------------------------- data loss
def test_merge_and_export_refuse_a_users_folder_even_with_overwrite(model_dir, adapter, tmp_path, capsys):
    """Issue 17: --overwrite replaces only a folder linchain wrote for the same kind of output."""
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    for overwrite in ([], ["--overwrite"]):
        assert cli(["merge", "--adapter", str(adapter), "--output_dir", str(target), *overwrite]) == 2
        assert "holds files linchain did not write (notes.txt)" in error_line(capsys, "merge")
        assert cli(["export-lora", str(adapter), str(target), *overwrite]) == 2
        assert "holds files linchain did not write (notes.txt)" in error_line(capsys, "export-lora")
    assert (target / "notes.txt").read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["mine"]
    exported = tmp_path / "lora"
    assert cli(["export-lora", str(adapter), str(exported)]) == 0
    assert cli(["export-lora", str(adapter), str(exported)]) == 2  # an earlier export: only with --overwrite
    assert "pass --overwrite" in error_line(capsys, "export-lora")
    assert cli(["export-lora", str(adapter), str(exported), "--overwrite"]) == 0  # asked for: replaced
    assert (exported / "adapter_config.json").exists()


def test_merge_into_the_adapters_own_run_folder_is_refused_even_with_overwrite(adapter, capsys):
    before = sorted(os.listdir(adapter.parent))
    assert cli(["merge", "--adapter", str(adapter.parent), "--output_dir", str(adapter.parent), "--overwrite"]) == 2
    assert "holds the adapter being merged" in error_line(capsys, "merge")
    assert sorted(os.listdir(adapter.parent)) == before


@pytest.mark.parametrize("where", ["the adapter itself", "a folder above it", "a folder inside it"])
def test_export_lora_never_writes_over_its_source_even_with_overwrite(adapter, tmp_path, capsys, where):
    """Found by the break-it check: `export-lora SRC PARENT --overwrite` deleted SRC and its siblings."""
    project = tmp_path / "project"
    src = copy_adapter(adapter, project / "runs" / "a")
    (project / "notes.txt").write_text("keep me")
    dst = {"the adapter itself": src, "a folder above it": project, "a folder inside it": src / "lora"}[where]
    before = tree(project)
    assert cli(["export-lora", str(src), str(dst), "--overwrite"]) == 2
    assert "the adapter being exported" in error_line(capsys, "export-lora")
    assert tree(project) == before


def test_merge_never_writes_over_its_local_base_model(model_dir, adapter, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    src = copy_adapter(adapter, tmp_path / "adapter")
    before = tree(base)
    assert (
        cli(["merge", "--adapter", str(src), "--base_model", str(base), "--output_dir", str(base), "--overwrite"]) == 2
    )
    assert "is the base model" in error_line(capsys, "merge")
    assert tree(base) == before


def test_merge_of_a_base_without_a_tokenizer_saves_the_model_alone(model_dir, adapter, tmp_path, capsys):
    """Found by the break-it check: a base saved without a tokenizer stopped merge with transformers' 6-line error."""
    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (Path(model_dir) / name).exists():
            shutil.copy(Path(model_dir) / name, base / name)
    src = copy_adapter(adapter, tmp_path / "adapter")
    assert cli(["merge", "--adapter", str(src), "--base_model", str(base), "--output_dir", str(tmp_path / "m")]) == 0
    assert "saved without one" in capsys.readouterr().err
    assert (tmp_path / "m" / "model.safetensors").exists()


def test_analyze_refuses_earlier_results_and_the_adapters_folder(adapter, tmp_path, capsys):
    """Found by the break-it check: `analyze --out DIR` replaced DIR/analysis.json without a word."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "analysis.json").write_text("mine")
    for overwrite in ([], ["--overwrite"]):  # a file of yours, even named like analyze's (issue 17's break-it check)
        assert cli(["analyze", str(adapter), "--out", str(out), "--no_plots", *overwrite]) == 2
        assert "holds files linchain did not write (analysis.json)" in error_line(capsys, "analyze")
    assert (out / "analysis.json").read_text() == "mine"
    assert cli(["analyze", str(adapter), "--out", str(adapter), "--overwrite"]) == 2
    assert "is adapter" in error_line(capsys, "analyze")
    ours = tmp_path / "ours"
    assert cli(["analyze", str(adapter), "--out", str(ours), "--no_plots"]) == 0
    assert cli(["analyze", str(adapter), "--out", str(ours), "--no_plots"]) == 2
    assert "pass --overwrite" in error_line(capsys, "analyze")
    assert cli(["analyze", str(adapter), "--out", str(ours), "--no_plots", "--overwrite"]) == 0  # asked for
    assert json.loads((ours / "analysis.json").read_text())["adapters"]


def test_analyze_writes_beside_the_adapter_by_default(adapter, tmp_path, monkeypatch, capsys):
    """Issue 19 item 11: the default --out was ./linchain-analysis, wherever the command ran (a repository root)."""
    monkeypatch.chdir(tmp_path)
    run = adapter.parent  # the fixture's run folder: RUN/adapter
    assert cli(["analyze", str(run), "--no_plots"]) == 0
    assert (run / "analysis" / "analysis.json").is_file() and os.listdir(tmp_path) == []
    bare = copy_adapter(adapter, tmp_path / "mine")
    assert cli(["analyze", str(bare), "--no_plots"]) == 0
    assert (tmp_path / "mine-analysis" / "analysis.json").is_file()
    shutil.rmtree(run / "analysis")


def test_train_refuses_a_folder_with_a_previous_run(model_dir, data, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"loss": 1.0}\n')
    OutputFolder(out, "train").mark("interrupted")  # as a killed run leaves it
    assert cli(["train", *base_args(model_dir, data, out)]) == 2
    assert "pass --resume to continue it, --overwrite to start afresh" in error_line(capsys, "train")
    assert (out / "checkpoint-2").is_dir() and (out / "metrics.jsonl").read_text() == '{"loss": 1.0}\n'


def test_temporary_folders_are_cleaned_and_outputs_get_ordinary_permissions(tmp_path):
    target = tmp_path / "out"
    stale = tmp_path / ".out.tmp-999999999-abc"  # left by a killed process (no such pid)
    stale.mkdir()
    with pytest.raises(SystemExit):  # SIGTERM becomes SystemExit in run_command
        with atomic_dir(target):
            raise SystemExit(143)
    assert os.listdir(tmp_path) == []  # its own temporary folder and the stale one are gone
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("x")
    assert os.listdir(tmp_path) == ["out"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask


# ------------------------------------------------------------------------------- silently wrong
@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("command", ["eval", "eval-merged", "merge", "export-lora", "analyze"])
def test_non_finite_adapters_are_refused_naming_the_layer(command, value, model_dir, adapter, tmp_path, capsys):
    bad = copy_adapter(adapter, tmp_path / "bad", poison=value)
    assert cli(reader_argv(command, bad, model_dir, tmp_path / "out")) == 2
    line = error_line(capsys, command.split("-merged")[0])
    assert "linchain_B" in line and ("NaN" if value == "nan" else "inf") in line
    assert not (tmp_path / "out").exists()


def test_a_diverging_run_stops_with_an_error_and_writes_no_adapter(model_dir, data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", *base_args(model_dir, data, out), "--learning_rate", "1e30", "--max_grad_norm", "0"]) == 2
    line = error_line(capsys, "train")
    assert "training diverged" in line and "Start a new run" in line and "--resume continues" not in line
    assert not (out / "adapter").exists()
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_cutoff_that_cuts_every_answer_is_an_error(model_dir, data, tmp_path, capsys):
    assert cli(["train", *base_args(model_dir, data, tmp_path / "run"), "--cutoff_len", "8"]) == 2
    assert "have no answer token within --cutoff_len=8" in error_line(capsys, "train")


def test_gold_answers_that_can_never_match_are_counted(model_dir, tmp_path, capsys):
    rows = [
        {"instruction": f"Q{i}?", "input": "", "output": a, "answer": a}
        for i, a in enumerate(["true", "maybe", "", "false"])
    ]
    path = tmp_path / "boolq.json"
    path.write_text(json.dumps(rows))
    assert (
        cli(
            [
                "eval",
                "--model_name_or_path",
                str(model_dir),
                "--data",
                str(path),
                "--task",
                "boolq",
                "--scorer",
                "generate",
                "--num_beams",
                "1",
                "--max_new_tokens",
                "2",
                "--output_dir",
                str(tmp_path / "e"),
                "--no_progress",
            ]
        )
        == 0
    )
    assert "2 of 4 gold answers can never match" in capsys.readouterr().err
    assert json.loads((tmp_path / "e" / "results.json").read_text())["tasks"][0]["unmatchable_gold"] == 2


def test_local_base_model_path_is_saved_absolute(model_dir, data, tmp_path, monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    out = tmp_path / "run"
    assert cli(["train", *base_args(Path(model_dir.name), data, out), "--max_steps", "1", "--eval_strategy", "no"]) == 0
    saved = json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(saved).is_absolute() and Path(saved) == model_dir.resolve()


def test_a_run_inside_its_warmup_says_so(model_dir, data, tmp_path, capsys):
    """Break-it check (2026-12-01): --max_steps 1 under the default 4 warm-up steps trained at a rate of 0,
    without a word; a smoke run stays allowed, and says it."""
    out = tmp_path / "run"
    assert cli(["train", *base_args(model_dir, data, out), "--max_steps", "1", "--eval_strategy", "no"]) == 0
    assert "covers all of --max_steps 1: the run never reaches --learning_rate, and its first step trains at 0" in (
        capsys.readouterr().err
    )
    assert (
        cli(["train", *base_args(model_dir, data, tmp_path / "r2"), "--max_steps", "5", "--eval_strategy", "no"]) == 0
    )
    assert "covers all of --max_steps" not in capsys.readouterr().err


def test_strict_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        atomic_write_json(tmp_path / "x.json", {"accuracy": float("nan")})
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------- one line, not a traceback
def _duplicates(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([make_rows(1)[0]] * 40))
    return path


def _folder(tmp_path):
    (tmp_path / "folder").mkdir()
    return tmp_path / "folder"


def _not_utf8(tmp_path):
    (tmp_path / "latin1.json").write_bytes('[{"instruction": "caf\xe9"}]'.encode("latin-1"))
    return tmp_path / "latin1.json"


TRAIN_CASES = {
    "duplicates leave nothing held out": (_duplicates, [], "all 8 held-out rows repeat a training prompt"),
    "a folder as --data": (_folder, [], "not a dataset saved with save_to_disk"),
    "non-UTF-8 data": (_not_utf8, [], "latin1.json: not UTF-8 text"),
    "negative learning rate": (None, ["--learning_rate", "-1"], "--learning_rate=-1.0: must be > 0"),
    "batch size 0": (None, ["--per_device_train_batch_size", "0"], "--per_device_train_batch_size=0: must be > 0"),
    "r larger than a layer": (None, ["--r", "4096"], "r=4096 is larger than layer"),
    "unknown mixer_init": (None, ["--mixer_init", "zeros"], "mixer_init"),
    "targets matching nothing": (None, ["--target_modules", "nope_proj"], "nope_proj"),
    "resume without a checkpoint": (None, ["--resume"], "--resume: no complete checkpoint-N folder"),
    "typo'd flag": (None, ["--learnig_rate", "1"], "unknown option --learnig_rate; did you mean --learning_rate?"),
    "no prefix matching": (None, ["--max_step", "1"], "unknown option --max_step; did you mean --max_steps?"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_user_errors_are_one_line(case, model_dir, data, tmp_path, capsys):
    make, extra, message = TRAIN_CASES[case]
    argv = base_args(model_dir, make(tmp_path) if make else data, tmp_path / "run", *extra)
    if make is _duplicates:
        argv[argv.index("--val_set_size") + 1] = "8"
    assert cli(["train", *argv]) == 2
    line = error_line(capsys, "train")
    assert message in line, line


def test_small_data_gets_a_fitting_default_validation_split(model_dir, tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(make_rows(30)))
    argv = [
        a for a in base_args(model_dir, path, tmp_path / "run", "--max_steps", "1") if a not in ("--val_set_size", "16")
    ]
    assert cli(["train", *argv]) == 0
    assert "holding out 6 of 30 rows" in capsys.readouterr().err


def test_unknown_model_name_is_one_line_without_retries(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        cli(["train", "--model_name_or_path", "tiny-nowhere", "--data", str(data), "--output_dir", str(tmp_path / "r")])
        == 2
    )
    assert "--model_name_or_path tiny-nowhere: not a local folder, not an offline name" in error_line(capsys, "train")


def _truncated(adapter, tmp_path):
    bad = copy_adapter(adapter, tmp_path / "a")
    blob = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(blob[: len(blob) // 2])
    return bad, "adapter_model.safetensors: not a readable safetensors file"


def _corrupt_config(adapter, tmp_path):
    bad = copy_adapter(adapter, tmp_path / "a")
    (bad / "adapter_config.json").write_text('{"peft_type": "LINCHAIN", ')
    return bad, "adapter_config.json: not a valid JSON adapter config"


def _unknown_type(adapter, tmp_path):
    bad = copy_adapter(adapter, tmp_path / "a")
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "NOPE"}))
    return bad, "peft_type='NOPE'"


@pytest.mark.parametrize("make", [_truncated, _corrupt_config, _unknown_type])
@pytest.mark.parametrize("command", ["eval", "merge"])
def test_broken_adapter_folders_are_named(command, make, model_dir, adapter, tmp_path, capsys):
    bad, message = make(adapter, tmp_path)
    assert cli(reader_argv(command, bad, model_dir, tmp_path / "out")) == 2
    assert message in error_line(capsys, command)


@pytest.mark.parametrize("scorer", ["generate", "loglik"])
def test_a_rule_no_gold_answer_can_match_is_refused(model_dir, tmp_path, capsys, scorer):
    """Break-it check (2026-12-01): boolq rows scored with --task ARC-Easy read 0.0% with only a warning,
    although the README says evaluation refuses a rule none of the answers can match."""
    rows = [{"instruction": f"Q{i}?", "input": "", "output": a, "answer": a} for i, a in enumerate(["true", "false"])]
    path = tmp_path / "boolq.json"
    path.write_text(json.dumps(rows))
    argv = ["eval", "--model_name_or_path", str(model_dir), "--data", str(path), "--task", "ARC-Easy"]
    assert cli([*argv, "--scorer", scorer, "--output_dir", str(tmp_path / "e"), "--no_progress"]) == 2
    line = error_line(capsys, "eval")
    assert "none of its 2 gold answers can match the ARC-Easy rule (e.g. row 0: 'true')" in line
    assert "pass the --task of these rows" in line and not (tmp_path / "e").exists()
