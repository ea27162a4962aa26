"""`linchain eval` end to end on a tiny saved model and real LLM-Adapters rows: the table,
results.json (schema), predictions.jsonl, repeated --data/--task, --config, and clear errors."""

from __future__ import annotations

import json

import pytest
import yaml

from linchain.cli.args import merge_repeated as _merge_repeated
from linchain.cli.eval import main

from .data import DATA_DIR, rows
from .helpers import byte_tokenizer, tiny_lm

RESULT_KEYS = {"schema_version", "model", "adapter", "scorer", "settings", "environment", "tasks", "average"}
TASK_KEYS = {
    "task",
    "data",
    "scorer",
    "total",
    "correct",
    "no_answer",
    "accuracy",
    "seconds",
    "task_inferred",
    "unmatchable_gold",
}
SETTING_KEYS = {
    "num_beams",
    "max_new_tokens",
    "limit",
    "per_device_eval_batch_size",
    "normalize",
    "share_prompt",
    "faithful_prompt",
    "append_choices",
    "data_columns",
    "split",
    "dtype",
    "seed",
    "num_threads",
    "merge_adapter",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = byte_tokenizer()
    path = tmp_path_factory.mktemp("tiny")
    tiny_lm(len(tok), seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _data(task: str) -> str:
    rows(task)  # skips when the shared data is absent
    return str(DATA_DIR / task / "test.json")


def test_loglik_two_tasks_one_table(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "--model_name_or_path",
            model_dir,
            "--data",
            _data("boolq"),
            "--data",
            _data("social_i_qa"),
            "--scorer",
            "loglik",
            "--limit",
            "5",
            "--per_device_eval_batch_size",
            "4",
            "--output_dir",
            str(out),
            "--no_progress",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    assert "task 'boolq' inferred from" in captured.err and "task 'social_i_qa' inferred" in captured.err
    assert "average" in captured.out and "boolq" in captured.out
    res = json.loads((out / "results.json").read_text())
    assert set(res) == RESULT_KEYS and set(res["settings"]) == SETTING_KEYS
    assert res["scorer"] == "loglik" and res["model"] == model_dir and res["adapter"] is None
    assert [t["task"] for t in res["tasks"]] == ["boolq", "social_i_qa"]
    for t in res["tasks"]:
        assert set(t) == TASK_KEYS and t["total"] == 5 and t["task_inferred"] is True
        assert t["accuracy"] == pytest.approx(t["correct"] / 5)
    assert res["average"] == pytest.approx(sum(t["accuracy"] for t in res["tasks"]) / 2)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 10
    golds = [r["answer"] for r in rows("boolq")[:5]] + [r["answer"] for r in rows("social_i_qa")[:5]]
    assert [p["gold"] for p in preds] == golds
    assert [p["row"] for p in preds] == list(range(5)) * 2
    assert all(p["pred"] in p["candidates"] and p["correct"] == (p["pred"] == p["gold"]) for p in preds)
    assert preds[5]["candidates"] == ["answer1", "answer2", "answer3"]  # from the row's "Answer format:"
    assert sum(p["correct"] for p in preds[:5]) == res["tasks"][0]["correct"]


def test_generate_with_config_file_and_explicit_task(model_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    config = tmp_path / "eval.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": model_dir,
                "data": _data("gsm8k"),
                "task": "gsm8k",
                "num_beams": 2,
                "limit": 2,
                "max_new_tokens": 4,
            }
        )
    )
    rc = main(["--config", str(config), "--num_beams", "1", "--output_dir", str(out), "--no_progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["num_beams"] == 1  # the flag overrides the file
    assert res["settings"]["max_new_tokens"] == 4
    assert res["tasks"][0]["task_inferred"] is False
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in preds] == [r["answer"] for r in rows("gsm8k")[:2]]
    assert all({"prompt", "output", "pred", "gold", "correct"} <= set(p) for p in preds)
    assert preds[0]["prompt"].endswith("### Response:\n")


def test_malformed_data_names_file_and_row(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {"instruction": "q", "input": "", "output": "o", "answer": "true"},
                {"instruction": "q2", "answer": "true"},
            ]
        )
    )
    rc = main(
        [
            "--model_name_or_path",
            model_dir,
            "--data",
            str(bad),
            "--task",
            "boolq",
            "--no_progress",
            "--output_dir",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and "row 1" in err and "output" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--data", "/tmp/mystery/test.json"], "/tmp/mystery/test.json: no such file"),
        (["--data", "gsm8k/test.json", "--task", "gsm8k", "--scorer", "loglik"], "loglik needs multiple-choice"),
        (["--data", "a.json", "b.json", "--task", "boolq"], "one --task per --data"),
        (["--data", "a.json", "--task", "boolq", "--num_beams", "0"], "num_beams must be >= 1, got 0"),
        (["--data", "a.json", "--task", "boolq", "--scorer", "vote"], "scorer must be one of"),
        (
            ["--data", "a.json", "--task", "boolq", "--device", "gpu0"],
            "device must be auto, cpu, cuda, cuda:N or mps, got 'gpu0'",
        ),
    ],
)
def test_argument_errors(model_dir, capsys, argv, message):
    assert main(["--model_name_or_path", model_dir, *argv]) == 2
    assert message in capsys.readouterr().err


def test_repeated_flags_become_lists():
    argv = ["--data", "a", "--task", "x", "--limit", "3", "--data", "b", "c", "--task", "y", "z"]
    assert _merge_repeated(argv, ["--data", "--task"]) == [
        "--limit",
        "3",
        "--data",
        "a",
        "b",
        "c",
        "--task",
        "x",
        "y",
        "z",
    ]


def _bigbench_task(cache, name: str, n: int) -> None:
    """A BIG-bench-format task.json in the linchain cache (where linchain.offline looks first)."""
    examples = [
        {"input": f"Is {i} even?", "target_scores": {"Yes": int(i % 2 == 0), "No": int(i % 2 == 1)}} for i in range(n)
    ]
    path = cache / "bigbench" / name / "task.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "examples": examples}))


def test_bigbench_both_scorers_same_rows(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LINCHAIN_CACHE", str(tmp_path / "cache"))
    _bigbench_task(tmp_path / "cache", "parity", 6)
    runs = {}
    for scorer in ("loglik", "generate"):
        out = tmp_path / scorer
        assert (
            main(
                [
                    "--model_name_or_path",
                    model_dir,
                    "--data",
                    "bigbench:parity",
                    "--scorer",
                    scorer,
                    "--limit",
                    "4",
                    "--max_new_tokens",
                    "3",
                    "--num_beams",
                    "1",
                    "--output_dir",
                    str(out),
                    "--no_progress",
                ]
            )
            == 0
        )
        runs[scorer] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        res = json.loads((out / "results.json").read_text())
        assert res["tasks"][0]["task"] == "bigbench:parity" and res["tasks"][0]["total"] == 4
    assert [p["row"] for p in runs["loglik"]] == [p["row"] for p in runs["generate"]] == [0, 1, 2, 3]
    assert [p["gold"] for p in runs["loglik"]] == ["Yes", "No", "Yes", "No"]
    assert runs["loglik"][0]["prompt"] == runs["generate"][0]["prompt"]
    assert runs["loglik"][0]["prompt"].count("\n  choice: ") == 2
    assert all(p["pred"] in ("Yes", "No") for p in runs["loglik"])


def test_saved_hf_dataset_with_column_mapping(model_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_dict(
                {
                    "question": ["Is water wet?\n\nAnswer format: true/false"] * 3,
                    "target": ["the correct answer is true"] * 3,
                    "label": ["true", "false", "true"],
                }
            )
        }
    ).save_to_disk(str(folder))
    out = tmp_path / "hf"
    assert (
        main(
            [
                "--model_name_or_path",
                model_dir,
                "--data",
                str(folder),
                "--task",
                "boolq",
                "--scorer",
                "loglik",
                "--data_columns",
                "instruction=question,output=target,answer=label",
                "--output_dir",
                str(out),
                "--no_progress",
            ]
        )
        == 0
    )
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in preds] == ["true", "false", "true"]


def test_adapter_and_merged_adapter_score_the_same(model_dir, tmp_path):
    """An adapter changes the scores (B random, not zero), and merging it changes nothing."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from linchain import LinChainConfig

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LinChainConfig(
        r=4,
        alpha=8,
        num_mixers=2,
        mixer_bias=True,
        init_weights=False,
        target_modules=["q_proj", "v_proj", "down_proj"],
    )
    adapter = tmp_path / "adapter"
    get_peft_model(base, cfg).save_pretrained(adapter)
    scores = {}
    for name, extra in {
        "base": [],
        "adapter": ["--adapter", str(adapter)],
        "merged": ["--adapter", str(adapter), "--merge_adapter"],
    }.items():
        out = tmp_path / f"eval-{name}"  # not tmp_path/adapter: an output is never the adapter it reads (issue 17)
        assert (
            main(
                [
                    "--model_name_or_path",
                    model_dir,
                    *extra,
                    "--data",
                    _data("piqa"),
                    "--scorer",
                    "loglik",
                    "--limit",
                    "3",
                    "--output_dir",
                    str(out),
                    "--no_progress",
                ]
            )
            == 0
        )
        scores[name] = [
            s for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines()) for s in p["scores"]
        ]
        assert json.loads((out / "results.json").read_text())["adapter"] == (str(adapter) if extra else None)
    assert scores["merged"] == pytest.approx(scores["adapter"], abs=1e-4)
    assert scores["adapter"] != pytest.approx(scores["base"], abs=1e-3)


def test_adapter_given_as_a_run_folder(model_dir, tmp_path):
    """`--adapter runs/x` (a `linchain train` output folder) scores as `--adapter runs/x/adapter`."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from linchain import LinChainConfig

    cfg = LinChainConfig(r=4, alpha=8, num_mixers=1, init_weights=False, target_modules=["q_proj", "v_proj"])
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), cfg).save_pretrained(tmp_path / "run" / "adapter")
    scores = {}
    for name, adapter in {"run": tmp_path / "run", "adapter": tmp_path / "run" / "adapter"}.items():
        assert (
            main(
                [
                    "--model_name_or_path",
                    model_dir,
                    "--adapter",
                    str(adapter),
                    "--data",
                    _data("piqa"),
                    "--scorer",
                    "loglik",
                    "--limit",
                    "2",
                    "--output_dir",
                    str(tmp_path / "run" / f"eval-{name}"),
                    "--no_progress",
                ]
            )
            == 0
        )
        # inside the run, beside its adapter (not the run folder itself, which holds the adapter: issue 17)
        scores[name] = [
            p["scores"]
            for p in map(json.loads, (tmp_path / "run" / f"eval-{name}" / "predictions.jsonl").read_text().splitlines())
        ]
    assert scores["run"] == scores["adapter"]


def test_run_evaluation_returns_the_results(model_dir, tmp_path):
    from linchain.eval import EvalArguments, run_evaluation

    args = EvalArguments(
        model_name_or_path=model_dir,
        data=[_data("boolq")],
        scorer="loglik",
        limit=4,
        output_dir=str(tmp_path / "ev"),
        progress=False,
    )
    run = run_evaluation(args)
    assert [r.total for r in run.results] == [4] and run.path == tmp_path / "ev" / "results.json"
    saved = json.loads(run.path.read_text())
    assert saved["tasks"][0]["correct"] == run.results[0].correct and run.average == run.results[0].accuracy


def test_auto_device_scores_on_the_gpu_when_there_is_one(model_dir, tmp_path, monkeypatch):
    """The model goes where --device says, auto meaning the GPU when one is present (as the trainer
    does): a GPU machine once scored a whole study on its CPU. CUDA is faked here; the load records
    the device it was asked for and loads on the CPU."""
    import torch

    import linchain.eval.run as run_module
    from linchain.eval import EvalArguments, run_evaluation

    asked = []
    real = run_module.load_causal_lm
    monkeypatch.setattr(
        run_module, "load_causal_lm", lambda *a, device=None, **k: asked.append(device) or real(*a, **k)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device, expected in (("auto", "cuda"), ("cpu", "cpu"), ("cuda:1", "cuda:1")):
        args = EvalArguments(
            model_name_or_path=model_dir,
            data=[_data("boolq")],
            scorer="loglik",
            limit=2,
            device=device,
            output_dir=str(tmp_path / device.replace(":", "")),
            progress=False,
        )
        assert args.torch_device() == expected
        run = run_evaluation(args)
        assert asked[-1] == expected and run.payload["environment"]["device"] == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert EvalArguments(model_name_or_path=model_dir, data=["a.json"], device="auto").torch_device() in ("cpu", "mps")
    with pytest.raises(ValueError, match="--device cuda: this machine has no CUDA GPU"):
        EvalArguments(model_name_or_path=model_dir, data=["a.json"], device="cuda").torch_device()


@pytest.mark.device
def test_scores_on_the_test_device_match_the_cpu(model_dir, tmp_path, device):
    from linchain.eval import EvalArguments, run_evaluation

    # rows written here: the device machine has no ../shared data
    data = tmp_path / "boolq" / "test.json"
    data.parent.mkdir()
    data.write_text(
        json.dumps(
            [
                {
                    "instruction": f"Is {i} {'odd' if i % 3 else 'even'}?\n\nAnswer format: true/false",
                    "input": "",
                    "output": "",
                    "answer": ["true", "false"][i % 2],
                }
                for i in range(6)
            ]
        )
    )
    runs = {}
    for name, where in (("reference", "cpu"), ("device", str(device))):
        args = EvalArguments(
            model_name_or_path=model_dir,
            data=[str(data)],
            scorer="loglik",
            limit=6,
            device=where,
            output_dir=str(tmp_path / name),
            progress=False,
        )
        runs[name] = run_evaluation(args)
    assert runs["device"].payload["environment"]["device"] == str(device)
    cpu, dev = (runs[name].results[0].predictions for name in ("reference", "device"))
    # float32 on both; a GPU's kernels differ in the last bits, not in the ranking of these options
    assert [p["pred"] for p in cpu] == [p["pred"] for p in dev]


def test_closed_task_ranks_the_distinct_gold_answers(model_dir, tmp_path):
    """--task closed (answers without listed options, e.g. reasoning_gym:family_relationships): every row is
    ranked against the sorted distinct gold answers of the rows scored, with no list appended to the prompt."""
    from linchain.eval import EvalArguments, run_evaluation

    answers = ["son", "wife", "uncle", "son", "mother", "wife"]
    data = tmp_path / "family.json"
    data.write_text(
        json.dumps(
            [
                {"instruction": f"What relation is {i}?", "input": "", "output": a, "answer": a}
                for i, a in enumerate(answers)
            ]
        )
    )
    run = run_evaluation(
        EvalArguments(
            model_name_or_path=model_dir,
            data=[str(data)],
            task=["closed"],
            scorer="loglik",
            output_dir=str(tmp_path / "ev"),
            progress=False,
        )
    )
    preds = run.results[0].predictions
    assert len(preds) == 6 and all(p["candidates"] == ["mother", "son", "uncle", "wife"] for p in preds)
    assert all(
        p["correct"] == (p["pred"] == p["gold"]) and p["pred"] == p["candidates"][p["scores"].index(max(p["scores"]))]
        for p in preds
    )
    assert "choice:" not in preds[0]["prompt"]
    # --limit scores fewer rows but ranks them over the whole file's answers
    limited = run_evaluation(
        EvalArguments(
            model_name_or_path=model_dir,
            data=[str(data)],
            task=["closed"],
            scorer="loglik",
            limit=2,
            output_dir=str(tmp_path / "ev1"),
            progress=False,
        )
    )
    assert [p["candidates"] for p in limited.results[0].predictions] == [preds[0]["candidates"]] * 2
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "son", "answer": "son"}] * 2))
    with pytest.raises(ValueError, match="--task closed: .*family.json has 1 distinct answers"):
        run_evaluation(
            EvalArguments(
                model_name_or_path=model_dir,
                data=[str(data)],
                task=["closed"],
                scorer="loglik",
                output_dir=str(tmp_path / "ev2"),
                progress=False,
            )
        )
