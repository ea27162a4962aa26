"""The LinChain adapter layer: a wrapper around a frozen ``nn.Linear`` or transformers ``Conv1D``."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from .config import MIXER_INITS, adapter_scaling
from .quant import dequantized_weight, float_dtype, store_weight_

__all__ = ["LinChainLayer", "SUPPORTED_BASE_LAYERS"]

#: Base layer types LinChain can wrap.
SUPPORTED_BASE_LAYERS = (nn.Linear, Conv1D)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _in_out_features(base_layer: nn.Module) -> tuple[int, int]:
    if isinstance(base_layer, nn.Linear):
        return base_layer.in_features, base_layer.out_features
    if isinstance(base_layer, Conv1D):
        # GPT-2 style: weight is stored (in, out) and y = x @ W + b
        in_features, out_features = base_layer.weight.shape
        return in_features, out_features
    raise TypeError(
        f"LinChain can only wrap {[c.__name__ for c in SUPPORTED_BASE_LAYERS]}, got {type(base_layer).__name__}."
    )


#: Above this dropout probability the CPU draws a dense mask instead of the dropped positions
#: (a gap costs a float64 uniform, a log and an index write, a few times one element of
#: ``rand_like(x) < p``: listing positions stops paying off somewhere around p = 0.25).
_SPARSE_DROP_MAX_P = 0.25


def _draw_dropped(x: torch.Tensor, p: float, _first_batch: Optional[int] = None) -> torch.Tensor:
    """Which elements of ``x`` dropout removes, each independently with probability ``p``.

    Returns a bool mask shaped like ``x`` (accelerators, or ``p`` > 0.25), or, on CPU, the sorted
    flat indices (int64, into ``x`` in C order) of the dropped elements. Why the indices: on CPU
    one uniform draw per element (``rand_like(x) < p``) is the single largest cost of a LoRA-style
    layer with dropout 0.05, ~4 ns an element, serial. The gaps between successive dropped
    positions of an i.i.d. Bernoulli(p) sequence are i.i.d. Geometric(p), so drawing ~n*p gaps and
    summing them gives exactly the same distribution with ~20x fewer draws.
    ``_first_batch`` (tests only) sets how many gaps the first round draws.
    """
    if x.device.type != "cpu" or p > _SPARSE_DROP_MAX_P:
        return torch.rand_like(x) < p  # dropped where uniform < p, as torch's own bernoulli
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


class LinChainLayer(nn.Module, BaseTunerLayer):
    """Adds a chain of small linear maps to a frozen linear layer.

    For each active adapter::

        y = base_layer(x) + s * B(M_k(...M_1(A(dropout(x)))...))

    Shapes (``T`` tokens): ``x``: (T, in); ``A.weight``: (r, in); ``M_i.weight``: (r, r) with an
    optional bias (r,); ``B.weight``: (out, r); ``y``: (T, out). The forward costs
    O(T * r * (in + out + k * r)); the dense (out, in) delta is only built by
    :meth:`get_delta_weight`, for merging, export and analysis.

    Per-adapter containers, keyed by adapter name as in PEFT: ``linchain_A`` (Linear in->r, no
    bias), ``linchain_mixers`` (ModuleList of k Linear r->r), ``linchain_B`` (Linear r->out, no
    bias), ``linchain_dropout`` and the float ``scaling``.
    """

    adapter_layer_names = ("linchain_A", "linchain_mixers", "linchain_B")
    other_param_names = ("r", "alpha", "scaling", "linchain_dropout")

    def __init__(self, base_layer: nn.Module, adapter_name: str, **adapter_kwargs: Any) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = _in_out_features(base_layer)
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.r: dict[str, int] = {}
        self.alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.linchain_dropout = nn.ModuleDict()
        self.linchain_A = nn.ModuleDict()
        self.linchain_mixers = nn.ModuleDict()
        self.linchain_B = nn.ModuleDict()
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        # True while the base layer carries a bias that merging created (base had none)
        self._created_bias = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, **adapter_kwargs)

    # ------------------------------------------------------------------ creation
    def update_layer(
        self,
        adapter_name: str,
        r: int,
        alpha: float,
        num_mixers: int,
        mixer_bias: bool = False,
        mixer_init: str = "kaiming",
        dropout: float = 0.0,
        use_rslora: bool = False,
        init_weights: bool = True,
        layer_name: Optional[str] = None,
    ) -> None:
        """Create (or replace) adapter ``adapter_name`` on this layer."""
        where = f"layer {layer_name!r} " if layer_name else "this layer "
        if r <= 0:
            raise ValueError(f"r must be a positive integer, got r={r}.")
        if r > min(self.in_features, self.out_features):
            raise ValueError(
                f"r={r} is larger than {where}allows: it maps {self.in_features} -> {self.out_features} features, "
                f"so r must be <= {min(self.in_features, self.out_features)}. Lower r or exclude that layer "
                "(exclude_modules)."
            )
        if num_mixers < 0:
            raise ValueError(f"num_mixers must be >= 0, got num_mixers={num_mixers}.")
        if mixer_init not in MIXER_INITS:
            raise ValueError(f"mixer_init must be one of {list(MIXER_INITS)}, got mixer_init={mixer_init!r}.")
        self.r[adapter_name] = r
        self.alpha[adapter_name] = alpha
        self.scaling[adapter_name] = adapter_scaling(alpha, r, use_rslora)
        self.linchain_dropout[adapter_name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linchain_A[adapter_name] = nn.Linear(self.in_features, r, bias=False)
        self.linchain_mixers[adapter_name] = nn.ModuleList(nn.Linear(r, r, bias=mixer_bias) for _ in range(num_mixers))
        self.linchain_B[adapter_name] = nn.Linear(r, self.out_features, bias=False)
        self.reset_parameters(adapter_name, mixer_init=mixer_init, init_weights=init_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    @torch.no_grad()
    def reset_parameters(self, adapter_name: str, mixer_init: str = "kaiming", init_weights: bool = True) -> None:
        """A: Kaiming-uniform (a=sqrt(5)) as LoRA; mixers per ``mixer_init``; B: zeros unless ``init_weights`` is False."""
        nn.init.kaiming_uniform_(self.linchain_A[adapter_name].weight, a=math.sqrt(5))
        for mixer in self.linchain_mixers[adapter_name]:
            if mixer_init == "kaiming":
                # nn.Linear's own init, as the reference code: weight Kaiming-uniform, bias U(-1/sqrt(r), 1/sqrt(r))
                mixer.reset_parameters()
            elif mixer_init == "orthogonal":
                nn.init.orthogonal_(mixer.weight)
                if mixer.bias is not None:
                    mixer.bias.zero_()
            else:  # identity
                nn.init.eye_(mixer.weight)
                if mixer.bias is not None:
                    mixer.bias.zero_()
        if init_weights:
            nn.init.zeros_(self.linchain_B[adapter_name].weight)
        else:
            nn.init.kaiming_uniform_(self.linchain_B[adapter_name].weight, a=math.sqrt(5))

    @classmethod
    def from_factors(
        cls,
        A: torch.Tensor,
        mixers: list[tuple[torch.Tensor, Optional[torch.Tensor]]],
        B: torch.Tensor,
        scaling: float,
        adapter_name: str = "default",
    ) -> "LinChainLayer":
        """A layer holding the given factors around an empty (meta) base layer: no memory, never run.

        ``A``: (r, in); ``mixers``: [(weight (r, r), bias (r,) or None)] in application order;
        ``B``: (out, r). Lets saved factors go through :meth:`get_delta_weight` /
        :meth:`get_delta_bias` / :meth:`_fold` (analysis, export) instead of a second copy of the
        chain product. The tensors are used as they are (no copies, their dtype kept).
        """
        r, in_features = A.shape
        base = nn.Linear(in_features, B.shape[0], bias=False, device="meta")
        has_bias = [b is not None for _, b in mixers]
        if any(has_bias) and not all(has_bias):
            raise ValueError("a chain whose mixers have biases only in part is not a LinChain adapter.")
        layer = cls(base, adapter_name, r=r, alpha=1.0, num_mixers=len(mixers), mixer_bias=any(has_bias))
        # the adapter was created on the meta device: swap in the given tensors
        layer.linchain_A[adapter_name].weight = nn.Parameter(A, requires_grad=False)
        layer.linchain_B[adapter_name].weight = nn.Parameter(B, requires_grad=False)
        for module, (weight, bias) in zip(layer.linchain_mixers[adapter_name], mixers):
            module.weight = nn.Parameter(weight, requires_grad=False)
            if bias is not None:
                module.bias = nn.Parameter(bias, requires_grad=False)
        layer.scaling[adapter_name] = scaling
        return layer

    # ------------------------------------------------------------------ the single source of truth
    def _fold(self, adapter_name: str, upcast: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(M_k ... M_1 A, c)``: the chain folded onto A, (r, in), and its constant (r,) or None.

        ``c = M_k(...(M_2 b_1 + b_2)...) + b_k`` is the chain applied to 0 (None for a linear chain).
        Differentiable; used by forward, get_delta_weight and get_delta_bias alike. Folding costs
        O(k r^3 + r^2 in) regardless of the token count, where applying k mixers to the (T, r)
        activations costs 3k tiny (T, r) x (r, r) matmuls per step (forward + backward), which are
        slow on CPU for their size. ``upcast``: compute in fp32 when the adapter is fp16/bf16.
        """
        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.float() if upcast and t.dtype in _LOW_PRECISION else t

        M: Optional[torch.Tensor] = None
        c: Optional[torch.Tensor] = None
        for mixer in self.linchain_mixers[adapter_name]:
            W = cast(mixer.weight)
            M = W if M is None else W @ M  # (r, r)
            if c is not None:
                c = W @ c
            if mixer.bias is not None:
                c = cast(mixer.bias) if c is None else c + cast(mixer.bias)
        A = cast(self.linchain_A[adapter_name].weight)
        return (A if M is None else M @ A), c

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The dense update ``s * B M_k ... M_1 A``, shaped like the base weight.

        Returns (out, in) for ``nn.Linear`` and (in, out) for ``Conv1D``, in the adapter's dtype
        (computed in fp32 when the adapter is fp16/bf16, as fp16/bf16 matmuls on CPU are slow and imprecise).
        """
        dtype = self.linchain_A[adapter_name].weight.dtype
        upcast = dtype in _LOW_PRECISION
        A_folded, _ = self._fold(adapter_name, upcast)
        B = self.linchain_B[adapter_name].weight
        delta = ((B.float() if upcast else B) @ A_folded) * self.scaling[adapter_name]
        if self.fan_in_fan_out:
            delta = delta.T
        return delta.to(dtype)

    def get_delta_bias(self, adapter_name: str) -> Optional[torch.Tensor]:
        """The constant term of an affine chain, shaped (out,), or None for a linear chain.

        ``s * B (M_k(...(M_2 b_1 + b_2)...) + b_k)``: the chain applied to x = 0.
        """
        dtype = self.linchain_A[adapter_name].weight.dtype
        upcast = dtype in _LOW_PRECISION
        _, c = self._fold(adapter_name, upcast)
        if c is None:
            return None
        B = self.linchain_B[adapter_name].weight
        return (((B.float() if upcast else B) @ c) * self.scaling[adapter_name]).to(dtype)

    # ------------------------------------------------------------------ merge
    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Add the active (or given) adapters' deltas to the base weight and bias.

        Idempotent: an adapter already merged is skipped. With ``safe_merge`` the result is checked
        for NaN/inf before the base layer is touched. A quantized (bitsandbytes) base weight is
        dequantized, updated and requantized: exact only up to one quantization step (quant.py).
        """
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base = self.get_base_layer()
        for name in adapter_names:
            if name not in self.linchain_A:
                continue
            weight = dequantized_weight(base)  # base.weight.data itself unless the base is quantized (quant.py)
            new_w = weight + self.get_delta_weight(name).to(weight.dtype)
            delta_b = self.get_delta_bias(name)
            new_b = None
            if delta_b is not None:
                old_b = base.bias.data if base.bias is not None else torch.zeros_like(delta_b, dtype=float_dtype(base))
                new_b = old_b + delta_b.to(old_b.dtype)
            if safe_merge and (
                not torch.isfinite(new_w).all() or (new_b is not None and not torch.isfinite(new_b).all())
            ):
                raise ValueError(f"NaN or inf found in the merged weights of adapter {name!r}; the base layer is left unchanged.")
            store_weight_(base, new_w)  # requantizes a quantized base
            if new_b is not None:
                if base.bias is None:
                    base.bias = nn.Parameter(new_b, requires_grad=False)
                    self._created_bias = True
                else:
                    base.bias.data = new_b
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter again; a bias that merging created is removed.

        Exact for float bases; a quantized base is requantized again, so its original codes do not
        come back exactly (README, "QLinChain", gives the size).
        """
        base = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name not in self.linchain_A:
                continue
            weight = dequantized_weight(base)
            store_weight_(base, weight - self.get_delta_weight(name).to(weight.dtype))
            delta_b = self.get_delta_bias(name)
            if delta_b is not None and base.bias is not None:
                base.bias.data -= delta_b.to(base.bias.dtype)
        if self._created_bias:
            base.bias = None
            self._created_bias = False

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name not in self.linchain_A:
                continue
            A = self.linchain_A[name]
            dropout = self.linchain_dropout[name]
            x_in = self._cast_input_dtype(x, A.weight.dtype)
            # M_k(...M_1(A x)...) = (M_k ... M_1 A) x + c: fold the chain onto A first (see _fold)
            A_folded, c = self._fold(name)
            if isinstance(dropout, nn.Dropout) and dropout.training and dropout.p > 0 and torch.is_grad_enabled():
                # = A_folded(dropout(x)), cheaper: see _DropoutLinear and _draw_dropped
                h = _DropoutLinear.apply(x_in, A_folded, _draw_dropped(x_in, dropout.p), 1.0 / (1.0 - dropout.p))
            else:
                h = F.linear(dropout(x_in), A_folded)
            if c is not None:
                h = h + c
            # scale the r-dim activations rather than the out-dim result: same value, fewer flops
            h = self.linchain_B[name](h * self.scaling[name])
            result = result + h.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "linchain." + super().__repr__()
