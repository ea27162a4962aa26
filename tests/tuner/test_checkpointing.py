"""Gradient checkpointing with adapter dropout: the same loss and gradients as without checkpointing.

torch.utils.checkpoint restores the RNG state before recomputing a block; reentrant
checkpointing runs the first forward under no_grad and the recompute with grad, so the layer
must draw its dropout the same way in both (tests/tuner/test_layer_dropout.py checks the layer alone).
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from linchain import LinChainConfig
from tests.conftest import MODELS, TEST_DTYPES

#: Relative tolerance per dtype: the recompute is the same computation from the same RNG state,
#: so on CPU it is bit-identical; the margin covers accelerator kernels that may sum in another order.
REL_TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-3}


def _loss_and_grads(kind, checkpointing, dtype, device, tokens, seed=0):
    build, targets = MODELS["llama"]
    if kind == "linchain":
        config = LinChainConfig(
            r=4, alpha=8, num_mixers=3, mixer_bias=True, dropout=0.1, target_modules=targets, init_weights=False
        )
    else:
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(build().to(device=device, dtype=dtype), config)
    if checkpointing is not None:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": checkpointing == "reentrant"}
        )
    model.train()
    torch.manual_seed(seed)
    loss = model(tokens, labels=tokens).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g.abs().sum() > 0 for g in grads.values())
    return loss.detach(), grads


def _relative_error(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.device
@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5: gradient_checkpointing_enable is an alias
@pytest.mark.parametrize(
    "checkpointing, kind, dtype",
    [(c, "linchain", d) for c in ("reentrant", "non-reentrant") for d in TEST_DTYPES]
    + [("reentrant", "peft-lora", torch.float32)],  # PEFT LoRA, where this has always held: the same check
    ids=str,
)
def test_checkpointing_with_dropout_gives_the_same_loss_and_gradients(checkpointing, kind, dtype, device, tokens):
    tokens = tokens.to(device)
    loss, grads = _loss_and_grads(kind, None, dtype, device, tokens)
    loss_ckpt, grads_ckpt = _loss_and_grads(kind, checkpointing, dtype, device, tokens)
    tol = REL_TOL[dtype]
    assert _relative_error(loss_ckpt, loss) <= tol
    for name, g in grads.items():
        assert _relative_error(grads_ckpt[name], g) <= tol, name
    # dropout is really active: another seed gives another loss
    other, _ = _loss_and_grads(kind, None, dtype, device, tokens, seed=1)
    assert not torch.equal(other, loss)
