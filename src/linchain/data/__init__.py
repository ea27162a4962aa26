"""Data: the prompt template and loaders for the paper's data formats."""

from .prompts import PROMPT_NO_INPUT, PROMPT_WITH_INPUT, RESPONSE_MARKER, format_prompt

__all__ = ["PROMPT_NO_INPUT", "PROMPT_WITH_INPUT", "RESPONSE_MARKER", "format_prompt"]
