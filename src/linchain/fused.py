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
differs, so results agree to rounding, bit for bit in the cases the tests name.

``enabled()`` / ``use_fused(False)`` switch the path off process-wide (benchmarks' reference rows).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Optional

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.nn import functional as F
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
    function = _FusedLinChain
    if split_precision(x, A_f) and base.weight.dtype == torch.bfloat16:
        function = _FusedLinChainSplit
        if drop is not None and drop.dtype != torch.bool:  # dropped positions (CPU): as a mask
            drop = torch.zeros(x.shape, dtype=torch.bool, device=x.device).view(-1).index_fill_(0, drop, True).view(x.shape)
    return function.apply(x, base.weight, base.bias, A_f, c, B, scale, keep_scale, drop, fan_in_fan_out)


def _base_product(x2: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], fan_in_fan_out: bool) -> torch.Tensor:
    """x W0^T + b0 for (T, in) ``x2``, bias fused into the GEMM; ``Conv1D`` stores W0 as (in, out)."""
    if fan_in_fan_out:
        return torch.addmm(bias, x2, weight) if bias is not None else x2 @ weight
    return F.linear(x2, weight, bias)


def _finish_forward(ctx, x, y, c, scale, keep_scale, fan_in_fan_out) -> torch.Tensor:
    """Record the scalars backward needs; ``y`` (T, out) back to ``x``'s leading dims."""
    ctx.scale, ctx.keep_scale, ctx.fan_in_fan_out = scale, keep_scale, fan_in_fan_out
    ctx.has_c = c is not None
    ctx.x_shape = x.shape
    return y.reshape(*x.shape[:-1], y.shape[-1])


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
        xd = xa if drop is None else _dropped_copy(xa, drop.reshape(-1, in_features) if drop.dtype == torch.bool else drop)
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
        return _finish_forward(ctx, x, y, c, scale, keep_scale, fan_in_fan_out)

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


# ---------------------------------------------------------------------------------------------------
# bf16 activations, fp32 adapter (PEFT's default on a bf16 base): split precision
#
# The reference path casts x (T, in) to fp32 and computes the adapter in fp32, then casts its
# (T, out) output back: on a GPU those casts, fp32 copies and extra passes over T-sized tensors are
# most of the adapter's cost (the GEMMs with r = 16 are memory-bound). Here the T-sized tensors stay
# bf16 and only the small fp32 factors are split: t = t1 + t2 + t3 with t_i bf16 (t1 = bf16(t),
# t2 = bf16(t - t1), ...), which carries fp32's 24-bit mantissa. A bf16 x bf16 product is exact in
# fp32 and the GEMMs accumulate in fp32, so x A^T = sum_i x A_i^T (one GEMM against the stacked
# (3r, in) splits, fp32 output) equals the fp32 product up to the order of the fp32 sums. Two split
# operands keep the terms of order <= 2^-16 (i + j <= 4): 6 pairs, one GEMM with K = 6r.

#: Devices where the split-precision Function is used: none by default. Measured on an H200 (BENCHMARKS.md,
#: "GPU"), it keeps 21% less activation memory than PEFT LoRA but its ~25 extra small ops per layer
#: (splits, concatenations) cost more host time than the fp32 copies it avoids: a step on these shapes is
#: bound by how fast the host issues kernels. Tests switch it on (CPU emulation; CUDA in gpu.sh).
_SPLIT_DEVICES: set[str] = set()


def _split3(t: torch.Tensor) -> torch.Tensor:
    """(3, *t.shape) bf16 with t1 + t2 + t3 = t to fp32 precision (t fp32)."""
    t1 = t.to(torch.bfloat16)
    rest = t - t1.float()
    t2 = rest.to(torch.bfloat16)
    t3 = (rest - t2.float()).to(torch.bfloat16)
    return torch.stack((t1, t2, t3))


_MM_OUT_DTYPE = True  # torch.mm(..., out_dtype=) exists (torch >= 2.8 on CUDA); cleared if it fails once


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for bf16 a, b with an fp32 result (fp32 accumulation): one GEMM on CUDA, emulated elsewhere."""
    global _MM_OUT_DTYPE
    if a.is_cuda and _MM_OUT_DTYPE:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError) as err:  # an older torch: same numbers, two casts more
            _MM_OUT_DTYPE = False
            warnings.warn(f"linchain: torch.mm(out_dtype=float32) is unavailable ({type(err).__name__}); the fused "
                          "bf16 path casts its operands instead (same results, slower).", stacklevel=2)
    return a.float() @ b.float()


def _pairs(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked splits (3, m, r) and (3, r, n) -> (m, 6r), (6r, n) whose product is left @ right to ~2^-24."""
    order = ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))
    return (torch.cat([left[i] for i, _ in order], dim=1), torch.cat([right[j] for _, j in order], dim=0))


def split_precision(x: torch.Tensor, A_f: torch.Tensor) -> bool:
    """True when the split-precision Function applies: bf16 activations, fp32 adapter, on CUDA."""
    return x.dtype == torch.bfloat16 and A_f.dtype == torch.float32 and x.device.type in _SPLIT_DEVICES


class _FusedLinChainSplit(torch.autograd.Function):
    """:class:`_FusedLinChain` for bf16 ``x`` / ``W0`` and fp32 ``A_f``, ``c``, ``B``, without fp32 copies of T-sized tensors.

    Forward: y = x W0^T + b0 (bf16); x_d = x with the dropped elements zeroed (bf16, exact);
    h = s' x_d A_f^T + s c (fp32, (T, r)) = s' (x_d @ split(A_f)^T summed); y += h B^T in one bf16
    GEMM with fp32 accumulation (the 6 split pairs, K = 6r), rounded once. Backward: grad_B = gy^T h
    and g_h = gy B from split h and B (fp32 results); grad_A_f = s' g_h^T x_d; grad_x = gy W0 +
    mask(s' g_h A_f) with the adapter's share rounded to bf16 first, as the reference path rounds it.
    Keeps x itself, the bool mask (if any) and h for backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A_f, c, B, scale, keep_scale, drop, fan_in_fan_out):
        in_features = x.shape[-1]
        x2 = x.reshape(-1, in_features)
        mask = None if drop is None else drop.reshape(-1, in_features)
        y = _base_product(x2, weight, bias, fan_in_fan_out)
        xd = x2 if mask is None else x2.masked_fill(mask, 0.0)
        A_split = _split3(A_f)  # (3, r, in)
        r = A_f.shape[0]
        h = _mm_f32(xd, A_split.reshape(3 * r, in_features).t()).view(-1, 3, r).sum(1)  # (T, r) fp32
        h.mul_(scale * keep_scale)
        if c is not None:
            h.add_(c, alpha=scale)
        left, right = _pairs(_split3(h), _split3(B).transpose(1, 2))
        y.addmm_(left, right)  # bf16 C, fp32 accumulation, rounded once
        ctx.save_for_backward(x2, weight, A_f, B, h, mask)
        return _finish_forward(ctx, x, y, c, scale, keep_scale, fan_in_fan_out)

    @staticmethod
    def backward(ctx, grad_y):
        x2, weight, A_f, B, h, mask = ctx.saved_tensors
        gy = grad_y.reshape(-1, grad_y.shape[-1])
        if gy.dtype != torch.bfloat16:
            gy = gy.to(torch.bfloat16)
        need_x, _, _, need_A, need_c, need_B = ctx.needs_input_grad[:6]
        r = A_f.shape[0]
        grad_x = grad_A = grad_c = grad_B = None
        if need_B:
            grad_B = _mm_f32(gy.t(), _split3(h).permute(1, 0, 2).reshape(-1, 3 * r)).view(-1, 3, r).sum(1)  # (out, r)
        g_h = _mm_f32(gy, _split3(B).permute(1, 0, 2).reshape(-1, 3 * r)).view(-1, 3, r).sum(1)  # (T, r) fp32
        if need_c and ctx.has_c:
            grad_c = g_h.sum(0) * ctx.scale
        g_h.mul_(ctx.scale * ctx.keep_scale)
        g_split = _split3(g_h)  # (3, T, r)
        if need_A:
            xd = x2 if mask is None else x2.masked_fill(mask, 0.0)
            grad_A = _mm_f32(g_split.permute(0, 2, 1).reshape(3 * r, -1), xd).view(3, r, -1).sum(0)  # (r, in)
        if need_x:
            left, right = _pairs(g_split, _split3(A_f))
            ga = left @ right  # (T, in) bf16: the adapter's share rounded once, as the reference rounds it
            if mask is not None:
                ga.masked_fill_(mask, 0.0)
            base_w = weight.t() if ctx.fan_in_fan_out else weight
            grad_x = ga.addmm_(gy, base_w).reshape(ctx.x_shape)
        return grad_x, None, None, grad_A, grad_c, grad_B, None, None, None, None
