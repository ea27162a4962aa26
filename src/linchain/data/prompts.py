"""The Alpaca prompt of LLM-Adapters: one constant shared by training and evaluation."""

from __future__ import annotations

__all__ = ["PROMPT_NO_INPUT", "PROMPT_WITH_INPUT", "RESPONSE_MARKER", "format_prompt"]

RESPONSE_MARKER = "### Response:"

PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

# The LLM-Adapters source strings as written there: 16 spaces before each "###" line and before
# the instruction/input text (its training and evaluation copies differ by trailing spaces; this
# follows the evaluation copy).
_PAD = " " * 16
_FAITHFUL_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
    f"\n\n{_PAD}### Instruction:\n{_PAD}{{instruction}}\n\n{_PAD}### Response:\n{_PAD}"
)
_FAITHFUL_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. "
    f"\n\n{_PAD}### Instruction:\n{_PAD}{{instruction}}\n\n{_PAD}### Input:\n{_PAD}{{input}}\n\n"
    f"{_PAD}### Response:\n{_PAD}"
)


def format_prompt(instruction: str, input: str = "", faithful: bool = False) -> str:
    """The prompt up to and including the response header; append the response to train on it.

    ``faithful=True`` reproduces LLM-Adapters' indented whitespace exactly.
    """
    if input:
        template = _FAITHFUL_WITH_INPUT if faithful else PROMPT_WITH_INPUT
        return template.format(instruction=instruction, input=input)
    template = _FAITHFUL_NO_INPUT if faithful else PROMPT_NO_INPUT
    return template.format(instruction=instruction)
