"""No silent numbers, and eval/compare through the one write path (issue 17), as a table.

Each row runs the real command in-process on the tiny Llama and checks the exit status, that stderr
ends in ONE line naming the flag, file, field or row (no traceback), and what was (not) written.
Every row failed on the code before this change (eval wrote wherever it was told, after scoring;
adapter configs were trusted; NaN scores were results; a rule was guessed from a path prefix).
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from linchain.cli.main import main as cli
from linchain.outputs import OutputFolder

from ..train.conftest import make_rows
from .helpers import error_line, tree


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory) -> Path:
    """A PEFT LoRA adapter (non-zero B) on q_proj and v_proj."""
    torch.manual_seed(0)
    cfg = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("lora") / "lora"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg).save_pretrained(folder)
    return folder


@dataclass
class Ctx:
    """What a row builds its command from."""

    model: Path
    adapter: Path
    lora: Path
    data: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack
    before: Optional[dict] = None

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def eval(
        self, *extra: str, data: Optional[Path] = None, out: Optional[Path] = None, task: Optional[str] = "closed"
    ) -> list[str]:
        """``linchain eval`` on the tiny model, loglik over the closed even/odd answers, 8 rows (``task=None``:
        the rule is inferred)."""
        return [
            "eval",
            "--model_name_or_path",
            str(self.model),
            "--data",
            str(data or self.data),
            "--scorer",
            "loglik",
            "--limit",
            "8",
            "--output_dir",
            str(out or self.out),
            "--no_progress",
            *(["--task", task] if task else []),
            *extra,
        ]

    def edited(
        self,
        name: str,
        config: Optional[dict] = None,
        drop: str = "",
        add: Optional[dict] = None,
        base: Optional[Path] = None,
        scale: Optional[tuple[str, float]] = None,
    ) -> Path:
        """A copy of an adapter with its config fields replaced, tensors whose name holds ``drop`` removed,
        ``add`` tensors added, or every entry of the first tensor named like ``scale[0]`` set to ``scale[1]``."""
        base = base or self.adapter
        folder = self.tmp / name
        folder.mkdir()
        cfg = json.loads((base / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**cfg, **(config or {})}))
        tensors = {
            k: v for k, v in load_file(str(base / "adapter_model.safetensors")).items() if not (drop and drop in k)
        }
        tensors.update(add or {})
        if scale:
            key = next(k for k in sorted(tensors) if scale[0] in k)
            tensors[key] = torch.full_like(tensors[key], scale[1])
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        return folder

    def lock(self, path: Path, kind: str) -> None:
        """Hold ``path``'s lock as another linchain process would, until the row ends."""
        self.stack.enter_context(OutputFolder(path, kind).locked())

    def no_model_load(self) -> None:
        """Loading a model fails the row: a check that belongs before it must come first."""

        def refuse(*args, **kwargs):
            raise AssertionError("a model was loaded before the output folder was checked")

        self.monkeypatch.setattr("linchain.eval.run.load_causal_lm", refuse)


@dataclass
class Case:
    command: str
    argv: Callable[[Ctx], list[str]]
    message: Optional[str] = None  #: in the error line; None: the command succeeds
    rc: int = 2
    setup: Optional[Callable[[Ctx], None]] = None
    check: Optional[Callable[[Ctx], None]] = None  #: after the command


# ------------------------------------------------------------------------------------------ setups
def _earlier_pair(ctx: Ctx) -> None:
    """A finished eval of 8 rows in ctx.out, then a disk that fills up between the two result files
    (the new run scores 4 rows, so new predictions beside old results would show)."""
    assert cli(ctx.eval()) == 0
    ctx.before = tree(ctx.out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    ctx.monkeypatch.setattr("linchain.eval.results.atomic_write_json", full)


def _unchanged(ctx: Ctx) -> None:
    assert tree(ctx.out) == ctx.before


def _a_file(ctx: Ctx) -> None:
    ctx.out.write_text("mine")
    ctx.no_model_load()


def _full_disk(ctx: Ctx) -> None:
    ctx.monkeypatch.setattr("linchain.outputs._free_bytes", lambda folder: 0)
    ctx.no_model_load()


def _user_folder(ctx: Ctx) -> None:
    ctx.out.mkdir()
    (ctx.out / "notes.txt").write_text("keep me")
    ctx.before = tree(ctx.out)


def _a_train_run(ctx: Ctx) -> None:
    (ctx.out / "checkpoint-2").mkdir(parents=True)
    (ctx.out / "metrics.jsonl").write_text('{"loss": 1.0}\n')
    OutputFolder(ctx.out, "train").mark("complete")  # as linchain train leaves it
    ctx.before = tree(ctx.out)


def _project_with_data(ctx: Ctx) -> None:
    (ctx.out / "data").mkdir(parents=True)
    shutil.copy(ctx.data, ctx.out / "data" / "even.json")
    ctx.before = tree(ctx.out)


def _base_copy(ctx: Ctx) -> None:
    shutil.copytree(ctx.model, ctx.out)
    ctx.before = tree(ctx.out)


def _adapter_tree(ctx: Ctx) -> None:
    ctx.before = tree(ctx.adapter.parent)


def _adapter_unchanged(ctx: Ctx) -> None:
    assert tree(ctx.adapter.parent) == ctx.before


def _nothing_written(ctx: Ctx) -> None:
    assert not ctx.out.exists() and not (ctx.tmp / "x").exists()


def _results(ctx: Ctx) -> dict:
    return json.loads((ctx.out / "results.json").read_text())


def _bomb(ctx: Ctx) -> Path:
    """~300 bytes that stand for ~600,000 strings once expanded ("billion laughs", 5 levels: small enough
    that the code before this change survived echoing the expansion), all under a known option (--task)."""
    lines = ["task:", '  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcd", "bcde"):
        lines.append(f"  - &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("  - [" + ",".join(["*e"] * 9) + "]")
    path = ctx.tmp / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _yaml_no(ctx: Ctx) -> Path:
    """``eval_accuracy: no`` unquoted: YAML 1.1 reads it as the boolean false."""
    path = ctx.tmp / "train.yaml"
    path.write_text("eval_accuracy: no\n")
    return path


def _other_study(ctx: Ctx) -> None:
    """A finished study made with other settings (its settings.json and marker as compare writes them)."""
    ctx.out.mkdir()
    (ctx.out / "settings.json").write_text(json.dumps({"model": {"r": 64}}))
    OutputFolder(ctx.out, "compare").mark("complete")
    _snapshot(ctx)


def _snapshot(ctx: Ctx) -> None:
    ctx.before = tree(ctx.out)


def _words_in_gsm8k(ctx: Ctx) -> Path:
    """A gsm8k-named file whose answers are words: the path's number rule can match none of them."""
    path = ctx.tmp / "gsm8k" / "test.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            [
                {"instruction": f"Is {i} even?", "input": "", "output": a, "answer": a}
                for i, a in enumerate(["yes", "no"] * 4)
            ]
        )
    )
    return path


def _free_text(ctx: Ctx) -> Path:
    path = ctx.tmp / "notes.json"
    path.write_text(
        json.dumps(
            [
                {"instruction": f"Say {w}", "input": "", "output": w, "answer": w}
                for w in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
            ]
        )
    )
    return path


def _compare(ctx: Ctx, train: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--model_name_or_path",
        str(ctx.model),
        "--data",
        str(train),
        "--methods",
        "lora",
        "--baseline",
        "lora",
        "--r",
        "2",
        "--alpha",
        "4",
        "--max_steps",
        "1",
        "--warmup_steps",
        "0",  # one step inside the warm-up would train at 0: compare refuses it
        "--per_device_train_batch_size",
        "4",
        "--cutoff_len",
        "48",
        "--output_dir",
        str(ctx.out),
        "--report_to",
        "none",
        "--n_resamples",
        "100",
        *extra,
    ]


def _mystery_train(ctx: Ctx) -> Path:
    """Training rows in a folder whose name tells no task: only --eval_task can."""
    path = ctx.tmp / "mystery" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(make_rows(24)))
    return path


def _broken_test(ctx: Ctx) -> Path:
    """Test rows every scoring step fails on (a row without its output: the loader names it)."""
    path = ctx.tmp / "test.json"
    path.write_text(json.dumps([{"instruction": "Is 2 even?", "answer": "yes"}]))
    return path


def _tables_well_formed(ctx: Ctx) -> None:
    """Every markdown table of report.md has as many cells in each row as in its header; the
    validation rows took the eval task (data/validation-closed.json)."""
    lines = (ctx.out / "report.md").read_text().splitlines()
    tables, current = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert tables
    for table in tables:
        assert len({row.count("|") for row in table}) == 1, table
    assert (ctx.out / "data" / "validation-closed.json").is_file()
    assert json.loads((ctx.out / "report.json").read_text())["failures"]


def _no_settings(ctx: Ctx) -> None:
    assert not (ctx.out / "settings.json").exists()


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- eval through the write path (task 1)
    "eval --overwrite failing between its two files keeps the old pair": Case(
        "eval",
        lambda c: c.eval("--overwrite", "--limit", "4"),
        "No space left on device",
        setup=_earlier_pair,
        check=_unchanged,
    ),
    "eval into a file is refused before the model loads": Case(
        "eval", lambda c: c.eval(), "is a file, not a folder", setup=_a_file
    ),
    "eval onto a full disk is refused before the model loads": Case(
        "eval", lambda c: c.eval(), "MiB free on its disk", setup=_full_disk
    ),
    "eval into a folder of the user's files is refused": Case(
        "eval",
        lambda c: c.eval("--overwrite"),
        "holds files linchain did not write",
        setup=_user_folder,
        check=_unchanged,
    ),
    "eval into a training run's folder is refused": Case(
        "eval",
        lambda c: c.eval("--overwrite"),
        "holds a train output of linchain, not an eval output",
        setup=_a_train_run,
        check=_unchanged,
    ),
    "eval over the adapter it scores is refused": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.adapter), "--overwrite", out=c.adapter),
        "is the adapter",
        setup=_adapter_tree,
        check=_adapter_unchanged,
    ),
    "eval inside the adapter it scores is refused": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.adapter), out=c.adapter / "eval"),
        "lies inside the adapter",
        setup=_adapter_tree,
        check=_adapter_unchanged,
    ),
    "eval over its local base model is refused": Case(
        "eval",
        lambda c: ["eval", "--model_name_or_path", str(c.out), *c.eval("--overwrite")[3:]],
        "is the base model",
        setup=_base_copy,
        check=_unchanged,
    ),
    "eval over a folder holding its data is refused": Case(
        "eval",
        lambda c: c.eval("--overwrite", data=c.out / "data" / "even.json"),
        "holds the data",
        setup=_project_with_data,
        check=_unchanged,
    ),
    "a second eval into a folder being written is refused": Case(
        "eval",
        lambda c: c.eval(),
        "is being written by another linchain process",
        setup=lambda c: c.lock(c.out, "eval"),
    ),
    # ---------------------------------------------------------------- adapter config vs tensors (task 2)
    "eval of LinChain tensors under peft_type LORA": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.edited("a", {"peft_type": "LORA"}))),
        "peft_type='LORA' but adapter_model.safetensors holds LinChain",
        check=_nothing_written,
    ),
    "export-lora of a config whose r is not the tensors'": Case(
        "export-lora",
        lambda c: ["export-lora", str(c.edited("a", {"r": 8})), str(c.tmp / "x")],
        "adapter_config.json: r=8 but the tensors hold rank 2",
        check=_nothing_written,
    ),
    "analyze of a config whose num_mixers is not the tensors'": Case(
        "analyze",
        lambda c: ["analyze", str(c.edited("a", {"num_mixers": 3})), "--out", str(c.tmp / "x"), "--no_plots"],
        "num_mixers=3 but the tensors hold 1 mixer(s)",
        check=_nothing_written,
    ),
    "merge of a config that claims mixer biases the tensors lack": Case(
        "merge",
        lambda c: [
            "merge",
            "--adapter",
            str(c.edited("a", {"mixer_bias": True})),
            "--base_model",
            str(c.model),
            "--output_dir",
            str(c.tmp / "x"),
        ],
        "mixer_bias=True but the tensors hold 0 of 1 mixer bias(es)",
        check=_nothing_written,
    ),
    "eval of a LoRA adapter missing some layers' tensors": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.edited("a", drop="v_proj", base=c.lora))),
        "4 missing",
        check=_nothing_written,
    ),
    # ---------------------------------------------------------------- non-finite logits (task 3)
    "loglik scoring that overflows to NaN names the row": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.edited("a", scale=("v_proj.linchain_B", 3e38)))),
        "even.json row 0: the model's log-probabilities are not finite",
        check=_nothing_written,
    ),
    "generate scoring that overflows to NaN names the row": Case(
        "eval",
        lambda c: c.eval(
            "--adapter",
            str(c.edited("a", scale=("v_proj.linchain_B", 3e38))),
            "--scorer",
            "generate",
            "--num_beams",
            "2",
            "--max_new_tokens",
            "2",
        ),
        "even.json row 0: the model's logits are not finite",
        check=_nothing_written,
    ),
    # ---------------------------------------------------------------- rules from the answers (task 4)
    "reasoning_gym family_relationships is closed-set, loglik works": Case(
        "eval",
        lambda c: c.eval("--limit", "3", data="reasoning_gym:family_relationships:20", task=None),
        check=lambda c: _results(c)["tasks"][0]["task"] == "closed" or pytest.fail(str(_results(c))),
    ),
    "reasoning_gym family_relationships under generate is closed-set, not numbers": Case(
        "eval",
        lambda c: c.eval(
            "--limit",
            "2",
            "--scorer",
            "generate",
            "--num_beams",
            "1",
            "--max_new_tokens",
            "2",
            data="reasoning_gym:family_relationships:20",
            task=None,
        ),
        check=lambda c: (
            (_results(c)["tasks"][0]["task"], _results(c)["tasks"][0]["unmatchable_gold"]) == ("closed", 0)
            or pytest.fail(str(_results(c)))
        ),
    ),
    "a path's rule that can match none of the answers is refused": Case(
        "eval",
        lambda c: c.eval("--scorer", "generate", data=_words_in_gsm8k(c), task=None),
        "none of its gold answers can match the inferred 'gsm8k' rule",
        check=_nothing_written,
    ),
    "free-text answers ask for --task": Case(
        "eval",
        lambda c: c.eval(data=_free_text(c), task=None),
        "cannot infer an answer rule from its 6 gold answers",
        check=_nothing_written,
    ),
    # ---------------------------------------------------------------- compare (tasks 1 and 5)
    "a second compare into a folder being written is refused": Case(
        "compare",
        lambda c: _compare(c, c.data, "--eval_data", str(c.data), "--eval_task", "closed", "--validation_size", "0"),
        "is being written by another linchain process",
        setup=lambda c: c.lock(c.out, "compare"),
    ),
    "compare with a malformed test file is refused before any training": Case(
        "compare",
        lambda c: _compare(
            c, _mystery_train(c), "--eval_data", str(_broken_test(c)), "--eval_task", "closed", "--validation_size", "4"
        ),
        "test.json: row 0: missing field 'output'",
        check=lambda c: not (c.out / "runs").exists() or pytest.fail(str(tree(c.out))),
    ),
    "compare with every test step failed exits non-zero with well-formed tables": Case(
        "compare",
        lambda c: _compare(
            # (--test_unseen_only false: the test rows are read by the scoring steps alone, which then fail)
            c,
            _mystery_train(c),
            "--eval_data",
            str(_broken_test(c)),
            "--eval_task",
            "closed",
            "--validation_size",
            "4",
            "--test_unseen_only",
            "false",
        ),
        "2 step(s) failed",
        rc=1,
        check=_tables_well_formed,
    ),
    "compare names its own --validation_size and writes no settings.json": Case(
        "compare",
        lambda c: _compare(c, c.data, "--eval_data", str(c.data), "--validation_size", "500"),
        "--validation_size=500 leaves no training rows",
        check=_no_settings,
    ),
    "compare into the folder of its training data is refused": Case(
        "compare",
        lambda c: _compare(c, c.out / "data" / "even.json", "--eval_data", str(c.data), "--validation_size", "0"),
        "holds the training data",
        setup=_project_with_data,
        check=_unchanged,
    ),
    "compare with an unknown --eval_task is refused before training": Case(
        "compare",
        lambda c: _compare(c, c.data, "--eval_data", str(c.data), "--eval_task", "boolk", "--validation_size", "0"),
        "--eval_task: unknown task 'boolk'",
        check=lambda c: not c.out.exists() or pytest.fail(str(tree(c.out))),
    ),
    "a compare refused for other settings leaves the study (and its marker) as it was": Case(
        "compare",
        lambda c: _compare(c, c.data, "--eval_data", str(c.data), "--eval_task", "closed", "--validation_size", "0"),
        "holds a comparison made with other settings",
        setup=_other_study,
        check=_unchanged,
    ),
    "compare into an eval's output folder is refused": Case(
        "compare",
        lambda c: _compare(c, c.data, "--eval_data", str(c.data), "--eval_task", "closed", "--validation_size", "0"),
        "holds an eval output of linchain, not a compare output",
        setup=lambda c: (cli(c.eval()) == 0 or pytest.fail()) and _snapshot(c),
        check=_unchanged,
    ),
    # ---------------------------------------------------------------- small (tasks 6 and 7)
    "eval --adapter without a model uses the adapter's base model": Case(
        "eval",
        lambda c: [a for a in c.eval("--adapter", str(c.adapter)) if a not in ("--model_name_or_path", str(c.model))],
        check=lambda c: _results(c)["model"] == str(c.model) or pytest.fail(str(_results(c))),
    ),
    "train --eval_accuracy takes true/false": Case(
        "train",
        lambda c: [
            "train",
            "--model_name_or_path",
            str(c.model),
            "--data",
            str(c.data),
            "--output_dir",
            str(c.out),
            "--max_steps",
            "1",
            "--r",
            "2",
            "--cutoff_len",
            "48",
            "--eval_strategy",
            "no",
            "--report_to",
            "none",
            "--eval_accuracy",
            "false",
            "--disable_tqdm",
            "true",
        ],
    ),
    "train --config with eval_accuracy: no (a YAML boolean) is accepted": Case(
        "train",
        lambda c: [
            "train",
            "--config",
            str(_yaml_no(c)),
            "--model_name_or_path",
            str(c.model),
            "--data",
            str(c.data),
            "--output_dir",
            str(c.out),
            "--max_steps",
            "1",
            "--r",
            "2",
            "--cutoff_len",
            "48",
            "--eval_strategy",
            "no",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ],
    ),
    "a YAML alias bomb in --config is refused in one short line": Case(
        "eval",
        lambda c: [
            "eval",
            "--config",
            str(_bomb(c)),
            "--model_name_or_path",
            str(c.model),
            "--data",
            str(c.data),
            "--output_dir",
            str(c.out),
        ],
        "its YAML aliases (*name) expand to more than 100,000 values",
    ),
    "a 5,000-character value is not echoed whole": Case("eval", lambda c: c.eval(task="x" * 5000), "unknown task 'xxx"),
    # ---------------------------------------------------------------- found by trying (beyond the list)
    "an adapter config with alpha NaN names the field": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.edited("a", {"alpha": float("nan")}))),
        "alpha=nan is not a finite number",
        check=_nothing_written,
    ),
    "an adapter with a tensor no layer takes is refused": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.edited("a", add={"base_model.model.foo.weight": torch.zeros(2)}))),
        "1 unexpected (first: base_model.model.foo.weight)",
        check=_nothing_written,
    ),
    "merge of a LoRA config whose r is not its tensors'": Case(
        "merge",
        lambda c: [
            "merge",
            "--adapter",
            str(c.edited("a", {"r": 4}, base=c.lora)),
            "--base_model",
            str(c.model),
            "--output_dir",
            str(c.tmp / "x"),
        ],
        "adapter_config.json: r=4 but the tensors hold rank 2",
        check=_nothing_written,
    ),
    "a missing --data file is named as missing, not as a task to pass": Case(
        "eval",
        lambda c: c.eval(data=c.tmp / "nosuch.json", task=None),
        "nosuch.json: no such file",
        check=_nothing_written,
    ),
    "--adapter naming the adapter's config file says to give its folder": Case(
        "eval",
        lambda c: c.eval("--adapter", str(c.adapter / "adapter_config.json")),
        "adapter_config.json: a file; give the folder that holds it",
        check=_nothing_written,
    ),
    "eval with an empty --output_dir does not write into the current folder": Case(
        "eval",
        lambda c: c.eval(out=Path("")),
        "is the current folder",
        setup=lambda c: c.monkeypatch.chdir(c.tmp),
        check=lambda c: not (c.tmp / "results.json").exists() or pytest.fail(),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_silent(case, tiny_model_dir, even_data, adapter, lora, tmp_path, monkeypatch, capsys):
    row = CASES[case]
    with contextlib.ExitStack() as stack:
        ctx = Ctx(tiny_model_dir, adapter, lora, even_data, tmp_path, monkeypatch, stack)
        if row.setup:
            row.setup(ctx)
        argv = row.argv(ctx)
        capsys.readouterr()
        rc = cli(argv)
        if row.message is None:
            err = capsys.readouterr().err
            assert rc == 0 and "Traceback" not in err, err
        else:
            assert rc == row.rc
            line = error_line(capsys, row.command)
            assert row.message in line, line
            assert len(line) < 700, f"{len(line)} characters: an echoed value was not bounded"
        if row.check:
            row.check(ctx)
