"""`linchain train` / `linchain merge` end to end on a tiny Llama built from a config (no downloads)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from linchain.cli.args import UsageError
from linchain.cli.main import main as cli
from linchain.cli.train import parse_args
from linchain.train import run_training

from .conftest import base_args


def read_adapter(out):
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_train_linchain_writes_all_outputs(tiny_model_dir, even_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", *base_args(tiny_model_dir, even_data, out), "--num_mixers", "2", "--mixer_bias", "true"]) == 0
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LINCHAIN" and config["num_mixers"] == 2 and config["mixer_bias"] is True
    weights = read_adapter(out)
    b_weights = [v for k, v in weights.items() if "linchain_B" in k]
    assert b_weights and all(v.abs().sum() > 0 for v in b_weights)  # B started at zero and was trained
    assert any("linchain_mixers" in k and k.endswith("bias") for k in weights)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert any("eval_loss" in r for r in records) and "summary" in records[-1]
    assert all("tokens_per_second" in r for r in records if "loss" in r and r["step"] > 1)
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.txt").read_text()
    assert summary.count("\n") == 1 and "held-out accuracy" in summary and "4 steps" in summary
    # the training loop's time and the whole run's, each named (issue 19 item 11: one figure was both)
    timing = json.loads((out / "summary.json").read_text())
    assert 0 < timing["train_s"] <= timing["wall_s"]
    assert f"4 steps in {timing['train_s']:.0f} s (the whole run {timing['wall_s']:.0f} s)" in summary
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # The resolved config reads back through --config and gives the same arguments.
    again = parse_args(["--config", str(out / "train_config.yaml")])
    first = parse_args([*base_args(tiny_model_dir, even_data, out), "--num_mixers", "2", "--mixer_bias", "true"])
    assert again[0] == first[0] and again[1] == first[1] and again[2].max_steps == 4


@pytest.mark.parametrize(
    "method, check",
    [
        ("lora", lambda c: c["peft_type"] == "LINCHAIN" and c["num_mixers"] == 0),
        ("moslora", lambda c: c["peft_type"] == "LINCHAIN" and c["num_mixers"] == 1),
        ("peft-lora", lambda c: c["peft_type"] == "LORA" and c["r"] == 4),
    ],
)
def test_adapter_methods(tiny_model_dir, even_data, tmp_path, method, check):
    out = tmp_path / method
    args = base_args(
        tiny_model_dir, even_data, out, "--method", method, "--eval_strategy", "no", "--save_strategy", "no"
    )
    assert cli(["train", *args]) == 0
    assert check(json.loads((out / "adapter" / "adapter_config.json").read_text()))


def test_full_fine_tuning_saves_a_plain_model(tiny_model_dir, even_data, tmp_path):
    out = tmp_path / "full"
    args = base_args(
        tiny_model_dir, even_data, out, "--method", "full", "--eval_strategy", "no", "--save_strategy", "no"
    )
    assert cli(["train", *args]) == 0
    tuned = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(tuned.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_config_file_values_are_overridden_by_flags(tiny_model_dir, even_data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump({"r": 8, "alpha": 4, "method": "moslora", "data": [str(even_data)], "output_dir": "x"})
    )
    model_args, data_args, train_args = parse_args(
        ["--config", str(cfg), "--r", "2", "--output_dir", str(tmp_path / "o")]
    )
    assert (model_args.r, model_args.alpha, model_args.method, model_args.chain_length) == (2, 4, "moslora", 1)
    assert data_args.data == [str(even_data)] and train_args.output_dir == str(tmp_path / "o")
    cfg.write_text(yaml.safe_dump({"rank": 8}))
    with pytest.raises(UsageError, match=r"unknown option\(s\) \['rank'\]"):
        parse_args(["--config", str(cfg)])


def test_repeated_data_flags_are_all_kept(even_data):
    _, data_args, _ = parse_args(["--data", str(even_data), "--data", "reasoning_gym:chain_sum:5", "--output_dir", "o"])
    assert data_args.data == [str(even_data), "reasoning_gym:chain_sum:5"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "vera"], "--method='vera'"),
        (["--r", "0"], "--r=0"),
        (["--cutoff_len", "2"], "--cutoff_len=2"),
        (["--data_columns", "instruction"], "--data_columns='instruction'"),
        (["--num_threads", "0"], "--num_threads=0"),
    ],
)
def test_bad_arguments_name_field_and_value(flags, message, capsys, tmp_path):
    # an output folder of the test's own: were the flags accepted, a whole default run would land there
    assert cli(["train", "--output_dir", str(tmp_path / "o"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_malformed_data_stops_with_file_and_row(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q2", "answer": "b"}]))
    assert cli(["train", *base_args(tiny_model_dir, bad, tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "row 1" in err and "missing field 'output'" in err


def test_merge_gives_the_adapted_models_outputs(tiny_model_dir, even_data, tmp_path):
    from peft import PeftModel

    out = tmp_path / "run"
    args = base_args(
        tiny_model_dir, even_data, out, "--mixer_bias", "true", "--eval_strategy", "no", "--save_strategy", "no"
    )
    assert cli(["train", *args]) == 0
    assert cli(["merge", "--adapter", str(out), "--output_dir", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out / "adapter").eval()
    ids = torch.randint(0, merged.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)
    assert not any("linchain" in k for k in merged.state_dict())


class InterruptAt(TrainerCallback):
    """Sends the process a real SIGINT (as Ctrl-C would) at the end of a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tiny_model_dir, even_data, tmp_path):
    flags = ["--max_steps", "6", "--save_steps", "3", "--eval_steps", "3", "--adapter_dropout", "0.1"]
    straight = tmp_path / "straight"
    result = run_training(*parse_args([*base_args(tiny_model_dir, even_data, straight), *flags]))
    assert result.global_step == 6 and not result.interrupted

    cut = tmp_path / "cut"
    # The signal arrives after this step's stop check, so the run finishes step 2 and saves there
    # (not a --save_steps step: the checkpoint comes from the Ctrl-C path).
    first = run_training(*parse_args([*base_args(tiny_model_dir, even_data, cut), *flags]), callbacks=[InterruptAt(1)])
    assert first.interrupted and first.global_step == 2
    assert (cut / "checkpoint-2" / "trainer_state.json").exists() and not (cut / "adapter").exists()
    (cut / "checkpoint-99").mkdir()  # an incomplete checkpoint (no trainer_state.json) is never resumed from
    resumed = run_training(*parse_args([*base_args(tiny_model_dir, even_data, cut), *flags, "--resume", "true"]))
    assert resumed.global_step == 6
    a, b = read_adapter(straight), read_adapter(cut)
    assert a.keys() == b.keys()
    for key in a:  # same data order, dropout masks and optimizer state: bit-identical on CPU
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0)
    records = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]  # no step logged twice
    # one end-of-training record and one summary, both at the end: the interrupted part's end-of-training
    # record (its partial train_loss, at step 2) is dropped on resume (found by issue 21's break-it check)
    assert [r["step"] for r in records if "train_loss" in r] == [6]
    summaries = [r for r in records if "summary" in r]
    assert len(summaries) == 1 and records[-1] is summaries[0] and summaries[0]["summary"]["global_step"] == 6


def test_fsdp_without_a_gpu_says_it_runs_ddp(capsys, monkeypatch):
    monkeypatch.setenv(
        "ACCELERATE_USE_FSDP", "true"
    )  # what `accelerate launch --config_file accelerate_fsdp.yaml` sets
    parse_args(["--output_dir", "o"])
    assert "FSDP was asked for, but there is no GPU: accelerate runs plain DDP on CPU" in capsys.readouterr().err


def test_resume_from_the_final_checkpoint_trains_nothing_more(tiny_model_dir, even_data, tmp_path):
    """HF's loop trains one step past max_steps when resumed at it; the run must stay at max_steps, same adapter."""
    out = tmp_path / "run"
    first = run_training(*parse_args(base_args(tiny_model_dir, even_data, out)))
    before = read_adapter(out)
    again = run_training(*parse_args([*base_args(tiny_model_dir, even_data, out), "--resume"]))
    assert first.global_step == again.global_step == 4
    after = read_adapter(out)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
