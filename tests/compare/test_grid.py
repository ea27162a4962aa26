"""The grid: learning-rate choice on the validation split, seeds at the chosen rate, reuse, resume,
failures; first with stand-in train/eval functions (exact control of the scores), then end to end on
a tiny Llama (real run_training and run_evaluation)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from linchain.cli.compare import parse_args
from linchain.compare import compare
from linchain.eval.results import TaskResult
from linchain.eval.run import EvalRun
from linchain.train.engine import RunResult

#: validation accuracy of (method, learning rate): lora is best at 1e-3, linchain-k3 at 1e-2
VALIDATION = {
    ("lora", "lr0.001"): 0.75,
    ("lora", "lr0.01"): 0.5,
    ("linchain-k3", "lr0.001"): 0.25,
    ("linchain-k3", "lr0.01"): 1.0,
}
VALIDATION_METHODS = ("lora", "linchain-k3")


class Fakes:
    """run_training / run_evaluation stand-ins that record their calls and write what the grid reads."""

    def __init__(self, fail: str = ""):
        self.trained, self.evaluated, self.fail = [], [], fail

    def train(self, model_args, data_args, train_args):
        out = Path(train_args.output_dir)
        method = out.parts[-4]
        self.trained.append((method, train_args.learning_rate, train_args.seed, train_args.resume))
        assert data_args.val_set_size == 0 and data_args.data == [str(out.parents[4] / "data" / "train.json")]
        if method == self.fail:
            raise RuntimeError(f"{method} diverged")
        (out / "adapter").mkdir(parents=True, exist_ok=True)
        (out / "adapter" / "adapter_config.json").write_text("{}")
        lines = [json.dumps({"loss": 2.0 / step, "step": step}) for step in range(1, train_args.max_steps + 1)]
        (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return RunResult(
            output_dir=str(out),
            global_step=train_args.max_steps,
            interrupted=False,
            train_loss=1.0,
            trainable_params=1000 if model_args.method == "lora" else 1200,
        )

    def eval(self, args):
        self.evaluated.append(args.output_dir)
        run_dir = Path(args.output_dir).parent
        method, rate, seed = (
            run_dir.parts[-3],
            run_dir.parts[-2],
            int(run_dir.parts[-1][4:]) if "seed" in run_dir.name else 0,
        )
        results = []
        for data in args.data:
            n = 4 if "validation" in data else 40
            if "validation" in data:
                right = round(VALIDATION[(method, rate)] * n)
            else:  # test: linchain-k3 right on 30 of 40 rows, lora on 10 (+ the seed), the base model on 20
                right = {"lora": 10 + seed, "linchain-k3": 30}.get(method, 20)
            preds = [{"row": i, "correct": i < right, "gold": "true" if i % 2 else "false"} for i in range(n)]
            results.append(
                TaskResult(
                    task="boolq",
                    data=data,
                    scorer=args.scorer,
                    total=n,
                    correct=right,
                    no_answer=0,
                    seconds=0.0,
                    predictions=preds,
                )
            )
        return EvalRun(results=results, payload={}, path=Path(args.output_dir) / "results.json")


def _argv(boolq_dir, out, *extra):
    return [
        "--model_name_or_path",
        "unused",
        "--data",
        str(boolq_dir / "boolq" / "train.json"),
        "--eval_data",
        str(boolq_dir / "boolq" / "test.json"),
        "--methods",
        "lora,linchain-k3",
        "--seeds",
        "0,1",
        "--learning_rates",
        "1e-3,1e-2",
        "--max_steps",
        "10",
        "--validation_size",
        "4",
        "--output_dir",
        str(out),
        "--n_resamples",
        "500",
        *extra,
    ]


def test_grid_chooses_rates_on_validation_and_reuses_runs(boolq_dir, tmp_path):
    out = tmp_path / "cmp"
    fakes = Fakes()
    report, md = compare(*parse_args(_argv(boolq_dir, out)), train_fn=fakes.train, eval_fn=fakes.eval)
    assert report["methods"]["lora"]["learning_rate"] == 1e-3
    assert report["methods"]["linchain-k3"]["learning_rate"] == 1e-2
    # sweep with seed 0 at both rates, then seed 1 at the chosen rate only
    assert sorted(fakes.trained) == sorted(
        [
            ("lora", 1e-3, 0, False),
            ("lora", 1e-2, 0, False),
            ("lora", 1e-3, 1, False),
            ("linchain-k3", 1e-3, 0, False),
            ("linchain-k3", 1e-2, 0, False),
            ("linchain-k3", 1e-2, 1, False),
        ]
    )
    assert [x["validation_accuracy"] for x in report["methods"]["linchain-k3"]["sweep"]] == [0.25, 1.0]
    # the validation rows are carved from the training data and never trained on
    train_rows = json.loads((out / "data" / "train.json").read_text())
    val_rows = json.loads((out / "data" / "validation-boolq.json").read_text())
    assert (
        len(val_rows) == 4
        and len(train_rows) == 56
        and not {r["instruction"] for r in val_rows} & {r["instruction"] for r in train_rows}
    )
    c = report["comparisons"][0]
    assert (c["method"], c["baseline"], c["paired_seeds"]) == ("linchain-k3", "lora", [0, 1])
    assert c["difference"] == pytest.approx((30 - 10.5) / 40) and c["verdict"] == "better" and c["ci_low"] > 0
    assert report["methods"]["lora"]["per_seed"][1]["per_task"]["boolq"] == pytest.approx(11 / 40)
    assert report["base"]["average"] == pytest.approx(0.5) and report["label_prior"]["average"] == pytest.approx(0.5)
    assert report["methods"]["linchain-k3"]["trainable_params"] == 1200
    assert report["methods"]["lora"]["convergence"]["steps_to_target"] == [10, 10]
    assert "**better**" in md.read_text() and (out / "lr_sweep.png").exists() and (out / "convergence.png").exists()

    # a rerun reuses every step: nothing trained or scored again, the same report
    again = Fakes()
    report2, _ = compare(*parse_args(_argv(boolq_dir, out)), train_fn=again.train, eval_fn=again.eval)
    assert again.trained == [] and again.evaluated == []
    assert report2["comparisons"][0]["difference"] == c["difference"]

    # other settings into the same folder are refused (the runs would not be comparable)
    with pytest.raises(ValueError, match="other settings.*train.max_steps"):
        compare(*parse_args(_argv(boolq_dir, out, "--max_steps", "20")), train_fn=again.train, eval_fn=again.eval)


def test_a_failed_run_is_recorded_and_the_grid_goes_on(boolq_dir, tmp_path):
    out = tmp_path / "cmp"
    fakes = Fakes(fail="linchain-k3")
    report, md = compare(*parse_args(_argv(boolq_dir, out)), train_fn=fakes.train, eval_fn=fakes.eval)
    assert report["methods"]["lora"]["learning_rate"] == 1e-3 and len(report["methods"]["lora"]["per_seed"]) == 2
    assert report["methods"]["linchain-k3"]["learning_rate"] is None and report["comparisons"] == []
    assert [f["step"] for f in report["failures"]] == [
        "linchain-k3 lr 0.001 seed 0 training",
        "linchain-k3 lr 0.01 seed 0 training",
    ]
    assert "diverged" in md.read_text()
    # the next call retries what failed and reuses the rest
    fixed = Fakes()
    report, _ = compare(*parse_args(_argv(boolq_dir, out)), train_fn=fixed.train, eval_fn=fixed.eval)
    assert {m for m, *_ in fixed.trained} == {"linchain-k3"} and report["failures"] == []


def test_tiny_llama_end_to_end_and_resume(tiny_model_dir, boolq_dir, tmp_path):
    """Real training and scoring: 2 methods x 2 rates x 2 seeds, 3 steps each (6 trainings)."""
    from linchain.train import engine

    out = tmp_path / "cmp"
    argv = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--data",
        str(boolq_dir / "boolq" / "train.json"),
        "--eval_data",
        str(boolq_dir / "boolq" / "test.json"),
        "--methods",
        "lora,linchain-k2-frozen",
        "--seeds",
        "0,1",
        "--learning_rates",
        "1e-3,3e-2",
        "--max_steps",
        "3",
        "--validation_size",
        "8",
        "--output_dir",
        str(out),
        "--r",
        "2",
        "--alpha",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--cutoff_len",
        "64",
        "--save_steps",
        "2",
        "--report_to",
        "none",
        "--n_resamples",
        "500",
    ]
    calls = []

    def counted(*args, **kwargs):
        calls.append(args[2].resume)
        return engine.run_training(*args, **kwargs)

    report, md = compare(*parse_args(argv), train_fn=counted)
    assert calls == [False] * 6
    for name in ("lora", "linchain-k2-frozen"):
        m = report["methods"][name]
        sweep = {x["learning_rate"]: x["validation_accuracy"] for x in m["sweep"]}
        best = max(sweep.values())
        assert sweep[m["learning_rate"]] == best  # the chosen rate has the best validation score
        assert [p["seed"] for p in m["per_seed"]] == [0, 1] and m["trainable_params"] > 0
        assert m["effective_rank"] is not None and m["effective_rank"][0] > 0
        assert all(len(s) == 2 for s in [m["convergence"]["steps_to_target"]])
    c = report["comparisons"][0]
    assert set(c) >= {"difference", "ci_low", "ci_high", "p_value", "verdict", "min_detectable_difference"}
    assert (
        report["schema_version"] == 2
        and json.loads((out / "report.json").read_text())["comparisons"][0]["verdict"] == c["verdict"]
    )
    # frozen mixers: fewer trainable parameters than the same chain would have, more than LoRA at r=2 (A, B only)
    assert report["methods"]["linchain-k2-frozen"]["trainable_params"] == report["methods"]["lora"]["trainable_params"]

    # a run whose outputs were written but not its marker is reused, not trained again
    run = out / "runs" / "lora" / f"lr{report['methods']['lora']['learning_rate']:g}" / "seed1"
    (run / "train.json").unlink()
    calls.clear()
    compare(*parse_args(argv), train_fn=counted)
    assert calls == [] and (run / "train.json").exists()
    # an interrupted run resumes from its newest complete checkpoint (here checkpoint-2 of 3 steps)
    (run / "train.json").unlink()
    (run / "train" / "summary.json").unlink()
    shutil.rmtree(run / "train" / "checkpoint-3")
    compare(*parse_args(argv), train_fn=counted)
    assert calls == [True]
    marker = json.loads((run / "train.json").read_text())
    assert [step for step, _ in marker["losses"]] == [1, 2, 3] and marker["global_step"] == 3


def test_a_grid_with_a_peft_variant_end_to_end(tiny_model_dir, boolq_dir, tmp_path):
    """Issue 20: DoRA (PEFT's own) as a compared method: swept, tested, in the report beside LoRA."""
    argv = [
        "--model_name_or_path",
        str(tiny_model_dir),
        "--data",
        str(boolq_dir / "boolq" / "train.json"),
        "--eval_data",
        str(boolq_dir / "boolq" / "test.json"),
        "--methods",
        "lora,dora",
        "--seeds",
        "0",
        "--learning_rates",
        "1e-3,3e-2",
        "--max_steps",
        "2",
        "--validation_size",
        "8",
        "--output_dir",
        str(tmp_path / "cmp"),
        "--r",
        "2",
        "--alpha",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--cutoff_len",
        "64",
        "--report_to",
        "none",
        "--n_resamples",
        "200",
    ]
    report, md = compare(*parse_args(argv))
    dora, lora = report["methods"]["dora"], report["methods"]["lora"]
    assert len(dora["sweep"]) == 2 and dora["per_seed"][0]["seed"] == 0
    # DoRA adds one magnitude vector per adapted layer (its out_features) to LoRA's A and B
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(tiny_model_dir)
    kv = c.num_key_value_heads * c.hidden_size // c.num_attention_heads
    per_layer = c.hidden_size + 2 * kv + c.intermediate_size + c.hidden_size  # q, k, v, up, down (the default targets)
    assert dora["trainable_params"] - lora["trainable_params"] == c.num_hidden_layers * per_layer
    assert "| dora |" in md.read_text()


def test_markers_without_adapters_retrain_only_what_still_needs_testing(boolq_dir, tmp_path):
    """A study carried to another machine keeps its small markers but not its adapters: runs whose test
    scores exist are reused, a run whose test is still missing trains again instead of failing."""
    import shutil

    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    for adapter in out.glob("runs/*/*/*/train/adapter"):
        shutil.rmtree(adapter)
    (out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").unlink()
    again = Fakes()
    report, _ = compare(*parse_args(_argv(boolq_dir, out)), train_fn=again.train, eval_fn=again.eval)
    assert again.trained == [("lora", 1e-3, 1, False)] and report["failures"] == []


def test_a_study_moves_between_cpu_and_gpu_but_not_between_step_counts(boolq_dir, tmp_path):
    """settings.json from a GPU machine (use_cpu false, pinned memory) is the same comparison on a CPU;
    a setting that changes results is not."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    settings = json.loads((out / "settings.json").read_text())
    settings["train"].update(use_cpu=False, dataloader_pin_memory=True)
    (out / "settings.json").write_text(json.dumps(settings))
    idle = Fakes()
    compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=idle.train, eval_fn=idle.eval)
    # issue 21: studies are matched on the fields that define results (an allow-list): a field a newer
    # transformers adds, or an older settings.json lacks (it had its default), orphans nothing
    settings["train"]["a_field_transformers_adds_later"] = 3
    del settings["train"]["warmup_ratio"]
    (out / "settings.json").write_text(json.dumps(settings))
    compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=idle.train, eval_fn=idle.eval)
    for field, value in (("max_steps", 11), ("max_grad_norm", 0.5)):
        changed = json.loads(json.dumps(settings))
        changed["train"][field] = value
        (out / "settings.json").write_text(json.dumps(changed))
        with pytest.raises(ValueError, match=f"other settings.*train.{field}"):
            compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=idle.train, eval_fn=idle.eval)


def test_a_retraining_cut_short_keeps_the_sweep_record(boolq_dir, tmp_path):
    """Retraining a carried run whose adapter is gone must not lose its marker first: cut off there,
    the sweep (and a --report_only report) still has that rate's training record and choice."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    for adapter in out.glob("runs/*/*/*/train/adapter"):
        shutil.rmtree(adapter)
    (out / "runs" / "lora" / "lr0.001" / "seed0" / "test.json").unlink()
    before = json.loads((out / "runs" / "lora" / "lr0.001" / "seed0" / "train.json").read_text())

    def cut_off(model_args, data_args, train_args):
        raise KeyboardInterrupt("the budget ran out")

    with pytest.raises(KeyboardInterrupt):
        compare(*parse_args(_argv(boolq_dir, out)), train_fn=cut_off, eval_fn=Fakes().eval)
    assert json.loads((out / "runs" / "lora" / "lr0.001" / "seed0" / "train.json").read_text()) == before
    idle = Fakes()
    report, _ = compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=idle.train, eval_fn=idle.eval)
    assert [x["status"] for x in report["methods"]["lora"]["sweep"]] == ["ok", "ok"]
    assert report["methods"]["lora"]["learning_rate"] == 1e-3 and report["not_run"] == ["lora lr 0.001 seed 0 test"]


def test_report_only_reports_the_finished_steps_and_runs_nothing(boolq_dir, tmp_path):
    """--report_only on a grid cut short: the finished steps are reported, the missing ones listed, none run;
    on a folder with no comparison it refuses."""
    out = tmp_path / "cmp"
    with pytest.raises(ValueError, match="report_only.*no settings.json"):
        compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval)
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    # as if cut off (or run in parallel parts): linchain-k3's first rate never trained, lora's seed 1 never tested
    shutil.rmtree(out / "runs" / "linchain-k3" / "lr0.001")
    (out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").unlink()
    idle = Fakes()
    report, md = compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=idle.train, eval_fn=idle.eval)
    assert idle.trained == [] and idle.evaluated == [] and report["failures"] == []
    assert report["not_run"] == ["linchain-k3 lr 0.001 seed 0 training", "lora lr 0.001 seed 1 test"]
    assert [x["status"] for x in report["methods"]["linchain-k3"]["sweep"]] == ["not run", "ok"]
    # provisional: linchain-k3's only finished rate; its two seeds paired with lora's one tested seed
    assert report["methods"]["linchain-k3"]["learning_rate"] == 1e-2 and report["methods"]["lora"]["seeds"] == [0]
    assert report["methods"]["linchain-k3"]["seeds"] == [0, 1]
    assert report["comparisons"][0]["paired_seeds"] == [0]
    assert "Not run yet (2 steps" in md.read_text() and "not run |" in md.read_text()


def test_the_report_names_each_methods_seeds_and_gives_no_spread_for_one(boolq_dir, tmp_path):
    """Found while three seeds ran: a one-seed method read "49.0 ± 0.0" (a spread of one seed is unknown,
    not 0), and a method paired on fewer seeds than the baseline's mean averages gave unlabelled per-seed
    differences. Each row now names its seeds, one seed shows the mean alone, and each per-seed
    difference is named by its seed."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    kept_lora_seed1 = json.loads((out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").read_text())
    (out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").unlink()  # lora: seed 0 only
    # linchain-k3: an effective rank for seed 0 only (seed 1's stand-in adapter cannot be analysed), and
    # lora's cached one damaged (recomputed: the stand-in gives none)
    (out / "runs" / "linchain-k3" / "lr0.01" / "seed0" / "effective_rank.json").write_text(
        '{"mean_effective_rank": 2.5}'
    )
    (out / "runs" / "lora" / "lr0.001" / "seed0" / "effective_rank.json").write_text('{"mean_effective')
    report, md = compare(
        *parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval
    )
    text = md.read_text()
    lora_row = next(line for line in text.splitlines() if line.startswith("| lora |"))
    k3_row = next(line for line in text.splitlines() if line.startswith("| linchain-k3 | 0.01 |"))
    # lora: 10 of 40 right at seed 0; linchain-k3: 30 of 40 at both seeds (Fakes)
    assert "| 0 |" in lora_row and "**25.0**" in lora_row and "±" not in lora_row
    assert "| 0,1 |" in k3_row and "**75.0 ± 0.0**" in k3_row  # two equal seeds: a measured spread of 0
    assert report["methods"]["lora"]["average"] == [0.25, None, 1]
    # found by the break-it check: a figure some seeds lack was the mean of the others under the row's seeds
    k3_lines = [line for line in text.splitlines() if line.startswith("| linchain-k3 |")]
    assert any("| 2.50 (1 of 2 seeds) |" in line for line in k3_lines), k3_lines
    assert report["methods"]["linchain-k3"]["effective_rank"] == [2.5, None, 1]
    assert report["methods"]["lora"]["effective_rank"] is None
    comparison = next(line for line in text.splitlines() if line.startswith("| linchain-k3 | 0 |"))
    assert comparison.endswith("| 0: +50.0 |")
    # no seed in common with the baseline: the row says so (it was left out without a word)
    (out / "runs" / "lora" / "lr0.001" / "seed0" / "test.json").unlink()
    (out / "runs" / "linchain-k3" / "lr0.01" / "seed1" / "test.json").unlink()
    (out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").write_text(json.dumps(kept_lora_seed1))
    report, md = compare(
        *parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval
    )
    assert report["comparisons"] == [] and report["unpaired"] == ["linchain-k3"]
    assert "| linchain-k3 | none | - | - | - | not compared: no test of a seed lora was tested on |" in md.read_text()


def _damage(record: dict, how: str):
    if how == "null":
        return None
    if how == "a list":
        return []
    if how == "no losses":
        return {k: v for k, v in record.items() if k != "losses"}
    if how == "no tasks":
        return {**record, "tasks": {}}
    if how == "average edited":
        return {**record, "average": 0.9}
    if how == "stopped short":
        return {**record, "global_step": record["global_step"] - 1, "losses": record["losses"][:-1]}
    if how == "another seed's":
        return {**record, "seed": 0}
    if how == "another rate's":
        return {**record, "learning_rate": 0.01}
    if how == "another method's":
        return {**record, "method": "linchain-k3"}
    if how == "another study's r":
        return {**record, "model_arguments": {**record["model_arguments"], "r": 2}}
    task = next(iter(record["tasks"]))
    scores = dict(record["tasks"][task])
    if how == "a score of 2":
        scores["per_row"] = [2, *scores["per_row"][1:]]
    elif how == "rows cut short":
        scores["rows"] = scores["rows"][:-1]
    return {**record, "tasks": {**record["tasks"], task: scores}}


@pytest.mark.parametrize(
    "marker, how, says",
    [
        ("train.json", "null", "is not a record"),
        ("train.json", "no losses", "has no list of [step, loss] pairs"),
        # leftovers of the compare break-it round: a record of another run, or one that stopped short of
        # --max_steps, counted as this run's without a word
        ("train.json", "stopped short", "its global_step is 9, but --max_steps is 10: a run that stopped short"),
        ("train.json", "another seed's", "its seed is 0, but this run's is 1: another run's record"),
        ("train.json", "another rate's", "its learning_rate is 0.01, but this run's is 0.001"),
        ("train.json", "another method's", "its method is 'linchain-k3', but this run's is 'lora'"),
        # break-it check (2026-12-01): a run folder copied from a study with another --r kept its numbers
        ("train.json", "another study's r", "its model_arguments.r is 2, but this study's is"),
        ("test.json", "a list", "is not a record"),
        ("test.json", "no tasks", "scores no task"),
        ("test.json", "average edited", "its average is not the mean"),
        ("test.json", "a score of 2", "per-row correctness is not a list of 0/1"),
        ("test.json", "rows cut short", "39 row ids for 40 scores"),
    ],
)
def test_a_damaged_record_fails_its_step_naming_the_file(boolq_dir, tmp_path, marker, how, says):
    """Found by the break-it check: a train.json holding `null` dropped the seed from every statistic without
    a word (the verdict moved from -4.1 to -7.8), and damaged test.json files were tracebacks or moved the
    accuracy table away from the per-row scores. A record is now checked when read: the step is reported
    failed, naming the file, and the other seeds are still reported."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    path = out / "runs" / "lora" / "lr0.001" / "seed1" / marker
    path.write_text(json.dumps(_damage(json.loads(path.read_text()), how)))
    report, md = compare(
        *parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval
    )
    assert [f["step"] for f in report["failures"]] == [
        f"lora lr 0.001 seed 1 {'training' if marker == 'train.json' else 'test'}"
    ]
    error = report["failures"][0]["error"]
    assert str(path) in error and says in error and "delete it to run this step again" in error
    assert report["methods"]["lora"]["seeds"] == [0] and report["methods"]["linchain-k3"]["seeds"] == [0, 1]


def test_a_record_scoring_other_tasks_is_refused_naming_it(boolq_dir, tmp_path):
    """Break-it check: a test.json whose task was renamed was a KeyError traceback in the report."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    path = out / "runs" / "linchain-k3" / "lr0.01" / "seed1" / "test.json"
    record = json.loads(path.read_text())
    record["tasks"] = {"renamed": record["tasks"]["boolq"]}
    path.write_text(json.dumps(record))
    with pytest.raises(
        ValueError, match=re.escape(f"linchain-k3 seed 1 ({path}) scores tasks ['renamed'], the others ['boolq']")
    ):
        compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval)


def test_a_report_that_fails_midway_leaves_the_previous_one_whole(boolq_dir, tmp_path, monkeypatch):
    """Found by the break-it check: report.json and the plots were replaced before report.md was written, so
    a failure left a new report.json beside the old report.md. All four are now written first, then swapped."""
    from linchain.compare import report as report_module

    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    names = ["report.json", "report.md", "convergence.png", "lr_sweep.png"]
    before = {n: (out / n).read_bytes() for n in names}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "markdown", broken)
    with pytest.raises(OSError, match="No space left"):
        compare(
            *parse_args(_argv(boolq_dir, out, "--report_only", "--baseline", "linchain-k3")),
            train_fn=Fakes().train,
            eval_fn=Fakes().eval,
        )
    assert {n: (out / n).read_bytes() for n in names} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith((".report", ".convergence", ".lr_sweep"))]


@pytest.mark.parametrize("damaged", ["settings.json", "data/test-rows.json"])
def test_a_damaged_study_record_is_one_error_naming_it(boolq_dir, tmp_path, damaged):
    """Break-it check: a truncated settings.json was "Expecting property name ... (char 300)", naming no file."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    path = out / damaged
    path.write_text(path.read_text()[:40])
    with pytest.raises(ValueError, match=re.escape(f"{path} cannot be read (")):
        compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval)


def test_a_narrower_report_says_what_else_the_folder_holds(boolq_dir, tmp_path):
    """Break-it check: `--report_only` naming fewer methods or seeds replaced a fuller report without a word.
    The markers stay (nothing is lost); the report now lists the finished runs it leaves out."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    argv = _argv(boolq_dir, out, "--report_only", "--methods", "lora", "--baseline", "lora", "--seeds", "0")
    report, md = compare(*parse_args(argv), train_fn=Fakes().train, eval_fn=Fakes().eval)
    assert report["not_reported"] == ["linchain-k3: seed 0,1", "lora: seed 1"]
    assert "## In this folder but not in this report" in md.read_text() and "- lora: seed 1" in md.read_text()
    report, _ = compare(
        *parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval
    )
    assert report["not_reported"] == []


def test_a_verdict_whose_seeds_disagree_in_sign_says_so(boolq_dir, tmp_path):
    """Found in the cpu-study's three seeds: the frozen control read **better** (+3.7, p = 0.0003) from
    per-seed differences of +1.8, +15.3 and -6.2; the interval resamples rows, not seeds. Such a verdict
    is now marked, and report.json has seeds_agree."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    report, md = compare(
        *parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval
    )
    assert report["comparisons"][0]["seeds_agree"] is True  # linchain-k3 +50.0 and +47.5
    assert "(seeds disagree in sign)" not in md.read_text()
    # linchain-k3's seed 1 now right on 5 of 40 rows (lora's seed 1: 11): -15.0 at seed 1, +50.0 at seed 0
    path = out / "runs" / "linchain-k3" / "lr0.01" / "seed1" / "test.json"
    record = json.loads(path.read_text())
    scores = record["tasks"]["boolq"]
    scores["per_row"] = [1] * 5 + [0] * 35
    scores["accuracy"] = record["average"] = 5 / 40
    path.write_text(json.dumps(record))
    report, md = compare(
        *parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=Fakes().train, eval_fn=Fakes().eval
    )
    c = report["comparisons"][0]
    assert [round(100 * d, 1) for d in c["per_seed_difference"]] == [50.0, -15.0] and c["seeds_agree"] is False
    assert c["verdict"] == "better" and "**better** (seeds disagree in sign)" in md.read_text()


@pytest.mark.filterwarnings("error::UserWarning")  # break-it check: an empty plot's legend warned
def test_a_grid_split_into_sweep_only_parts_gives_the_same_report(boolq_dir, tmp_path):
    """One --sweep_only call per (method, rate), then one call with all rates: it only chooses and runs the
    seeds, and the report equals that of one whole call."""
    whole, _ = compare(*parse_args(_argv(boolq_dir, tmp_path / "whole")), train_fn=Fakes().train, eval_fn=Fakes().eval)
    out = tmp_path / "split"
    parts = Fakes()
    for method in ("lora", "linchain-k3"):
        for rate in ("1e-3", "1e-2"):
            compare(
                *parse_args(
                    _argv(
                        boolq_dir,
                        out,
                        "--methods",
                        method,
                        "--baseline",
                        method,
                        "--learning_rates",
                        rate,
                        "--sweep_only",
                    )
                ),
                train_fn=parts.train,
                eval_fn=parts.eval,
            )
    assert sorted(parts.trained) == sorted((m, r, 0, False) for m in ("lora", "linchain-k3") for r in (1e-3, 1e-2))
    assert not list(out.glob("runs/*/*/*/test.json")) and len(list(out.glob("runs/*/*/seed0/validation.json"))) == 4
    rest = Fakes()
    split, _ = compare(*parse_args(_argv(boolq_dir, out)), train_fn=rest.train, eval_fn=rest.eval)
    assert sorted(rest.trained) == [("linchain-k3", 1e-2, 1, False), ("lora", 1e-3, 1, False)]
    assert not any("validation" in e for e in rest.evaluated)
    assert split["comparisons"] == whole["comparisons"] and split["methods"] == whole["methods"]


def test_sweep_only_needs_validation_rows(boolq_dir, tmp_path):
    with pytest.raises(ValueError, match="--sweep_only needs --validation_size > 0"):
        parse_args(_argv(boolq_dir, tmp_path, "--sweep_only", "--validation_size", "0"))


def test_generation_settings_reach_every_eval_and_belong_to_the_study(boolq_dir, tmp_path):
    """--num_beams / --max_new_tokens (issue 20: greedy, short answers for the arithmetic preset) are
    passed to each eval and recorded; a study made before they existed matches their old defaults."""
    out = tmp_path / "cmp"
    seen = []
    fakes = Fakes()

    def eval_fn(args):
        seen.append((args.num_beams, args.max_new_tokens))
        return fakes.eval(args)

    argv = _argv(boolq_dir, out, "--scorer", "generate", "--num_beams", "1", "--max_new_tokens", "6")
    compare(*parse_args(argv), train_fn=fakes.train, eval_fn=eval_fn)
    assert seen and set(seen) == {(1, 6)}
    with pytest.raises(ValueError, match=r"other settings \(eval.num_beams\)"):
        compare(
            *parse_args(_argv(boolq_dir, out, "--scorer", "generate", "--max_new_tokens", "6")),
            train_fn=fakes.train,
            eval_fn=eval_fn,
        )
    # settings.json from before these fields: read as the defaults they had
    old = tmp_path / "old"
    compare(*parse_args(_argv(boolq_dir, old)), train_fn=fakes.train, eval_fn=fakes.eval)
    settings = json.loads((old / "settings.json").read_text())
    for key in ("num_beams", "max_new_tokens"):
        del settings["eval"][key]
    (old / "settings.json").write_text(json.dumps(settings))
    compare(*parse_args(_argv(boolq_dir, old, "--report_only")), train_fn=fakes.train, eval_fn=fakes.eval)


def test_test_rows_that_repeat_a_training_prompt_are_dropped_and_counted(boolq_dir, tmp_path):
    """Issue 20: a generated task with few distinct problems repeats training prompts in its test set;
    those rows would measure recall. They are dropped (and counted in the report) unless asked not to."""
    from ..compare.conftest import boolq_rows

    train, unseen = boolq_rows(40, seed=1), boolq_rows(12, seed=7)
    seen_keys = {r["instruction"] for r in train}
    unseen = [r for r in unseen if r["instruction"] not in seen_keys]
    data = tmp_path / "boolq"
    data.mkdir()
    (data / "train.json").write_text(json.dumps(train))
    (data / "test.json").write_text(json.dumps(train[:5] + unseen))  # 5 test rows are training rows
    scored = []
    fakes = Fakes()

    def eval_fn(args):
        for d in args.data:
            if "validation" not in d:
                scored.append([r["instruction"] for r in json.loads(Path(d).read_text())])
        return fakes.eval(args)

    argv = [
        "--model_name_or_path",
        "unused",
        "--data",
        str(data / "train.json"),
        "--eval_data",
        str(data / "test.json"),
        "--methods",
        "lora",
        "--seeds",
        "0",
        "--learning_rates",
        "1e-3",
        "--max_steps",
        "3",
        "--validation_size",
        "4",
        "--n_resamples",
        "100",
    ]
    report, md = compare(
        *parse_args([*argv, "--output_dir", str(tmp_path / "a")]), train_fn=fakes.train, eval_fn=eval_fn
    )
    assert scored and all(rows == [r["instruction"] for r in unseen] for rows in scored)
    assert report["test_rows"][str(data / "test.json")] == {
        "rows": 5 + len(unseen),
        "kept": len(unseen),
        "dropped_seen_in_training": 5,
    }
    assert "5 of" in md.read_text() and "dropped (--test_unseen_only)" in md.read_text()
    # break-it check: the header said "(all rows, ...)" and then that 5 were dropped
    assert "(all rows not seen in training, the same for every run)" in md.read_text()
    scored.clear()
    report, md = compare(
        *parse_args([*argv, "--output_dir", str(tmp_path / "b"), "--test_unseen_only", "false"]),
        train_fn=fakes.train,
        eval_fn=eval_fn,
    )
    assert report["test_rows"] is None and len(scored[0]) == 5 + len(unseen)
    assert "(all rows, the same for every run)" in md.read_text()


@pytest.mark.filterwarnings("error::UserWarning")  # break-it check: an empty plot's legend warned
def test_the_report_says_how_many_validation_rows_were_kept(boolq_dir, tmp_path):
    """The header said '150 validation rows' where the cpu-math split kept 60 (the rest repeat training prompts)."""
    from ..compare.conftest import boolq_rows

    rows = boolq_rows(30, seed=1)
    data = tmp_path / "boolq"
    data.mkdir()
    (data / "train.json").write_text(json.dumps(rows + rows[:15]))  # half the prompts twice
    argv = [
        "--model_name_or_path",
        "unused",
        "--data",
        str(data / "train.json"),
        "--eval_data",
        str(boolq_dir / "boolq" / "test.json"),
        "--methods",
        "lora",
        "--seeds",
        "0",
        "--learning_rates",
        "1e-3",
        "--max_steps",
        "3",
        "--validation_size",
        "12",
        "--n_resamples",
        "100",
        "--output_dir",
        str(tmp_path / "cmp"),
    ]
    fakes = Fakes()
    report, md = compare(*parse_args(argv), train_fn=fakes.train, eval_fn=fakes.eval)
    kept = sum(len(json.loads(f.read_text())) for f in (tmp_path / "cmp" / "data").glob("validation-*.json"))
    assert report["validation_rows"] == kept and 0 < kept < 12
    assert f"{kept} (of 12 asked for; the others repeat training prompts) validation rows" in md.read_text()


class _Bar:
    """Stands in for linchain.progress.Progress: its total and how far the grid advanced it."""

    def __init__(self, total, **kwargs):
        self.total, self.n = total, 0

    def update(self, n):
        self.n += n

    def set_postfix_str(self, text):
        pass

    def close(self):
        pass


def test_the_plan_sizes_the_bar_and_every_outcome_advances_it_by_its_weight(boolq_dir, tmp_path, monkeypatch):
    """The grid plans its steps once; their weights are the bar's total, and a grid with failed, skipped,
    not-run or retrained steps still ends exactly there (each step advances it once, by its weight)."""
    from linchain import progress
    from linchain.compare.grid import Grid

    bars = []
    monkeypatch.setattr(progress, "Progress", lambda **kwargs: bars.append(_Bar(**kwargs)) or bars[-1])
    out = tmp_path / "cmp"
    plan = Grid(*parse_args(_argv(boolq_dir, out))).plan()
    # in training steps: the base test (500 rows / 4), per method 2 rates x (10 steps + 4 validation rows / 4),
    # then seed 0's test and seed 1's training and test at the chosen rate
    assert sum(s.weight for s in plan) == 125 + 2 * (2 * (10 + 1) + 125 + (10 + 125))
    assert [s.what for s in plan[:3]] == [
        "base model test",
        "lora lr 0.001 seed 0 training",
        "lora lr 0.001 validation",
    ]
    assert plan[-1].at_chosen_rate and plan[-1].at(1e-2).what == "linchain-k3 lr 0.01 seed 1 test"

    def ended_at_total(report):
        assert bars[-1].total == round(sum(s.weight for s in plan)) and bars[-1].n == bars[-1].total
        return report

    # a method whose training fails: its validations and seeds are skipped
    report, _ = compare(
        *parse_args(_argv(boolq_dir, out)), train_fn=Fakes(fail="linchain-k3").train, eval_fn=Fakes().eval
    )
    assert len(ended_at_total(report)["failures"]) == 2
    # --report_only: linchain-k3's rates were never trained (not run; so its seeds have no rate and are skipped),
    # lora's seed 1 never scored
    (out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").unlink()
    idle = Fakes()
    report, _ = compare(*parse_args(_argv(boolq_dir, out, "--report_only")), train_fn=idle.train, eval_fn=idle.eval)
    assert ended_at_total(report)["not_run"] == [
        "linchain-k3 lr 0.001 seed 0 training",
        "linchain-k3 lr 0.01 seed 0 training",
        "lora lr 0.001 seed 1 test",
    ]
    # a carried run retrained before its test (not planned: only its files tell) whose retraining fails
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes().train, eval_fn=Fakes().eval)
    for adapter in out.glob("runs/*/*/*/train/adapter"):
        shutil.rmtree(adapter)
    (out / "runs" / "lora" / "lr0.001" / "seed1" / "test.json").unlink()
    report, _ = compare(*parse_args(_argv(boolq_dir, out)), train_fn=Fakes(fail="lora").train, eval_fn=Fakes().eval)
    assert [f["step"] for f in ended_at_total(report)["failures"]] == ["lora lr 0.001 seed 1 training"]


def test_a_single_rate_shows_the_validation_score_an_earlier_sweep_left(boolq_dir, tmp_path):
    """Leftover of the compare break-it round: a later call with one of the swept rates alone chose it
    without validation (right) but also left its existing validation score out of the report."""
    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out, "--sweep_only")), train_fn=Fakes().train, eval_fn=Fakes().eval)
    argv = _argv(boolq_dir, out)
    argv[argv.index("--learning_rates") + 1] = "1e-3"
    fakes = Fakes()
    report, md = compare(*parse_args(argv), train_fn=fakes.train, eval_fn=fakes.eval)
    sweep = {
        m: [(x["learning_rate"], x["validation_accuracy"]) for x in report["methods"][m]["sweep"]]
        for m in VALIDATION_METHODS
    }
    assert sweep == {"lora": [(1e-3, 0.75)], "linchain-k3": [(1e-3, 0.25)]}
    assert not [e for e in fakes.evaluated if e.endswith("validation")]  # read, not scored again
    # a rate never validated stays unscored, and is chosen all the same
    argv[argv.index("--learning_rates") + 1] = "3e-3"
    report, _ = compare(*parse_args(argv), train_fn=Fakes().train, eval_fn=Fakes().eval)
    assert [x["validation_accuracy"] for x in report["methods"]["lora"]["sweep"]] == [None]


def _refused_before_training(argv: list[str], says: str, tmp_path: Path) -> None:
    fakes = Fakes()
    with pytest.raises(ValueError) as err:
        compare(*parse_args(argv), train_fn=fakes.train, eval_fn=fakes.eval)
    assert says in str(err.value), str(err.value)
    assert fakes.trained == [] and fakes.evaluated == []
    assert not (tmp_path / "cmp").exists()  # a fresh folder is left as it was found


def test_a_validation_rule_no_row_can_match_is_refused_before_training(boolq_dir, tmp_path):
    """Break-it check (2026-12-01): boolq training rows were validated with the test data's ARC-Easy rule,
    every rate scored 0% and the tie-break chose one, with only a console warning."""
    test = tmp_path / "ARC-Easy" / "test.json"
    test.parent.mkdir()
    test.write_text((boolq_dir / "boolq" / "test.json").read_text())
    argv = _argv(boolq_dir, tmp_path / "cmp")
    argv[argv.index("--eval_data") + 1] = str(test)
    _refused_before_training(
        argv + ["--eval_task", "ARC-Easy"],
        "the validation rows: none of its 4 gold answers can match the ARC-Easy rule",
        tmp_path,
    )


def test_no_validation_row_left_is_refused_before_training(boolq_dir, tmp_path):
    """Break-it check (2026-12-01): when every carved row repeated a training prompt, compare trained every
    rate, then failed each validation with "data is required", and the report said 4 rows were carved."""
    rows = json.loads((boolq_dir / "boolq" / "train.json").read_text())
    doubled = tmp_path / "boolq" / "train.json"
    doubled.parent.mkdir()
    doubled.write_text(json.dumps(rows[:3] * 20))  # three prompts: every validation row repeats one
    argv = _argv(boolq_dir, tmp_path / "cmp")
    argv[argv.index("--data") + 1] = str(doubled)
    _refused_before_training(argv, "--validation_size 4: every row carved from --data for validation repeats", tmp_path)
    # one rate needs no validation: it runs, and the report says how many rows were left (0)
    argv[argv.index("--learning_rates") + 1] = "1e-3"
    report, md = compare(*parse_args(argv), train_fn=Fakes().train, eval_fn=Fakes().eval)
    assert report["validation_rows"] == 0 and "0 (of 4 asked for" in md.read_text()


@pytest.mark.parametrize(
    "methods, same",
    [
        ("lora,linchain-k0", "lora and linchain-k0"),
        ("moslora,linchain-k1", "moslora and linchain-k1"),
        ("linchain-k3,linchain", "linchain-k3 and linchain"),
    ],
)
def test_two_names_of_one_model_are_refused(boolq_dir, tmp_path, methods, same):
    """Break-it check (2026-12-01): lora is LinChain with no mixer, moslora with one, and `linchain` takes k
    from --num_mixers (3 here): each pair trained the same model twice and compared it with itself."""
    argv = _argv(boolq_dir, tmp_path / "cmp")
    argv[argv.index("--methods") + 1] = methods
    argv += ["--baseline", methods.split(",")[0]]
    _refused_before_training(argv + ["--num_mixers", "3"], f"--methods: {same} train the same model here", tmp_path)


def test_two_test_files_of_one_task_are_refused(boolq_dir, tmp_path):
    """Break-it check (2026-12-01): two --eval_data of one task kept only the last file's scores, while the
    report named both files."""
    argv = _argv(boolq_dir, tmp_path / "cmp", "--eval_data", str(boolq_dir / "boolq" / "train.json"))
    _refused_before_training(argv, "are both scored as task boolq", tmp_path)


def test_sweep_only_scores_no_test_rows_not_even_the_base_models(boolq_dir, tmp_path):
    """Break-it check (2026-12-01): parallel --sweep_only parts in one folder each scored the base model on
    the test rows, and all but one failed on its lock."""
    fakes = Fakes()
    _, md = compare(
        *parse_args(_argv(boolq_dir, tmp_path / "cmp", "--sweep_only")), train_fn=fakes.train, eval_fn=fakes.eval
    )
    assert fakes.evaluated and all(e.endswith("validation") for e in fakes.evaluated)
    assert not (tmp_path / "cmp" / "base").exists()
    # and the report says why there is no test score (it pointed to a Failures section it did not have)
    assert "No test scores: every test step failed or has not run (a --sweep_only call scores none)." in md.read_text()


def test_a_resumed_runs_training_time_counts_its_earlier_calls(boolq_dir, tmp_path):
    """Break-it check (2026-12-01): a run resumed inside compare reported its last call's time alone, so the
    report's "train s" of a resumed method read about half that of one trained in one call."""

    class Resumed(Fakes):
        def train(self, model_args, data_args, train_args):
            return dataclasses.replace(super().train(model_args, data_args, train_args), train_s_before=100.0)

    out = tmp_path / "cmp"
    compare(*parse_args(_argv(boolq_dir, out)), train_fn=Resumed().train, eval_fn=Resumed().eval)
    record = json.loads((out / "runs" / "lora" / "lr0.001" / "seed0" / "train.json").read_text())
    assert 100.0 <= record["train_wall_s"] < 160.0


def test_a_run_stopped_by_ctrl_c_inside_compare_says_to_run_compare_again(boolq_dir, tmp_path, capsys):
    """Leftover of a break-it round: training's own stop message said "plus --resume", which compare refuses."""
    from linchain.train.engine import stop_cleanly

    fakes = Fakes()

    def stopped(model_args, data_args, train_args):
        result = fakes.train(model_args, data_args, train_args)
        result.interrupted, result.global_step = True, 2
        return stop_cleanly(result, 2, mark_folder=False)

    with pytest.raises(KeyboardInterrupt, match="run again to resume"):
        compare(*parse_args(_argv(boolq_dir, tmp_path / "cmp")), train_fn=stopped, eval_fn=fakes.eval)
    err = capsys.readouterr().err
    assert "stopped at step 2; checkpoint saved. Run the same compare command again: it resumes by itself" in err
    assert "--resume" not in err
    # outside compare, train's own advice stands
    stop_cleanly(None, 3, mark_folder=False)
    assert "Continue with the same command plus --resume" in capsys.readouterr().err


def test_the_report_says_how_many_rows_can_never_match(boolq_dir, tmp_path):
    """Break-it leftover: validation rows whose gold answer the rule cannot match (mixed-task training data)
    were warned per run on the console only; the report now counts them, for validation and test rows."""
    fakes = Fakes()

    def evaluate(args):
        run = fakes.eval(args)
        for r in run.results:
            r.unmatchable_gold = 1 if "validation" in r.data else 3
        return run

    report, md = compare(*parse_args(_argv(boolq_dir, tmp_path / "cmp")), train_fn=fakes.train, eval_fn=evaluate)
    assert report["unmatchable_gold"] == {"validation": {"boolq": [1, 4]}, "test": {"boolq": [3, 40]}}
    text = " ".join(md.read_text().split())
    assert "1 of the 4 validation rows of boolq have a gold answer its rule can never match" in text
    assert "3 of the 40 test rows of boolq" in text
    # none: nothing said
    report, md = compare(*parse_args(_argv(boolq_dir, tmp_path / "plain")), train_fn=fakes.train, eval_fn=fakes.eval)
    assert report["unmatchable_gold"] == {"validation": {}, "test": {}}
    assert "can never match" not in md.read_text()
