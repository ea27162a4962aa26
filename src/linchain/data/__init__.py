"""Data: the prompt template shared by training and evaluation, and loaders for the paper's formats."""

from .loaders import DataError, Example, load_examples
from .prompts import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, RESPONSE_MARKER, format_prompt

__all__ = [
    "PROMPT_NO_INPUT",
    "PROMPT_WITH_INPUT",
    "RESPONSE_MARKER",
    "DataError",
    "Example",
    "format_prompt",
    "load_examples",
]
