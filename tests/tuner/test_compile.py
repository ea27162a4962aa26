"""torch.compile: the adapter causes no graph break, with or without dropout.

Eager CPU dropout draws the dropped positions (a data-dependent count: every ``int(tensor)`` would
break the graph); a compiled model draws a bool mask instead, the same Bernoulli(p) from another
random stream. The default checks use dynamo's own capture (``explain``, ``backend="aot_eager"``:
no C++ compile, a few seconds); inductor runs behind ``-m slow``.
"""

import math

import pytest
import torch
from peft import get_peft_model
from torch import nn

from linchain import LinChainConfig, LinChainLayer
from linchain.tuner.dropout import dropout_linear
from tests.conftest import MODELS


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_no_graph_breaks_in_a_training_step(dropout, tokens):
    build, targets = MODELS["llama"]
    model = get_peft_model(
        build(),
        LinChainConfig(
            r=4, alpha=8, num_mixers=3, mixer_bias=True, dropout=dropout, target_modules=targets, init_weights=False
        ),
    )
    model.train()
    explanation = torch._dynamo.explain(lambda t: model(t, labels=t).loss)(tokens)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def _check_dropout_distribution(compiled, p: float) -> None:
    """``dropout_linear(x, I, p)`` with x = 1 is ``keep / (1 - p)``: the kept fraction is 1 - p within
    6 standard deviations, kept values are 1 / (1 - p), and the gradient to x has the same mask."""
    n, d = 5000, 8
    x = torch.ones(n, d, requires_grad=True)
    h = compiled(x, torch.eye(d), p)
    kept = h != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 6 * math.sqrt(p * (1 - p) / (n * d))
    torch.testing.assert_close(h[kept], torch.full_like(h[kept], 1 / (1 - p)))
    h.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_compiled_dropout_is_bernoulli_and_fullgraph(p):
    _check_dropout_distribution(torch.compile(dropout_linear, fullgraph=True, backend="aot_eager"), p)


def test_compiled_layer_fullgraph_trains_like_eager_without_dropout():
    torch.manual_seed(0)
    layer = LinChainLayer(
        nn.Linear(24, 16), "default", r=4, alpha=8, num_mixers=2, mixer_bias=True, init_weights=False
    ).train()
    x = torch.randn(3, 7, 24, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    grads = []
    for run in (layer, compiled):
        layer.zero_grad()
        x.grad = None
        run(x).pow(2).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in layer.parameters() if p.requires_grad])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.05, 0.5])
def test_inductor_dropout_is_bernoulli(p):
    _check_dropout_distribution(torch.compile(dropout_linear, fullgraph=True), p)


@pytest.mark.slow
def test_inductor_compiled_model_trains_without_graph_breaks(tokens):
    """With dropout 0 the compiled step matches eager; with dropout 0.1 it compiles in one graph and trains."""
    build, targets = MODELS["llama"]
    results = {}
    for dropout in (0.0, 0.1):
        for mode in ("eager", "inductor"):
            torch._dynamo.reset()
            model = get_peft_model(
                build(),
                LinChainConfig(r=4, alpha=8, num_mixers=3, dropout=dropout, target_modules=targets, init_weights=False),
            ).train()
            run = model if mode == "eager" else torch.compile(model, fullgraph=True)
            torch.manual_seed(0)
            loss = run(tokens, labels=tokens).loss
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
            assert torch.isfinite(loss) and all(g.abs().sum() > 0 for g in grads)
            results[dropout, mode] = (loss.detach(), grads)
    torch.testing.assert_close(results[0.0, "inductor"][0], results[0.0, "eager"][0], rtol=1e-5, atol=1e-5)
    for got, want in zip(results[0.0, "inductor"][1], results[0.0, "eager"][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(results[0.1, "inductor"][0], results[0.0, "inductor"][0])  # dropout acts when compiled
