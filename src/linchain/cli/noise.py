"""Known third-party noise, filtered from the commands' output (the library itself leaves global
warning and logging settings alone). Each entry says where it comes from."""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["quiet_known_noise"]

# transformers' load report writes colour codes without their escape character ("[1m"), tty or not
_CODES = re.compile(r"\x1b?\[(?:\d+;)*\d+m")


class _StripCodes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _CODES.sub("", record.msg)
        return True


def quiet_known_noise() -> None:
    # transformers 5 deprecates is_gradient_checkpointing; PEFT still calls it on every model
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    logging.getLogger("transformers.utils.loading_report").addFilter(_StripCodes())
