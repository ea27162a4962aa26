"""The grid of ``linchain compare``: data split, learning-rate sweep, seeds, reuse and resume.

Layout under the output folder::

    data/train.json, data/validation-<task>.json     the training rows and the carved-off validation rows
    settings.json                                    what every run shares (a rerun must match it)
    base/test.json                                   the base model's scores (no fine-tuning)
    runs/<method>/lr<rate>/seed<s>/train/            a ``linchain train`` run folder
                                  /train.json        done marker of the training (losses, params, times)
                                  /validation.json   validation scores (sweep runs)
                                  /test.json         test scores, per row (runs at the chosen rate)

Per method every rate is trained with the first seed and scored on the validation rows; the rate
with the best validation accuracy (ties: the lower final training loss) is chosen and the other
seeds train at it. A step whose marker exists is reused; a training cut short resumes from its
newest complete checkpoint; a failed step is recorded (report.json "failures") and the grid goes
on without it (it is retried on the next call). The steps are planned first (:meth:`Grid.plan`): their
weights make the progress bar's total, and each step advances it by its own weight, whatever its outcome.

A grid can be split across processes that share the output folder (every step is its own file,
written atomically): ``--sweep_only`` stops after the first seed's sweep (one process per method and
rate), a call with all the rates then chooses and runs the seeds, and ``--report_only`` writes the
report from whatever has finished (``benchmarks/gpu_compare.sh``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

from ..io import atomic_write_json
from ..runs import RunFolder
from ..train.args import METHODS, DataArguments, LinChainTrainingArguments, ModelArguments, warmup_covers_every_step
from .args import CompareArguments, float_list, int_list
from .methods import MethodSpec, parse_methods

__all__ = ["Grid", "GridResult", "Status", "Step", "prepare_environment", "run_grid"]

if TYPE_CHECKING:
    from ..outputs import OutputFolder

SETTINGS_FILE = "settings.json"
SPLIT_SEED = 0  # the validation rows are the same for every seed and method
#: The TrainingArguments fields that change what a run learns: a study's runs share them, and a later
#: call must match them. Every other field (speed, logging, saving, the machine, and those transformers
#: adds in later versions) may differ, so a transformers upgrade cannot orphan a saved study. The rate
#: and the seed are set per run by the grid.
RESULT_FIELDS = (
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "warmup_steps",
    "warmup_ratio",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "weight_decay",
    "max_grad_norm",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "optim",
    "optim_args",
    "bf16",
    "fp16",
    "label_smoothing_factor",
    "neftune_noise_alpha",
    "train_sampling_strategy",
    "dataloader_drop_last",
    "average_tokens_across_devices",
    "full_determinism",
)


#: eval settings added after studies were made, with the value those studies used
_EVAL_DEFAULTS = {"num_beams": 4, "max_new_tokens": None, "test_unseen_only": False}
TEST_INFO = "test-rows.json"  # data/: per --eval_data, the test rows kept and those dropped as seen in training


def _field_defaults(cls: type) -> dict[str, Any]:
    """A dataclass's field defaults as TrainingArguments.to_dict() writes values (enums by value)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = getattr(f.default, "value", f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


class NotRun(Exception):
    """A step without its marker under ``--report_only``: listed in the report, not run, not a failure."""


def _say(message: str) -> None:
    print(f"linchain compare: {message}", file=sys.stderr, flush=True)


def read_record(path: Path, kind: Literal["train", "scores"]) -> dict:
    """A finished step's record (train.json, or validation/test.json of per-row scores), checked before it
    counts: a record that is not the grid's own (damaged, hand-edited, from elsewhere) would otherwise drop
    a seed or move a verdict without a word. A ValueError names the file; the step is then reported failed.
    """
    try:
        record = _json_object(path)
    except ValueError as err:
        record, why = None, str(err)
    else:
        why = _record_problem(record, kind)
    if why:
        raise ValueError(f"{path}: {why}; delete it to run this step again")
    return record


def read_json_object(path: Path, why: str) -> dict:
    """The JSON object in ``path``, or a ValueError naming the file, what is wrong and ``why`` it matters."""
    try:
        return _json_object(path)
    except ValueError as err:
        raise ValueError(f"{path} {err}: {why}") from None


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``; a ValueError says what is wrong with it (not naming it)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"cannot be read ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(value, dict):
        raise ValueError("is not a record (a JSON object)")
    return value


def _record_problem(record: dict, kind: str) -> Optional[str]:
    """What makes ``record`` not a finished step's record of ``kind``, or None."""
    if kind == "train":
        losses = record.get("losses")
        if not isinstance(losses, list) or not all(
            isinstance(x, list) and len(x) == 2 and all(_is_number(v) for v in x) for x in losses
        ):
            return "has no list of [step, loss] pairs ('losses')"
        if not _is_number(record.get("train_wall_s")) or not isinstance(record.get("seed"), int):
            return "lacks its seed or training time"
        return None
    tasks = record.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        return "scores no task ('tasks')"
    for task, scores in tasks.items():
        per_row, rows = (scores.get("per_row"), scores.get("rows")) if isinstance(scores, dict) else (None, None)
        if not isinstance(per_row, list) or not per_row or any(v not in (0, 1) for v in per_row):
            return f"task {task!r}: per-row correctness is not a list of 0/1"
        if not isinstance(rows, list) or len(rows) != len(per_row):
            return f"task {task!r}: {len(rows) if isinstance(rows, list) else 'no'} row ids for {len(per_row)} scores"
        if not _is_number(scores.get("accuracy")) or abs(scores["accuracy"] - sum(per_row) / len(per_row)) > 1e-9:
            return f"task {task!r}: its accuracy is not the mean of its per-row scores"
    accuracies = [scores["accuracy"] for scores in tasks.values()]
    if not _is_number(record.get("average")) or abs(record["average"] - sum(accuracies) / len(accuracies)) > 1e-9:
        return "its average is not the mean of its tasks' accuracies"
    return None


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


def _rate_name(lr: float) -> str:
    return f"lr{lr:g}"


def _same_model(a: ModelArguments, b: ModelArguments) -> bool:
    """Whether two methods' settings train the same adapter: ``lora`` is LinChain with no mixer and
    ``moslora`` with one, so the method's name alone does not tell."""

    def key(m: ModelArguments) -> dict:
        uses_chain, fixed = METHODS[m.method]
        k = (fixed if fixed is not None else m.num_mixers) if uses_chain else None
        family = "linchain" if uses_chain else m.method
        fields = {**dataclasses.asdict(m), "method": family, "num_mixers": k}
        if k == 0:  # no mixer: the mixer settings set nothing
            fields.update(mixer_bias=False, mixer_init=None, freeze_mixers=False)
        return fields

    return key(a) == key(b)


@dataclass
class GridResult:
    """What the grid produced; :mod:`linchain.compare.report` turns it into report.json/report.md."""

    out: Path
    methods: list[MethodSpec]
    seeds: list[int]
    learning_rates: list[float]
    sweep: dict[str, list[dict]] = field(default_factory=dict)  #: method -> one record per rate (seed 0)
    chosen: dict[str, Optional[float]] = field(default_factory=dict)  #: method -> chosen learning rate
    runs: dict[str, list[dict]] = field(default_factory=dict)  #: method -> per-seed records at the chosen rate
    base: Optional[dict] = None
    failures: list[dict] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  #: steps without markers under --report_only
    settings: dict = field(default_factory=dict)


#: how a step ended: "not run" is a step without its marker under --report_only, "skipped" one whose
#: input did not finish (a rate's training before its validation, a seed's training before its test)
Status = Literal["ok", "failed", "not run", "skipped"]


@dataclass(frozen=True)
class Step:
    """One step of the grid as :meth:`Grid.plan` plans it. ``weight``: its share of the progress bar, in
    "step-eq" units (training steps). ``learning_rate`` None: the rate its method's sweep chooses, unknown
    when the grid is planned (a seed's steps); :meth:`at` gives the step at that rate."""

    kind: Literal["base-test", "train", "validation", "test"]
    method: Optional[str]  #: the method spec's name; None for the base model
    learning_rate: Optional[float]
    seed: Optional[int]
    weight: float

    @property
    def at_chosen_rate(self) -> bool:
        return self.method is not None and self.learning_rate is None

    def at(self, lr: float) -> "Step":
        return dataclasses.replace(self, learning_rate=lr)

    @property
    def run(self) -> str:
        """The run the step belongs to, as the progress bar names it."""
        if self.method is None:
            return "base model"
        return f"{self.method} lr {self.learning_rate:g} seed {self.seed}"

    @property
    def what(self) -> str:
        """The step's name in report.json (failures, not_run); a step at the chosen rate needs the rate first."""
        if self.kind == "base-test":
            return "base model test"
        if self.kind == "validation":  # every rate is validated with the first seed only
            return f"{self.method} lr {self.learning_rate:g} validation"
        return f"{self.run} {'training' if self.kind == 'train' else 'test'}"


class Grid:
    """Runs the grid; ``train_fn``/``eval_fn`` are injectable for tests (default: run_training / run_evaluation)."""

    def __init__(
        self,
        compare: CompareArguments,
        model: ModelArguments,
        data: DataArguments,
        train: LinChainTrainingArguments,
        train_fn: Optional[Callable] = None,
        eval_fn: Optional[Callable] = None,
    ) -> None:
        self.args, self.model, self.data, self.train = compare, model, data, train
        # shared options that the grid sets per run: refuse rather than silently ignore them
        if model.method != "linchain" or model.freeze_mixers:
            raise ValueError("--method/--freeze_mixers: the methods come from --methods (e.g. lora,linchain-k3-frozen)")
        if data.val_set_size != DataArguments.val_set_size or data.eval_accuracy != DataArguments.eval_accuracy:
            raise ValueError("--val_set_size/--eval_accuracy: the grid holds out its own rows; use --validation_size")
        if train.output_dir in (None, LinChainTrainingArguments.output_dir):
            raise ValueError("--output_dir is required: the folder of the grid's runs and report")
        self.out = Path(train.output_dir)
        self.methods = parse_methods(compare.methods)
        self.seeds = int_list("seeds", compare.seeds) or [train.seed]
        self.rates = float_list("learning_rates", compare.learning_rates) or [train.learning_rate]
        if warmup_covers_every_step(train):
            # every run stays in the warm-up: at --max_steps 1 the one step trains at a rate of 0 and every
            # method scores as the base model does, under a report naming the rates (break-it check)
            what = (
                f"--warmup_steps {train.warmup_steps:g} covers all of --max_steps {train.max_steps}: the runs never "
                "reach their --learning_rates (the first step trains at 0)"
            )
            if train.max_steps == 1:
                raise ValueError(f"{what}, so nothing is learned; lower --warmup_steps or raise --max_steps")
            _say(f"note: {what}")
        names = [_rate_name(lr) for lr in self.rates]
        clash = next((n for n in names if names.count(n) > 1), None)
        if clash is not None:
            same = [f"{lr!r}" for lr, n in zip(self.rates, names) if n == clash]
            raise ValueError(
                f"--learning_rates: {' and '.join(same)} share one run folder ({clash}, six significant digits); "
                "make them differ within six digits"
            )
        if len(self.rates) > 1 and compare.validation_size == 0:
            raise ValueError("--learning_rates lists several rates: choosing one needs --validation_size > 0")
        if train_fn is None:
            from ..train.engine import run_training as train_fn
        if eval_fn is None:
            from ..eval import run_evaluation as eval_fn
        self.train_fn, self.eval_fn = train_fn, eval_fn
        self.validation: list[tuple[str, str]] = []  # (file, task)
        self.bar = None
        self._trained: dict[tuple[str, int], dict] = {}  # (method, seed) -> a seed's training, for its test
        self._shown: Optional[tuple] = None  # the run the bar names

    # ------------------------------------------------------------------------------ settings and data
    def output_folder(self) -> "OutputFolder":
        """The study's folder (kind ``compare``): never the training or test data or the local base model
        it reads, nor a folder of another kind; it resumes in place without --overwrite."""
        from ..outputs import OutputFolder

        model = Path(self.model.model_name_or_path or "").expanduser()
        inputs = {f"the training data {d}": d for d in self.data.data}
        inputs.update({f"the test data {d}": d for d in self.args.eval_data})
        inputs["the base model"] = model if str(model) not in ("", ".") and model.is_dir() else None
        return OutputFolder(self.out, "compare", flag="--output_dir", inputs=inputs, command="linchain compare")

    def settings(self) -> dict[str, Any]:
        """Everything shared by the runs that changes results; a rerun into the same folder must match."""
        from ..train.engine import _init_fields

        given = _init_fields(self.train)
        defaults = _field_defaults(type(self.train))
        train = {k: given.get(k, defaults.get(k)) for k in RESULT_FIELDS}
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if k not in ("method",)}
        keys = ("eval_data", "eval_task", "eval_limit", "scorer", "validation_size", "validation_task", *_EVAL_DEFAULTS)
        return json.loads(
            json.dumps(
                {
                    "model": model,
                    "data": dataclasses.asdict(self.data),
                    "train": train,
                    "eval": {k: getattr(self.args, k) for k in keys},
                    "split_seed": SPLIT_SEED,
                },
                default=str,
            )
        )

    def check_settings(self, write: bool = True) -> dict[str, Any]:
        """The study's settings, compared with those of an earlier call into the same folder. ``write``:
        record them (settings.json) when there are none yet; :meth:`run` does that only once the data
        is prepared, so a call refused for a bad argument leaves no settings that would refuse the fix."""
        settings = self.settings()
        path = self.out / SETTINGS_FILE
        if path.exists():
            old = read_json_object(
                path,
                "it records the study's settings, which every step's results depend on; restore it, or start the "
                "study in a fresh --output_dir",
            )
            # only the fields that define results are compared; one an older settings.json lacks had its default
            defaults = json.loads(json.dumps(_field_defaults(type(self.train)), default=str))
            old_train = old.get("train", {})
            old["train"] = {k: old_train.get(k, defaults.get(k)) for k in RESULT_FIELDS}
            # a study made before an eval setting existed used its default
            old["eval"] = {**_EVAL_DEFAULTS, **old.get("eval", {})}
            diff = sorted(
                f"{group}.{k}"
                for group, values in settings.items()
                if isinstance(values, dict)
                for k in set(values) | set(old.get(group, {}))
                if values.get(k) != old.get(group, {}).get(k)
            )
            diff += [k for k, v in settings.items() if not isinstance(v, dict) and old.get(k) != v]
            if diff:
                raise ValueError(
                    f"{self.out} holds a comparison made with other settings ({', '.join(diff[:6])}); "
                    f"use another --output_dir, or the same settings to reuse its runs"
                )
        elif write:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, settings)
        return settings

    def prepare_data(self) -> None:
        """data/train.json (training rows minus validation rows) and data/validation-<task>.json."""
        from ..eval.scoring import refuse_unmatchable
        from ..eval.tasks import get_task, infer_task
        from ..train.engine import load_data
        from ..train.features import split_examples

        folder = self.out / "data"
        train_file = folder / "train.json"
        if not train_file.exists() and not self.args.report_only:
            examples = load_data(self.data, SPLIT_SEED)
            if any(e.options for e in examples):
                raise ValueError(
                    "--data: compare needs rows without per-row options (LLM-Adapters .json/.jsonl, "
                    "reasoning_gym:, hf: with columns); bigbench: rows are not supported"
                )
            size = self.args.validation_size
            try:
                train, val = split_examples(examples, size, SPLIT_SEED) if size else (list(examples), [])
            except ValueError as err:  # train's splitter names train's flag; here the rows are compare's
                raise ValueError(str(err).replace("--val_set_size", "--validation_size")) from None
            if size and not val and (len(self.rates) > 1 or self.args.sweep_only):
                raise ValueError(
                    f"--validation_size {size}: every row carved from --data for validation repeats a training "
                    "prompt (such rows go back to training), so none is left to choose a learning rate on; use "
                    "--data with more distinct prompts, or one --learning_rates value"
                )
            groups: dict[str, list] = {}
            default_task = self.default_validation_task()
            for e in val:
                task = self.args.validation_task or default_task or infer_task(e.source)
                if task is None:
                    raise ValueError(
                        f"--data {e.source}: cannot infer the validation rows' task from the path; pass "
                        "--validation_task (or --eval_task, which it defaults to)"
                    )
                groups.setdefault(task, []).append(e)
            for task, rows in groups.items():
                # before any training: a rule no validation row can match (taken from the test data, whose
                # task the training rows need not share) would score every rate 0% and choose by tie-break
                if self.args.validation_task:
                    advice = "pass the --validation_task of the training rows"
                else:
                    origin = "the test data's" if default_task else "inferred from the path of --data"
                    advice = f"the rule is {origin} ({task}); pass --validation_task for the training rows' task"
                advice += " (e.g. closed, boolq or gsm8k)"
                refuse_unmatchable(get_task(task), rows, self.args.scorer, "the validation rows", advice)
            for task, rows in groups.items():
                atomic_write_json(folder / f"validation-{task}.json", [e.adapters_row() for e in rows])
            if self.args.test_unseen_only:
                self._write_unseen_test(folder, examples)
            atomic_write_json(
                train_file, [e.adapters_row() for e in train]
            )  # last: its presence marks the data as prepared
            _say(
                f"{len(train)} training rows, {len(val)} validation rows ({', '.join(f'{t}: {len(r)}' for t, r in groups.items())})"
            )
        self.validation = [(str(p), p.stem.split("-", 1)[1]) for p in sorted(folder.glob("validation-*.json"))]

    def default_validation_task(self) -> Optional[str]:
        """The validation rows' task when --validation_task is not given: the eval task when there is one
        (one --eval_task, or one --eval_data whose task its path names); None: inferred per row's source."""
        tasks = set(self._test_tasks())
        return tasks.pop() if len(tasks) == 1 else None

    # ------------------------------------------------------------------------------ one step each
    def run_dir(self, spec: MethodSpec, lr: float, seed: int) -> Path:
        return self.out / "runs" / spec.name / _rate_name(lr) / f"seed{seed}"

    def _train(self, spec: MethodSpec, lr: float, seed: int, again: bool = False) -> dict:
        from ..train.engine import _init_fields, find_complete_checkpoint
        from ..train.outputs import read_metrics

        run_dir = self.run_dir(spec, lr, seed)
        marker = run_dir / "train.json"
        if marker.exists() and not again:
            return self._read_train(spec, lr, seed)
        if self.args.report_only:
            raise NotRun
        train_dir = run_dir / "train"
        summary = RunFolder(train_dir).summary_json  # written by run_training once the adapter is saved
        checkpoint = find_complete_checkpoint(train_dir)
        resume = checkpoint is not None  # from the final one, run_training only writes the outputs
        if not summary.exists():
            _say(
                f"{spec.name} lr {lr:g} seed {seed}: training"
                + (f" (resuming from {checkpoint.name})" if resume else "")
            )
        model_args = spec.model_arguments(self.model)
        data_args = dataclasses.replace(
            self.data,
            data=[str(self.out / "data" / "train.json")],
            data_columns="",
            val_set_size=0,
            eval_accuracy="no",
            skip_malformed=False,
        )
        # the grid owns train_dir: a run cut short before its first checkpoint starts afresh there
        fields = {
            **_init_fields(self.train),
            "output_dir": str(train_dir),
            "resume": resume,
            "overwrite": not resume,
            "learning_rate": lr,
            "seed": seed,
            "data_seed": seed,
            "logging_steps": 1,
            "eval_strategy": "no",
            "disable_tqdm": True,
        }
        fields.pop("logging_dir", None)
        train_args = type(self.train)(**fields)
        started = time.time()
        if summary.exists():  # trained, outputs written, marker not (killed in between)
            from ..train.engine import RunResult

            result = RunResult(**json.loads(summary.read_text()))
            wall = result.wall_s  # the run's own figure: this call trained nothing
        else:
            from ..train.engine import resumed_by

            run_dir.mkdir(parents=True, exist_ok=True)
            # the Trainer prints every log line when its bar is off (ours is on): those go to a file
            with (
                open(run_dir / "train.log", "a", encoding="utf-8") as log,
                contextlib.redirect_stdout(log),
                resumed_by("Run the same compare command again: it resumes by itself"),
            ):
                result = self.train_fn(model_args, data_args, train_args)
            # a resumed run: this call plus the training loop of the calls before (break-it check: a resume
            # reported only its last part, 3 s where the run in one call took 6 s)
            wall = round(time.time() - started + result.train_s_before, 1)
        if result.interrupted:
            raise KeyboardInterrupt(
                f"{spec.name} lr {lr:g} seed {seed} stopped at step {result.global_step}; run again to resume"
            )
        losses = [(r["step"], r["loss"]) for r in read_metrics(RunFolder(train_dir).metrics) if "loss" in r]
        record = {
            "method": spec.name,
            "learning_rate": lr,
            "seed": seed,
            "trainable_params": result.trainable_params,
            "train_loss": result.train_loss,
            "losses": losses,
            "global_step": result.global_step,
            "train_wall_s": wall,
            "model_arguments": dataclasses.asdict(model_args),
        }
        atomic_write_json(marker, record)
        return record

    def _read_train(self, spec: MethodSpec, lr: float, seed: int) -> dict:
        """The finished training record of (method, rate, seed), checked to be that run's, to its full length.

        A marker copied from another run folder, or one of a run that stopped short of ``--max_steps``
        (written by hand, or by another tool), would otherwise enter every statistic as this run.
        """
        path = self.run_dir(spec, lr, seed) / "train.json"
        record = read_record(path, "train")
        expected = {"method": spec.name, "learning_rate": lr, "seed": seed}
        for key, value in expected.items():
            got = record.get(key)
            if key == "learning_rate":
                same = _is_number(got) and math.isclose(got, value, rel_tol=1e-9)
            else:
                same = got == value
            if not same:
                raise ValueError(
                    f"{path}: its {key} is {got!r}, but this run's is {value!r}: another run's record; "
                    "delete it to run this step again"
                )
        # the adapter it trained: a run folder copied from a study with another --r (say) kept its numbers
        # under this study's header (break-it check). Keys both know; the model's path may differ by machine.
        built = record.get("model_arguments")
        ours = dataclasses.asdict(spec.model_arguments(self.model))
        if isinstance(built, dict):
            for key in sorted(set(built) & set(ours) - {"model_name_or_path"}):
                if built[key] != ours[key]:
                    raise ValueError(
                        f"{path}: its model_arguments.{key} is {built[key]!r}, but this study's is {ours[key]!r}: "
                        "another study's run; delete it to run this step again"
                    )
        steps = record.get("global_step")
        if self.train.max_steps > 0 and steps != self.train.max_steps:
            raise ValueError(
                f"{path}: its global_step is {steps!r}, but --max_steps is {self.train.max_steps}: a run that stopped "
                "short; delete it to run this step again"
            )
        return record

    def _evaluate(
        self,
        where: Path,
        name: str,
        data: list[tuple[str, Optional[str]]],
        adapter: Optional[Path],
        model_path: Optional[str] = None,
    ) -> dict:
        """Score and keep per-row correctness (``name``: validation or test)."""
        from ..eval import EvalArguments

        marker = where / f"{name}.json"
        if marker.exists():
            return read_record(marker, "scores")
        if self.args.report_only:
            raise NotRun
        tasks = [t for _, t in data]
        args = EvalArguments(
            model_name_or_path=model_path or self.model.model_name_or_path,
            adapter=str(adapter) if adapter else None,
            data=[d for d, _ in data],
            task=tasks if all(tasks) else [],
            scorer=self.args.scorer,
            num_beams=self.args.num_beams,
            max_new_tokens=self.args.max_new_tokens,
            limit=self.args.eval_limit if name == "test" else None,
            per_device_eval_batch_size=self.train.per_device_eval_batch_size,
            dtype=self.model.torch_dtype,
            num_threads=self.train.num_threads,
            faithful_prompt=self.data.faithful_prompt,
            output_dir=str(where / name),
            progress=False,
            overwrite=True,  # the grid owns where/name: a call killed after the scores but before the marker redoes it
        )
        started = time.time()
        run = self.eval_fn(args)
        names = [r.task for r in run.results]
        if len(set(names)) != len(names):  # tasks inferred from the answers alike (preflight saw no names)
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"two data files were scored as task {', '.join(twice)}, and compare keeps one score per task: "
                "combine their rows into one --eval_data file, or give only one of them"
            )
        tasks_out = {
            r.task: {
                "accuracy": r.accuracy,
                "correct": r.correct,
                "total": r.total,
                "rows": [p["row"] for p in r.predictions],
                "per_row": [int(bool(p["correct"])) for p in r.predictions],
                "gold": [p["gold"] for p in r.predictions],
                "unmatchable_gold": r.unmatchable_gold,  # rows wrong for every run: the report says how many
            }
            for r in run.results
        }
        record = {
            "tasks": tasks_out,
            "average": sum(t["accuracy"] for t in tasks_out.values()) / len(tasks_out),
            "eval_wall_s": round(time.time() - started, 1),
        }
        atomic_write_json(marker, record)
        return record

    def _step(self, result: GridResult, step: Step, fn: Optional[Callable[[], dict]]) -> tuple[Status, Optional[dict]]:
        """Run one step and advance the bar by its weight, whatever the outcome. ``fn`` None: skipped (its
        input did not finish); a failure is recorded (result.failures), a step not run listed (result.not_run)."""
        try:
            if fn is None:
                return "skipped", None
            return "ok", fn()
        except KeyboardInterrupt:
            raise
        except NotRun:
            result.not_run.append(step.what)
            return "not run", None
        except Exception as err:  # noqa: BLE001 - the grid goes on; the error is recorded and shown
            message = f"{type(err).__name__}: {err}".strip()
            _say(f"FAILED {step.what}: {message.splitlines()[0]}")
            result.failures.append({"step": step.what, "error": message})
            return "failed", None
        finally:
            if self.bar is not None:
                self.bar.update(step.weight)

    def _adapter_of(self, spec: MethodSpec, lr: float, seed: int) -> tuple[Optional[Path], Optional[str]]:
        train_dir = self.run_dir(spec, lr, seed) / "train"
        if spec.method == "full":
            return None, str(RunFolder(train_dir).model)
        return RunFolder(train_dir).adapter, None

    def _write_unseen_test(self, folder: Path, examples: list) -> None:
        """data/test-<i>.json: the rows of --eval_data i whose prompt no training row has (the validation
        rows count as training rows here: they were drawn from them), and data/test-rows.json saying
        how many were kept and dropped. Generated tasks with few distinct problems (one-digit sums)
        repeat training prompts in the test set; scoring those would measure recall, not learning."""
        from ..eval.examples import load_eval_examples

        seen = {(e.instruction, e.input) for e in examples}
        info = {}
        for i, spec in enumerate(self.args.eval_data):
            rows = load_eval_examples(spec)  # as the grid's evals read it (EvalArguments' defaults)
            unseen = [e for e in rows if (e.instruction, e.input) not in seen]
            if not unseen:
                raise ValueError(
                    f"--eval_data {spec}: every one of its {len(rows)} rows repeats a training prompt; "
                    "use other test data, or --test_unseen_only false to score them anyway"
                )
            atomic_write_json(folder / f"test-{i}.json", [e.adapters_row() for e in unseen])
            info[spec] = {"rows": len(rows), "kept": len(unseen), "dropped_seen_in_training": len(rows) - len(unseen)}
            _say(
                f"--eval_data {spec}: {len(rows) - len(unseen)} of {len(rows)} rows repeat a training prompt and are "
                f"dropped (--test_unseen_only); {len(unseen)} rows are scored"
            )
        atomic_write_json(folder / TEST_INFO, info)

    # ------------------------------------------------------------------------------ the grid
    def _test_data(self) -> list[tuple[str, Optional[str]]]:
        """(data, task) per --eval_data: the unseen rows' file (--test_unseen_only) with the spec's task
        (given, or inferred from the spec's path, else from the answers), or the spec itself."""

        if not self.args.test_unseen_only:
            return list(zip(self.args.eval_data, self.args.eval_task or [None] * len(self.args.eval_data)))
        return [(str(self.out / "data" / f"test-{i}.json"), task) for i, task in enumerate(self._test_tasks())]

    def _test_tasks(self) -> list[Optional[str]]:
        """Per --eval_data, its task: given (--eval_task), or inferred from the spec's path (None: neither)."""
        from ..eval.tasks import infer_task

        tasks = self.args.eval_task or [None] * len(self.args.eval_data)
        return [task or infer_task(spec) for spec, task in zip(self.args.eval_data, tasks)]

    def preflight(self) -> dict[str, Any]:
        """The refusals that need no work (a study with other settings, --report_only of nothing), before
        the folder is marked as being written: a refused call leaves a study's marker as it was."""
        if self.args.report_only and not (self.out / SETTINGS_FILE).exists():
            raise ValueError(
                f"--report_only: {self.out} holds no comparison yet (no {SETTINGS_FILE}); run it without --report_only first"
            )
        self._refuse_tasks_scored_twice()
        built: dict[str, Any] = {}
        for spec in self.methods:  # a method the shared settings cannot build (linchain-frozen with --num_mixers 0)
            try:
                args = spec.model_arguments(self.model)
            except ValueError as err:
                raise ValueError(f"--methods {spec.name}: {err}") from None
            # two names of one model (linchain with --num_mixers 3 and linchain-k3, moslora and linchain-k1):
            # the same runs twice, and a comparison of a method with itself
            same = next((name for name, other in built.items() if _same_model(other, args)), None)
            if same is not None:
                raise ValueError(f"--methods: {same} and {spec.name} train the same model here; keep one of them")
            built[spec.name] = args
        return self.check_settings(write=False)

    def _refuse_tasks_scored_twice(self) -> None:
        """Two --eval_data of one task: a record keeps one score per task, so the earlier file's scores
        were dropped without a word while the report named both files (break-it check)."""
        seen: dict[str, str] = {}
        for spec, task in zip(self.args.eval_data, self._test_tasks()):
            if task is not None and task in seen:
                raise ValueError(
                    f"--eval_data {seen[task]} and {spec} are both scored as task {task}, and compare keeps one "
                    "score per task: combine their rows into one file, or give only one of them"
                )
            if task is not None:
                seen[task] = spec

    def plan(self) -> list[Step]:
        """Every step of the grid, in the order :meth:`run` takes them: the base model's test, each method's
        sweep (every rate trained with the first seed, then validated), then each method's seeds at its
        chosen rate (the first seed's training is the sweep's). The bar's total is their total weight."""
        # weights in "training step" units: one scored row costs roughly a quarter of an 8-sequence step
        w_train, w_val = self.train.max_steps, self.args.validation_size / 4
        w_test = (self.args.eval_limit or 500) * len(self.args.eval_data) / 4
        validate = len(self.rates) > 1 or self.args.sweep_only  # a single rate is chosen without validation
        first = self.seeds[0]
        # --sweep_only scores no test rows (its parts run in parallel in one folder): the base model's test too
        steps = (
            [Step("base-test", None, None, None, w_test)] if self.args.eval_base and not self.args.sweep_only else []
        )
        for spec in self.methods:
            for lr in self.rates:
                steps.append(Step("train", spec.name, lr, first, w_train))
                # a single rate's score, if an earlier (sweep) call left one, is read and shown, not run
                if validate or (self.run_dir(spec, lr, first) / "validation.json").exists():
                    steps.append(Step("validation", spec.name, lr, first, w_val))
        if not self.args.sweep_only:
            for spec in self.methods:
                for seed in self.seeds:
                    if seed != first:
                        steps.append(Step("train", spec.name, None, seed, w_train))
                    steps.append(Step("test", spec.name, None, seed, w_test))
        return steps

    def run(self) -> GridResult:
        settings = self.preflight()
        self.prepare_data()
        self.check_settings(write=True)
        result = GridResult(
            out=self.out, methods=self.methods, seeds=self.seeds, learning_rates=self.rates, settings=settings
        )
        plan = self.plan()
        from ..progress import Progress

        self.bar = Progress(
            total=round(sum(step.weight for step in plan)),
            desc="compare",
            unit="step-eq",
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {percentage:3.0f}% [{elapsed}<{remaining}] {postfix}",
        )
        self._trained, self._shown = {}, None
        try:
            for step in plan:  # the base model's test, then the sweeps
                if not step.at_chosen_rate:
                    self._run_step(step, result)
            for spec in self.methods:
                result.chosen[spec.name] = self._choose(result.sweep[spec.name])
            if not self.args.sweep_only:
                result.runs = {spec.name: [] for spec in self.methods}
            for step in plan:  # the seeds, at their method's chosen rate
                if step.at_chosen_rate:
                    self._run_step(step, result)
        finally:
            self.bar.close()
            self.bar = None
        return result

    def _run_step(self, planned: Step, result: GridResult) -> None:
        """Run one planned step (a seed's at its method's chosen rate) and file what it gives in ``result``."""
        step = planned
        if planned.at_chosen_rate:
            lr = result.chosen[planned.method]
            if lr is None:  # no rate of the method finished its sweep: nothing to run at it
                self._step(result, planned, None)
                return
            step = planned.at(lr)
        # the bar names each run where its steps start in the plan; a seed's planned steps have no rate, so the
        # seeds name their runs even where the sweep ended on the same run
        run = (planned.method, planned.learning_rate, planned.seed)
        if run != self._shown:
            self._shown = run
            self.bar.set_postfix_str(step.run)
        if step.kind == "base-test":
            _, result.base = self._step(
                result, step, lambda: self._evaluate(self.out / "base", "test", self._test_data(), None)
            )
            return
        spec = next(s for s in self.methods if s.name == step.method)
        if planned.at_chosen_rate:
            self._seed_step(spec, step, result)
        else:
            self._sweep_step(spec, step, result)

    def _sweep_step(self, spec: MethodSpec, step: Step, result: GridResult) -> None:
        """A rate's training with the first seed (its sweep record), or its validation (the record's scores)."""
        lr, seed = step.learning_rate, step.seed
        records = result.sweep.setdefault(spec.name, [])
        if step.kind == "train":
            status, trained = self._step(result, step, lambda: self._train(spec, lr, seed))
            final_loss = _final_loss(trained["losses"]) if trained else None
            records.append({"learning_rate": lr, "status": status, "validation": None, "final_loss": final_loss})
            return
        record = next(r for r in records if r["learning_rate"] == lr)
        if record["status"] != "ok":  # the rate's training did not finish: nothing to score
            self._step(result, step, None)
            return
        adapter, model_path = self._adapter_of(spec, lr, seed)
        record["status"], record["validation"] = self._step(
            result,
            step,
            lambda: self._evaluate(self.run_dir(spec, lr, seed), "validation", self.validation, adapter, model_path),
        )

    def _choose(self, records: list[dict]) -> Optional[float]:
        """The rate with the best validation average (ties: the lower final training loss) among those whose
        sweep steps finished; a single rate is chosen without validation."""
        ok = [r for r in records if r["status"] == "ok"]
        if not ok:
            return None
        if len(self.rates) == 1:
            return ok[0]["learning_rate"]
        best = max(
            ok,
            key=lambda r: (
                r["validation"]["average"],
                -(r["final_loss"] if r["final_loss"] is not None else float("inf")),
            ),
        )
        return best["learning_rate"]

    def _seed_step(self, spec: MethodSpec, step: Step, result: GridResult) -> None:
        """A seed's training at the chosen rate, or its test (a run record once scored)."""
        lr, seed = step.learning_rate, step.seed
        if step.kind == "train":
            status, trained = self._step(result, step, lambda: self._train(spec, lr, seed))
            if status == "ok":
                self._trained[(spec.name, seed)] = trained
            return
        if seed == self.seeds[0]:  # trained in the sweep: the chosen rate's training finished
            trained = self._read_train(spec, lr, seed)
        else:
            trained = self._trained.pop((spec.name, seed), None)
        if trained is None:  # the seed's training did not finish: nothing to test
            self._step(result, step, None)
            return
        adapter, model_path = self._adapter_of(spec, lr, seed)
        if (
            adapter is not None
            and not self.args.report_only
            and not (adapter / "adapter_config.json").exists()
            and not (self.run_dir(spec, lr, seed) / "test.json").exists()
        ):
            # only the small markers were kept (a study carried to another machine): train it again; the
            # marker stays until the new one replaces it, so a retraining cut short loses no sweep record.
            # Not planned (only the files tell it is needed); the test's weight covers it.
            again = dataclasses.replace(step, kind="train", weight=0)
            status, trained = self._step(result, again, lambda: self._train(spec, lr, seed, again=True))
            if status != "ok":
                self._step(result, step, None)
                return
        status, tested = self._step(
            result,
            step,
            lambda: self._evaluate(self.run_dir(spec, lr, seed), "test", self._test_data(), adapter, model_path),
        )
        if status == "ok":
            result.runs[spec.name].append(
                {
                    **trained,
                    "test": tested,
                    "adapter": str(adapter) if adapter else None,
                    "step_dir": str(self.run_dir(spec, lr, seed)),  # where the step's own records go
                }
            )


def _final_loss(losses: list, window: Optional[int] = None) -> Optional[float]:
    if not losses:
        return None
    window = window or max(1, len(losses) // 10)
    tail = [loss for _, loss in losses[-window:]]
    return sum(tail) / len(tail)


def prepare_environment(train: LinChainTrainingArguments) -> None:
    if train.num_threads:
        import torch

        torch.set_num_threads(train.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_grid(
    compare: CompareArguments, model: ModelArguments, data: DataArguments, train: LinChainTrainingArguments, **kwargs
) -> GridResult:
    """Run (or complete) the grid of ``compare`` and return what it produced."""
    prepare_environment(train)
    return Grid(compare, model, data, train, **kwargs).run()
