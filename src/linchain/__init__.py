"""linchain: LinChain (Linear Chain Transformation, arXiv 2411.00039) adapters as a PEFT method.

Importing this package registers the method with PEFT under ``peft_type="LINCHAIN"``, so
``peft.get_peft_model``, ``save_pretrained``, ``PeftModel.from_pretrained`` and
``merge_and_unload`` work with :class:`LinChainConfig`.
"""

import logging as _logging

from .threads import wait_passively_in_commands as _wait_passively_in_commands

# a `linchain` command's OpenMP threads sleep while they wait instead of spinning on cores other
# jobs need (linchain.threads): set before torch is imported below, as OpenMP reads it once
_wait_passively_in_commands()

# bitsandbytes (the optional quant extra), imported by PEFT, warns at import on CPUs with
# AVX512-BF16 that the optional `kernels` package is missing: noise on every command. Only that
# one logger is quietened (to ERROR), before PEFT is imported.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

from .config import LINCHAIN, LinChainConfig  # noqa: E402
from .export import export_lora  # noqa: E402
from .layer import LinChainLayer  # noqa: E402
from .model import LinChainModel  # noqa: E402
from .registry import register  # noqa: E402

__version__ = "0.1.0"

__all__ = ["LINCHAIN", "LinChainConfig", "LinChainLayer", "LinChainModel", "__version__", "export_lora", "register"]

register()
