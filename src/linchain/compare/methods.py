"""Method names of ``linchain compare`` -> the :class:`ModelArguments` of one ``linchain train`` run.

A name is a base method with optional suffixes, in this order::

    lora | moslora | linchain | linchain-kK | lora-2r | peft-lora | full      base
    dora | pissa | rslora      PEFT's LoRA variants (use_dora; PiSSA init; alpha/sqrt(r)), no suffixes
    -bias          mixers with biases (the reference code's affine chain)
    -orthogonal    orthogonal mixer initialisation (default: kaiming, as the reference)
    -identity      identity mixer initialisation
    -frozen        mixers frozen at their initial values: only A and B train (the control
                   asked for when MoSLoRA was proposed to PEFT)

``linchain`` takes k from the shared ``--num_mixers``; ``lora-2r`` is LoRA at twice the shared
rank with alpha doubled too, so ``alpha / r`` (the update's scale) is unchanged: the "fewer
parameters for the same quality" comparison of LinChain at r against LoRA at 2r.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Optional

from ..train.args import METHODS, ModelArguments

__all__ = ["MethodSpec", "parse_method", "parse_methods"]

_BASES = ("lora-2r", "lora", "moslora", "peft-lora", "dora", "pissa", "rslora", "full", "linchain")
_SUFFIX_ORDER = ("bias", "orthogonal", "identity", "frozen")  # the order a name lists its suffixes in
_SUFFIXES = set(_SUFFIX_ORDER)


@dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison: a ``linchain train --method``, the adapter settings its name sets
    (``linchain-k2-bias`` sets num_mixers 2 and mixer_bias), and its rank multiplier."""

    name: str
    method: str  #: linchain train --method
    #: (AdapterArguments field, value) pairs the name sets; every other setting is the study's shared one
    settings: tuple[tuple[str, Any], ...] = ()
    rank_mult: int = 1  #: 2 = LoRA at 2r (alpha doubled too)

    def model_arguments(self, shared: ModelArguments) -> ModelArguments:
        """The shared model settings with this method's (validated by ModelArguments). The frozen-mixer
        control is a method of its own, so a shared --freeze_mixers does not reach the others."""
        changes = {
            "method": self.method,
            "freeze_mixers": False,
            "r": shared.r * self.rank_mult,
            "alpha": shared.alpha * self.rank_mult,
            **dict(self.settings),
        }
        uses_chain, fixed = METHODS[self.method]
        if not uses_chain or fixed is not None:
            # the method fixes k (lora, moslora) or has no chain: the shared --num_mixers is not its to take
            changes.setdefault("num_mixers", None)
        if not uses_chain or fixed == 0:
            # and the shared mixer settings do not apply to a method without mixers
            changes.update(mixer_bias=False, mixer_init="kaiming")
        return dataclasses.replace(shared, **changes)


def parse_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` called ``name``; a ``ValueError`` naming what is valid otherwise."""
    base = next((b for b in _BASES if name == b or name.startswith(b + "-")), None)
    k: Optional[int] = None
    rest = name[len(base) :] if base else ""
    if base == "linchain":
        m = re.match(r"-k(\d+)", rest)
        if m:
            k, rest = int(m.group(1)), rest[m.end() :]
    suffixes = [s for s in rest.split("-") if s]
    bad = [s for s in suffixes if s not in _SUFFIXES]
    if base is None or bad or len(set(suffixes)) != len(suffixes):
        raise ValueError(
            f"--methods: {name!r} is not a method; use lora, moslora, linchain, linchain-kK, lora-2r, "
            f"peft-lora, dora, pissa, rslora or full, (the chains) optionally with -bias, -orthogonal, "
            f"-identity, -frozen"
        )
    method = "lora" if base == "lora-2r" else base
    has_mixers = method == "moslora" or (method == "linchain" and k != 0)
    if suffixes and not has_mixers:
        raise ValueError(
            f"--methods: {name!r}: {base} has no mixers, so -{suffixes[0]} does not apply "
            f"(suffixes go with moslora and linchain-kK, K >= 1)"
        )
    if "orthogonal" in suffixes and "identity" in suffixes:
        raise ValueError(f"--methods: {name!r}: choose one of -orthogonal and -identity")
    # one spelling per method: a study finds its runs by name, so linchain-k03 or linchain-k3-frozen-bias
    # would train linchain-k3 or linchain-k3-bias-frozen again, in a folder and a report row of their own
    canonical = base + (f"-k{k}" if k is not None else "") + "".join(f"-{s}" for s in _SUFFIX_ORDER if s in suffixes)
    if name != canonical:
        raise ValueError(f"--methods: {name!r} is written {canonical!r} (one spelling per method)")
    settings: dict[str, Any] = {}
    if k is not None:
        settings["num_mixers"] = k
    if "bias" in suffixes:
        settings["mixer_bias"] = True
    for init in ("orthogonal", "identity"):
        if init in suffixes:
            settings["mixer_init"] = init
    if "frozen" in suffixes:
        settings["freeze_mixers"] = True
    return MethodSpec(
        name=name, method=method, settings=tuple(settings.items()), rank_mult=2 if base == "lora-2r" else 1
    )


def parse_methods(names: str) -> list[MethodSpec]:
    """A comma-separated list of method names, in order, without repeats."""
    specs = [parse_method(n.strip()) for n in names.split(",") if n.strip()]
    if not specs:
        raise ValueError("--methods: give at least one method, e.g. lora,moslora,linchain-k3")
    seen = [s.name for s in specs]
    if len(set(seen)) != len(seen):
        raise ValueError(f"--methods: {names!r} repeats a method")
    return specs
