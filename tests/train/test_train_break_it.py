"""`linchain train` findings of a break-it round (tester given the README and the CLI only): each test
fails on the code before its fix."""

from __future__ import annotations

import json
import shutil

import pytest

from linchain.cli.train import parse_args
from linchain.data import load_examples
from linchain.train import run_training

from .conftest import base_args, make_rows
from .test_train_cli import InterruptAt

SHORT = ["--max_steps", "2", "--save_steps", "2", "--eval_steps", "2"]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", ["missing", "empty_field", "all_held_out_past_cutoff"])
def test_overwrite_with_bad_data_leaves_the_previous_run_as_it_was(bad, tiny_model_dir, even_data, tmp_path):
    """--overwrite removed a finished run, then found --data missing or malformed: the run was lost."""
    out = tmp_path / "run"
    run_training(*parse_args(base_args(tiny_model_dir, even_data, out, *SHORT)))
    before = _files(out)
    data, extra = tmp_path / "bad.json", []
    if bad == "empty_field":
        data.write_text(json.dumps([*make_rows(20), {"instruction": "", "input": "", "output": "yes"}]))
    elif bad == "all_held_out_past_cutoff":  # every row's answer lies past --cutoff_len: a refusal from tokenizing
        data.write_text(json.dumps([{**r, "instruction": "word " * 200 + r["instruction"]} for r in make_rows(40)]))
    with pytest.raises((ValueError, FileNotFoundError)):
        run_training(*parse_args([*base_args(tiny_model_dir, data, out, *SHORT, *extra), "--overwrite"]))
    assert _files(out) == before


def test_resume_refuses_another_file_under_the_same_relative_path(tiny_model_dir, tmp_path, monkeypatch):
    """A relative --data is read from the current folder: resumed from another folder, it trained on another
    file of the same name without a word."""
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir(), other.mkdir()
    (first / "data.json").write_text(json.dumps(make_rows(96, seed=1)))
    (other / "data.json").write_text(json.dumps(make_rows(96, seed=2)))
    monkeypatch.chdir(first)
    flags = base_args(tiny_model_dir, "data.json", first / "run", "--max_steps", "4")
    stopped = run_training(*parse_args(flags), callbacks=[InterruptAt(1)])
    assert stopped.interrupted
    monkeypatch.chdir(other)
    with pytest.raises(ValueError, match=r"--resume: --data data.json \(.*other/data.json\) is not the file"):
        run_training(*parse_args(["--output_dir", str(first / "run"), "--resume"]))
    monkeypatch.chdir(first)  # where it started: the same file, resumed
    assert run_training(*parse_args(["--output_dir", str(first / "run"), "--resume"])).global_step == 4


def test_resume_refuses_a_setting_that_was_unset(tiny_model_dir, even_data, tmp_path):
    """Settings at None are not written to train_config.yaml, so --neftune_noise_alpha 5 resumed without a word."""
    out = tmp_path / "run"
    assert run_training(*parse_args(base_args(tiny_model_dir, even_data, out)), callbacks=[InterruptAt(1)]).interrupted
    with pytest.raises(ValueError, match=r"--neftune_noise_alpha None -> 5\.0"):
        run_training(*parse_args(["--output_dir", str(out), "--resume", "--neftune_noise_alpha", "5"]))


def test_held_out_rows_past_the_cutoff_are_left_out_of_the_validation_loss(tiny_model_dir, tmp_path, capsys):
    """A held-out row whose answer lies past --cutoff_len has no loss: with one held-out row the validation
    loss was NaN (the run failed after training), with several it covered fewer rows without a word."""
    from linchain.train.engine import _datasets, load_tokenizer

    rows = make_rows(6)
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{**rows[0], "instruction": "word " * 200 + rows[0]["instruction"]}, *rows[1:]]))
    examples = load_examples(path)
    data_args = parse_args(["--data", str(path), "--cutoff_len", "64", "--output_dir", str(tmp_path / "o")])[1]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    _, val_set = _datasets(tokenizer, examples[1:], examples[:3], data_args)
    assert len(val_set) == 2
    assert "1 of 3 held-out rows have no answer token within --cutoff_len=64" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"1 of 1 held-out rows .*no validation loss to compute; raise --cutoff_len"):
        _datasets(tokenizer, examples[1:], examples[:1], data_args)


def test_a_resumed_runs_metrics_give_the_whole_runs_train_loss(tiny_model_dir, even_data, tmp_path):
    """The Trainer's end-of-training row of a resumed run gave the mean loss of the steps since the resume
    (0.285 where the summary said 1.094); it now gives the whole run's, as an uninterrupted run's row does."""

    def final_row(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return next(r for r in rows if "train_loss" in r and "loss" not in r)

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run_training(*parse_args(base_args(tiny_model_dir, even_data, straight)))
    assert run_training(*parse_args(base_args(tiny_model_dir, even_data, cut)), callbacks=[InterruptAt(1)]).interrupted
    shutil.rmtree(cut / "checkpoint-4", ignore_errors=True)
    run_training(*parse_args(["--output_dir", str(cut), "--resume"]))
    want, got = final_row(straight), final_row(cut)
    assert got["resumed_from_step"] == 2 and "resumed_from_step" not in want
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
    assert got["train_loss_since_resume"] != pytest.approx(got["train_loss"], rel=1e-6)  # steps 3-4 alone
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["train_loss"] == pytest.approx(got["train_loss"], rel=1e-9)
