"""mc_accuracy, the before/after check of a training run, against a reference scored here one
(prompt, option) pair at a time without padding or cache."""

from __future__ import annotations

import pytest
import torch

from linchain.data import Example, format_prompt
from linchain.train.accuracy import mc_accuracy

from ..eval.helpers import byte_tokenizer, tiny_lm

OPTIONS = ["mother", "father", "grandson", "aunt"]  # different lengths: padded candidates


def _reference_best(model, tok, prompt: str, options) -> str:
    """The option with the highest summed log-probability, in float64, one unpadded pass each."""
    p = tok(prompt)["input_ids"]
    scores = []
    for option in options:
        c = tok(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([p + c])).logits[0].double().log_softmax(-1)
        scores.append(sum(logp[len(p) + k - 1, t].item() for k, t in enumerate(c)))
    return options[max(range(len(options)), key=scores.__getitem__)]


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_accuracy_matches_the_unbatched_reference(batch_size):
    tok = byte_tokenizer()
    model = tiny_lm(len(tok), seed=2)
    questions = [f"Who is {'A' * (i + 1)} to B{i}?" for i in range(8)]  # prompts of different lengths
    best = [_reference_best(model, tok, format_prompt(q), OPTIONS) for q in questions]
    # the gold is the reference's choice on even rows and another option on odd ones: exactly 4 of 8 right
    answers = [b if i % 2 == 0 else next(o for o in OPTIONS if o != b) for i, b in enumerate(best)]
    rows = [Example(q, "", a, a, "test", i) for i, (q, a) in enumerate(zip(questions, answers))]
    model.train()
    assert mc_accuracy(model, tok, rows, OPTIONS, batch_size=batch_size) == pytest.approx(0.5)
    assert model.training  # restored


def test_a_row_without_options_names_its_source_and_row():
    tok = byte_tokenizer()
    rows = [Example("q", "", "a", "a", "data.json", 3)]
    with pytest.raises(ValueError, match="data.json row 3: no options"):
        mc_accuracy(tiny_lm(len(tok)), tok, rows)
