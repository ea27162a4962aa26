"""linchain.data.load_examples on small generated rows of every source, and its malformed-row errors."""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from pathlib import Path

import pytest

from linchain.data import DataError, Example, load_examples

ROWS = [
    {"instruction": "Is the sky blue?", "input": "", "output": "the correct answer is true", "answer": "true"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "The answer is 5.", "answer": 5},
]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "llm-adapters"


def write_json(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_json_list_rows(tmp_path):
    path = write_json(tmp_path / "d.json", ROWS)
    got = load_examples(path)
    assert got == [
        Example("Is the sky blue?", "", "the correct answer is true", "true", str(path), 0),
        Example("Add the numbers.", "2 and 3", "The answer is 5.", "5", str(path), 1),
    ]


def test_adapters_row_writes_a_file_that_loads_back_the_same_rows(tmp_path):
    rows = load_examples(write_json(tmp_path / "d.json", ROWS))
    again = load_examples(write_json(tmp_path / "again.json", [e.adapters_row() for e in rows]))
    assert [(e.instruction, e.input, e.output, e.answer) for e in again] == [
        (e.instruction, e.input, e.output, e.answer) for e in rows
    ]
    assert [e.answer for e in again] == ["true", "5"]


def test_jsonl_rows_and_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    got = load_examples(path)
    assert [e.answer for e in got] == ["true", "5"] and [e.row for e in got] == [0, 1]


@pytest.mark.parametrize(
    "bad_row, what",
    [
        ({"input": "", "output": "x"}, "missing field 'instruction'"),
        ({"instruction": "q", "input": ""}, "missing field 'output'"),
        ({"instruction": "q", "output": ["x"]}, "field 'output' must be a string"),
        ({"instruction": "q", "output": "x", "answer": True}, "field 'answer' must be a string"),
        ({"instruction": "  ", "output": "x"}, "field 'instruction' is empty"),
        # break-it check (2026-12-01): a null field was "missing" while the list of fields present named it
        ({"instruction": None, "output": "x"}, "field 'instruction' is null; it must be a string"),
        ("just a string", "expected an object"),
    ],
)
def test_malformed_json_row_names_file_row_and_problem(tmp_path, bad_row, what):
    path = write_json(tmp_path / "bad.json", [ROWS[0], ROWS[1], bad_row])
    with pytest.raises(DataError) as err:
        load_examples(path)
    message = str(err.value)
    assert str(path) in message and "row 2" in message and what in message


def test_malformed_jsonl_line_and_skip_counts(tmp_path, caplog):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n" + json.dumps({"instruction": "q"}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl: row 1 \(line 2\): not valid JSON"):
        load_examples(path)
    with caplog.at_level(logging.WARNING, logger="linchain.data"):
        got = load_examples(path, skip_malformed=True)
    assert len(got) == 1 and got[0].row == 0
    assert "skipped 2 malformed row(s)" in caplog.text


def test_not_a_list_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="expected a JSON list"):
        load_examples(write_json(tmp_path / "o.json", {"rows": ROWS}))
    with pytest.raises(DataError, match="no such file"):
        load_examples(tmp_path / "absent.json")
    with pytest.raises(DataError, match="unknown field"):
        load_examples(write_json(tmp_path / "d.json", ROWS), columns={"question": "instruction"})


def test_column_mapping_for_json(tmp_path):
    path = write_json(tmp_path / "d.json", [{"q": "Why?", "a": "Because."}])
    (got,) = load_examples(path, columns={"instruction": "q", "output": "a"})
    assert (got.instruction, got.output, got.input, got.answer) == ("Why?", "Because.", "", "")


@pytest.mark.skipif(not (SHARED / "boolq" / "train.json").exists(), reason="shared LLM-Adapters data not present")
def test_real_llm_adapters_files():
    boolq = load_examples(SHARED / "boolq" / "train.json")
    assert len(boolq) == 9427 and {e.answer for e in boolq} == {"true", "false"}
    math = load_examples(SHARED / "ft-training_set" / "math_data.json")
    # 3 rows of this real file have an empty output; they load as they are (LLM-Adapters trains on them too)
    assert len(math) == 3260 and sum(not e.output.strip() for e in math) == 3


BIGBENCH_TASK = {
    "name": "toy",
    "examples": [
        {"input": "Q: 1+1? A:", "target_scores": {"1": 0, "2": 1, "3": 0}},
        {"input": "Q: Capital of France? A:", "target": ["Paris", "paris"]},
    ],
}


def test_bigbench_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LINCHAIN_CACHE", str(tmp_path))
    (tmp_path / "bigbench" / "toy").mkdir(parents=True)
    (tmp_path / "bigbench" / "toy" / "task.json").write_text(json.dumps(BIGBENCH_TASK))
    mc, gen = load_examples("bigbench:toy")
    assert mc.options == ["1", "2", "3"] and mc.answer == mc.output == "2"
    assert mc.target_scores == {"1": 0.0, "2": 1.0, "3": 0.0}
    assert gen.options is None and gen.output == "Paris" and gen.row == 1


def test_bigbench_from_sdist_extracts_one_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LINCHAIN_CACHE", str(tmp_path / "cache"))
    sdist = tmp_path / "bigbench-1.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for task, body in (("toy", BIGBENCH_TASK), ("broken", {"examples": [{"input": "x", "target": 3}]})):
            data = json.dumps(body).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{task}/task.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("LINCHAIN_BIGBENCH_SDIST", str(sdist))
    assert len(load_examples("bigbench:toy")) == 2
    assert (tmp_path / "cache" / "bigbench" / "toy" / "task.json").exists()
    with pytest.raises(DataError, match=r"bigbench:broken .*row 0: needs 'target_scores' or a string 'target'"):
        load_examples("bigbench:broken")
    with pytest.raises(Exception, match="no task 'nope'"):
        load_examples("bigbench:nope")


def test_reasoning_gym_seeded():
    pytest.importorskip("reasoning_gym")
    a = load_examples("reasoning_gym:chain_sum:7", seed=3)
    b = load_examples("reasoning_gym:chain_sum:7", seed=3)
    c = load_examples("reasoning_gym:chain_sum:7", seed=4)
    assert len(a) == 7 and a == b and a != c
    # The answer is the generator's own: recompute the sum from the question independently.
    expr = a[0].instruction.rsplit(":", 1)[1].strip().rstrip("=").strip()
    assert str(eval(expr, {"__builtins__": {}})) == a[0].answer  # noqa: S307 (digits and +/- only)
    with pytest.raises(DataError, match="must be an integer"):
        load_examples("reasoning_gym:chain_sum:many")


def test_saved_hf_dataset_with_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"question": ["a?", "b?"], "label": ["A", "B"]})
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(tmp_path / "saved")
    got = load_examples(tmp_path / "saved", columns={"instruction": "question", "output": "label", "answer": "label"})
    assert [(e.instruction, e.output, e.answer) for e in got] == [("a?", "A", "A"), ("b?", "B", "B")]
    assert [
        e.row
        for e in load_examples(tmp_path / "saved", split="test", columns={"instruction": "question", "output": "label"})
    ] == [0]
    with pytest.raises(DataError, match=r"no column\(s\) \['output'\]"):
        load_examples(tmp_path / "saved", columns={"instruction": "question"})


def test_reasoning_gym_spec_seed_draws_rows_seed_plus_index():
    """reasoning_gym:NAME:N:SEED: row i is the generator's row with seed SEED + i, so a test set drawn with a
    seed above the training rows' count shares no row with them."""
    pytest.importorskip("reasoning_gym")
    train = load_examples("reasoning_gym:family_relationships:12", seed=0)
    shifted = load_examples("reasoning_gym:family_relationships:4:8")
    assert [e.instruction for e in shifted] == [e.instruction for e in train[8:]]
    assert shifted[0].source == "reasoning_gym:family_relationships:4:8"
    assert not {e.instruction for e in load_examples("reasoning_gym:family_relationships:4:12")} & {
        e.instruction for e in train
    }
    with pytest.raises(DataError, match="the seed after the third ':' must be a non-negative integer"):
        load_examples("reasoning_gym:family_relationships:4:x")


def test_reasoning_gym_options_configure_the_generator():
    """reasoning_gym:NAME:N:SEED?KEY=VALUE&...: the generator's config fields (issue 20's arithmetic preset)."""
    pytest.importorskip("reasoning_gym")
    rows = load_examples("reasoning_gym:chain_sum:30:5?min_digits=1&max_digits=1&min_terms=2&max_terms=2", seed=0)
    for row in rows:  # "... problem: 4 - 1 =": two one-digit terms, and the answer is their sum
        terms = re.findall(r"(-?\s*\d+)", row.instruction.split(":")[-1])
        a, op, b = re.search(r"(\d+) ([+-]) (\d+) =$", row.instruction).groups()
        assert len(terms) == 2 and int(row.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert rows[0].source.endswith("?min_digits=1&max_digits=1&min_terms=2&max_terms=2")
    default = load_examples("reasoning_gym:chain_sum:30:5", seed=0)
    assert max(len(r.instruction) for r in default) > max(len(r.instruction) for r in rows)


@pytest.mark.parametrize(
    "options, message",
    [
        ("nope=1", "unexpected keyword argument 'nope'"),
        ("min_digits", "must be key=value pairs"),
        ("min_digits=5&max_digits=1", "max_digits must be >= min_digits"),
        ("min_digits=[1]", "must be a number, a word or true/false"),
    ],
)
def test_reasoning_gym_bad_options_name_the_spec(options, message):
    pytest.importorskip("reasoning_gym")
    with pytest.raises(DataError, match=re.escape(message)):
        load_examples(f"reasoning_gym:chain_sum:3?{options}", seed=0)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Couldn't reach 'foo' on the Hub (LocalEntryNotFoundError)"),
        FileNotFoundError("Couldn't find any data file at /x/foo."),
    ],
)
def test_an_hf_dataset_that_cannot_be_loaded_is_one_data_error(monkeypatch, error):
    """Break-it check (2026-12-01): `--data hf:foo` without network ended in datasets' 17-frame traceback."""
    import datasets

    def unreachable(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError) as err:
        load_examples("hf:foo:bar")
    message = str(err.value)
    assert message.startswith("hf:foo:bar: cannot load Hugging Face dataset 'foo' (config 'bar'): ")
    assert str(error).splitlines()[0] in message and "Give a local .json/.jsonl file" in message
