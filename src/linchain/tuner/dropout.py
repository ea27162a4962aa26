"""Dropout followed by the adapter's first map, ``A(dropout(x))``, drawn cheaply on CPU.

The layer calls :func:`dropout_linear` whenever an adapter's dropout is active, with or without
autograd, so a recomputation (gradient checkpointing) that restores the RNG state draws the same
elements again. On CPU (p <= 0.25) it draws only the positions it drops: i.i.d. geometric gaps,
~p of the elements, instead of one uniform per element. Same Bernoulli(p) distribution as
``nn.Dropout``, other masks.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .grad_guard import backward_once

__all__ = ["dropout_linear"]


def dropout_linear(x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
    """``F.linear(F.dropout(x, p, training=True), weight)``, cheaper: see :class:`_DropoutLinear`.

    ``x``: (..., in); ``weight``: (r, in); returns (..., r). Consumes the RNG the same way with or
    without autograd recording (``torch.no_grad()``, the first pass of reentrant checkpointing), so
    a recompute from a restored RNG state drops exactly the same elements.
    """
    return _DropoutLinear.apply(x, weight, _draw_dropped(x, p), 1.0 / (1.0 - p))


#: Above this dropout probability the CPU draws a dense mask instead of the dropped positions
#: (a gap costs a float64 uniform, a log and an index write, a few times one element of
#: ``rand_like(x) < p``: listing positions stops paying off somewhere around p = 0.25).
_SPARSE_DROP_MAX_P = 0.25
#: ... and below this many elements: the position draw's dozen small ops cost more than one
#: ``rand_like(x) < p`` over a small tensor (1 thread, 2026-12-01: 4,096 elements ~14 us vs ~12 us;
#: 8,192: ~15 us vs ~22 us; 16,384: ~18 us vs ~39 us).
_SPARSE_DROP_MIN_NUMEL = 4096


def _draw_dropped(x: torch.Tensor, p: float, _first_batch: Optional[int] = None) -> torch.Tensor:
    """Which elements of ``x`` dropout removes, each independently with probability ``p``.

    Returns a bool mask shaped like ``x`` (accelerators, ``p`` > 0.25, fewer than 4,096 elements, or
    under torch.compile), or, on CPU, the sorted flat indices (int64, into ``x`` in C order) of the dropped elements. Why the
    indices: on CPU one uniform draw per element (``rand_like(x) < p``) is the single largest cost
    of a LoRA-style layer with dropout 0.05, ~4 ns an element, serial. The gaps between successive
    dropped positions of an i.i.d. Bernoulli(p) sequence are i.i.d. Geometric(p), so drawing ~n*p
    gaps and summing them gives exactly the same distribution with ~20x fewer draws.

    Under torch.compile the positions' data-dependent count and loop would break the graph (each
    ``int(tensor)`` is a graph break), so a compiled model draws the bool mask: the same Bernoulli(p)
    distribution from another random stream (inductor's own generator), so a compiled and an eager
    run with the same seed drop different elements. Either way the draw depends only on the RNG
    state, the shape, the device and ``p``, never on whether autograd records.
    ``_first_batch`` (tests only) sets how many gaps the first round draws.
    """
    if torch.compiler.is_compiling():
        return _uniform_mask(x, p)
    if x.device.type != "cpu":
        # one kernel writing the 1-byte mask (rand_like + compare are two, with a T-sized float between)
        return torch.empty_like(x, dtype=torch.bool).bernoulli_(p)
    if p > _SPARSE_DROP_MAX_P or x.numel() < _SPARSE_DROP_MIN_NUMEL:
        # on CPU the uniform draw and compare beat bernoulli_'s own loop (2,048 elements: ~8 vs ~9 us;
        # 16,384: ~39 vs ~61 us)
        return _uniform_mask(x, p)
    n = x.numel()

    def gaps_for(remaining: int) -> int:
        # enough gaps to pass ``remaining`` elements in all but ~1e-9 of draws; the loop covers the rest exactly
        mean = max(remaining, 1) * p
        return int(mean + 6.0 * math.sqrt(mean) + 16)

    batch = _first_batch or gaps_for(n)
    log_keep = math.log1p(-p)
    chunks: list[torch.Tensor] = []
    last = -1  # index of the last dropped element so far
    while True:
        # G = ceil(log(U) / log(1 - p)), U ~ U[0, 1) in float64: P(G > k) = P(U < (1 - p)^k) = (1 - p)^k.
        # The same inversion as Tensor.geometric_, vectorised (geometric_ runs a serial loop, ~2x
        # slower). Gaps > n (and U = 0's inf) all mean "past the end": clamped so the int64 sum
        # cannot overflow.
        gaps = torch.rand(batch, dtype=torch.float64).log_().div_(log_keep).ceil_().clamp_(max=n + 1)
        pos = gaps.to(torch.int64).cumsum_(0).add_(last)
        end = int(torch.searchsorted(pos, n))  # positions < n
        chunks.append(pos[:end])
        if end < batch:
            break
        last = int(pos[-1])
        batch = gaps_for(n - last)
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _uniform_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropped where a float32 uniform < p, shaped like ``x``, whatever ``x``'s dtype: a bf16 uniform
    (``rand_like`` of bf16 ``x``) would have 8 bits and a rate off by up to ~1e-3 of p, and the draw
    would differ between the fused path (bf16 ``x``) and the reference path (``x`` cast first)."""
    return torch.rand_like(x, dtype=torch.float32) < p


def _zero_dropped_(t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Zero, in place, the elements of the contiguous tensor ``t`` that ``drop`` marks (see _draw_dropped)."""
    if drop.dtype == torch.bool:
        return t.masked_fill_(drop, 0.0)
    t.view(-1).index_put_((drop,), t.new_zeros(()))  # parallel over the indices (index_fill_ is not)
    return t


def _dropped_copy(x: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """``x`` with the marked elements zeroed, as a new tensor (``x`` untouched: the base layer and siblings share it)."""
    if drop.dtype == torch.bool:
        return x.masked_fill(drop, 0.0)  # takes the bool mask as is; x * mask would convert it to float first
    return _zero_dropped_(x.clone(memory_format=torch.contiguous_format), drop)


class _DropoutLinear(torch.autograd.Function):
    """``h = scale * ((x with the ``drop`` elements zeroed) @ A.T)``: dropout followed by A.

    ``x``: (..., in); ``weight`` (A): (r, in); ``drop``: from :func:`_draw_dropped`; returns (..., r).
    With ``scale = 1 / (1 - p)`` this is exactly ``nn.Dropout(p)`` then ``A``, but the scale is
    applied to the r-dim result (r << in: fewer flops) and the mask is never a float tensor.
    What backward keeps depends on the record: with dropped positions (CPU) the dropped copy of
    ``x`` plus ~p * 8 bytes an element of indices, so A's gradient needs no second pass over ``x``
    (CPU time is what is short there); with a bool mask (accelerators) ``x`` itself, often alive
    anyway (q, k and v share it), plus the 1-byte mask, rebuilding the dropped copy in backward
    (memory is what is short there). ``nn.Dropout`` + ``nn.Linear`` (PEFT LoRA) keep both the
    dropped copy and a mask, and draw one uniform per element.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, drop: torch.Tensor, scale: float) -> torch.Tensor:
        xd = _dropped_copy(x, drop)
        h = xd @ weight.t()
        h.mul_(scale)  # (..., r): cheap, in place on a fresh tensor
        ctx.save_for_backward(x if drop.dtype == torch.bool else xd, weight, drop)
        ctx.scale = scale
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        return backward_once(_DropoutLinear._backward, ctx, grad_h)  # create_graph=True: see grad_guard.py

    @staticmethod
    def _backward(ctx, grad_h: torch.Tensor):
        x_or_xd, weight, drop = ctx.saved_tensors
        # Under autocast the forward matmul ran in the autocast dtype (grad_h has it) while x and A
        # stay fp32: compute in grad_h's dtype and hand back each gradient in its input's dtype,
        # as autocast's own cast ops would.
        dtype = grad_h.dtype
        g = grad_h * ctx.scale  # (..., r)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # (..., in): the mask's chain rule, in place on the fresh (contiguous) product
            grad_x = _zero_dropped_(g @ weight.to(dtype), drop).to(x_or_xd.dtype)
        if ctx.needs_input_grad[1]:
            # (r, T) @ (T, in): A's gradient needs the dropped input
            xd = x_or_xd.to(dtype)
            if drop.dtype == torch.bool:  # a mask record kept x itself (see the class docstring)
                xd = _dropped_copy(xd, drop)
            grad_w = (g.reshape(-1, g.shape[-1]).t() @ xd.reshape(-1, xd.shape[-1])).to(weight.dtype)
        return grad_x, grad_w, None, None
