"""The mixer chain's product and its hand-written backward (linchain/tuner/chain.py) against autograd.

Random non-zero mixers (weights and biases) in float64; the gradients of a random linear function of
``(M_k, c_k)`` from :func:`chain_backward` must equal autograd's through the plain-torch recursion
``h -> W h + b`` to 1e-12. Frozen subsets check that a gradient nobody asked for is not returned and
that the ones asked for are still right.
"""

import itertools

import pytest
import torch

from linchain.tuner.chain import chain_backward, chain_product


def _mixers(k: int, bias: bool, r: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(r, r, generator=g, dtype=torch.float64),
            torch.randn(r, generator=g, dtype=torch.float64) if bias else None,
        )
        for _ in range(k)
    ]


def _plain_chain(mixers):
    """M and c by applying each mixer to the identity and to zero: h -> W h + b, independently of chain.py."""
    r = mixers[0][0].shape[0]
    H = torch.eye(r, dtype=torch.float64)
    z = torch.zeros(r, dtype=torch.float64)
    has_bias = False
    for W, b in mixers:
        H = W @ H
        z = W @ z + (b if b is not None else 0)
        has_bias = has_bias or b is not None
    return H, (z if has_bias else None)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_product_is_the_chain_applied(k, bias):
    mixers = _mixers(k, bias)
    Ms, cs = chain_product(mixers)
    M_want, c_want = _plain_chain(mixers)
    assert len(Ms) == len(cs) == k
    torch.testing.assert_close(Ms[-1], M_want, rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(cs[-1], c_want, rtol=1e-12, atol=1e-12)
    else:
        assert cs[-1] is None
    # a bias only on a later mixer: the constant starts there
    if k >= 2:
        part = [(W, None) for W, _ in mixers[:-1]] + [(mixers[-1][0], torch.ones(mixers[0][0].shape[0]).double())]
        _, cs_part = chain_product(part)
        assert all(c is None for c in cs_part[:-1])
        torch.testing.assert_close(cs_part[-1], _plain_chain(part)[1])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_backward_matches_autograd(k, bias):
    mixers = _mixers(k, bias, seed=k)
    r = mixers[0][0].shape[0]
    g = torch.Generator().manual_seed(7)
    grad_M = torch.randn(r, r, generator=g, dtype=torch.float64)
    grad_c = torch.randn(r, generator=g, dtype=torch.float64) if bias else None
    # every frozen/trainable pattern of the weights (biases trainable), and all frozen but the biases
    patterns = [list(p) for p in itertools.product([True, False], repeat=k)]
    for need_W in patterns:
        need_b = [bias] * k
        leaves = [
            (W.clone().requires_grad_(nw), None if b is None else b.clone().requires_grad_())
            for (W, b), nw in zip(mixers, need_W)
        ]
        M, c = _plain_chain(leaves)
        objective = (M * grad_M).sum() + ((c * grad_c).sum() if bias else 0)
        wanted = [t for pair in leaves for t in pair if t is not None and t.requires_grad]
        if not wanted:
            continue
        auto = dict(zip(map(id, wanted), torch.autograd.grad(objective, wanted)))
        Ms, cs = chain_product(mixers)
        grad_W, grad_b = chain_backward([W for W, _ in mixers], Ms, cs, grad_M, grad_c, need_W, need_b)
        for i, ((W, b), gw, gb) in enumerate(zip(leaves, grad_W, grad_b)):
            if need_W[i]:
                torch.testing.assert_close(gw, auto[id(W)], rtol=1e-12, atol=1e-12)
            else:
                assert gw is None, f"mixer {i}'s weight is frozen: no gradient expected"
            if b is not None:
                torch.testing.assert_close(gb, auto[id(b)], rtol=1e-12, atol=1e-12)
