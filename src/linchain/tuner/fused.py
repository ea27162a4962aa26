"""The fused adapter path: one autograd Function per adapted layer, base product included.

For a plain frozen ``nn.Linear`` / ``Conv1D`` base and one active adapter, the layer's forward is

    y = x W0^T + b0 + (s * ((x * keep / (1 - p)) A_f^T) + s * c) B^T

with ``A_f = M_k ... M_1 A`` and ``c`` the chain's constant (``LinChainLayer._fold``, outside this
Function: autograd differentiates the fold, O(k r^3 + r^2 in) a step). Shapes (``T`` tokens):
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
from typing import Iterator, Optional

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules import module as _module
from transformers.pytorch_utils import Conv1D

from .dropout import _dropped_copy, _zero_dropped_

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
    """Whether a global module forward hook (``nn.modules.module.register_module_forward_hook``) is set."""
    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)


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
    if base._forward_hooks or base._forward_pre_hooks or "_hf_hook" in base.__dict__:
        return False
    if global_hooks():
        return False
    weight, bias = base.weight, base.bias
    if type(weight) is not nn.Parameter or not weight.dtype.is_floating_point or weight.requires_grad:
        return False
    return bias is None or not bias.requires_grad


def fused_forward(
    x: torch.Tensor,
    base: nn.Module,
    A_f: torch.Tensor,
    c: Optional[torch.Tensor],
    B: torch.Tensor,
    scale: float,
    p: float,
    drop: Optional[torch.Tensor],
) -> torch.Tensor:
    """``base(x) + s * B((dropout(x)) A_f^T + c)`` for a :func:`fusable_base` ``base``: (..., in) -> (..., out).

    ``drop``: the dropout record (``dropout._draw_dropped``) or None; ``p`` its probability.
    Returns the base output's dtype; the adapter computes in ``A_f``'s dtype.
    """
    fan_in_fan_out = isinstance(base, Conv1D)
    keep_scale = 1.0 / (1.0 - p) if drop is not None else 1.0
    return _FusedLinChain.apply(x, base.weight, base.bias, A_f, c, B, scale, keep_scale, drop, fan_in_fan_out)


def _base_product(
    x2: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], fan_in_fan_out: bool
) -> torch.Tensor:
    """x W0^T + b0 for (T, in) ``x2``, bias fused into the GEMM; ``Conv1D`` stores W0 as (in, out)."""
    if fan_in_fan_out:
        return torch.addmm(bias, x2, weight) if bias is not None else x2 @ weight
    return F.linear(x2, weight, bias)


class _FusedLinChain(torch.autograd.Function):
    """y = x W0^T + b0 + (s' (x_d A_f^T) + s c) B^T, x_d = x with the ``drop`` elements zeroed, s' = s / (1 - p).

    Forward: the base product (one GEMM, bias fused), h = s' x_d A_f^T (+ s c) in the adapter's dtype
    (T, r), then ``y += h B^T`` in place (``addmm_`` when the dtypes agree). Backward, from grad_y:
    g = grad_y in the adapter's dtype; grad_B = g^T h; g_h = g B; grad_c = s * sum_T g_h;
    grad_A_f = s' g_h^T x_d; grad_x = grad_y W0 + mask(s' g_h A_f), accumulated in one buffer.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A_f, c, B, scale, keep_scale, drop, fan_in_fan_out):
        in_features = x.shape[-1]
        x2 = x.reshape(-1, in_features)
        # 1. the base product, bias fused into the GEMM
        y = _base_product(x2, weight, bias, fan_in_fan_out)
        # 2. the adapter's (T, r) activations, in the adapter's dtype
        dtype = A_f.dtype
        xa = x2 if x2.dtype == dtype else x2.to(dtype)
        xd = (
            xa
            if drop is None
            else _dropped_copy(xa, drop.reshape(-1, in_features) if drop.dtype == torch.bool else drop)
        )
        h = xd @ A_f.t()
        h.mul_(scale * keep_scale)  # fresh (T, r): both scales in one pass over the small tensor
        if c is not None:
            h.add_(c, alpha=scale)
        # 3. y += h B^T, in the base output's buffer
        if y.dtype == dtype:
            y.addmm_(h, B.t())
        else:
            y.add_(h @ B.t())  # adapter-dtype product rounded once into the base dtype
        # what backward keeps: a bool mask record keeps x itself (alive anyway: q, k and v share it) and
        # the 1-byte mask; dropped positions (CPU) keep the dropped copy, as dropout.py explains
        keep_x = xd if (drop is not None and drop.dtype != torch.bool) else x2
        ctx.save_for_backward(keep_x, weight, A_f, B, h, drop)
        ctx.scale, ctx.keep_scale, ctx.fan_in_fan_out = scale, keep_scale, fan_in_fan_out
        ctx.has_c = c is not None
        ctx.x_shape = x.shape
        return y.reshape(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        keep_x, weight, A_f, B, h, drop = ctx.saved_tensors
        dtype = A_f.dtype
        gy = grad_y.reshape(-1, grad_y.shape[-1])
        g = gy if gy.dtype == dtype else gy.to(dtype)
        need_x, _, _, need_A, need_c, need_B = ctx.needs_input_grad[:6]
        grad_x = grad_A = grad_c = grad_B = None
        if need_B:
            grad_B = g.t() @ h  # (out, r)
        g_h = g @ B  # (T, r)
        if need_c and ctx.has_c:
            grad_c = g_h.sum(0) * ctx.scale
        g_h.mul_(ctx.scale * ctx.keep_scale)
        mask = None
        if drop is not None and drop.dtype == torch.bool:
            mask = drop.reshape(-1, keep_x.shape[-1])
        if need_A:
            xd = keep_x if keep_x.dtype == dtype else keep_x.to(dtype)
            if mask is not None:  # the record kept x itself: rebuild the dropped copy (one pass)
                xd = _dropped_copy(xd, mask)
            grad_A = g_h.t() @ xd  # (r, in)
        if need_x:
            ga = g_h @ A_f  # (T, in): the adapter's share, masked, then the base's added in the same buffer
            if drop is not None:
                _zero_dropped_(ga, mask if mask is not None else drop)
            base_w = weight.t() if ctx.fan_in_fan_out else weight  # grad of x W0^T is grad_y W0
            if ga.dtype == gy.dtype:
                grad_x = ga.addmm_(gy, base_w)
            else:
                grad_x = (gy @ base_w).add_(ga)
            grad_x = grad_x.reshape(ctx.x_shape)
        return grad_x, None, None, grad_A, grad_c, grad_B, None, None, None, None
