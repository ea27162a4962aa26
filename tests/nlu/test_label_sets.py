"""Found by a tester of `linchain train --task_type seq_cls`: integer labels got a class for every id from
0 to the largest label without a word. Labels all 1 trained a two-class head (class '0' in no row) where
the same data with string labels was refused as one label; labels {1, 2} or {0, 2} trained three classes,
one of them in no row. The classes the training rows hold are now checked whatever the label kind: one
is refused, a class id no row holds (training or evaluation) is refused, and one only the evaluation rows
hold is a one-line note naming it and the head's class count."""

from __future__ import annotations

import json
import re

import pytest

from linchain.data import DataError
from linchain.nlu import NLUArguments
from linchain.nlu.data import check_training_classes, load_seq_cls, split_rows
from linchain.nlu.train import _load_data
from tests.nlu.test_seq_cls import encoder_dir  # noqa: F401  (a fixture)

ONE_LABEL = "the training rows hold one label ({}); a classifier needs at least two"


def _csv(path, labels) -> str:
    path.write_text("text,label\n" + "".join(f"row {i},{y}\n" for i, y in enumerate(labels)))
    return str(path)


def _jsonl(path, labels) -> str:
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": y}) + "\n" for i, y in enumerate(labels)))
    return str(path)


def _args(tmp_path, data, eval_data=None) -> NLUArguments:
    return NLUArguments(
        model_name_or_path="unused", data=data, eval_data=eval_data, do_train=True, output_dir=str(tmp_path / "o")
    )


@pytest.mark.parametrize("write", [_csv, _jsonl])
def test_integer_labels_of_one_class_are_refused_like_string_labels(write, tmp_path):
    """The tester's allone_int.csv: every label 1 gave the classes ['0', '1'] and a run; "pos" everywhere
    was refused. Both are now refused with the same words, naming the one label the rows hold."""
    for labels, shown in [([1] * 10, "['1']"), (["pos"] * 10, "['pos']"), ([0] * 10, "['0']")]:
        path = write(tmp_path / f"one{shown[2:-2]}.{'csv' if write is _csv else 'jsonl'}", labels)
        assert load_seq_cls(path, "train").label_names == (["0", "1"] if labels[0] == 1 else [shown[2:-2]])
        with pytest.raises(ValueError, match=re.escape(f"--data {path}: " + ONE_LABEL.format(shown))):
            _load_data(_args(tmp_path, path))


def test_one_class_with_a_separate_evaluation_file_is_refused(tmp_path):
    """Evaluation rows of another class do not make one training class a classifier."""
    data = _jsonl(tmp_path / "train.jsonl", [1] * 10)
    eval_data = _jsonl(tmp_path / "eval.jsonl", [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"hold one label \(\['1'\]\)"):
        _load_data(_args(tmp_path, data, eval_data))


@pytest.mark.parametrize("labels, missing", [([1, 2], "['0']"), ([0, 2], "['1']"), ([0, 3], "['1', '2']")])
def test_a_class_id_no_row_holds_is_refused(labels, missing, tmp_path):
    """Labels {1, 2} (or {0, 2}) in a file: class ids are 0..max (num_labels = max + 1), so the head had a
    class no row, training or held-out, ever holds."""
    data = _csv(tmp_path / "gap.csv", labels * 10)
    n = max(labels) + 1
    with pytest.raises(DataError, match=rf"0\.\.{n - 1}, and no row \(training or evaluation\) holds class\(es\) "):
        _load_data(_args(tmp_path, data))
    with pytest.raises(DataError, match=re.escape(f"holds class(es) {missing}: the head would have {n} classes")):
        _load_data(_args(tmp_path, data, _csv(tmp_path / "eval.csv", labels * 2)))


def test_a_class_only_the_evaluation_rows_hold_is_a_one_line_note(tmp_path, capsys):
    """GLUE's convention: integer labels are class ids, so training rows {0, 2} with evaluation rows
    {0, 1, 2} are a three-class task; the class training never shows is said, with the head's size."""
    data = _jsonl(tmp_path / "train.jsonl", [0, 2] * 10)
    eval_data = _jsonl(tmp_path / "eval.jsonl", [0, 1, 2])
    train, evaluation = _load_data(_args(tmp_path, data, eval_data))
    assert train.label_names == evaluation.label_names == ["0", "1", "2"] and evaluation.labels == [0, 1, 2]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"linchain train: note: --data {data}: no training row holds class(es) ['1'] "
        "(the evaluation rows hold ['1']); the classifier head has 3 classes"
    ], err
    # string labels go through the same check: a class only in the held-out rows of the file
    labels = ["neg", "pos"] * 10
    labels[split_rows(len(labels), 0.2, seed=0)[1][0]] = "neu"  # one held-out row (the default split)
    names = _jsonl(tmp_path / "names.jsonl", labels)
    train, evaluation = _load_data(_args(tmp_path, names))
    assert train.label_names == ["neg", "neu", "pos"] and 1 not in train.labels and 1 in evaluation.labels
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"linchain train: note: --data {names}: no training row holds class(es) ['neu'] "
        "(the evaluation rows hold ['neu']); the classifier head has 3 classes"
    ], err
    # data whose training rows hold every class: no note, as before
    for labels in ([0, 1] * 10, [0, 1, 2] * 10, ["neg", "pos"] * 10):
        _load_data(_args(tmp_path, _jsonl(tmp_path / "normal.jsonl", labels)))
        assert capsys.readouterr().err == ""


def test_check_training_classes_directly():
    """The check on the rows' classes: regression is not checked; the notes name absent classes."""
    from linchain.nlu.data import SeqClsData

    texts = [("a",)] * 4
    assert check_training_classes("x", SeqClsData("x", texts, [0.5, 0.5, 0.5, 0.5], ["score"], True)) == []
    assert check_training_classes("x", SeqClsData("x", texts, [0, 1, 0, 1], ["0", "1"])) == []
    with pytest.raises(DataError, match=r"x: the training rows hold one label \(\['1'\]\)"):
        check_training_classes("x", SeqClsData("x", texts, [1, 1, 1, 1], ["0", "1"]))
    # declared names (a hub ClassLabel) that no row holds: said, not refused
    notes = check_training_classes("x", SeqClsData("x", texts, [0, 2, 0, 2], ["neg", "neu", "pos"]))
    assert notes == ["note: x: no training row holds class(es) ['neu']; the classifier head has 3 classes"]


def test_linchain_train_refuses_integer_labels_of_one_class(encoder_dir, tmp_path, capsys):  # noqa: F811
    """The tester's command: `linchain train --task_type seq_cls` on allone_int.csv ran; it is refused
    before any training, in one line, status 2."""
    from linchain.cli.main import main as cli

    data = _csv(tmp_path / "allone_int.csv", [1] * 3)
    argv = ["train", "--task_type", "seq_cls", "--model_name_or_path", encoder_dir, "--data", data]
    assert cli([*argv, "--max_steps", "1", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert ONE_LABEL.format("['1']") in err and "Traceback" not in err, err
    assert not (tmp_path / "o" / "results.json").exists()
