"""The LinChain adapter layer: a wrapper around a frozen ``nn.Linear`` or transformers ``Conv1D``."""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from typing import Any, Iterator, Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from torch.autograd import forward_ad
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from . import fused
from .chain import chain_product
from .config import MIXER_INITS, adapter_scaling
from .dropout import _draw_dropped, dropout_linear
from .quant import dequantized_weight, float_dtype, store_weight_

__all__ = ["LinChainLayer", "SUPPORTED_BASE_LAYERS", "refuse_rank_above_layer"]

#: Set by refuse_rank_above_layer(): r larger than a layer's smaller side is an error, not a warning.
_REFUSE_RANK_ABOVE_LAYER: contextvars.ContextVar[bool] = contextvars.ContextVar("linchain_refuse_rank", default=False)


@contextlib.contextmanager
def refuse_rank_above_layer() -> Iterator[None]:
    """Within the block, an adapter whose r exceeds a target layer's smaller side raises (before its
    factors are allocated) instead of warning: the commands build their models in it."""
    token = _REFUSE_RANK_ABOVE_LAYER.set(True)
    try:
        yield
    finally:
        _REFUSE_RANK_ABOVE_LAYER.reset(token)


#: Base layer types LinChain can wrap.
SUPPORTED_BASE_LAYERS = (nn.Linear, Conv1D)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _hooked(module: nn.Module) -> bool:
    """Whether ``module`` has a hook of its own: forward, forward pre-, or backward (full or pre-; those
    fire only when the module itself is called)."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


#: torch's (private) probe for an active torch.func transform; None where a torch version lacks it
_PEEK_TRANSFORM = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)


def _transformed() -> bool:
    """Whether a torch.func transform (vmap, grad, jvp, ...) or forward-mode AD is active: the hand-written
    Functions (fused path, dropout + A) have neither ``setup_context``/``vmap`` nor ``jvp``, so such
    calls take plain differentiable ops, as PEFT LoRA does."""
    if _PEEK_TRANSFORM is not None and _PEEK_TRANSFORM() is not None:
        return True
    return getattr(forward_ad, "_current_level", -1) >= 0


#: an adapter's modules: (dropout, A, mixers, B)
_Parts = tuple[nn.Module, nn.Linear, nn.ModuleList, nn.Linear]


def _modules_of(parts: _Parts) -> tuple[nn.Module, ...]:
    dropout, A, mixers, B = parts
    return (dropout, A, *mixers, B)


def _weight_and_bias(linear: nn.Module) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(linear.weight, linear.bias)``; for an exact ``nn.Linear`` read from ``_parameters`` (per layer
    per forward: ~0.1 us instead of ~0.5 us each through ``__getattr__``). A parametrized module is a
    subclass (torch.nn.utils.parametrize), so its computed weight is still read as an attribute."""
    if type(linear) is nn.Linear:
        params = linear._parameters
        return params["weight"], params["bias"]
    return linear.weight, linear.bias


def _add_rounded_once(base: torch.Tensor, delta: torch.Tensor, alpha: int = 1) -> torch.Tensor:
    """``base + alpha * delta`` in the wider of their dtypes, rounded once into ``base``'s: a bf16/fp16
    base weight and an fp32 update come out as PEFT LoRA's in-place ``weight.data += delta`` makes them
    (rounding the update to bf16 first, then the sum, differed from it in ~30% of the elements)."""
    return torch.add(base, delta, alpha=alpha).to(base.dtype)


def _active_dropout_p(dropout: nn.Module) -> float:
    """The probability an adapter's own ``nn.Dropout`` drops with now (0.0: inactive, or another module)."""
    return dropout.p if isinstance(dropout, nn.Dropout) and dropout.training and dropout.p > 0 else 0.0


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
    other_param_names = ("r", "alpha", "scaling", "use_rslora", "linchain_dropout")

    def __init__(self, base_layer: nn.Module, adapter_name: str, **adapter_kwargs: Any) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = _in_out_features(base_layer)
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.r: dict[str, int] = {}
        self.alpha: dict[str, float] = {}
        self.use_rslora: dict[str, bool] = {}
        self.scaling: dict[str, float] = {}
        self.linchain_dropout = nn.ModuleDict()
        self.linchain_A = nn.ModuleDict()
        self.linchain_mixers = nn.ModuleDict()
        self.linchain_B = nn.ModuleDict()
        self._disable_adapters = False
        # peft.helpers.disable_input_dtype_casting switches this off: x then reaches A in its own dtype (as LoRA)
        self.cast_input_dtype_enabled = True
        self.merged_adapters: list[str] = []
        # True while the base layer carries a bias that merging created (base had none)
        self._created_bias = False
        # set by LinChainModel before a merge: the base weight is another module's too (lm_head tied to the
        # input embedding), so a merge gives this layer a weight of its own and keeps the shared one here
        self._weight_shared = False
        self._shared_weight: Optional[nn.Parameter] = None
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
            # PEFT LoRA accepts this (the update's rank is then at most min(in, out)): the library does too,
            # with a warning; the commands refuse it (refuse_rank_above_layer), as a flag typo is likelier there
            message = (
                f"r={r} is larger than {where}allows: it maps {self.in_features} -> {self.out_features} features, "
                f"so its update has rank <= {min(self.in_features, self.out_features)}"
            )
            if _REFUSE_RANK_ABOVE_LAYER.get():
                raise ValueError(f"{message}. Lower r or exclude that layer (exclude_modules).")
            warnings.warn(
                f"{message}; the extra rank trains parameters that add nothing (as in PEFT LoRA).", stacklevel=2
            )
        if num_mixers < 0:
            raise ValueError(f"num_mixers must be >= 0, got num_mixers={num_mixers}.")
        if mixer_init not in MIXER_INITS:
            raise ValueError(f"mixer_init must be one of {list(MIXER_INITS)}, got mixer_init={mixer_init!r}.")
        self.r[adapter_name] = r
        self.alpha[adapter_name] = alpha
        self.use_rslora[adapter_name] = use_rslora
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

        mixers = [
            (cast(m.weight), None if m.bias is None else cast(m.bias)) for m in self.linchain_mixers[adapter_name]
        ]
        A = cast(self.linchain_A[adapter_name].weight)
        if not mixers:
            return A, None
        Ms, cs = chain_product(mixers)
        return Ms[-1] @ A, cs[-1]

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

    # ------------------------------------------------------------------ scale (PEFT LoRA's layer methods)
    def set_scale(self, adapter: str, scale: float) -> None:
        """s = ``scale`` times the configured alpha / r (alpha / sqrt(r) with rsLoRA); an absent adapter is ignored."""
        if adapter in self.scaling:
            self.scaling[adapter] = scale * adapter_scaling(
                self.alpha[adapter], self.r[adapter], self.use_rslora[adapter]
            )

    def scale_layer(self, scale: float) -> None:
        """Multiply the active adapters' s by ``scale``."""
        for name in self.active_adapters:
            if name in self.linchain_A:
                self.scaling[name] *= scale

    def unscale_layer(self, scale: Optional[float] = None) -> None:
        """Divide the active adapters' s by ``scale``; None: back to the configured alpha / r."""
        for name in self.active_adapters:
            if name in self.linchain_A:
                if scale is None:
                    self.set_scale(name, 1.0)
                else:
                    self.scaling[name] /= scale

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
            new_w = _add_rounded_once(weight, self.get_delta_weight(name))
            delta_b = self.get_delta_bias(name)
            new_b = None
            if delta_b is not None:
                old_b = base.bias.data if base.bias is not None else torch.zeros_like(delta_b, dtype=float_dtype(base))
                new_b = _add_rounded_once(old_b, delta_b)
            if safe_merge and (
                not torch.isfinite(new_w).all() or (new_b is not None and not torch.isfinite(new_b).all())
            ):
                # PEFT LoRA's wording first (its shared merge tests match on it), then ours
                raise ValueError(
                    f"NaNs detected in the merged weights. The adapter {name} seems to be broken "
                    f"(NaN or inf in adapter {name!r}'s merged weights; the base layer is left unchanged)."
                )
            if self._weight_shared and self._shared_weight is None and type(base.weight) is nn.Parameter:
                # merging into a weight another module shares (tied embeddings) would change that module too
                # (break-it check: a merged lm_head changed the input embedding; PEFT LoRA's merge does)
                self._shared_weight = base.weight
                base.weight = nn.Parameter(new_w, requires_grad=base.weight.requires_grad)
            else:
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
        if base.bias is not None and not self._created_bias:
            base.bias.data = self.unmerged_bias()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name not in self.linchain_A:
                continue
            if self._shared_weight is None:
                weight = dequantized_weight(base)
                store_weight_(base, _add_rounded_once(weight, self.get_delta_weight(name), alpha=-1))
        if self._shared_weight is not None:  # the shared weight itself, untouched by the merge: exact
            base.weight, self._shared_weight = self._shared_weight, None
        if self._created_bias:
            base.bias = None
            self._created_bias = False

    def unmerged_bias(self) -> Optional[torch.Tensor]:
        """The base layer's bias as it is with every merged adapter subtracted again (None: merging created it).

        What :meth:`unmerge` restores, and what a save while merged must write for the bias: PEFT saves
        base biases with the adapter (``bias="all"`` / ``"linchain_only"``), and the merged one would add
        the chain's constant a second time on reload.
        """
        bias = self.get_base_layer().bias
        if bias is None or self._created_bias:
            return None
        bias = bias.data
        for name in reversed(self.merged_adapters):
            delta_b = self.get_delta_bias(name) if name in self.linchain_A else None
            if delta_b is not None:
                bias = _add_rounded_once(bias, delta_b, alpha=-1)
        return bias

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """``y = base_layer(x) + sum over active adapters of s * B(M_k(...M_1(A(dropout(x)))...))``.

        ``x``: (..., in), any leading dims; ``A``: r x in; ``M_i``: r x r (+ bias (r,)); ``B``: out x r;
        ``s`` = scaling; returns (..., out) in the base layer's output dtype. The chain is folded
        onto A first (``(M_k ... M_1 A) x + c``, see :meth:`_fold`); the adapter computes in its own
        dtype (fp32 adapters on a bf16 base, as PEFT). ``adapter_names`` (a keyword PEFT's forward
        hook passes for mixed-adapter batches; see ``LinChainModel._enable_peft_forward_hooks``):
        one adapter name per row of ``x`` (dim 0), ``"__base__"`` for the base layer alone.
        """
        adapter_names = kwargs.pop("adapter_names", None)
        self._check_forward_args(x, adapter_names)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if adapter_names is not None:
            return self._mixed_batch_forward(x, *args, adapter_names=adapter_names, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        fused_parts = self._fused_adapter(x, args, kwargs)
        if fused_parts is not None:
            return self._fused_output(x, *fused_parts)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name in self.linchain_A:
                result = result + self._adapter_output(x, name).to(result.dtype)
        return result

    def _fused_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> Optional[tuple[str, _Parts]]:
        """The one active adapter and its modules when the fused path applies (see fused.py), else None.

        It applies to a plain frozen float base (:func:`fused.fusable_base`) with exactly one active
        adapter of this layer, outside autocast (autocast's per-op casts would have to be redone by
        hand), without extra forward arguments, and with the layer's own dropout module. (Checked on
        every call, as a hook or an adapter may come or go between calls; each module is looked up once.)
        """
        if not fused.enabled() or args or kwargs or not self.cast_input_dtype_enabled:
            return None  # (input casting off: the reference path leaves x's dtype as LoRA does)
        adapters = self.linchain_A
        names = [n for n in self.active_adapters if n in adapters]
        if len(names) != 1 or not x.dtype.is_floating_point or torch.is_autocast_enabled(x.device.type):
            return None
        if _transformed():
            return None
        if not fused.fusable_base(self.base_layer):
            return None
        name = names[0]
        parts = self._adapter_parts(name)
        if not isinstance(parts[0], (nn.Dropout, nn.Identity)):
            return None  # a dropout module of the user's: the reference path applies it as given
        if any(_hooked(m) for m in _modules_of(parts)):
            return None  # hooks on the adapter's modules: the reference path calls those modules
        return name, parts

    def _adapter_parts(self, name: str) -> _Parts:
        """Adapter ``name``'s modules: (dropout, A, mixers, B).

        Read from the ``_modules`` dicts, where ``nn.Module.__getattr__`` finds them too: this runs for
        every adapted layer on every forward, and each ``__getattr__`` costs ~0.5 us of host time.
        """
        modules = self._modules
        return (
            modules["linchain_dropout"]._modules[name],
            modules["linchain_A"]._modules[name],
            modules["linchain_mixers"]._modules[name],
            modules["linchain_B"]._modules[name],
        )

    def _adapter_hooked(self, name: str) -> bool:
        """Whether a forward hook (the module's own or a global one) would see adapter ``name``'s modules."""
        return fused.global_hooks() or any(_hooked(m) for m in _modules_of(self._adapter_parts(name)))

    def _fused_output(self, x: torch.Tensor, name: str, parts: _Parts) -> torch.Tensor:
        """``base_layer(x) + s * B(M_k(...M_1(A(dropout(x)))...))`` in one autograd Function (fused.py)."""
        dropout, A, mixers, B = parts
        p = _active_dropout_p(dropout)
        # drawn here, with or without autograd, so a checkpoint recompute draws the same elements
        drop = _draw_dropped(x, p) if p > 0 else None
        # the Function folds the chain itself (chain.py), recording one autograd node for the layer
        chain = [_weight_and_bias(m) for m in mixers]
        A_w, B_w = _weight_and_bias(A)[0], _weight_and_bias(B)[0]
        return fused.fused_forward(x, self.base_layer, A_w, chain, B_w, self.scaling[name], p, drop)

    def _adapter_output(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """``s * B(M_k(...M_1(A(dropout(x)))...))`` of adapter ``name``: (..., in) -> (..., out), in the adapter's dtype."""
        A = self.linchain_A[name]
        dropout = self.linchain_dropout[name]
        x = self._cast_input_dtype(x, A.weight.dtype)
        if self._adapter_hooked(name):
            # a hook on dropout, A, a mixer or B must run and see what it sees in PEFT LoRA: call the
            # modules in turn (the unfolded chain, scaled after B as LoRA scales after lora_B)
            h = A(dropout(x))
            for mixer in self.linchain_mixers[name]:
                h = mixer(h)
            return self.linchain_B[name](h) * self.scaling[name]
        # M_k(...M_1(A x)...) = (M_k ... M_1 A) x + c: fold the chain onto A first (see _fold)
        A_folded, c = self._fold(name)
        p = _active_dropout_p(dropout)
        if p > 0 and not _transformed():
            # = A_folded(dropout(x)), cheaper, and the same draw with or without autograd (checkpointing)
            h = dropout_linear(x, A_folded, p)
        else:
            h = F.linear(dropout(x), A_folded)
        if c is not None:
            h = h + c
        # scale the r-dim activations rather than the out-dim result: same value, fewer flops
        return self.linchain_B[name](h * self.scaling[name])

    def _check_forward_args(self, x: torch.Tensor, adapter_names: Optional[list[str]]) -> None:
        if adapter_names is None:
            return
        if len(adapter_names) != len(x):
            # PEFT LoRA's wording first (code written for LoRA matches on it), then ours
            raise ValueError(
                "Length of `adapter_names` should be the same as the number of inputs, but got "
                f"{len(adapter_names)} and {len(x)} respectively. adapter_names has {len(adapter_names)} names for a "
                f"batch of {len(x)} rows: give one adapter name (or '__base__') per row (generate's beam search "
                "repeats each name num_beams times itself)."
            )
        if self.merged:
            raise ValueError(
                "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first. "
                f"adapter_names cannot route rows while adapters are merged ({self.merged_adapters}): the merged "
                "weights apply to every row."
            )

    def _mixed_batch_forward(
        self, x: torch.Tensor, *args: Any, adapter_names: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """Row ``i`` of ``x`` through adapter ``adapter_names[i]`` alone ("__base__", or one this layer lacks: the base layer)."""
        result = self.base_layer(x, *args, **kwargs)
        for name in dict.fromkeys(adapter_names):  # distinct names, in order
            if name == "__base__" or name not in self.linchain_A:
                continue
            rows = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=x.device)
            result = result.index_add(0, rows, self._adapter_output(x[rows], name).to(result.dtype))
        return result

    def __repr__(self) -> str:
        return "linchain." + super().__repr__()
