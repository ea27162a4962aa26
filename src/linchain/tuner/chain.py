"""The mixer chain ``M_k ... M_1`` and its affine constant, forward and backward, in plain tensor ops.

For mixers ``(W_i, b_i)``, i = 1..k in application order (``W_i``: (r, r), ``b_i``: (r,) or None):

    M_1 = W_1,  M_i = W_i M_{i-1}           (r, r)
    c_1 = b_1,  c_i = W_i c_{i-1} + b_i     (r,)  (None while no mixer so far has a bias)

so that ``M_k(...M_1(h)...) = M_k h + c_k`` for any ``h``. ``LinChainLayer._fold`` runs
:func:`chain_product` under autograd (merge, export, analysis, the reference path); the fused
Function (fused.py) runs it without recording and differentiates it with :func:`chain_backward`, so
a training step records one autograd node per layer instead of one per product.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.nn import functional as F

__all__ = ["chain_product", "chain_backward"]

Tensor = torch.Tensor


def chain_product(mixers: Sequence[tuple[Tensor, Optional[Tensor]]]) -> tuple[list[Tensor], list[Optional[Tensor]]]:
    """Every prefix ``(M_i, c_i)`` of the chain, i = 1..k: two lists of k entries (k >= 1).

    The last entries are the whole chain's ``M_k ... M_1`` and constant; the earlier ones are what
    :func:`chain_backward` needs.
    """
    Ms: list[Tensor] = []
    cs: list[Optional[Tensor]] = []
    M: Optional[Tensor] = None
    c: Optional[Tensor] = None
    for W, b in mixers:
        M = W if M is None else W @ M
        if b is not None:
            c = b if c is None else torch.addmv(b, W, c)  # W c + b in one op
        elif c is not None:
            c = W @ c
        Ms.append(M)
        cs.append(c)
    return Ms, cs


def chain_backward(
    weights: Sequence[Tensor],
    Ms: Sequence[Tensor],
    cs: Sequence[Optional[Tensor]],
    grad_M: Optional[Tensor],
    grad_c: Optional[Tensor],
    need_W: Sequence[bool],
    need_b: Sequence[bool],
) -> tuple[list[Optional[Tensor]], list[Optional[Tensor]]]:
    """Gradients of each ``W_i`` and ``b_i`` from those of the chain's ``M_k`` (``grad_M``) and ``c_k`` (``grad_c``).

    ``Ms``/``cs``: :func:`chain_product`'s prefixes. Walking the chain backwards, with ``G_i``, ``g_i``
    the gradients of ``M_i``, ``c_i``:

        grad W_i = G_i M_{i-1}^T + g_i c_{i-1}^T   (i > 1; grad W_1 = G_1)
        grad b_i = g_i
        G_{i-1} = W_i^T G_i,   g_{i-1} = W_i^T g_i

    Products nobody needs (a frozen mixer, no earlier trainable mixer) are skipped.
    """
    k = len(weights)
    grad_W: list[Optional[Tensor]] = [None] * k
    grad_b: list[Optional[Tensor]] = [None] * k
    G, g = grad_M, grad_c
    for i in reversed(range(k)):
        if need_b[i]:
            grad_b[i] = g
        if need_W[i]:
            if i == 0:
                grad_W[i] = G
            else:
                gw = F.linear(G, Ms[i - 1]) if G is not None else None  # G M_{i-1}^T
                if g is not None and cs[i - 1] is not None:
                    outer = torch.outer(g, cs[i - 1])
                    gw = outer if gw is None else gw.add_(outer)
                grad_W[i] = gw
        if i == 0 or not (any(need_W[:i]) or any(need_b[:i])):
            break  # nothing earlier in the chain needs a gradient
        W = weights[i]
        G = W.t() @ G if G is not None else None
        # c_{i-1} feeds c_i only where it exists (a bias earlier in the chain)
        g = W.t() @ g if (g is not None and cs[i - 1] is not None) else None
    return grad_W, grad_b
