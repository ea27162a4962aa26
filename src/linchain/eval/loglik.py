"""The log-likelihood scorer: rank each row's candidate answers by log p(answer | prompt).

Much cheaper than generation on a CPU (one forward pass per candidate, no decoding loop), and
reported on exactly the same rows as the generate scorer. Only for multiple-choice tasks.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..progress import Progress
from ._torch import NonFiniteLogitsError, eval_mode, model_device
from .examples import build_prompt, candidate_answers, continuation, gold_answer
from .extract import is_correct
from .tasks import TaskSpec

__all__ = [
    "LoglikPrediction",
    "continuation_logprobs",
    "loglik_accuracy",
    "loglik_predict",
    "shared_prompt_logprobs",
    "shared_prompts_logprobs",
]

NORMALIZE = ("sum", "mean")


@dataclass
class LoglikPrediction:
    """One row scored by log-likelihood.

    ``scores[i]`` is the (summed or per-token mean) log-probability of ``candidates[i]``'s
    continuation text; ``pred`` the best candidate.
    """

    prompt: str
    candidates: List[str]
    continuations: List[str]
    scores: List[float]
    pred: str
    gold: str
    correct: bool


def _max_length(model: torch.nn.Module) -> Optional[int]:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _last_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions, [batch, keep, vocab], for a left-padded batch."""
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    try:
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids, logits_to_keep=keep)
    except TypeError:  # a model without logits_to_keep: compute all, keep the tail
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids)
    return out.logits[:, -keep:]


def _cache_argument(model: torch.nn.Module) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns, and goes
    in 5.40); use whichever the underlying model's forward takes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


@torch.no_grad()
def shared_prompt_logprobs(
    model: torch.nn.Module, tokenizer: Any, prompt: str, continuations: Sequence[str]
) -> List[Tuple[float, int]]:
    """What :func:`continuation_logprobs` computes for one prompt and all its candidates, with
    the prompt run once (:func:`shared_prompts_logprobs` for one row)."""
    return shared_prompts_logprobs(model, tokenizer, [prompt], [continuations], batch_size=max(len(continuations), 1))[
        0
    ]


@torch.no_grad()
def shared_prompts_logprobs(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    batch_size: int = 8,
    progress: Union[bool, str] = False,
) -> List[List[Tuple[float, int]]]:
    """``(sum of log p(c | prompt), tokens in c)`` for every candidate ``c`` of every row, each
    prompt run once: what :func:`continuation_logprobs` gives for the (prompt, candidate) pairs.

    Rows are sorted by prompt length and grouped so that a group's pairs fill ``batch_size``
    (a row with more candidates is a group alone). A group's prompts run as one LEFT-padded batch
    ([R, P], explicit position ids) that fills the key/value cache and gives each prompt's last
    logit, which predicts its candidates' first tokens. The candidates then run in chunks of at
    most ``batch_size`` RIGHT-padded sequences ([n, W]) against the cache rows of their prompts
    (``reorder_cache`` picks them, repeats allowed); the attention mask is the prompt's mask
    followed by the candidate's. A row with n candidates costs a share of one prompt pass instead
    of n, and a GPU sees batches of ``batch_size`` pairs instead of one row's candidates. A prompt
    is cut from the left so that it fits with its longest candidate. ``progress``: a bar over the
    rows (a string labels it).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} candidate lists")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = _max_length(model)
    rows = []  # (prompt ids, [candidate ids])
    for prompt, conts in zip(prompts, continuations):
        cont_ids = [list(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in conts]
        if not cont_ids or any(not ids for ids in cont_ids):
            raise ValueError(f"a row needs candidates with tokens; got {list(conts)!r}")
        prompt_ids = list(tokenizer(prompt)["input_ids"])
        longest = max(len(ids) for ids in cont_ids)
        if limit is not None and len(prompt_ids) + longest > limit:
            prompt_ids = prompt_ids[len(prompt_ids) + longest - limit :]
        if not prompt_ids:
            raise ValueError("the continuations need at least one prompt token before them")
        rows.append((prompt_ids, cont_ids))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    groups, current, pairs = [], [], 0
    for i in order:
        n = len(rows[i][1])
        if current and pairs + n > batch_size:
            groups.append(current)
            current, pairs = [], 0
        current.append(i)
        pairs += n
    if current:
        groups.append(current)
    results: List[List[Tuple[float, int]]] = [[] for _ in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    label = isinstance(progress, str)
    with Progress(
        total=len(rows), desc=progress if label else "loglik", unit="row", leave=not label, disable=not progress
    ) as bar:
        for group in groups:
            scored = _score_group(model, [rows[i] for i in group], batch_size, pad_id)
            for i, row_scores in zip(group, scored):
                results[i] = row_scores
            bar.update(len(group))
    return results


def _score_group(
    model: torch.nn.Module, rows: List[Tuple[List[int], List[List[int]]]], batch_size: int, pad_id: int
) -> List[List[Tuple[float, int]]]:
    """One prompt pass for ``rows``, then their candidates in chunks of ``batch_size`` (see
    :func:`shared_prompts_logprobs`)."""
    device = model_device(model)
    width = max(len(p) for p, _ in rows)
    prompt_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (p, _) in enumerate(rows):
        prompt_ids[r, width - len(p) :] = torch.tensor(p)
        prompt_mask[r, width - len(p) :] = 1
    lengths = prompt_mask.sum(-1)
    first = model(
        input_ids=prompt_ids.to(device),
        attention_mask=prompt_mask.to(device),
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0).to(device),
        use_cache=True,
        logits_to_keep=1,
    )
    cache_arg = _cache_argument(model)
    cache = getattr(first, cache_arg)
    last = first.logits[:, -1]  # [R, V]: the prompt's last position predicts the first candidate token
    pairs = [(r, ids) for r, (_, conts) in enumerate(rows) for ids in conts]
    out: List[List[Tuple[float, int]]] = [[] for _ in rows]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        # the forward appends the candidates to the cache it is given: later chunks need the prompts' own
        chunk_cache = cache if start + batch_size >= len(pairs) else copy.deepcopy(cache)
        which = torch.tensor([r for r, _ in chunk])
        which_on_device = which.to(device)
        chunk_cache.reorder_cache(which_on_device)
        n, cwidth = len(chunk), max(len(ids) for _, ids in chunk)
        ids = torch.full((n, cwidth), pad_id, dtype=torch.long)
        mask = torch.cat([prompt_mask[which], torch.zeros((n, cwidth), dtype=torch.long)], dim=1)
        for j, (_, c) in enumerate(chunk):
            ids[j, : len(c)] = torch.tensor(c)
            mask[j, width : width + len(c)] = 1
        position_ids = lengths[which][:, None] + torch.arange(cwidth)[None]
        ids = ids.to(device)
        rest = model(
            input_ids=ids,
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            use_cache=False,
            **{cache_arg: chunk_cache},
        ).logits  # [n, W, V]
        # position j of a candidate predicts its token j + 1
        step_logits = torch.cat([last[which_on_device][:, None], rest[:, :-1]], dim=1).float()
        logp = step_logits.gather(2, ids[:, :, None])[:, :, 0] - torch.logsumexp(step_logits, dim=-1)  # [n, W]
        for j, (r, c) in enumerate(chunk):
            out[r].append((logp[j, : len(c)].sum().item(), len(c)))
    return out


@torch.no_grad()
def continuation_logprobs(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 8,
    progress: bool = False,
) -> List[Tuple[float, int]]:
    """``(sum of log p(continuation tokens | prompt), number of continuation tokens)`` per pair.

    The prompt is tokenized as the model sees it at generation time (special tokens included)
    and the continuation without special tokens; the two id lists are concatenated, so the
    boundary never depends on how the tokenizer would merge across it. Batches are sorted by
    length and LEFT-padded, so every continuation ends in the last column and the LM head runs
    on the last ``max continuation + 1`` positions only: the full [batch, length, vocab] logits
    (0.5 GB for 8 x 300 tokens x 49k vocab) would dominate the cost. Position ids are passed
    explicitly so that the padding does not shift them. A prompt too long for the model is cut
    from the left.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompt_cache: Dict[str, List[int]] = {}
    limit = _max_length(model)
    items = []  # (ids, number of continuation tokens)
    for prompt, cont in zip(prompts, continuations):
        if prompt not in prompt_cache:
            prompt_cache[prompt] = list(tokenizer(prompt)["input_ids"])
        cont_ids = list(tokenizer(cont, add_special_tokens=False)["input_ids"])
        if not cont_ids:
            raise ValueError(f"continuation {cont!r} has no tokens")
        ids = prompt_cache[prompt] + cont_ids
        if limit is not None and len(ids) > limit:
            ids = ids[len(ids) - limit :]
        if len(ids) < 2 or len(cont_ids) >= len(ids):
            raise ValueError(f"continuation {cont!r} needs at least one prompt token before it")
        items.append((ids, len(cont_ids)))

    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    results: List[Tuple[float, int]] = [(0.0, 0)] * len(items)
    with Progress(total=len(items), desc="loglik", unit="option", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(items[i][0]) for i in batch)
            keep = max(items[i][1] for i in batch) + 1
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids = items[i][0]
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            logits = _last_logits(model, input_ids.to(device), attention.to(device), keep)  # [B, keep, V]
            for row, i in enumerate(batch):
                ids, n_cont = items[i]
                # token t is predicted by the logits at t - 1; the last logit predicts past the end
                step_logits = logits[row, keep - n_cont - 1 : keep - 1].float()  # [n_cont, V]
                targets = torch.tensor(ids[len(ids) - n_cont :], device=step_logits.device)
                results[i] = (torch.log_softmax(step_logits, dim=-1).gather(1, targets[:, None]).sum().item(), n_cont)
            bar.update(len(batch))
    return results


def loglik_predict(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    task: TaskSpec,
    batch_size: int = 8,
    normalize: str = "sum",
    faithful_prompt: bool = False,
    append_choices: bool = True,
    share_prompt: bool = True,
    progress: bool = False,
) -> List[LoglikPrediction]:
    """Score every candidate of every row and pick the best (the first one on a tie).

    ``normalize="mean"`` divides by the number of continuation tokens (useful when options have
    very different lengths, e.g. BIG-bench); LLM-Adapters labels all have the same length.
    ``batch_size`` counts (prompt, candidate) pairs per forward pass. ``share_prompt`` runs each
    prompt once for all its candidates (:func:`shared_prompts_logprobs`; needs a model with a
    key/value cache); ``False`` runs every pair whole (:func:`continuation_logprobs`).
    """
    if not task.multiple_choice:
        raise ValueError(
            f"the loglik scorer needs a multiple-choice task; {task.name!r} is a {task.kind} "
            "task: use --scorer generate"
        )
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    prompts, conts, spans, per_row = [], [], [], []
    for ex in examples:
        prompt = build_prompt(ex, task, faithful_prompt, append_choices)
        cands = candidate_answers(task, ex)
        texts = [continuation(task, c) for c in cands]
        spans.append((len(prompts), len(prompts) + len(cands)))
        prompts += [prompt] * len(cands)
        conts += texts
        per_row.append((prompt, cands, texts))
    with eval_mode(model):
        if share_prompt:
            per_prompt = shared_prompts_logprobs(
                model,
                tokenizer,
                [p for p, _, _ in per_row],
                [t for _, _, t in per_row],
                batch_size=batch_size,
                progress=progress,
            )
            scored = [pair for row in per_prompt for pair in row]
        else:
            scored = continuation_logprobs(model, tokenizer, prompts, conts, batch_size=batch_size, progress=progress)
    out = []
    for i, (ex, (lo, hi), (prompt, cands, texts)) in enumerate(zip(examples, spans, per_row)):
        scores = [s / n if normalize == "mean" else s for s, n in scored[lo:hi]]
        if not all(math.isfinite(x) for x in scores):
            # NaN compares false with everything: max() would pick a candidate at random, scored as a prediction
            raise NonFiniteLogitsError(i, "log-probabilities")
        best = max(range(len(scores)), key=lambda j: (scores[j], -j))
        gold = gold_answer(ex)
        out.append(
            LoglikPrediction(prompt, cands, texts, scores, cands[best], gold, _correct(task, ex, cands[best], gold))
        )
    return out


def _correct(task: TaskSpec, example: Any, pred: str, gold: str) -> bool:
    scores = getattr(example, "target_scores", None)
    if scores:
        # BIG-bench may mark several options as right
        return scores.get(pred, 0) >= max(scores.values())
    return is_correct(task, pred, gold)


def loglik_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Any],
    task: TaskSpec | str,
    batch_size: int = 8,
    normalize: str = "sum",
) -> float:
    """Accuracy in [0, 1] of the log-likelihood scorer; ``task`` is a :class:`TaskSpec` or a name.

    The function for a quick before/after check in a training run::

        acc = loglik_accuracy(model, tokenizer, examples[:100], "boolq", batch_size=8)
    """
    if isinstance(task, str):
        from .tasks import get_task

        task = get_task(task)
    preds = loglik_predict(model, tokenizer, examples, task, batch_size=batch_size, normalize=normalize)
    return sum(p.correct for p in preds) / max(len(preds), 1)
