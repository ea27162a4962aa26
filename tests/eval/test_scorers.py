"""The two scorers on tiny models built here: each against an independent reference, and both
agreeing on a task whose answer is forced by training."""

from __future__ import annotations

import pytest
import torch

from linchain.data import Example
from linchain.data.prompts import format_prompt
from linchain.eval.generate import generate_predict, generate_texts
from linchain.eval.loglik import (
    continuation_logprobs,
    loglik_accuracy,
    loglik_predict,
    shared_prompt_logprobs,
    shared_prompts_logprobs,
)
from linchain.eval.tasks import get_task

from .helpers import byte_tokenizer, tiny_lm


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _reference_logprob(model, tok, prompt: str, cont: str) -> float:
    """One pair, no batching and no padding, summed token by token in float64."""
    p = tok(prompt)["input_ids"]
    c = tok(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total = 0.0
    for k, token in enumerate(c):
        position = len(p) + k - 1
        total += (logits[position].log_softmax(-1)[token]).item()
    return total


def test_loglik_matches_an_unbatched_reference(tok):
    model = tiny_lm(len(tok), seed=3)
    prompts = ["short", "a much longer prompt, padded less", "mid length", "x"]
    conts = [" yes", " no way", "maybe", " the correct answer is true"]
    got = continuation_logprobs(model, tok, prompts, conts, batch_size=3)
    for (score, n), prompt, cont in zip(got, prompts, conts):
        assert n == len(cont.encode())  # one token per byte
        assert score == pytest.approx(_reference_logprob(model, tok, prompt, cont), abs=1e-4)


def _tiny_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(4)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=256)).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prompt_cache_matches_the_unbatched_reference(tok, arch):
    model = tiny_lm(len(tok), seed=3) if arch == "llama" else _tiny_gpt2(len(tok))
    prompt = "Question: which one?\n\n### Response:\n"
    conts = ["the correct answer is answer1", "a", "no, it is the second one"]  # different lengths: padding
    got = shared_prompt_logprobs(model, tok, prompt, conts)
    for (score, n), cont in zip(got, conts):
        assert n == len(cont.encode())
        assert score == pytest.approx(_reference_logprob(model, tok, prompt, cont), abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_rows_batched_through_one_cache_match_the_unbatched_reference(tok, arch, batch_size):
    """Prompts of different lengths (left padding in the prompt pass), rows with 1-4 candidates of
    different lengths, and batch sizes that split a row's candidates over chunks (copies of the
    cache), put several rows in one chunk, or everything in one pass."""
    model = tiny_lm(len(tok), seed=11) if arch == "llama" else _tiny_gpt2(len(tok))
    prompts = [
        "Q: one?\n",
        "A much longer question, so that the shorter ones are padded on the left?\n",
        "Mid-size?",
        "x",
    ]
    conts = [["yes", "no", "maybe not", "z"], [" a"], ["first answer", "second"], ["b", "cc", "ddd"]]
    got = shared_prompts_logprobs(model, tok, prompts, conts, batch_size=batch_size)
    assert [len(g) for g in got] == [len(c) for c in conts]
    for prompt, row_conts, row in zip(prompts, conts, got):
        for cont, (score, n) in zip(row_conts, row):
            assert n == len(cont.encode())
            assert score == pytest.approx(_reference_logprob(model, tok, prompt, cont), abs=1e-4)


def test_shared_and_pairwise_loglik_agree(tok):
    model = tiny_lm(len(tok), seed=7)
    rows = _rows(5)
    shared = loglik_predict(model, tok, rows, get_task("boolq"), batch_size=3, share_prompt=True)
    pairwise = loglik_predict(model, tok, rows, get_task("boolq"), batch_size=3, share_prompt=False)
    for a, b in zip(shared, pairwise):
        assert a.scores == pytest.approx(b.scores, abs=1e-4) and a.pred == b.pred


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_left_padded_generation_matches_one_by_one(tok, num_beams):
    model = tiny_lm(len(tok), seed=5)
    prompts = ["Instruction: add", "A longer instruction with more bytes in it", "mid-size one"]
    batched = generate_texts(model, tok, prompts, max_new_tokens=6, num_beams=num_beams, batch_size=3)
    single = [generate_texts(model, tok, [p], max_new_tokens=6, num_beams=num_beams, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert all(len(t) > 0 for t in batched)


def _rows(n: int):
    # gold alternates, so a model that always says "true" scores exactly 50%
    return [
        Example(
            f"Question {i}: is the sky {['blue', 'green'][i % 2]}?\n\nAnswer format: true/false",
            "",
            "",
            answer=["true", "false"][i % 2],
            source="synthetic",
            row=i,
        )
        for i in range(n)
    ]


def _force_true(tok, seed: int = 0):
    """Train a tiny LM (a few seconds) to answer every boolq-style prompt "the correct answer is true"."""
    model = tiny_lm(len(tok), seed=seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rows = _rows(2)  # trained on two prompts, evaluated on six
    target = tok("the correct answer is true", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    batch = []
    for ex in rows:
        p = tok(format_prompt(ex.instruction))["input_ids"]
        batch.append((p + target, [-100] * len(p) + target))
    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in batch])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
    mask = (torch.arange(width)[None] < torch.tensor([len(x) for x, _ in batch])[:, None]).long()
    for _ in range(400):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.002:
            break
    return model.eval()


def test_both_scorers_agree_on_a_forced_answer(tok):
    torch.manual_seed(0)
    model = _force_true(tok)
    task = get_task("boolq")
    rows = _rows(6)
    gen = generate_predict(model, tok, rows, task, num_beams=4, batch_size=4)
    greedy = generate_predict(model, tok, rows, task, num_beams=1, batch_size=4)
    ll = loglik_predict(model, tok, rows, task, batch_size=4)
    assert [p.pred for p in gen] == ["true"] * 6, [p.output for p in gen]
    assert [p.pred for p in greedy] == ["true"] * 6
    assert [p.pred for p in ll] == ["true"] * 6
    assert [p.candidates for p in ll] == [["true", "false"]] * 6  # read from "Answer format:"
    assert all(p.scores[0] > p.scores[1] for p in ll)
    assert sum(p.correct for p in gen) == sum(p.correct for p in ll) == 3
    assert loglik_accuracy(model, tok, rows, "boolq") == 0.5


def test_loglik_restores_training_mode_and_rejects_math(tok):
    model = tiny_lm(len(tok), seed=1).train()
    loglik_predict(model, tok, _rows(2), get_task("boolq"), batch_size=2)
    assert model.training
    with pytest.raises(ValueError, match="gsm8k.*--scorer generate"):
        loglik_predict(model, tok, _rows(2), get_task("gsm8k"))
