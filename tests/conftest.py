"""Tiny models built from configs (no downloads) and a reference LinChain written in plain torch."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import linchain  # noqa: F401  (registers LINCHAIN with PEFT)

#: Where tests marked ``device`` run: ``LINCHAIN_TEST_DEVICE`` (default cpu; benchmarks/gpu.sh sets cuda).
TEST_DEVICE = torch.device(os.environ.get("LINCHAIN_TEST_DEVICE", "cpu"))
#: Dtypes those tests cover there: half precision matmuls are slow or partial on CPU, so fp32 + bf16 here,
#: all three on an accelerator.
TEST_DTYPES = (
    (torch.float32, torch.bfloat16) if TEST_DEVICE.type == "cpu" else (torch.float32, torch.bfloat16, torch.float16)
)


@pytest.fixture(autouse=True)
def _same_torch_threads():
    """Commands run in-process set torch's thread count (linchain.threads.set_threads): every test
    starts with the session's count, whatever the commands before it chose."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def device() -> torch.device:
    return TEST_DEVICE


def tiny_llama(seed: int = 0, **config) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights; ``config`` overrides LlamaConfig fields (``tie_word_embeddings``)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        **{
            "vocab_size": 97,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
            **config,
        }
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return GPT2LMHeadModel(config).eval()


MODELS = {
    "llama": (tiny_llama, ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]),
    "gpt2": (tiny_gpt2, ["c_attn", "c_proj", "c_fc"]),
}


def reference_delta(x: torch.Tensor, A, mixers, B, scaling: float) -> torch.Tensor:
    """s * B(M_k(...M_1(A x) + b_1 ...) + b_k) in float64, written independently of linchain."""
    h = x.double() @ A.double().T
    for weight, bias in mixers:
        h = h @ weight.double().T
        if bias is not None:
            h = h + bias.double()
    return scaling * (h @ B.double().T)


def copy_factors_to_lora(ours, lora, adapter: str = "default") -> None:
    """Give each PEFT LoRA layer of ``lora`` the A and B of ``ours``' LinChain layer at the same path
    (k = 0: the two models then compute the same function)."""
    from linchain import LinChainLayer

    with torch.no_grad():
        for name, layer in ours.named_modules():
            if isinstance(layer, LinChainLayer):
                twin = lora.get_submodule(name)
                twin.lora_A[adapter].weight.copy_(layer.linchain_A[adapter].weight)
                twin.lora_B[adapter].weight.copy_(layer.linchain_B[adapter].weight)


def layer_factors(layer, adapter: str = "default"):
    A = layer.linchain_A[adapter].weight.detach()
    B = layer.linchain_B[adapter].weight.detach()
    mixers = [(m.weight.detach(), None if m.bias is None else m.bias.detach()) for m in layer.linchain_mixers[adapter]]
    return A, mixers, B


@pytest.fixture
def tokens() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 97, (2, 11), generator=g)


# A tiny Llama + tokenizer saved to a folder, and a closed-label data file: for every end-to-end command test.
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from .train.conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def even_data(tmp_path_factory):
    import json

    from .train.conftest import make_rows

    path = tmp_path_factory.mktemp("data") / "even.json"
    path.write_text(json.dumps(make_rows(96)))
    return path
