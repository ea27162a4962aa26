"""One rule for LinChain's hand-written backward passes (fused.py, dropout.py): they are differentiable once.

Their backward computes on tensors the forward made without recording (the chain's fold, the dropped
copy of x), so autograd cannot differentiate the gradients they return: under ``create_graph=True``
(Hessian-vector products, gradient penalties) a second differentiation would silently miss those
dependencies. :func:`differentiable_once` makes it an error instead, as ``torch.autograd.function.
once_differentiable`` does, but with a message that says what to do, and also when only the
Function's inputs (not the incoming gradient) require grad, as in a gradient penalty.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

__all__ = ["SECOND_DERIVATIVE", "backward_once", "differentiable_once"]

SECOND_DERIVATIVE = (
    "LinChain's fused layer and its dropout compute their backward by hand and cannot be differentiated "
    "a second time (create_graph=True: Hessian-vector products, gradient penalties). Run that forward pass "
    "under `with linchain.tuner.fused.use_fused(False):` with the adapter's dropout inactive (model.eval() "
    "or dropout=0): that path is plain differentiable torch."
)


def backward_once(backward: Callable, ctx, grad_output: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
    """A Function's ``backward``: ``backward(ctx, grad_output)`` (the hand-written one) as it is in the
    usual backward, where nothing records it; under ``create_graph=True`` run without recording and
    guarded by :func:`differentiable_once`."""
    if not torch.is_grad_enabled():
        return backward(ctx, grad_output)
    with torch.no_grad():
        grads = backward(ctx, grad_output)
    return differentiable_once(grads, grad_output, ctx)


def differentiable_once(
    grads: Sequence[Optional[torch.Tensor]], grad_output: torch.Tensor, ctx
) -> tuple[Optional[torch.Tensor], ...]:
    """``grads`` as returned by a hand-written backward (computed under ``torch.no_grad()``), called by
    :func:`backward_once` when autograd records the backward (``create_graph=True``).

    When something requires grad, each gradient is routed through an error node that raises
    :data:`SECOND_DERIVATIVE` if differentiated; otherwise they are returned as they are. The node
    also hangs on to the Function's saved tensors that require grad (its parameters, ``x``) and on ``grad_output``, so differentiating with respect
    to any of them reaches it (detached gradients alone would end in torch's "appears to not have
    been used in the graph" instead of this message).
    """
    if not (grad_output.requires_grad or any(ctx.needs_input_grad)):
        return tuple(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return tuple(grads)
    anchors = [t for t in (grad_output, *ctx.saved_tensors) if t is not None and t.requires_grad]
    delayed_error = getattr(torch._C._functions, "DelayedError", None)  # private: what once_differentiable uses
    if delayed_error is None:
        raise RuntimeError(SECOND_DERIVATIVE)  # no way to defer the refusal: refuse create_graph itself
    error = delayed_error(SECOND_DERIVATIVE, len(present) + len(anchors))
    guarded = error(*[grads[i].detach().requires_grad_() for i in present], *anchors)
    guarded = guarded if isinstance(guarded, tuple) else (guarded,)
    out = list(grads)
    for i, g in zip(present, guarded):
        out[i] = g
    return tuple(out)
