"""The one argument layer every command uses (linchain.cli.args): --config under flags, repeated
flags, positionals, --task_type, no prefix matching, one-line errors; and the package's layering."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest
import yaml

import linchain
from linchain.cli.args import UsageError, parse, pop_task_type, run_command
from linchain.cli.main import COMMANDS
from linchain.cli.main import main as cli
from linchain.threads import THREADS_HELP


@dataclass
class Opts:
    src: str = field(metadata={"help": "source"})
    dst: Optional[str] = field(default=None, metadata={"help": "destination"})
    data: List[str] = field(default_factory=list, metadata={"help": "specs"})
    max_steps: int = field(default=3, metadata={"help": "steps"})
    flag: bool = field(default=False, metadata={"help": "a switch"})

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"Opts.max_steps={self.max_steps}: must be >= 1")


def test_config_file_is_overridden_by_flags_and_lists_repeat(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"src": "a", "max_steps": 7, "data": ["x"]}))
    (o,) = parse(["--config", str(cfg), "--max_steps", "9"], (Opts,), "prog")
    assert (o.src, o.max_steps, o.data) == ("a", 9, ["x"])
    (o,) = parse(["--src", "s", "--data", "a", "--max_steps=2", "--data", "b", "c", "--data=d"], (Opts,), "prog")
    assert o.data == ["a", "b", "c", "d"] and o.max_steps == 2


def test_positionals_in_any_place_among_flags():
    (o,) = parse(["S", "--flag", "D", "--max_steps", "4"], (Opts,), "prog", positional=("src", "dst"))
    assert (o.src, o.dst, o.flag, o.max_steps) == ("S", "D", True, 4)
    (o,) = parse(["--flag", "false", "S"], (Opts,), "prog", positional=("src", "dst"))
    assert (o.src, o.dst, o.flag) == ("S", None, False)
    with pytest.raises(UsageError, match="unexpected argument"):
        parse(["S", "D", "E"], (Opts,), "prog", positional=("src", "dst"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--src", "s", "--max_step", "2"],
            "unknown option --max_step; did you mean --max_steps?",
        ),  # no prefix matching
        (["--src", "s", "--zzz"], "unknown option --zzz; see prog --help"),
        (["--src", "s", "--max_steps", "x"], "invalid int value: 'x'"),
        (["--src", "s", "--max_steps", "0"], "Opts.max_steps=0: must be >= 1"),
        (["--src", "s", "--config"], "--config needs a FILE.yaml"),
    ],
)
def test_errors_name_the_flag(argv, message):
    with pytest.raises(ValueError) as err:
        parse(argv, (Opts,), "prog")
    assert message in str(err.value)


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="bad.yaml: expected a mapping"):
        parse(["--config", str(bad)], (Opts,), "prog")
    bad.write_text(yaml.safe_dump({"src": "a", "stepz": 1}))
    with pytest.raises(UsageError, match=r"unknown option\(s\) \['stepz'\]"):
        parse(["--config", str(bad)], (Opts,), "prog")


@pytest.mark.parametrize(
    "config, message",
    [
        ("src: a\nmax_steps: 2.7\n", "max_steps: 2.7 is not an integer"),
        ("src: a\nmax_steps: true\n", "max_steps: True is not an integer"),
        ("src: [1]\n", "src: [1] is not a single value"),
        ("src: a\ndata: {x: 1}\n", "data: {'x': 1} is not a single value or a list"),
        ("src: a\ndata: [[1]]\n", "data: [[1]] is not a list of values"),
        ("src: a\nflag: maybe\n", "flag: 'maybe' is not true or false"),
    ],
)
def test_config_values_of_the_wrong_type_name_key_and_value(config, message, tmp_path):
    """Break-it check (issue 17): `data: 5`, `adapter: [1]`, `max_steps: 2.7` in --config were tracebacks
    (argparse converts only string defaults, so YAML values reached the settings as they were)."""
    path = tmp_path / "c.yaml"
    path.write_text(config)
    with pytest.raises(UsageError, match=re.escape(f"--config {path}: {message}")):
        parse(["--config", str(path)], (Opts,), "prog")


def test_config_values_convert_as_flags_would(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("src: 5\ndata: x\nmax_steps: '4'\nflag: true\n")  # a number for a string, one item for a list
    (o,) = parse(["--config", str(path)], (Opts,), "prog")
    assert (o.src, o.data, o.max_steps, o.flag) == ("5", ["x"], 4, True)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("[q_proj, v_proj]", "q_proj,v_proj"),
        ("['q_proj ', up_proj]", "q_proj,up_proj"),
        ("q_proj,v_proj", "q_proj,v_proj"),
        ("[]", "refused"),
        ("[q_proj, 3]", "refused"),
        ("['a,b', c]", "refused"),
    ],
)
def test_config_takes_target_modules_as_a_yaml_list(value, expected, tmp_path):
    """Found by issue 21's break-it check: `target_modules: [q_proj, v_proj]` (PEFT's own form) was
    refused as "not a single value". A list of names is the comma-separated value; a list that is not
    one (empty, a number, a name holding a comma) is refused naming the key."""
    from linchain.cli.train import parse_args

    path = tmp_path / "c.yaml"
    path.write_text(f"target_modules: {value}\n")
    if expected == "refused":
        with pytest.raises(UsageError, match="target_modules: .* is not a comma-separated string or a list of names"):
            parse_args(["--config", str(path), "--output_dir", str(tmp_path / "o")])
        return
    model_args, _, _ = parse_args(["--config", str(path), "--output_dir", str(tmp_path / "o")])
    assert model_args.target_modules == expected


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], ("causal_lm", [])),
        (["--task_type", "seq_cls", "--r", "2"], ("seq_cls", ["--r", "2"])),
        (["--r", "2", "--task_type=causal_lm"], ("causal_lm", ["--r", "2"])),
    ],
)
def test_task_type_both_spellings(argv, expected):
    assert pop_task_type(argv, "prog") == expected


def test_task_type_invalid():
    with pytest.raises(UsageError, match="--task_type='tok' is not valid; use causal_lm or seq_cls"):
        pop_task_type(["--task_type=tok"], "prog")


def test_run_command_prints_one_line(capsys, monkeypatch):
    def body():
        raise ValueError("--r=0: must be >= 1")

    monkeypatch.delenv("LINCHAIN_TRACEBACK", raising=False)
    assert run_command("linchain x", body) == 2
    assert capsys.readouterr().err == "linchain x: error: --r=0: must be >= 1\n"
    monkeypatch.setenv("LINCHAIN_TRACEBACK", "1")
    with pytest.raises(ValueError):
        run_command("linchain x", body)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_task_type_equals_form_accepted_by_train_and_eval(command, capsys):
    # --task_type=X used to work for train only; a bad value is now the same one-line error for both
    assert cli([command, "--task_type=token_cls"]) == 2
    assert "--task_type='token_cls' is not valid" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_a_typo_with_a_suggestion(command, capsys):
    typo = {"analyze": "--outt", "export-lora": "--afine"}.get(command, "--output_dirr")
    assert cli([command, typo, "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean" in err[0], err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_num_threads_with_the_same_help(command, capsys):
    # every command computes with torch: --num_threads is one flag with one help text everywhere
    with pytest.raises(SystemExit):
        cli([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--num_threads NUM_THREADS" in out and " ".join(THREADS_HELP.split()) in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_each_option_once_and_the_positional_form(command, capsys):
    """Issue 19 item 9: `export-lora SRC DST` / `analyze A B` as the README writes them head the usage;
    no option string twice (analyze listed --max-sv twice); a --no_X flag says what it does."""
    import re

    with pytest.raises(SystemExit):
        cli([command, "--help"])
    out = capsys.readouterr().out
    usage, _, options = out.partition("options:")
    for line in options.splitlines():
        flags = re.findall(r"(--[\w-]+)", line.split("  ")[1] if line.startswith("  --") else "")
        assert len(flags) == len(set(flags)), line
    for flag, text in re.findall(r"\n  (--no_\w+)[^\n]*\n\s+([^\n]+)", options):
        if f"\n  --{flag[5:]} " in options:  # the negation HfArgumentParser adds to a True-by-default flag
            assert text.startswith("The opposite of --"), (flag, text)
    positional = {
        "analyze": "linchain analyze ADAPTER [ADAPTER2] [options]",
        "export-lora": "linchain export-lora SRC DST [options]",
    }
    if command in positional:
        assert usage.startswith(f"usage: {positional[command]}"), usage


@pytest.mark.parametrize(
    "argv", [["analyze", "a"], ["merge", "--adapter", "a", "--output_dir", "o"], ["export-lora", "a", "b"]]
)
def test_num_threads_below_one_is_refused_in_one_line(argv, capsys):
    assert cli([*argv, "--num_threads", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"linchain {argv[0]}: error: --num_threads=0: must be >= 1 (or left unset)."]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_num_threads_beyond_the_machine_is_refused_before_any_work(command, capsys):
    """Found by the break-it check: --num_threads 99999 reached torch.set_num_threads, which segfaults."""
    argv = {
        "analyze": ["a"],
        "merge": ["--adapter", "a", "--output_dir", "o"],
        "export-lora": ["a", "b"],
        "eval": ["--model_name_or_path", "m", "--data", "d.json"],
        "compare": ["--eval_data", "e.json"],
    }.get(command, [])
    assert cli([command, *argv, "--num_threads", "99999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_threads=99999: more than this machine can use" in err[0], err


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by a source file (relative imports resolved)."""
    package = ".".join(path.relative_to(Path(linchain.__file__).parent.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            names |= {module} | {f"{module}.{a.name}" for a in node.names}
    return names


def test_no_library_module_imports_the_cli():
    root = Path(linchain.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")  # __main__ is `python -m linchain`
        if "cli" not in p.relative_to(root).parts
        and p.name != "__main__.py"
        and any(n.startswith("linchain.cli") for n in _imports(p))
    ]
    assert offenders == []


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_the_command_list_loads_neither_torch_nor_peft(argv):
    """Issue 19 item 9: `linchain --help` took ~7 s importing torch to print the list of commands."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "linchain", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: linchain COMMAND"), proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "linchain" in imported and not imported & {"torch", "peft", "transformers"}, sorted(imported)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_task_type_is_in_help(command, capsys):
    """Issue 21: --task_type was popped before parsing and never showed in --help."""
    with pytest.raises(SystemExit):
        cli([command, "--help"])
    out = capsys.readouterr().out
    assert "--task_type {causal_lm,seq_cls}" in out and "seq_cls: sequence classification" in out


def test_help_into_a_pipe_closed_early_is_quiet():
    """`linchain --help | head -1` ended in a BrokenPipeError traceback (here the reader is gone before
    the command writes, every time)."""
    import subprocess
    import sys

    code = "import sys; from linchain.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away at once
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--target_modules", "q_proj", "--target_modules", "v_proj"], "--target_modules is given twice"),
        (["train", "--task_type", "seq_cls", "--data", "a.csv", "--data", "b.csv"], "--data is given twice"),
        (["compare", "--target_modules", "q_proj", "--target_modules", "v_proj"], "--target_modules is given twice"),
    ],
)
def test_a_repeated_one_value_list_flag_is_refused(argv, message, capsys, tmp_path):
    """Found by break-it: argparse kept the last --target_modules, so two of them adapted the second alone."""
    assert cli([*argv, "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_scalar_flag_given_twice_keeps_the_last_as_argparse_does():
    """Scripts override a shared set of flags by repeating one: that stays argparse's "last wins"."""
    from linchain.train.args import DataArguments, LinChainTrainingArguments, ModelArguments

    model, _, train = parse(
        ["--r", "4", "--r", "8", "--max_steps", "2", "--max_steps", "3"],
        (ModelArguments, DataArguments, LinChainTrainingArguments),
        "linchain train",
    )
    assert model.r == 8 and train.max_steps == 3


@pytest.mark.parametrize("value", ["seq_cls", "bogus"])
def test_a_config_task_type_other_than_the_commands_is_refused(value, tmp_path, capsys):
    """Found by break-it: task_type in a --config file was ignored (a causal run trained)."""
    config = tmp_path / "c.yaml"
    config.write_text(f"task_type: {value}\n")
    assert cli(["train", "--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"task_type '{value}' differs from this command's causal_lm" in err and "--task_type" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_an_option_given_as_a_flags_value(command, tmp_path, monkeypatch, capsys):
    """Break-it leftover: `--dst=--overwrite` made a folder named --overwrite (the user meant the option)."""
    monkeypatch.chdir(tmp_path)
    assert cli([command, "--num_threads=--help"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the value of --num_threads is the option --help" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_export_lora_dst_given_an_option_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["export-lora", "src", "--dst=--overwrite"]) == 2
    assert "./--overwrite" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
