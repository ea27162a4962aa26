"""Method names -> ModelArguments, and --freeze_mixers (the frozen-mixer control) in training."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from linchain.cli.train import parse_args
from linchain.compare.methods import parse_method, parse_methods
from linchain.train import run_training
from linchain.train.args import ModelArguments

from ..train.conftest import base_args


@pytest.mark.parametrize(
    "name, expected",
    [
        ("lora", dict(method="lora", r=16, alpha=32.0, chain_length=0)),
        ("moslora", dict(method="moslora", chain_length=1)),
        ("linchain", dict(method="linchain", chain_length=3)),  # the shared --num_mixers
        ("linchain-k4", dict(method="linchain", chain_length=4, mixer_bias=False)),
        ("linchain-k2-bias-orthogonal", dict(chain_length=2, mixer_bias=True, mixer_init="orthogonal")),
        ("linchain-k3-frozen", dict(chain_length=3, freeze_mixers=True, mixer_init="kaiming")),
        ("moslora-identity", dict(chain_length=1, mixer_init="identity")),
        ("lora-2r", dict(method="lora", r=32, alpha=64.0, chain_length=0)),
        ("peft-lora", dict(method="peft-lora", chain_length=None)),
        ("dora", dict(method="dora", r=16, alpha=32.0, chain_length=None)),
        ("pissa", dict(method="pissa", chain_length=None)),
        ("rslora", dict(method="rslora", chain_length=None)),
    ],
)
def test_method_names(name, expected):
    args = parse_method(name).model_arguments(ModelArguments(r=16, alpha=32.0, num_mixers=3))
    for key, value in expected.items():
        assert getattr(args, key) == value, (name, key)


@pytest.mark.parametrize(
    "name, message",
    [
        ("lora-frozen", "has no mixers"),
        ("linchain-k0-bias", "has no mixers"),
        ("full-bias", "has no mixers"),
        ("dora-bias", "has no mixers"),
        ("doras", "is not a method"),
        ("linchain-k3-biass", "is not a method"),
        ("linchain-k3-bias-bias", "is not a method"),
        ("moslora-orthogonal-identity", "choose one"),
        # leftovers of the compare break-it round: another spelling of a method trained it again, in a
        # folder and report row of its own
        ("linchain-k03", "'linchain-k03' is written 'linchain-k3'"),
        ("linchain-k3-frozen-bias", "'linchain-k3-frozen-bias' is written 'linchain-k3-bias-frozen'"),
        ("moslora-identity-bias", "'moslora-identity-bias' is written 'moslora-bias-identity'"),
    ],
)
def test_bad_method_names(name, message):
    with pytest.raises(ValueError, match=message):
        parse_method(name)


def test_method_list_refuses_repeats():
    assert [s.name for s in parse_methods("lora, linchain-k3")] == ["lora", "linchain-k3"]
    with pytest.raises(ValueError, match="repeats"):
        parse_methods("lora,lora")


def test_freeze_mixers_needs_mixers():
    with pytest.raises(ValueError, match="freeze_mixers"):
        ModelArguments(method="lora", freeze_mixers=True)


class _Snapshot(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if "linchain_" in n}
        self.model = model


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_mixers_stay_at_their_initial_values(tiny_model_dir, even_data, tmp_path, freeze):
    model_args, data_args, train_args = parse_args(
        base_args(
            tiny_model_dir,
            even_data,
            tmp_path / "run",
            "--eval_strategy",
            "no",
            "--save_steps",
            "100",
            "--freeze_mixers",
            str(freeze).lower(),
        )
    )
    snap = _Snapshot()
    result = run_training(model_args, data_args, train_args, callbacks=[snap])
    after = dict(snap.model.named_parameters())
    mixers = [n for n in snap.before if "linchain_mixers" in n]
    b = [n for n in snap.before if "linchain_B" in n]
    assert mixers and b
    assert all(not torch.equal(snap.before[n], after[n].detach()) for n in b)  # B trained either way
    changed = [not torch.equal(snap.before[n], after[n].detach()) for n in mixers]
    assert (not any(changed)) if freeze else all(changed)
    n_mixer = sum(after[n].numel() for n in mixers)
    n_all = sum(p.numel() for p in snap.before.values())
    assert result.trainable_params == (n_all - n_mixer if freeze else n_all)


def test_a_method_the_shared_settings_cannot_build_is_refused_before_any_work(tmp_path, capsys):
    """Found by break-it: linchain-frozen with --num_mixers 0 passed the up-front check, then failed at
    training on every call ("retried on the next call")."""
    from linchain.cli.main import main as cli

    argv = ["compare", "--preset", "cpu-study", "--methods", "lora,linchain-frozen", "--num_mixers", "0"]
    argv += ["--output_dir", str(tmp_path / "s")]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--methods linchain-frozen" in err[0] and "freeze_mixers" in err[0], err
    assert not (tmp_path / "s").exists()
