"""Flags that reached HF's Trainer and failed there (a traceback after the model loaded) or did nothing
at all are refused when the command line is parsed, in one line naming the flag and the value.

Every test parses only (``parse_args``, or :func:`run_command` around it for the printed line): nothing
here loads a model or trains."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from linchain.cli.args import run_command
from linchain.cli.train import PROG, parse_args


def refusal(flags: list[str], tmp_path) -> str:
    """The one line ``linchain train`` prints for ``flags`` (parsing only), asserting the exit status 2."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = run_command(PROG, lambda: parse_args(["--output_dir", str(tmp_path / "o"), *flags]) and 0)
    lines = err.getvalue().strip().splitlines()
    assert status == 2, f"accepted: {flags}"
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), lines
    assert not (tmp_path / "o").exists()
    return lines[0]


# ----------------------------------------------------------------------------------- --lr_scheduler_kwargs
def test_scheduler_kwargs_the_schedule_does_not_take_are_refused_naming_both_flags(tmp_path):
    """Was: TypeError traceback from get_cosine_schedule_with_warmup() inside the Trainer."""
    line = refusal(["--lr_scheduler_kwargs", '{"foo": 1}', "--lr_scheduler_type", "cosine"], tmp_path)
    assert "--lr_scheduler_kwargs" in line and "--lr_scheduler_type cosine" in line
    assert "'foo'" in line and "num_cycles" in line  # the keyword refused and the ones it takes
    # keywords a schedule takes are kept (and reach the Trainer as a mapping)
    for name, kwargs in (("cosine", {"num_cycles": 0.25}), ("reduce_lr_on_plateau", {"factor": 0.5})):
        flags = ["--output_dir", "o", "--lr_scheduler_type", name, "--lr_scheduler_kwargs", json.dumps(kwargs)]
        assert parse_args(flags)[2].lr_scheduler_kwargs == kwargs


@pytest.mark.parametrize("value", ["notjson", "[1, 2]", "{bad", "3"])
def test_scheduler_kwargs_that_are_no_json_object_are_refused(value, tmp_path):
    """Was: 'TypeError: argument after ** must be a mapping, not str' (or a bare JSONDecodeError)."""
    line = refusal(["--lr_scheduler_kwargs", value], tmp_path)
    assert f"--lr_scheduler_kwargs={value!r}: not a JSON object" in line


def test_scheduler_kwargs_for_a_constant_schedule_are_refused_not_dropped(tmp_path):
    line = refusal(["--lr_scheduler_kwargs", '{"num_cycles": 2}', "--lr_scheduler_type", "constant"], tmp_path)
    assert "--lr_scheduler_type constant" in line and "would be ignored" in line


def test_a_schedule_missing_its_keywords_is_refused(tmp_path):
    line = refusal(["--lr_scheduler_type", "cosine_with_min_lr"], tmp_path)
    assert "--lr_scheduler_type cosine_with_min_lr" in line and "min_lr_rate" in line
    flags = ["--lr_scheduler_type", "cosine_with_min_lr", "--lr_scheduler_kwargs", '{"min_lr_rate": 0.1}']
    assert parse_args(["--output_dir", "o", *flags])[2].lr_scheduler_kwargs == {"min_lr_rate": 0.1}


# ------------------------------------------------------------------------------------------ --label_names
@pytest.mark.parametrize("names", [["foo"], ["labels", "foo"]])
def test_label_names_other_than_labels_are_refused(names, tmp_path):
    """Was: KeyError: 'eval_loss' after training (linchain's collator always gives 'labels')."""
    line = refusal(["--label_names", *names], tmp_path)
    assert f"--label_names={' '.join(names)!r}" in line and "labels" in line
    assert parse_args(["--output_dir", "o", "--label_names", "labels"])[2].label_names == ["labels"]


# -------------------------------------------------------------------------------- --report_to and --optim
@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_an_integration_not_installed_is_refused(tmp_path):
    """Was: RuntimeError traceback from WandbCallback after the model loaded."""
    line = refusal(["--report_to", "wandb"], tmp_path)
    assert "--report_to wandb: wandb is not installed (pip install wandb)" in line and "--report_to none" in line


def test_report_to_an_unknown_integration_is_refused_with_the_valid_ones(tmp_path):
    line = refusal(["--report_to", "wandbb"], tmp_path)
    assert "--report_to wandbb: not a logging integration" in line and "tensorboard" in line


@pytest.mark.parametrize("optim, package", [("galore_adamw", "galore_torch"), ("lomo", "lomo_optim")])
def test_optim_whose_package_is_missing_is_refused(optim, package, tmp_path):
    """Was: ImportError traceback from the Trainer's create_optimizer after the model loaded."""
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    line = refusal(["--optim", optim], tmp_path)
    assert f"--optim {optim}: " in line and package in line and "choose another --optim" in line


@pytest.mark.parametrize("value", ["garbage", "momentum=0.9,nesterov", "a=b=c"])
def test_optim_args_not_key_value_pairs_are_refused_naming_the_flag(value, tmp_path):
    """Was: 'not enough values to unpack (expected 2, got 1)' naming no flag."""
    line = refusal(["--optim_args", value, "--optim", "adamw_torch"], tmp_path)
    assert f"--optim_args={value!r}: expected key=value pairs" in line


def test_optim_args_the_optimizer_cannot_read_are_refused(tmp_path):
    line = refusal(["--optim", "sgd", "--optim_args", "momentum=fast"], tmp_path)
    assert "--optim sgd with --optim_args='momentum=fast'" in line and "'fast'" in line
    args = parse_args(["--output_dir", "o", "--optim", "sgd", "--optim_args", "momentum=0.9,nesterov=true"])[2]
    assert args.optim == "sgd" and args.optim_args == "momentum=0.9,nesterov=true"


# ------------------------------------------------------------------------------------------------ --fp16
def test_fp16_without_a_gpu_is_refused(monkeypatch, tmp_path):
    """Was: accepted, trained in float32 and recorded fp16: true in train_config.yaml."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    if getattr(torch, "xpu", None) is not None:
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    line = refusal(["--fp16", "true"], tmp_path)
    assert "--fp16 true needs a GPU" in line and "on the CPU use --bf16 true" in line


def test_fp16_with_use_cpu_is_refused(tmp_path):
    line = refusal(["--fp16", "true", "--use_cpu", "true"], tmp_path)
    assert "--fp16 true needs a GPU (--use_cpu true" in line


# ------------------------------------------------------------------------- errors name flags, not fields
@pytest.mark.parametrize(
    "flags, flag, field",
    [
        (["--r", "-5"], "--r=-5: ", "ModelArguments.r"),
        (["--num_threads", "0"], "--num_threads=0: ", "LinChainTrainingArguments.num_threads"),
        (["--cutoff_len", "5"], "--cutoff_len=5: ", "DataArguments.cutoff_len"),
        (["--method", "vera"], "--method='vera': ", "ModelArguments.method"),
    ],
)
def test_command_line_errors_name_the_flag_not_the_dataclass_field(flags, flag, field, tmp_path):
    line = refusal(flags, tmp_path)
    assert flag in line and field not in line and "Arguments." not in line


def test_data_none_from_a_config_file_names_the_flag(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: null\n")
    line = refusal(["--config", str(config)], tmp_path)
    assert "--data=None: " in line and "DataArguments" not in line
