"""AdapterArguments (issue 21): the command line's adapter settings declared once, with the task's
recipe filling what is not given, validated by LinChainConfig, turned into the PEFT config by
``to_config``; no other library module declares an adapter default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from linchain import LinChainConfig
from linchain.nlu import NLUArguments
from linchain.train.args import RECIPES, AdapterArguments, ModelArguments

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "linchain"
#: the settings of an adapter, under the names any of our dataclasses or PEFT's use
ADAPTER_FIELDS = {
    "r",
    "alpha",
    "lora_alpha",
    "num_mixers",
    "mixer_bias",
    "mixer_init",
    "freeze_mixers",
    "dropout",
    "adapter_dropout",
    "lora_dropout",
    "target_modules",
    "method",
}
#: where adapter defaults may be declared: the library's config (PEFT-style) and the CLI's one dataclass
ALLOWED = {("tuner/config.py", "LinChainConfig"), ("train/args.py", "AdapterArguments")}


def adapter_defaults(source: str) -> list[tuple[str, str]]:
    """(class, field) for each adapter field a class in ``source`` declares with a default, and
    ("<module>", name) for a module-level dict of defaults (a name with DEFAULT in it) holding one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and item.target.id in ADAPTER_FIELDS
                    and item.value is not None
                ):
                    found.append((node.name, item.target.id))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
            if any("DEFAULT" in n.upper() for n in names) and keys & ADAPTER_FIELDS:
                found += [("<module>", n) for n in names]
    return found


def test_the_check_finds_a_default_declared_elsewhere():
    planted = (
        "from dataclasses import dataclass, field\n"
        "@dataclass\n"
        "class Other:\n"
        "    r: int = 8\n"
        "    alpha: float = field(default=16.0)\n"
        "    data: str = 'x'\n"
        "_DEFAULTS = {'r': 8, 'learning_rate': 1e-3}\n"
        "_SCHEDULE_DEFAULTS = {'learning_rate': 1e-3}\n"
    )
    assert adapter_defaults(planted) == [("Other", "r"), ("Other", "alpha"), ("<module>", "_DEFAULTS")]


@pytest.mark.parametrize("module", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")))
def test_no_library_module_declares_adapter_defaults_elsewhere(module):
    found = [
        (cls, name) for cls, name in adapter_defaults((PACKAGE / module).read_text()) if (module, cls) not in ALLOWED
    ]
    assert found == [], f"{module} declares adapter defaults outside AdapterArguments/LinChainConfig: {found}"


def test_the_allowed_places_do_declare_them():
    assert {"r", "alpha", "num_mixers"} <= {n for _, n in adapter_defaults((PACKAGE / "train/args.py").read_text())}
    assert {"r", "alpha", "dropout"} <= {n for _, n in adapter_defaults((PACKAGE / "tuner/config.py").read_text())}


def test_each_task_takes_its_recipe():
    model = ModelArguments()
    for name, value in RECIPES["CAUSAL_LM"].items():
        assert getattr(model, name) == value, name
    nlu = NLUArguments(data="x.csv", model_name_or_path="m")
    for name, value in RECIPES["SEQ_CLS"].items():
        assert getattr(nlu, name) == value, name
    # given values win over the recipe; a preset fills before the recipe
    assert (
        ModelArguments(r=4, alpha=8.0).r == 4
        and NLUArguments(data="x.csv", model_name_or_path="m", r=2, do_train=True).r == 2
    )
    preset = NLUArguments(preset="deberta-v3-glue", data="hf:glue:rte")
    assert preset.target_list() == ["query_proj", "key_proj", "value_proj", "intermediate.dense"]
    assert preset.alpha == RECIPES["SEQ_CLS"]["alpha"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, "ModelArguments.r=0: must be a positive integer"),
        ({"alpha": -1.0}, "ModelArguments.alpha=-1.0: must be a positive finite number"),
        ({"adapter_dropout": 1.0}, "ModelArguments.adapter_dropout=1.0: must be in [0, 1)"),
        ({"mixer_init": "xavier"}, "ModelArguments.mixer_init='xavier': must be one of"),
        ({"num_mixers": -1, "method": "lora"}, "ModelArguments.num_mixers=-1"),
        ({"method": "vera"}, "ModelArguments.method='vera'"),
        ({"target_modules": " , "}, "ModelArguments.target_modules=' , ': names no module"),
    ],
)
def test_bad_values_are_refused_naming_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        ModelArguments(**kwargs)
    assert message in str(err.value)


def test_seq_cls_names_its_own_class_and_refuses_what_it_cannot_save():
    with pytest.raises(ValueError, match=r"NLUArguments\.r=0: must be a positive integer"):
        NLUArguments(data="x.csv", model_name_or_path="m", r=0, do_train=True)
    for method in ("full", "pissa"):
        with pytest.raises(ValueError, match=f"method='{method}' is not available for seq_cls"):
            NLUArguments(data="x.csv", model_name_or_path="m", method=method, do_train=True)


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_to_config_builds_the_chain_as_given(k, bias):
    init = "identity" if k else "kaiming"
    args = AdapterArguments(method="linchain", num_mixers=k, r=4, alpha=8.0, mixer_bias=bias and k > 0, mixer_init=init)
    config = args.to_config("CAUSAL_LM")
    assert isinstance(config, LinChainConfig)
    assert (config.r, config.alpha, config.num_mixers, config.mixer_bias, config.mixer_init) == (
        4,
        8.0,
        k,
        bias and k > 0,
        init,
    )
    assert config.dropout == RECIPES["CAUSAL_LM"]["adapter_dropout"] and config.task_type == "CAUSAL_LM"
    assert config.target_modules == set(RECIPES["CAUSAL_LM"]["target_modules"].split(","))


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"method": "lora", "num_mixers": 5}, "num_mixers=5"),
        ({"method": "moslora", "num_mixers": 3}, "num_mixers=3"),
        ({"method": "dora", "num_mixers": 3}, "num_mixers=3"),
        ({"method": "lora", "mixer_bias": True}, "mixer_bias=True"),
        ({"method": "peft-lora", "mixer_init": "identity"}, "mixer_init='identity'"),
        ({"method": "linchain", "num_mixers": 0, "mixer_bias": True}, "mixer_bias=True"),
    ],
)
def test_a_setting_the_method_would_ignore_is_refused(kwargs, flag):
    """Such a value would be recorded in train_config.yaml while the adapter ignored it (found by break-it)."""
    with pytest.raises(ValueError, match=rf"ModelArguments\.{re.escape(flag)}: .*--method"):
        ModelArguments(**kwargs)
    # the values the method has are accepted: its own k, and the recipe's k when --num_mixers is not given
    assert ModelArguments(method=kwargs["method"]).chain_length in (0, 1, None, 3)


def test_a_target_name_that_matches_nothing_is_refused():
    """PEFT adapts the names that match and drops the rest without a word: a typo trained q_proj only."""
    from tests.conftest import tiny_gpt2, tiny_llama

    args = ModelArguments(r=2, target_modules="q_proj,v_porj", num_mixers=1)
    with pytest.raises(ValueError, match=r"--target_modules q_proj,v_porj: v_porj matches no module of .*q_proj"):
        args.wrap(tiny_llama(), "CAUSAL_LM")
    default = ModelArguments(r=2)  # the recipe's five, on a model with other names
    gpt2 = tiny_gpt2()
    with pytest.raises(
        ValueError, match=r"\(the default\): q_proj, k_proj, v_proj, up_proj, down_proj match no module"
    ):
        default.wrap(gpt2, "CAUSAL_LM")
    with pytest.raises(ValueError, match="'all-linear' stands alone"):
        ModelArguments(target_modules="all-linear,q_proj")
    wrapped = ModelArguments(r=2, num_mixers=1, target_modules="q_proj,v_proj").wrap(tiny_llama(), "CAUSAL_LM")
    assert {n.rsplit(".", 1)[-1] for n, m in wrapped.named_modules() if type(m).__name__ == "LinChainLayer"} == {
        "q_proj",
        "v_proj",
    }


@pytest.mark.parametrize(
    "method, k, variant",
    [
        ("lora", 0, None),
        ("moslora", 1, None),
        ("peft-lora", None, {}),
        ("dora", None, {"use_dora": True}),
        ("rslora", None, {"use_rslora": True}),
    ],
)
def test_to_config_per_method(method, k, variant):
    from peft import LoraConfig

    config = AdapterArguments(method=method, r=2, alpha=4.0).to_config("SEQ_CLS", modules_to_save=["c"])
    assert config.task_type == "SEQ_CLS" and config.modules_to_save == ["c"]
    if variant is None:
        assert isinstance(config, LinChainConfig) and config.num_mixers == k  # the method fixes k, not the recipe's 3
    else:
        assert isinstance(config, LoraConfig) and (config.r, config.lora_alpha) == (2, 4.0)
        for name, value in variant.items():
            assert getattr(config, name) == value
    assert AdapterArguments(method="full").to_config("CAUSAL_LM") is None
