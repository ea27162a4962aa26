"""`linchain compare` argument handling: presets under --config under flags, shared train flags, errors."""

from __future__ import annotations

import pytest

from linchain.cli.compare import parse_args
from linchain.cli.main import main as cli


def test_preset_then_config_then_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("LINCHAIN_DATA_DIR", str(tmp_path / "llm"))
    config = tmp_path / "c.yaml"
    config.write_text("max_steps: 7\nseeds: '3,4'\n")
    c, m, d, t = parse_args(
        ["--preset", "cpu-study", "--config", str(config), "--seeds", "5", "--r", "8", "--output_dir", str(tmp_path)]
    )
    assert c.preset == "cpu-study" and c.methods.startswith("lora,moslora,linchain-k3,linchain-k3-frozen")
    assert c.eval_data == ["reasoning_gym:family_relationships:600:100000"] and c.eval_task == ["closed"]
    assert d.data == ["reasoning_gym:family_relationships:3000"] and c.validation_task == "closed"
    assert t.max_steps == 7 and c.seeds == "5" and m.r == 8 and m.model_name_or_path == "smollm2"


def test_gpu_study_is_the_cpu_study_scaled_up_in_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv("LINCHAIN_DATA_DIR", str(tmp_path / "nowhere"))  # generated data: no folder needed
    cpu = parse_args(["--preset", "cpu-study", "--output_dir", str(tmp_path)])
    gpu = parse_args(["--preset", "gpu-study", "--output_dir", str(tmp_path)])
    assert (gpu[0].methods, gpu[0].eval_task, gpu[0].validation_task) == (cpu[0].methods, ["closed"], "closed")
    assert gpu[3].bf16 and not cpu[3].bf16 and gpu[3].max_steps * gpu[3].per_device_train_batch_size == 3200
    assert gpu[0].seeds == "0,1,2" and gpu[0].learning_rates == "1e-3,3e-3,1e-2"
    assert gpu[0].eval_data == ["reasoning_gym:family_relationships:1500:100000"]


def test_cpu_math_is_one_digit_chain_sums_scored_greedily_and_gpu_math_its_twin(tmp_path, monkeypatch):
    """Issue 20: the arithmetic preset, its baselines (DoRA among them) and its GPU twin."""
    from linchain.data import load_examples

    monkeypatch.setenv("LINCHAIN_DATA_DIR", str(tmp_path / "nowhere"))  # generated data: no folder needed
    c, m, d, t = parse_args(["--preset", "cpu-math", "--output_dir", str(tmp_path)])
    assert (c.scorer, c.num_beams, c.max_new_tokens, m.model_name_or_path) == ("generate", 1, 6, "smollm2")
    assert c.methods.split(",") == [
        "lora",
        "dora",
        "moslora",
        "linchain-k3",
        "linchain-k3-orthogonal",
        "linchain-k3-identity",
    ]
    assert c.eval_task == c.eval_data and c.validation_task == c.eval_data[0]
    assert c.test_unseen_only  # one-digit problems repeat: the test keeps only rows no training row has
    train = load_examples(d.data[0].replace(":3000", ":200"), seed=0)
    test = load_examples(c.eval_data[0].replace(":1800:", ":200:"), seed=0)
    assert all(-18 <= int(e.answer) <= 27 for e in train + test)
    gc, gm, gd, gt = parse_args(["--preset", "gpu-math", "--output_dir", str(tmp_path)])
    assert gc.methods == c.methods and gt.bf16 and gc.seeds == "0,1,2" and (gc.num_beams, gc.max_new_tokens) == (1, 6)
    assert gt.max_steps * gt.per_device_train_batch_size == 3200 and gc.eval_data[0].startswith(
        "reasoning_gym:chain_sum:4500:"
    )


def test_shared_train_flags_and_lists(tmp_path):
    c, m, d, t = parse_args(
        [
            "--eval_data",
            "a/boolq/test.json",
            "--eval_data",
            "b/piqa/test.json",
            "--methods",
            "lora,lora-2r",
            "--learning_rates",
            "1e-4,1e-3",
            "--bf16",
            "false",
            "--cutoff_len",
            "128",
            "--num_mixers",
            "2",
        ]
    )
    assert c.eval_data == ["a/boolq/test.json", "b/piqa/test.json"] and d.cutoff_len == 128 and m.num_mixers == 2


def test_a_config_error_under_a_preset_names_the_users_file(tmp_path, capsys):
    """Break-it check: the error named the temporary file that merges --preset and --config."""
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("seeds: [0, 1, 2]\n")
    assert cli(["compare", "--preset", "cpu-study", "--config", str(cfg), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--config {cfg} (over --preset cpu-study): seeds: [0, 1, 2] is not a single value" in err, err
    assert "linchain-compare-" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--eval_data", "x/boolq/test.json", "--methods", "lora,moslora", "--baseline", "linchain"],
            "--baseline='linchain' is not in --methods",
        ),
        (["--eval_data", "x/boolq/test.json", "--seeds", "0,a"], "--seeds='0,a': expected comma-separated integers"),
        (["--eval_data", "x/boolq/test.json", "--learning_rates", "1e-3,-1"], "learning rates must be finite and > 0"),
        # break-it check (2026-12-01): inf and a seed past 2**32 - 1 failed only at training, after the data
        (["--eval_data", "x/boolq/test.json", "--learning_rates", "1e-3,inf"], "learning rates must be finite and > 0"),
        (["--eval_data", "x/boolq/test.json", "--seeds", "99999999999999999999"], "seeds must be between 0 and"),
        # break-it check (2026-12-01): rates six digits alike shared a run folder; failed or reused one run
        (
            ["--eval_data", "x/boolq/test.json", "--learning_rates", "0.001,0.0010000001", "--output_dir", "o"],
            "--learning_rates: 0.001 and 0.0010000001 share one run folder (lr0.001",
        ),
        # break-it check (2026-12-01): flags compare sets itself were ignored without a word
        (
            ["--eval_data", "x", "--learning_rates", "1e-3,2e-3", "--learning_rate", "5e-3", "--output_dir", "o"],
            "--learning_rate 0.005 is not used: the runs' learning rates are --learning_rates 1e-3,2e-3 (from --learning_rates)",
        ),
        (["--eval_data", "x", "--overwrite", "--output_dir", "o"], "--overwrite: compare resumes a study"),
        # break-it check (2026-12-01): one step inside the default warm-up trained at 0: every method = base
        (
            ["--eval_data", "x/boolq/test.json", "--max_steps", "1", "--output_dir", "o"],
            "--warmup_steps 4 covers all of --max_steps 1: the runs never reach their --learning_rates",
        ),
        (["--eval_data", "x", "--resume", "--output_dir", "o"], "--resume: compare resumes a study"),
        # break-it check: "0,,1" was read as 0,1, " " as the default seed, -1 accepted, --target_loss nan
        # failed at the JSON write without naming the flag
        (["--eval_data", "x/boolq/test.json", "--seeds", "0,,1"], "--seeds='0,,1': expected comma-separated"),
        (["--eval_data", "x/boolq/test.json", "--seeds", " "], "--seeds=' ': expected comma-separated integers"),
        (["--eval_data", "x/boolq/test.json", "--seeds", "-1"], "--seeds='-1': seeds must be between 0 and 4294967295"),
        (["--eval_data", "x/boolq/test.json", "--target_loss", "nan"], "--target_loss=nan: must be a finite loss > 0"),
        (["--eval_data", "x/boolq/test.json", "--methods", "lora-frozen"], "has no mixers"),
        (["--methods", "lora"], "--eval_data is required"),
        (
            ["--preset", "nope", "--eval_data", "x"],
            "--preset='nope': use one of paper-commonsense, paper-math, cpu-study, gpu-study, cpu-math, gpu-math",
        ),
        (
            ["--eval_data", "x", "--learning_rate", "1e-3", "--max_step", "3"],
            "unknown option --max_step; did you mean --max_steps?",
        ),
        (["--eval_data", "x", "--method", "lora", "--output_dir", "o"], "the methods come from --methods"),
        (["--eval_data", "x", "--val_set_size", "10", "--output_dir", "o"], "use --validation_size"),
        (["--eval_data", "x"], "--output_dir is required"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert cli(["compare", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("linchain compare: error:") and message in err and "\n" not in err


@pytest.mark.parametrize(
    "argv, source",
    [
        (["--preset", "cpu-study", "--seed", "5"], "--seeds 0 (from --preset cpu-study)"),
        (["--preset", "cpu-study", "--seed=5", "--seeds", "1,2"], "--seeds 1,2 (from --seeds)"),
        (["--eval_data", "x.json", "--seeds", "0,1", "--seed", "5"], "--seeds 0,1 (from --seeds)"),
        (["--eval_data", "x.json", "--seeds", "0", "--config", "SEED_FILE"], "--seeds 0 (from --seeds)"),
    ],
)
def test_a_seed_that_seeds_overrides_is_refused(tmp_path, monkeypatch, argv, source):
    """Leftover of the compare break-it round: `--seed 5` under a preset (or beside --seeds) was ignored
    without a word, and the study ran seed 0. It only stands in for an empty --seeds."""
    from linchain.cli.args import UsageError

    monkeypatch.setenv("LINCHAIN_DATA_DIR", str(tmp_path / "nowhere"))
    seed_file = tmp_path / "seed.yaml"
    seed_file.write_text("seed: 5\n")
    argv = [str(seed_file) if a == "SEED_FILE" else a for a in argv]
    with pytest.raises(UsageError) as err:
        parse_args([*argv, "--output_dir", str(tmp_path / "out")])
    assert str(err.value) == (
        f"--seed 5 is not used: the runs' seeds are {source}; put the values to run in --seeds, e.g. --seeds {source.split()[1]},5"
    )
    # alone, --seed is the one seed (no --seeds, no preset)
    c, *_, t = parse_args(["--eval_data", "x.json", "--seed", "5", "--output_dir", str(tmp_path / "out")])
    assert c.seeds == "" and t.seed == 5
    # the same one value in both is no conflict (break-it check: --preset cpu-study --seed 0 was refused)
    c, *_, t = parse_args(["--preset", "cpu-study", "--seed", "0", "--output_dir", str(tmp_path / "out")])
    assert c.seeds == "0" and t.seed == 0
    # nor one of several (break-it check: --seed 0 --seeds 0,1 was refused, suggesting --seeds 0)
    c, *_, t = parse_args(["--eval_data", "x.json", "--seed", "1", "--seeds", "0,1", "--output_dir", str(tmp_path)])
    assert c.seeds == "0,1"


def test_the_seed_refusal_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["compare", "--eval_data", "x.json", "--seeds", "0,1", "--seed", "5", "--model_name_or_path", str(tmp_path)]
    assert cli([*argv, "--output_dir", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "linchain compare: error: --seed 5 is not used: the runs' seeds are --seeds 0,1 (from --seeds); "
        "put the values to run in --seeds, e.g. --seeds 0,1,5"
    ]
    assert not out.exists()
