"""Nothing lost by design (issue 17), training runs: ``linchain train`` (and ``--task_type seq_cls``)
write through the one write path, a run knows what it is, resuming never starts from a broken
checkpoint, no secret is written, and bad values are one-line refusals before any model loads.

Each row runs the real CLI in-process on the tiny model and failed on the code before the change."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from linchain.cli.main import main as cli
from linchain.outputs import MARKER, OutputFolder, read_marker

from ..nlu.test_seq_cls import _sentiment_csv
from ..train.conftest import base_args, make_rows
from .helpers import error_line, tree


def _adapter(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _run_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


SIX = ["--max_steps", "6", "--save_total_limit", "3"]  # checkpoints 2, 4, 6


@pytest.fixture(scope="module")
def finished(tiny_model_dir, even_data, tmp_path_factory) -> Path:
    """A finished 4-step run (checkpoints 2 and 4), started as `make demo` starts one: with --overwrite."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 0
    return out


@pytest.fixture(scope="module")
def straight(tiny_model_dir, even_data, tmp_path_factory) -> Path:
    """A finished 6-step run: what a killed and resumed run must end with, bit for bit."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *SIX]) == 0
    return out


def _killed_after_step_4(straight: Path, dest: Path) -> Path:
    """The straight run as a kill after checkpoint-4 leaves it: no checkpoint-6, no outputs, metrics to step 4."""
    run = _run_copy(straight, dest)
    shutil.rmtree(run / "checkpoint-6")
    for name in ("adapter", "summary.json", "summary.txt", "loss_curve.png"):
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in lines if json.loads(line).get("step", 0) <= 4 and "summary" not in line)
    )
    (run / MARKER).write_text(json.dumps({"kind": "train", "status": "writing"}))
    return run


# ------------------------------------------------------------------------ one write path
@pytest.mark.parametrize("resume", [False, True], ids=["new run", "resume"])
def test_a_second_train_into_a_folder_being_written_is_refused_at_once(
    tiny_model_dir, even_data, finished, tmp_path, capsys, resume
):
    out = _run_copy(finished, tmp_path / "run") if resume else tmp_path / "run"
    before = tree(out) if resume else {}
    with OutputFolder(out, "train", resume=resume).locked():  # another `linchain train` (or --resume) is running
        assert cli(["train", *base_args(tiny_model_dir, even_data, out), *(["--resume"] if resume else [])]) == 2
    assert "is being written by another linchain process" in error_line(capsys, "train")
    assert (tree(out) if out.exists() else {}) == before


def test_overwrite_removes_the_old_run_before_a_new_run_that_fails(
    tiny_model_dir, even_data, finished, tmp_path, capsys
):
    """The old adapter and summary never stay beside a failed new run, looking like its result: a run that
    fails once it has begun writing (here the adapter matches no layer) fails in a cleared folder."""
    out = _run_copy(finished, tmp_path / "run")
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--target_modules", "nope", "--overwrite"]) == 2
    assert "nope" in error_line(capsys, "train")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "train_config.yaml"]
    assert read_marker(out)["status"] == "failed"


def test_overwrite_with_malformed_data_keeps_the_old_run(tiny_model_dir, finished, tmp_path, capsys):
    """The data is loaded and checked before --overwrite removes anything: a malformed row is refused, and
    the old run stays whole (break-it check: a typo in --data cost the finished run)."""
    out = _run_copy(finished, tmp_path / "run")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "Is 2 even?", "output": 7}]))  # a malformed row
    assert cli(["train", *base_args(tiny_model_dir, bad, out), "--overwrite"]) == 2
    assert "bad.json" in error_line(capsys, "train")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert read_marker(out)["status"] == "complete"


def test_a_new_run_that_fails_before_saving_leaves_a_new_folder_as_it_was(tiny_model_dir, tmp_path, capsys):
    """Guard: a typo'd data file must not leave a folder that then needs --overwrite."""
    out = tmp_path / "run"
    assert cli(["train", *base_args(tiny_model_dir, tmp_path / "missing.json", out)]) == 2
    error_line(capsys, "train")
    assert not out.exists()


@pytest.mark.parametrize(
    "where", ["holds the data", "inside the base model", "the base model", "an eval output", "the current folder"]
)
def test_train_never_writes_over_or_inside_its_inputs_even_with_overwrite(
    tiny_model_dir, even_data, tmp_path, capsys, monkeypatch, where
):
    model = _run_copy(tiny_model_dir, tmp_path / "model")
    data = tmp_path / "data" / "even.json"
    data.parent.mkdir()
    shutil.copy(even_data, data)
    evals = tmp_path / "eval"
    evals.mkdir()
    (evals / "results.json").write_text("{}")
    (evals / "predictions.jsonl").write_text("")
    monkeypatch.chdir(data.parent)
    out = {
        "holds the data": data.parent,
        "inside the base model": model / "run",
        "the base model": model,
        "an eval output": evals,
        "the current folder": Path("."),
    }[where]
    before = tree(tmp_path)
    assert cli(["train", *base_args(model, data, out), "--overwrite"]) == 2
    assert error_line(capsys, "train").split("error: ")[1].startswith(f"--output_dir {out} ")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("case", ["a file", "read-only", "no space"])
def test_output_folder_problems_are_one_line_before_the_model_loads(
    tiny_model_dir, even_data, tmp_path, capsys, monkeypatch, case
):
    import linchain.outputs

    out = tmp_path / "run"
    if case == "a file":
        out.write_text("notes")
    if case == "read-only":  # we run as root: os.access would say yes
        monkeypatch.setattr(linchain.outputs, "_writable", lambda folder: False)
    if case == "no space":
        monkeypatch.setattr(linchain.outputs, "_free_bytes", lambda folder: 0)
    loaded = []
    monkeypatch.setattr("linchain.train.engine.build_model", lambda *a, **k: loaded.append(1))
    assert cli(["train", *base_args(tiny_model_dir, even_data, out)]) == 2
    line = error_line(capsys, "train")
    assert {"a file": "is a file, not a folder", "read-only": "is not writable", "no space": "MiB free"}[case] in line
    assert not loaded and (out.read_text() == "notes" if case == "a file" else not out.exists())


# ------------------------------------------------------------------------ a run knows what it is
@pytest.mark.parametrize("config", ["saved by the run", "saved by an older linchain (overwrite: true)"])
def test_readme_config_example_never_wipes_the_run_it_came_from(finished, tmp_path, capsys, config):
    """README: `linchain train --config runs/x/train_config.yaml --max_steps 400` after a run in runs/x."""
    out = _run_copy(finished, tmp_path / "run")
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert not {"overwrite", "resume", "logging_dir", "hub_token"} & set(saved)  # never how the run was launched
    path = out / "train_config.yaml"
    saved["output_dir"] = str(out)
    if config != "saved by the run":
        path = tmp_path / "old.yaml"
        path.write_text(yaml.safe_dump({**saved, "overwrite": True, "resume": False}))
    before = tree(out)
    assert cli(["train", "--config", str(path), "--max_steps", "2"]) == 2
    assert "holds a previous run; pass --resume to continue it, --overwrite to start afresh" in error_line(
        capsys, "train"
    )
    assert tree(out) == before
    # the README's form: the same settings into another folder, a new run; the first run untouched
    other = tmp_path / "other"
    assert cli(["train", "--config", str(path), "--output_dir", str(other), "--max_steps", "2"]) == 0
    assert (other / "adapter" / "adapter_model.safetensors").is_file() and tree(out) == before
    assert yaml.safe_load((other / "train_config.yaml").read_text())["learning_rate"] == saved["learning_rate"]


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--learning_rate", "2e-2"], "--learning_rate 0.01 -> 0.02"),
        (["--r", "8", "--alpha", "16"], "--alpha 8.0 -> 16.0; --r 4 -> 8"),
        (["--method", "lora"], "--method 'linchain' -> 'lora'"),
        (["--seed", "1"], "--seed 0 -> 1"),
        (["--max_steps", "8"], "--max_steps 4 -> 8"),
        (["--data", "OTHER"], "--data ["),
    ],
    ids=["learning rate", "r and alpha", "method", "seed", "longer max_steps", "other data"],
)
def test_resume_refuses_changed_settings_naming_each(
    tiny_model_dir, even_data, finished, tmp_path, capsys, flags, named
):
    out = _run_copy(finished, tmp_path / "run")
    if flags[-1] == "OTHER":
        other = tmp_path / "other.json"
        other.write_text(json.dumps(make_rows(96, seed=5)))
        flags = ["--data", str(other)]
    before = tree(out)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *flags, "--resume"]) == 2
    line = error_line(capsys, "train")
    assert f"--resume: {out} was trained with other settings (" in line and named in line, line
    assert "start a new run" in line and ("another learning-rate schedule" in line) == ("--max_steps" in named)
    assert tree(out) == before
    # launch and speed-only flags may change: the finished run is recognised and its outputs rewritten
    assert (
        cli(
            [
                "train",
                *base_args(tiny_model_dir, even_data, out),
                "--resume",
                "--num_threads",
                "1",
                "--logging_steps",
                "2",
                "--disable_tqdm",
                "false",
            ]
        )
        == 0
    )


def test_resume_without_flags_continues_with_the_runs_own_settings(
    tiny_model_dir, even_data, finished, tmp_path, capsys
):
    """Found by the break-it check (issue 21): `linchain train --output_dir RUN --resume` listed every
    setting the run had been given (model, data, rate ...) as "changed" and told the user to drop
    flags they had not given. The run's train_config.yaml now stands in for --config: what is not given
    keeps the run's value, and a flag given with another value is still refused."""
    out = _run_copy(finished, tmp_path / "run")
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert (
        saved["learning_rate"] != 5e-5 and saved["max_steps"] == 4
    )  # not train's defaults: they must come from the run
    assert cli(["train", "--output_dir", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "settings not given on the command line are the run's own" in err and "Traceback" not in err
    assert yaml.safe_load((out / "train_config.yaml").read_text()) == saved
    # a flag given with another value: refused as before, naming it
    before = tree(out)
    assert cli(["train", "--output_dir", str(out), "--resume", "--learning_rate", "0.5"]) == 2
    assert "--learning_rate 0.01 -> 0.5" in error_line(capsys, "train") and tree(out) == before
    # --config given: the user's file, as given (the run's record does not stand in)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"output_dir": str(out)}))
    assert cli(["train", "--config", str(cfg), "--resume"]) == 2
    assert "was trained with other settings" in error_line(capsys, "train") and tree(out) == before


def test_resume_with_an_unreadable_train_config_is_one_line(tiny_model_dir, even_data, finished, tmp_path, capsys):
    out = _run_copy(finished, tmp_path / "run")
    (out / "train_config.yaml").write_text("learning_rate: [0.01\n")
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--resume"]) == 2
    assert "train_config.yaml cannot be read" in error_line(capsys, "train")


@pytest.mark.parametrize(
    "break_it, says",
    [
        ("optimizer.pt truncated", "checkpoint-4 cannot be resumed from (optimizer.pt is truncated"),
        ("adapter truncated", "checkpoint-4 cannot be resumed from (adapter_model.safetensors is truncated"),
        ("trainer_state.json is []", "checkpoint-4 cannot be resumed from (trainer_state.json is not a Trainer state"),
        ("adapter config disagrees with its tensors", "checkpoint-4 cannot be resumed from ("),
        # second break-it check: the Trainer resumed without these, silently, into another run
        ("optimizer.pt missing", "checkpoint-4 cannot be resumed from (no optimizer.pt)"),
        ("rng_state and scheduler missing", "checkpoint-4 cannot be resumed from (no scheduler.pt)"),
        ("metrics.jsonl half-written last line", "dropped 1 malformed line(s)"),
        ("nothing", "resuming from"),
    ],
)
def test_resume_falls_back_past_a_broken_checkpoint_and_summarises_the_whole_run(
    tiny_model_dir, even_data, straight, tmp_path, capsys, break_it, says
):
    run = _killed_after_step_4(straight, tmp_path / "run")
    checkpoint = run / "checkpoint-4"
    if break_it == "optimizer.pt truncated":
        data = (checkpoint / "optimizer.pt").read_bytes()
        (checkpoint / "optimizer.pt").write_bytes(data[: len(data) // 2])
    if break_it == "adapter truncated":
        data = (checkpoint / "adapter_model.safetensors").read_bytes()
        (checkpoint / "adapter_model.safetensors").write_bytes(data[:-100])
    if break_it == "trainer_state.json is []":
        (checkpoint / "trainer_state.json").write_text("[]")
    if break_it == "optimizer.pt missing":
        (checkpoint / "optimizer.pt").unlink()
    if break_it == "rng_state and scheduler missing":
        for name in ("scheduler.pt", "rng_state.pth"):
            (checkpoint / name).unlink()
    if break_it == "adapter config disagrees with its tensors":
        config = json.loads((checkpoint / "adapter_config.json").read_text())
        (checkpoint / "adapter_config.json").write_text(json.dumps({**config, "r": config["r"] * 2}))
    if break_it.startswith("metrics.jsonl"):
        with open(run / "metrics.jsonl", "a") as f:
            f.write('{"loss": 0.51, "st')
    assert cli(["train", *base_args(tiny_model_dir, even_data, run), *SIX, "--resume"]) == 0
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    a, b = _adapter(straight), _adapter(run)
    assert all((a[k] == b[k]).all() for k in a)  # the same run, bit for bit on CPU
    steps = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == [1, 2, 3, 4, 5, 6]
    # the summary covers all 6 steps, not the 2 or 4 trained after the resume
    whole = json.loads((straight / "summary.json").read_text())["train_loss"]
    assert json.loads((run / "summary.json").read_text())["train_loss"] == pytest.approx(whole, abs=1e-3)
    assert read_marker(run)["status"] == "complete"


def test_resume_with_no_intact_checkpoint_is_one_line(tiny_model_dir, even_data, finished, tmp_path, capsys):
    out = _run_copy(finished, tmp_path / "run")
    for checkpoint in out.glob("checkpoint-*"):
        (checkpoint / "trainer_state.json").write_text("[]")
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--resume"]) == 2
    assert "--resume: no complete checkpoint-N folder" in error_line(capsys, "train")


# ------------------------------------------------------------------------ no secret written
def test_hub_token_is_written_nowhere(tiny_model_dir, even_data, tmp_path):
    out = tmp_path / "run"
    assert (
        cli(
            [
                "train",
                *base_args(tiny_model_dir, even_data, out),
                "--max_steps",
                "2",
                "--save_steps",
                "1",
                "--hub_token",
                "hf_SECRETxyz",
            ]
        )
        == 0
    )
    files = tree(out)
    assert "checkpoint-1/training_args.bin" in files
    assert [name for name, data in files.items() if b"hf_SECRETxyz" in data] == []


# ------------------------------------------------------------------------ refusals before any model loads
@pytest.mark.parametrize(
    "flags, named",
    [
        (
            ["--num_train_epochs", "0", "--max_steps", "-1"],
            "--num_train_epochs=0.0 with --max_steps=-1: nothing would be trained",
        ),
        (["--max_steps", "-5"], "--max_steps=-5"),
        (["--alpha", "inf"], "--alpha=inf: must be a finite number"),
        (["--learning_rate", "inf"], "--learning_rate=inf: must be a finite number"),
        (["--weight_decay", "nan"], "--weight_decay=nan: must be a finite number"),
        (["--max_grad_norm", "inf"], "--max_grad_norm=inf: must be a finite number"),
        (["--seed", "-1"], "--seed=-1: must be between 0 and"),
        (["--data_seed", "4294967296"], "--data_seed=4294967296"),
    ],
)
def test_zero_work_and_bad_values_are_refused_naming_the_flag(
    tiny_model_dir, even_data, tmp_path, capsys, flags, named
):
    out = tmp_path / "run"
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *flags]) == 2
    assert named in error_line(capsys, "train")
    assert not out.exists()


# ------------------------------------------------------------------------ sequence classification
def _seq_cls(encoder: str, data: str, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--task_type",
        "seq_cls",
        "--model_name_or_path",
        encoder,
        "--data",
        data,
        "--r",
        "4",
        "--alpha",
        "8",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--output_dir",
        str(out),
        *extra,
    ]


def test_seq_cls_overwrite_removes_the_old_run_before_a_new_run_that_fails(encoder_dir, tmp_path, capsys):
    """A run that fails once it has begun writing (the adapter matches no layer) fails in a cleared folder."""
    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    assert cli(_seq_cls(encoder_dir, data, out)) == 0
    assert read_marker(out)["kind"] == "seq-cls" and read_marker(out)["status"] == "complete"
    capsys.readouterr()
    assert cli(_seq_cls(encoder_dir, data, out, "--overwrite", "--target_modules", "nope")) == 2
    assert "nope" in error_line(capsys, "train")
    assert MARKER in {p.name for p in out.iterdir()} and "adapter_model.safetensors" not in {
        p.name for p in out.iterdir()
    }
    assert read_marker(out)["status"] == "failed"


def test_seq_cls_overwrite_with_bad_data_keeps_the_old_run(encoder_dir, tmp_path, capsys):
    """The data is loaded and checked before --overwrite removes anything."""
    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    assert cli(_seq_cls(encoder_dir, data, out)) == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    bad = tmp_path / "bad.csv"
    bad.write_text("text,other\nthe movie,1\n")  # no label column
    capsys.readouterr()
    assert cli(_seq_cls(encoder_dir, str(bad), out, "--overwrite")) == 2
    assert "bad.csv" in error_line(capsys, "train")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert read_marker(out)["status"] == "complete"


@pytest.mark.parametrize("case", ["being written", "a file", "seed -1", "zero epochs", "the data's folder"])
def test_seq_cls_refusals_are_one_line_before_the_model_loads(encoder_dir, tmp_path, capsys, case):
    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    extra = {"seed -1": ["--seed", "-1"], "zero epochs": ["--num_train_epochs", "0", "--max_steps", "-1"]}.get(case, [])
    if case == "a file":
        out.write_text("notes")
    if case == "the data's folder":
        out, extra = tmp_path, ["--overwrite"]
    before = tree(tmp_path)
    if case == "being written":
        with OutputFolder(out, "seq-cls").locked():
            assert cli(_seq_cls(encoder_dir, data, out)) == 2
    else:
        assert cli(_seq_cls(encoder_dir, data, out, *extra)) == 2
    line = error_line(capsys, "train")
    assert {
        "being written": "is being written by another linchain process",
        "a file": "is a file, not a folder",
        "seed -1": "--seed=-1",
        "zero epochs": "nothing would be trained",
        "the data's folder": "holds the data",
    }[case] in line
    assert tree(tmp_path) == before


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None,
    reason="tensorboard is installed here",
)
def test_report_to_tensorboard_without_tensorboard_is_one_line_before_the_model_loads(
    tiny_model_dir, even_data, tmp_path, capsys
):
    """Found by the break-it check: HF's Trainer raised a RuntimeError traceback after the model loaded."""
    out = tmp_path / "run"
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--report_to", "tensorboard"]) == 2
    assert "--report_to tensorboard: tensorboard is not installed" in error_line(capsys, "train")
    assert not out.exists()


# ------------------------------------------------------------------------ found by the break-it check (issue 17)
def _draft_in_adapter(out: Path) -> None:
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "draft.txt").write_text("thesis draft")


def _own_metrics(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"my": "log"}\n')


@pytest.mark.parametrize("make", [_draft_in_adapter, _own_metrics], ids=["adapter/draft.txt", "metrics.jsonl"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_folder_named_like_a_run_is_not_taken_for_one(make, overwrite, tiny_model_dir, even_data, tmp_path, capsys):
    """A folder was a run by its file names alone: --overwrite deleted draft.txt and replaced metrics.jsonl,
    and without it the refusal said 'holds a previous run; pass ... --overwrite'."""
    out = tmp_path / "run"
    make(out)
    before = tree(out)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *overwrite]) == 2
    assert "holds files linchain did not write" in error_line(capsys, "train")
    assert tree(out) == before


def test_overwrite_stops_at_files_of_yours_inside_the_run(finished, tiny_model_dir, even_data, tmp_path, capsys):
    """--overwrite deleted adapter/NOTES.txt and checkpoint-2/notes.txt with the previous run."""
    out = _run_copy(finished, tmp_path / "run")
    (out / "adapter" / "NOTES.txt").write_text("notes")
    (out / "checkpoint-2" / "notes.txt").write_text("n")
    before = tree(out)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    line = error_line(capsys, "train")
    assert "holds files linchain did not write (adapter/NOTES.txt, checkpoint-2/notes.txt): move them" in line
    assert tree(out) == before


def test_overwrite_stops_at_another_output_inside_the_run(finished, tiny_model_dir, even_data, tmp_path, capsys):
    """train --overwrite deleted RUN/analysis, which `linchain analyze RUN` writes by default."""
    out = _run_copy(finished, tmp_path / "run")
    assert cli(["analyze", str(out), "--no_plots"]) == 0
    before = tree(out)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    assert "holds another output, analysis/ (an analyze output of linchain" in error_line(capsys, "train")
    assert tree(out) == before


def test_a_failed_new_run_does_not_claim_an_overwrite(tiny_model_dir, even_data, tmp_path, capsys):
    """stderr said '--overwrite: removed the previous output's train_config.yaml' without --overwrite."""
    out = tmp_path / "run"
    assert cli(["train", *base_args(tiny_model_dir, even_data, out, "--target_modules", "nope_proj")]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" not in err.replace("pass --overwrite", "") and not out.exists(), err


def test_a_run_from_before_markers_resumes_but_is_never_replaced(finished, tiny_model_dir, even_data, tmp_path, capsys):
    out = _run_copy(finished, tmp_path / "run")
    (out / MARKER).unlink()  # as a linchain without markers left it
    before = tree(out)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    assert "written without a linchain marker" in error_line(capsys, "train")
    assert tree(out) == before
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--resume"]) == 0  # continued: nothing lost
    marker = read_marker(out)
    assert marker["status"] == "complete" and "adapter/adapter_model.safetensors" in marker["files"]


def test_the_summary_loss_after_a_kill_between_logs_is_the_whole_runs(tiny_model_dir, even_data, tmp_path):
    """Break-it check: killed after checkpoint-3 of 6 with a log every 4 steps, the resumed run's summary
    said 5.26 where the run without a kill said 5.59 (the logs miss steps 1-3; the resumed Trainer knows
    only steps 4-6). Each checkpoint now records the run's loss sum."""
    flags = ["--max_steps", "6", "--logging_steps", "4", "--save_steps", "1", "--save_total_limit", "10"]
    straight = tmp_path / "straight"
    assert cli(["train", *base_args(tiny_model_dir, even_data, straight), *flags]) == 0
    run = _run_copy(straight, tmp_path / "killed")
    for name in ("checkpoint-4", "checkpoint-5", "checkpoint-6", "adapter"):
        shutil.rmtree(run / name)
    for name in ("summary.json", "summary.txt", "loss_curve.png"):
        (run / name).unlink()
    (run / "metrics.jsonl").write_text("")  # nothing logged before step 4
    # break-it check (2026-12-01): a resumed run's time was its last call's alone (3 s against 6 s in one call)
    record = json.loads((run / "checkpoint-3" / "linchain_loss.json").read_text())
    assert record["steps"] == 3 and record["loss_sum"] > 0 and record["train_s"] > 0
    (run / "checkpoint-3" / "linchain_loss.json").write_text(json.dumps({**record, "train_s": 1000.0}))
    assert cli(["train", *base_args(tiny_model_dir, even_data, run), *flags, "--resume"]) == 0
    whole = json.loads((straight / "summary.json").read_text())["train_loss"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_loss"] == pytest.approx(whole, rel=1e-5)
    assert summary["train_s_before"] == 1000.0 and 1000.0 < summary["train_s"] < summary["wall_s"]
    assert "1000 s of it before the resume)" in (run / "summary.txt").read_text()


def test_seq_cls_with_logits_that_overflow_is_an_error_not_a_metric(encoder_dir, tmp_path, capsys):
    """Break-it check: a classifier trained at lr 1e30 gave NaN logits, and argmax(NaN) = 0 was scored
    as accuracy 50.00 with exit 0."""
    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    assert cli(_seq_cls(encoder_dir, data, out, "--learning_rate", "1e30")) == 2
    assert "sent.csv row 0: the model's logits are not finite" in error_line(capsys, "train")
    assert not (out / "results.json").exists()


def test_a_run_killed_mid_write_can_be_started_afresh_with_overwrite(tiny_model_dir, even_data, tmp_path, capsys):
    """A kill -9 leaves the marker as the run last wrote it (at its last checkpoint): what the run wrote
    after it is still the run's (newer than the marker), so --overwrite removes it; an unlisted file older
    than the marker is someone else's and stops --overwrite."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    argv = base_args(tiny_model_dir, even_data, out, "--max_steps", "5000", "--save_steps", "2", "--logging_steps", "1")
    code = "import sys; from linchain.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "train", *argv], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        # a second checkpoint (older ones rotate away): the marker has been rewritten at least once
        while len(list(out.glob("checkpoint-*/trainer_state.json"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert read_marker(out)["status"] == "writing"
    listed = set(read_marker(out)["files"])
    assert any(name.endswith("/trainer_state.json") for name in listed)  # rewritten at the checkpoints
    mine = out / "notes.txt"
    mine.write_text("mine")
    os.utime(mine, (0, 0))  # older than the marker: not the killed run's
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    assert "holds files linchain did not write (notes.txt)" in error_line(capsys, "train")
    mine.unlink()
    # break-it check (2026-12-01): files of yours added after the kill are newer than the marker, yet yours:
    # they were removed with the killed run's. Only what a run writes counts as its own, however new.
    checkpoints = sorted(out.glob("checkpoint-*"))
    added = [out / "later.txt", out / "mine" / "results.csv", checkpoints[0] / "notes.txt"]
    for path in added:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    line = error_line(capsys, "train")
    assert "holds files linchain did not write" in line
    assert all(str(p.relative_to(out)) in line for p in added), line
    assert all(p.read_text() == "mine" for p in added)
    for path in added:
        path.unlink()
    (out / "mine").rmdir()
    # killed between making its next checkpoint folder and writing into it (this test failed so on a busy
    # machine: the empty checkpoint-6 stayed, and a Trainer resuming or rotating takes it for the newest);
    # an empty folder older than the marker is not the killed run's and stays
    (out / "checkpoint-9998").mkdir()
    empty_of_mine = out / "empty"
    empty_of_mine.mkdir()
    os.utime(empty_of_mine, (0, 0))
    new_empty_of_mine = out / "new-empty"  # newer than the marker, yet not where a run writes: stays too
    new_empty_of_mine.mkdir()
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 0
    assert read_marker(out)["status"] == "complete" and not (out / "checkpoint-6").exists()
    assert not (out / "checkpoint-9998").exists() and empty_of_mine.is_dir() and new_empty_of_mine.is_dir()


def test_an_overwrite_that_fails_while_clearing_leaves_a_folder_marked_failed(
    finished, tiny_model_dir, even_data, tmp_path, capsys, monkeypatch
):
    """Second break-it check: a file that could not be removed (chattr +i) stopped --overwrite half way,
    and the half-deleted run's marker still said 'complete'."""
    import errno

    import linchain.outputs

    out = _run_copy(finished, tmp_path / "run")
    remove = linchain.outputs.OutputFolder._remove

    def stuck(self, names):
        remove(self, {n for n in names if n.startswith("adapter/")})
        raise PermissionError(errno.EPERM, "Operation not permitted", str(out / "checkpoint-2" / "optimizer.pt"))

    monkeypatch.setattr(linchain.outputs.OutputFolder, "_remove", stuck)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    assert "Operation not permitted" in error_line(capsys, "train")
    marker = read_marker(out)
    assert marker["status"] == "failed" and "Operation not permitted" in marker["error"]
    assert not (out / "adapter" / "adapter_model.safetensors").exists()  # half removed: said so, not 'complete'


def test_a_damaged_marker_is_named_as_damaged(finished, tiny_model_dir, even_data, tmp_path, capsys):
    out = _run_copy(finished, tmp_path / "run")
    (out / MARKER).write_text('{"files": [')
    before = tree(out)
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--overwrite"]) == 2
    assert f"whose marker {MARKER} is damaged" in error_line(capsys, "train")
    assert tree(out) == before


def test_resume_takes_the_same_targets_in_another_order(tiny_model_dir, even_data, finished, tmp_path, capsys):
    """Found by break-it: a --target_modules naming the same layers in another order was refused as changed."""
    out = _run_copy(finished, tmp_path / "run")
    same = ["--target_modules", "down_proj, up_proj,v_proj,k_proj,q_proj"]
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *same, "--resume"]) == 0
    capsys.readouterr()
    fewer = ["--target_modules", "q_proj,v_proj"]
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *fewer, "--resume"]) == 2
    assert "--target_modules 'q_proj,k_proj,v_proj,up_proj,down_proj' -> 'q_proj,v_proj'" in error_line(capsys, "train")


def test_resume_ignores_the_epochs_when_max_steps_decides(tiny_model_dir, even_data, finished, tmp_path, capsys):
    """Found by break-it: --num_train_epochs, which --max_steps overrides, was refused as a changed setting."""
    out = _run_copy(finished, tmp_path / "run")
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--num_train_epochs", "7", "--resume"]) == 0
    capsys.readouterr()
    by_epochs = ["--max_steps", "-1", "--num_train_epochs", "7", "--resume"]
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), *by_epochs]) == 2  # then the length changes
    assert "--max_steps 4 -> -1" in error_line(capsys, "train")
