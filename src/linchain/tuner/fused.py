"""The fused adapter path: one autograd Function per adapted layer, base product included.

For a plain frozen ``nn.Linear`` / ``Conv1D`` base and one active adapter, the layer's forward is

    y = x W0^T + b0 + (s * ((x * keep / (1 - p)) A_f^T) + s * c) B^T

with ``A_f = M_k ... M_1 A`` and ``c`` the chain's constant, folded inside the Function (chain.py: the
same products as ``LinChainLayer._fold``, O(k r^3 + r^2 in) a step, differentiated by hand, so the
layer records one autograd node instead of one per product). Shapes (``T`` tokens):
``x`` (T, in), ``W0`` (out, in) (``Conv1D``: (in, out)), ``A_f`` (r, in), ``c`` (r,), ``B`` (out, r).

What fusing buys over the reference path (``nn.Linear`` modules and separate ops, one autograd node
each): the base product and the adapter's output share one (T, out) buffer (``addmm_`` into it, no
separate add), the scales ``s`` and ``1 / (1 - p)`` are applied once to the (T, r) activations, the
adapter's input gradient is accumulated into the base's in the same buffer, and backward keeps
``x`` itself (shared by q, k and v, alive anyway) plus the dropout record instead of a dropped copy
(accelerators; on CPU the dropped copy is kept, as CPU time is what is short there: see
``dropout.py``). Arithmetic is the reference path's (the adapter computes in its own dtype, e.g.
fp32 adapters on a bf16 base as PEFT does); only the order in which the last sums are rounded
differs, so results agree to rounding (tests: fp32 within 1e-5, float64 within 1e-10).

``enabled()`` / ``use_fused(False)`` switch the path off process-wide (benchmarks' reference rows).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module
from transformers.pytorch_utils import Conv1D

from .chain import chain_backward, chain_product
from .dropout import _dropped_copy, _zero_dropped_
from .grad_guard import backward_once

__all__ = ["enabled", "use_fused", "fusable_base", "fused_forward", "global_hooks"]

_ENABLED = True


def enabled() -> bool:
    """Whether layers take the fused path where it applies (default True)."""
    return _ENABLED


@contextlib.contextmanager
def use_fused(on: bool) -> Iterator[None]:
    """``with use_fused(False):`` runs every layer on the reference path (benchmarks, tests)."""
    global _ENABLED
    before, _ENABLED = _ENABLED, bool(on)
    try:
        yield
    finally:
        _ENABLED = before


def global_hooks() -> bool:
    """Whether a global module hook is set (``nn.modules.module.register_module_forward_hook``, its pre-
    hook, or ``register_module_full_backward_hook`` / ``..._pre_hook``)."""
    return bool(
        _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def fusable_base(base: nn.Module) -> bool:
    """True when the base layer's product may be computed inside the fused Function.

    Only a plain, frozen ``nn.Linear`` / ``Conv1D`` with float weights and no hooks: a subclass
    (bitsandbytes' ``Linear4bit`` is one), a trainable base weight or bias, or a hook (accelerate's
    offloading, a user's, a global one from ``nn.modules.module.register_module_forward_hook``)
    keeps the base's own forward, which the fused path must not bypass.
    """
    if type(base) not in (nn.Linear, Conv1D):
        return False
    # the base's own hooks, accelerate's (an attribute, not a registered hook) and global module hooks
    # all run only when the base module is called
    if base._forward_hooks or base._forward_pre_hooks or base._backward_hooks or base._backward_pre_hooks:
        return False
    if "_hf_hook" in base.__dict__:
        return False
    if global_hooks():
        return False
    # an exact nn.Linear / Conv1D (no parametrization: that changes the class) keeps them in _parameters,
    # where __getattr__ would find them ~0.5 us later each
    weight, bias = base._parameters.get("weight"), base._parameters.get("bias")
    if type(weight) is not nn.Parameter or not weight.dtype.is_floating_point or weight.requires_grad:
        return False
    return bias is None or not bias.requires_grad


def fused_forward(
    x: torch.Tensor,
    base: nn.Module,
    A: torch.Tensor,
    mixers: Sequence[tuple[torch.Tensor, Optional[torch.Tensor]]],
    B: torch.Tensor,
    scale: float,
    p: float,
    drop: Optional[torch.Tensor],
) -> torch.Tensor:
    """``base(x) + s * B(M_k(...M_1(A dropout(x))...))`` for a :func:`fusable_base` ``base``: (..., in) -> (..., out).

    ``mixers``: [(weight (r, r), bias (r,) or None)] in application order (chain.py); ``drop``: the
    dropout record (``dropout._draw_dropped``) or None; ``p`` its probability. Returns the base
    output's dtype; the adapter computes in ``A``'s dtype.
    """
    fan_in_fan_out = isinstance(base, Conv1D)
    keep_scale = 1.0 / (1.0 - p) if drop is not None else 1.0
    flat = [t for pair in mixers for t in pair]  # W_1, b_1, W_2, b_2, ... (a missing bias is None)
    return _FusedLinChain.apply(x, base.weight, base.bias, A, B, scale, keep_scale, drop, fan_in_fan_out, *flat)


def _base_product(
    x: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], fan_in_fan_out: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """x W0^T + b0, bias fused into the GEMM; ``Conv1D`` stores W0 as (in, out). ``x2``: ``x`` as (T, in).

    Returns the output shaped like ``x`` but (..., out), and its (T, out) view for the adapter's
    in-place sum. The output must not itself be a view, as the Function returns it and an output
    that is a view of a tensor made inside a custom Function cannot be modified in place (e.g. by
    ``nn.ReLU(inplace=True)``): ``F.linear`` gives a fresh tensor for 2-D inputs and for N-D ones
    without bias; an N-D input with bias (which ``F.linear`` answers with a view of its 2-D GEMM)
    has the GEMM written straight into a (..., out) tensor.
    """
    w = weight.t() if fan_in_fan_out else weight  # (out, in)
    if x.dim() == 2 or bias is None:
        y = F.linear(x, w, bias)
    else:
        y = torch.empty((*x.shape[:-1], w.shape[0]), dtype=x2.dtype, device=x2.device)
        torch.addmm(bias, x2, w.t(), out=y.view(-1, w.shape[0]))
    return y, (y if y.dim() == 2 else y.view(-1, y.shape[-1]))


#: positional inputs of _FusedLinChain before the mixers' tensors
_N_FIXED = 9


class _FusedLinChain(torch.autograd.Function):
    """y = x W0^T + b0 + (s' (x_d A_f^T) + s c) B^T, x_d = x with the ``drop`` elements zeroed, s' = s / (1 - p).

    Forward: the chain folded onto A (``A_f = M_k ... M_1 A`` and its constant ``c``, chain.py, not
    recorded by autograd), the base product (one GEMM, bias fused), h = x_d A_f^T (+ (1 - p) c) in the
    adapter's dtype (T, r), then ``y += s' h B^T`` in place (``addmm_`` when the dtypes agree).
    Backward, from grad_y: g = grad_y in the adapter's dtype; grad_B = s' g^T h; g_h = g B;
    grad_c = s * sum_T g_h; grad_A_f = s' g_h^T x_d; grad_A = (M_k ... M_1)^T grad_A_f and the
    mixers' gradients from grad_A_f A^T and grad_c (chain.chain_backward);
    grad_x = grad_y W0 + s' mask(g_h A_f), accumulated in one buffer. The scale s' rides on the
    GEMMs' own alpha / beta, so no pass of its own scales h or g_h.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A, B, scale, keep_scale, drop, fan_in_fan_out, *mixers):
        in_features = x.shape[-1]
        x2 = x.reshape(-1, in_features)
        # 1. the chain folded onto A, once per call: O(k r^3 + r^2 in), no autograd nodes
        Ws, bs = mixers[0::2], mixers[1::2]
        if Ws:
            Ms, cs = chain_product(list(zip(Ws, bs)))
            A_f, c = Ms[-1] @ A, cs[-1]
        else:
            Ms, cs, A_f, c = [], [], A, None
        # 2. the base product, bias fused into the GEMM, written into the returned tensor (y2: its (T, out) view)
        y, y2 = _base_product(x, x2, weight, bias, fan_in_fan_out)
        # 3. the adapter's (T, r) activations, in the adapter's dtype
        dtype = A_f.dtype
        # dropped, then cast: the same values as cast, then dropped, with the masking pass over x's own
        # (narrower: bf16 on an fp32 adapter) elements instead of the cast copy's
        xd = (
            x2
            if drop is None
            else _dropped_copy(x2, drop.reshape(-1, in_features) if drop.dtype == torch.bool else drop)
        )
        xd = xd if xd.dtype == dtype else xd.to(dtype)
        h = F.linear(xd, A_f)  # xd A_f^T, the transpose inside the op
        s_drop = scale * keep_scale  # s' = s / (1 - p), applied by the GEMM below
        if c is not None:
            h.add_(c, alpha=1.0 / keep_scale)  # (1 - p) c, so that s' h = s' x_d A_f^T + s c (also at s = 0)
        # 4. y += s' h B^T, in the base output's buffer
        if y2.dtype == dtype:
            y2.addmm_(h, B.t(), alpha=s_drop)
        else:
            y2.add_(h @ B.t(), alpha=s_drop)  # adapter-dtype product rounded once into the base dtype
        # what backward keeps: a bool mask record keeps x itself (alive anyway: q, k and v share it) and
        # the 1-byte mask; dropped positions (CPU) keep the dropped copy, as dropout.py explains. The
        # chain's prefixes are (r, r) and (r,): what chain_backward needs.
        # x itself, not a reshaped view of it: an in-place change of x before backward then fails with
        # torch's own "modified by an inplace operation". W0 only when x's gradient is wanted.
        keep_x = xd if (drop is not None and drop.dtype != torch.bool) else x
        base_w = weight if ctx.needs_input_grad[0] else None
        ctx.save_for_backward(keep_x, base_w, A, A_f, B, h, drop, *Ws, *Ms, *cs)
        ctx.scale, ctx.keep_scale, ctx.fan_in_fan_out = scale, keep_scale, fan_in_fan_out
        ctx.k, ctx.has_c = len(Ws), c is not None
        ctx.x_shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return backward_once(_FusedLinChain._backward, ctx, grad_y)  # create_graph=True: see grad_guard.py

    @staticmethod
    def _backward(ctx, grad_y):
        keep_x, weight, A, A_f, B, h, drop, *chain = ctx.saved_tensors
        if keep_x.dim() != 2:
            keep_x = keep_x.reshape(-1, keep_x.shape[-1])
        k = ctx.k
        Ws, Ms, cs = chain[:k], chain[k : 2 * k], chain[2 * k :]
        dtype = A_f.dtype
        gy = grad_y.reshape(-1, grad_y.shape[-1])
        g = gy if gy.dtype == dtype else gy.to(dtype)
        need_x, need_A, need_B = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        need_W = ctx.needs_input_grad[_N_FIXED::2]
        need_b = ctx.needs_input_grad[_N_FIXED + 1 :: 2]
        need_A_f = need_A or any(need_W)
        s_drop = ctx.scale * ctx.keep_scale
        grad_x = grad_A = grad_B = None
        if need_B:
            grad_B = torch.addmm(B, g.t(), h, beta=0, alpha=s_drop)  # s' g^T h, (out, r); B itself unread
        g_h = g @ B  # (T, r), without s'
        grad_c = g_h.sum(0).mul_(ctx.scale) if ctx.has_c and (any(need_W) or any(need_b)) else None
        mask = None
        if drop is not None and drop.dtype == torch.bool:
            mask = drop.reshape(-1, keep_x.shape[-1])
        grad_A_f = None
        if need_A_f:
            # the record kept x itself: rebuild the dropped copy (in x's dtype first, as forward did)
            xd = keep_x if mask is None else _dropped_copy(keep_x, mask)
            xd = xd if xd.dtype == dtype else xd.to(dtype)
            grad_A_f = torch.addmm(A_f, g_h.t(), xd, beta=0, alpha=s_drop)  # s' g_h^T x_d, (r, in)
        if need_x:
            ga = g_h @ A_f  # (T, in): the adapter's share, masked, then the base's added in the same buffer
            if drop is not None:
                _zero_dropped_(ga, mask if mask is not None else drop)
            base_w = weight.t() if ctx.fan_in_fan_out else weight  # grad of x W0^T is grad_y W0
            if ga.dtype == gy.dtype:
                grad_x = ga.addmm_(gy, base_w, beta=s_drop)  # s' ga + grad_y W0
            else:
                grad_x = (gy @ base_w).add_(ga, alpha=s_drop)
            grad_x = grad_x.reshape(ctx.x_shape)
        grad_mixers: list[Optional[torch.Tensor]] = []
        if k == 0:
            grad_A = grad_A_f if need_A else None
        else:
            # A_f = M_k A: grad_A = M_k^T grad_A_f, grad_M_k = grad_A_f A^T, then down the chain
            if need_A:
                grad_A = Ms[-1].t() @ grad_A_f
            grad_M = F.linear(grad_A_f, A) if any(need_W) else None  # grad_A_f A^T
            grad_W, grad_b = chain_backward(Ws, Ms, cs, grad_M, grad_c, need_W, need_b)
            grad_mixers = [t for pair in zip(grad_W, grad_b) for t in pair]
        return (grad_x, None, None, grad_A, grad_B, None, None, None, None, *grad_mixers)
