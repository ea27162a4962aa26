import warnings

import pytest

from linchain import LinChainConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"r": 0}, "r"),
        ({"r": -4}, "r"),
        ({"r": 2.5}, "r"),
        ({"num_mixers": -1}, "num_mixers"),
        ({"mixer_init": "xavier"}, "mixer_init"),
        ({"alpha": 0}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"mixer_bias": "yes"}, "mixer_bias"),
        ({"target_modules": ["q_proj", ""]}, "target_modules"),
        # PEFT LoRA takes these and fails inside get_peft_model with "'in <string>' requires string"
        ({"layers_to_transform": "0"}, "layers_to_transform"),
        ({"layers_to_transform": [0, "1"]}, "layers_to_transform"),
        ({"layers_to_transform": -1}, "layers_to_transform"),
        ({"layers_to_transform": []}, "layers_to_transform"),
        ({"layers_to_transform": True}, "layers_to_transform"),
        ({"layers_to_transform": 0, "layers_pattern": ["layers", 3]}, "layers_pattern"),
    ],
)
def test_bad_values_name_the_field_and_value(kwargs, field):
    with pytest.raises(ValueError) as err:
        LinChainConfig(**kwargs)
    message = str(err.value)
    assert field in message
    assert repr(kwargs[field]) in message


def test_layer_selection_adapts_only_those_layers():
    """layers_to_transform as an index or a list, with and without layers_pattern: the adapted layers."""
    from peft import get_peft_model

    from tests.conftest import tiny_llama

    for layers, pattern in [(1, None), ([0, 1], None), ([1], "layers"), (0, ["layers"])]:
        config = LinChainConfig(target_modules=["q_proj"], layers_to_transform=layers, layers_pattern=pattern)
        model = get_peft_model(tiny_llama(), config)
        adapted = sorted(n.split(".layers.")[1].split(".")[0] for n, _ in model.named_parameters() if "linchain_A" in n)
        assert adapted == [str(i) for i in ([layers] if isinstance(layers, int) else layers)]


def test_defaults_and_peft_type():
    config = LinChainConfig(target_modules=["q_proj"])
    assert config.peft_type == "LINCHAIN"
    assert config.num_mixers == 3 and config.mixer_bias is False and config.mixer_init == "kaiming"
    assert config.target_modules == {"q_proj"}
    # the library's defaults are PEFT LoraConfig's: LinChainConfig(num_mixers=0) scales as LoraConfig()
    from peft import LoraConfig

    lora = LoraConfig()
    assert (config.r, config.alpha, config.dropout) == (lora.r, lora.lora_alpha, lora.lora_dropout)
    assert config.scaling == pytest.approx(lora.lora_alpha / lora.r)
    assert LinChainConfig(r=16, alpha=32, use_rslora=True).scaling == pytest.approx(32 / 4)


def test_every_field_has_help():
    from dataclasses import fields

    from peft.config import PeftConfig

    own = {f.name for f in fields(LinChainConfig)} - {f.name for f in fields(PeftConfig)}
    assert own >= {"r", "alpha", "num_mixers", "mixer_bias", "mixer_init", "dropout", "target_modules"}
    for f in fields(LinChainConfig):
        if f.name in own:
            assert f.metadata.get("help"), f.name


def test_peft_type_is_a_string_with_value(tmp_path):
    """PEFT reads config.peft_type.value (status reports, messages): LINCHAIN answers it, saved as a plain string."""
    import json

    from linchain import LINCHAIN, LinChainConfig

    cfg = LinChainConfig(r=2, target_modules=["q_proj"])
    assert cfg.peft_type == "LINCHAIN" and cfg.peft_type.value == "LINCHAIN" and LINCHAIN.value == "LINCHAIN"
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LINCHAIN"
    again = LinChainConfig.from_pretrained(tmp_path)
    assert again.peft_type.value == "LINCHAIN" and {again.peft_type: 1}["LINCHAIN"] == 1


@pytest.mark.parametrize(
    "field, value, way_round",
    [
        ("target_parameters", ["experts.gate_up_proj"], "target_modules"),
        ("trainable_token_indices", [0, 5], "TrainableTokensConfig"),
    ],
)
def test_lora_only_fields_are_refused_by_name(field, value, way_round):
    """A LoraConfig field LinChain lacks: a ValueError naming it and the way round (issue 19, item 7),
    not a dataclass's bare TypeError; left at None, the config builds and saves as before."""
    with pytest.raises(ValueError, match=rf"LinChainConfig\.{field} is not supported.*{way_round}"):
        LinChainConfig(target_modules=["q_proj"], **{field: value})
    assert getattr(LinChainConfig(target_modules=["q_proj"]), field) is None


def test_a_bias_without_mixers_is_said():
    """Break-it check: mixer_bias=True with num_mixers=0 was accepted without a word and did nothing."""
    with pytest.warns(UserWarning, match=r"mixer_bias=True with num_mixers=0: there is no mixer"):
        LinChainConfig(num_mixers=0, mixer_bias=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LinChainConfig(num_mixers=1, mixer_bias=True)
        LinChainConfig(num_mixers=0, mixer_bias=False)
