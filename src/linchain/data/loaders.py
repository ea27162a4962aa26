"""Loaders for the paper's data formats, all returning a list of :class:`Example`.

Data specs understood by :func:`load_examples`:

- a path to a ``.json`` file (a list of rows) or ``.jsonl`` file (one row per line) in
  LLM-Adapters format: ``{"instruction", "input", "output", "answer"}`` (commonsense_170k,
  math_10k, the files in ``shared/data/llm-adapters``);
- ``bigbench:TASK`` (or ``bigbench:TASK/SUBTASK``): a BIG-bench ``task.json`` (see
  :func:`linchain.offline.bigbench_task_path`), multiple choice when it has ``target_scores``;
- ``reasoning_gym:NAME[:N[:SEED]][?KEY=VALUE&...]``: ``N`` (default 1000) rows from a seeded
  reasoning-gym generator (``SEED`` overrides the caller's seed; row i is drawn with seed + i, so a
  test set drawn with a seed far above the training rows' count shares no row with them); the
  options after ``?`` are fields of the generator's config (``chain_sum?min_digits=1&max_digits=1``);
- ``hf:NAME[:CONFIG]``: ``datasets.load_dataset(NAME, CONFIG, split=split)``, or a path to a
  dataset saved with ``save_to_disk``; ``columns`` maps our fields to the dataset's columns.

A malformed row raises :class:`DataError` naming the source, the row and what is wrong. With
``skip_malformed=True`` such rows are skipped and their count is logged; nothing is ever dropped
silently.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

__all__ = ["DEFAULT_REASONING_GYM_SIZE", "FIELDS", "DataError", "Example", "load_examples", "open_hf_dataset"]

logger = logging.getLogger("linchain.data")

#: Our fields, in order; ``columns`` maps (some of) them to a dataset's column names.
FIELDS = ("instruction", "input", "output", "answer")
DEFAULT_REASONING_GYM_SIZE = 1000


class DataError(ValueError):
    """A data source or one of its rows is malformed; the message names the source and the row."""


@dataclass
class Example:
    """One training or evaluation example.

    ``output`` is the target text the model is trained on; ``answer`` the gold label an evaluator
    compares with (LLM-Adapters' ``answer``). Multiple-choice sources also set ``options`` (the
    candidate responses, in source order) and ``target_scores`` (option -> score, 1 = correct).
    ``source`` is the file or spec and ``row`` the 0-based index of the row in it.
    """

    instruction: str
    input: str
    output: str
    answer: str
    source: str
    row: int
    options: Optional[list[str]] = None
    target_scores: Optional[dict] = None

    def adapters_row(self) -> dict[str, str]:
        """The row as an LLM-Adapters .json file holds it (what loading that file gives back, less
        ``source``/``row``; options are not part of that format)."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output, "answer": self.answer}


class _Rows:
    """Turns raw rows into Examples, raising or counting (with ``skip``) the malformed ones."""

    def __init__(self, source: str, skip: bool, where: Callable[[int], str] = lambda i: f"row {i}") -> None:
        self.source, self.skip, self.where = source, skip, where
        self.examples: list[Example] = []
        self.skipped = 0

    def add(self, index: int, build: Callable[[], Example]) -> None:
        try:
            self.examples.append(build())
        except DataError:
            if not self.skip:
                raise
            self.skipped += 1

    def fail(self, index: int, what: str) -> DataError:
        return DataError(f"{self.source}: {self.where(index)}: {what}")

    def done(self) -> list[Example]:
        if self.skipped:
            logger.warning("%s: skipped %d malformed row(s) (skip_malformed=True)", self.source, self.skipped)
        if not self.examples:
            raise DataError(f"{self.source}: no usable rows.")
        return self.examples


def _text(rows: _Rows, index: int, row: Mapping[str, Any], key: str, required: bool) -> str:
    if key not in row or row[key] is None:
        if required and key in row:
            raise rows.fail(index, f"field {key!r} is null; it must be a string")
        if required:
            raise rows.fail(index, f"missing field {key!r} (fields present: {sorted(map(str, row))})")
        return ""
    value = row[key]
    # Numeric answers ("answer": 18) are common in math data; booleans are not labels we accept.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "answer":
        return str(value)
    if not isinstance(value, str):
        raise rows.fail(index, f"field {key!r} must be a string, got {type(value).__name__} {value!r:.80}")
    if required and key == "instruction" and not value.strip():
        raise rows.fail(index, f"field {key!r} is empty")
    return value


def _adapters_row(rows: _Rows, index: int, row: Any, columns: Mapping[str, str]) -> Example:
    if not isinstance(row, Mapping):
        raise rows.fail(index, f"expected an object with fields {list(FIELDS)}, got {type(row).__name__}")
    get = {f: columns.get(f, f) for f in FIELDS}
    mapped = {f: row.get(get[f]) for f in FIELDS if get[f] in row}
    values = {f: _text(rows, index, mapped, f, required=f in ("instruction", "output")) for f in FIELDS}
    return Example(**values, source=rows.source, row=index)


def _load_json_file(path: Path, skip: bool, columns: Mapping[str, str]) -> list[Example]:
    source = str(path)
    if path.suffix == ".jsonl":
        rows = _Rows(source, skip, where=lambda i: f"row {i} (line {i + 1})")
        with open(path, encoding="utf-8") as f:
            for index, line in enumerate(f):
                if not line.strip():
                    continue  # a blank line (e.g. a trailing newline) is not a row

                def build(line: str = line, index: int = index) -> Example:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise rows.fail(index, f"not valid JSON ({err.msg} at column {err.colno})") from None
                    return _adapters_row(rows, index, row, columns)

                rows.add(index, build)
        return rows.done()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]  # some Alpaca-style files wrap the rows in {"data": [...]}
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON list of rows, got {type(data).__name__}")
    rows = _Rows(source, skip)
    for index, row in enumerate(data):
        rows.add(index, lambda row=row, index=index: _adapters_row(rows, index, row, columns))
    return rows.done()


def _load_bigbench(task: str, skip: bool) -> list[Example]:
    from ..offline import bigbench_task_path

    path = bigbench_task_path(task)
    source = f"bigbench:{task} ({path})"
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    examples = spec.get("examples")
    if not isinstance(examples, list):
        raise DataError(f"{source}: no 'examples' list (is {task!r} a task with subtasks? use bigbench:{task}/SUBTASK)")
    rows = _Rows(source, skip)
    for index, row in enumerate(examples):
        rows.add(index, lambda row=row, index=index: _bigbench_row(rows, index, row))
    return rows.done()


def _bigbench_row(rows: _Rows, index: int, row: Any) -> Example:
    if not isinstance(row, Mapping) or not isinstance(row.get("input"), str):
        raise rows.fail(index, "expected an object with a string 'input'")
    scores = row.get("target_scores")
    if scores is not None:
        if not isinstance(scores, Mapping) or not scores:
            raise rows.fail(index, f"'target_scores' must be a non-empty object, got {scores!r:.80}")
        options = [str(o) for o in scores]
        best = max(scores.values())
        answer = next(str(o) for o, s in scores.items() if s == best)
        return Example(
            instruction=row["input"],
            input="",
            output=answer,
            answer=answer,
            source=rows.source,
            row=index,
            options=options,
            target_scores={str(o): float(s) for o, s in scores.items()},
        )
    target = row.get("target")
    if isinstance(target, list) and target and all(isinstance(t, str) for t in target):
        target = target[0]  # several acceptable targets: train on the first
    if not isinstance(target, str):
        raise rows.fail(index, f"needs 'target_scores' or a string 'target', got target={target!r:.80}")
    return Example(instruction=row["input"], input="", output=target, answer=target, source=rows.source, row=index)


def _reasoning_gym_options(rest: str, options: str) -> dict:
    """``key=value&key=value`` -> the generator's config fields (values read as YAML scalars: 1, 0.5, true)."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(options, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise DataError(
            f"reasoning_gym:{rest}: the options after '?' must be key=value pairs joined by '&', got {options!r:.80}"
        ) from None
    values = {}
    for key, text in pairs:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if not isinstance(value, (int, float, str, bool)):
            raise DataError(f"reasoning_gym:{rest}: option {key}={text!r:.40} must be a number, a word or true/false")
        values[key] = value
    return values


def _load_reasoning_gym(rest: str, seed: int) -> list[Example]:
    rest_, _, options = rest.partition("?")
    config = _reasoning_gym_options(rest, options) if options else {}
    name, _, size = rest_.partition(":")
    size, _, fixed_seed = size.partition(":")
    try:
        n = int(size) if size else DEFAULT_REASONING_GYM_SIZE
    except ValueError:
        raise DataError(
            f"reasoning_gym:{rest}: the size after the second ':' must be an integer, got {size!r}"
        ) from None
    if n <= 0:
        raise DataError(f"reasoning_gym:{rest}: the size must be positive, got {n}")
    if fixed_seed:
        if not fixed_seed.isdigit():
            raise DataError(
                f"reasoning_gym:{rest}: the seed after the third ':' must be a non-negative integer, got {fixed_seed!r}"
            )
        seed = int(fixed_seed)
    try:
        import reasoning_gym
    except ImportError:
        raise DataError("reasoning_gym: specs need the package: pip install 'reasoning-gym==0.1.25'") from None
    try:
        dataset = reasoning_gym.create_dataset(name, size=n, seed=seed, **config)
    except TypeError as err:  # an option the generator's config does not have
        raise DataError(
            f"reasoning_gym:{rest}: {str(err)[:200]} (the options are the fields of {name}'s config class)"
        ) from None
    except (KeyError, ValueError, AssertionError) as err:
        raise DataError(f"reasoning_gym:{rest}: {str(err)[:200] or type(err).__name__}") from None
    source = f"reasoning_gym:{name}:{n}" + (f":{seed}" if fixed_seed else "") + (f"?{options}" if options else "")
    out = []
    for index in range(n):
        item = dataset[index]
        answer = str(item["answer"])
        out.append(
            Example(instruction=item["question"], input="", output=answer, answer=answer, source=source, row=index)
        )
    return out


def open_hf_dataset(spec: str, split: str):
    """One split of ``hf:NAME[:CONFIG]`` (``datasets.load_dataset``) or of a ``save_to_disk`` folder."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec}: needs the 'datasets' package: pip install 'linchain[data]'") from None
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        # The real hub path; tests use saved local datasets (no hub access at test time).
        try:
            return datasets.load_dataset(name, config or None, split=split)
        except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
            # no network, no such dataset or config, not in the cache: one line, not datasets' traceback
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise DataError(
                f"{spec}: cannot load Hugging Face dataset {name!r}"
                + (f" (config {config!r})" if config else "")
                + f": {first}. Give a local .json/.jsonl file or a folder saved with save_to_disk instead"
            ) from None
    if not any((Path(spec) / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
        raise DataError(
            f"{spec}: a folder, but not a dataset saved with save_to_disk; give a .json/.jsonl file in it, or such a folder"
        )
    data = datasets.load_from_disk(spec)
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{spec}: no split {split!r}; splits: {sorted(data)}")
        data = data[split]
    return data


def _load_hf(spec: str, split: str, skip: bool, columns: Mapping[str, str]) -> list[Example]:
    data = open_hf_dataset(spec, split)
    missing = [columns.get(f, f) for f in ("instruction", "output") if columns.get(f, f) not in data.column_names]
    if missing:
        raise DataError(
            f"{spec}: no column(s) {missing}; columns are {data.column_names}. "
            "Map them with columns, e.g. --data_columns instruction=question,output=answer"
        )
    rows = _Rows(spec, skip)
    for index, row in enumerate(data):
        rows.add(index, lambda row=row, index=index: _adapters_row(rows, index, row, columns))
    return rows.done()


def load_examples(
    spec: str | os.PathLike,
    *,
    skip_malformed: bool = False,
    seed: int = 0,
    split: str = "train",
    columns: Optional[Mapping[str, str]] = None,
) -> list[Example]:
    """Load the examples of one data spec (see the module docstring for the forms).

    Args:
        spec: a file path, ``bigbench:TASK``, ``reasoning_gym:NAME[:N]``, ``hf:NAME[:CONFIG]`` or a
            saved HF dataset folder.
        skip_malformed: skip malformed rows (logging how many) instead of raising :class:`DataError`.
        seed: the generator seed for ``reasoning_gym:`` specs.
        split: the split of ``hf:`` specs and saved ``DatasetDict`` folders.
        columns: our field name -> the source's column name, for JSON files and HF datasets.
    """
    columns = dict(columns or {})
    bad = sorted(set(columns) - set(FIELDS))
    if bad:
        raise DataError(f"columns maps unknown field(s) {bad}; our fields are {list(FIELDS)}")
    spec = os.fspath(spec)
    if spec.startswith("bigbench:"):
        return _load_bigbench(spec[len("bigbench:") :], skip_malformed)
    if spec.startswith("reasoning_gym:"):
        return _load_reasoning_gym(spec[len("reasoning_gym:") :], seed)
    if spec.startswith("hf:"):
        return _load_hf(spec, split, skip_malformed, columns)
    path = Path(spec)
    if path.is_dir():
        return _load_hf(spec, split, skip_malformed, columns)
    if not path.exists():
        raise DataError(
            f"{spec}: no such file; a data spec is a .json/.jsonl path, bigbench:TASK, "
            "reasoning_gym:NAME[:N], hf:NAME[:CONFIG] or a saved HF dataset folder"
        )
    if path.suffix not in (".json", ".jsonl"):
        raise DataError(f"{spec}: expected a .json or .jsonl file, got {path.suffix or 'no suffix'!r}")
    try:
        return _load_json_file(path, skip_malformed, columns)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{spec}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None
