"""linchain: LinChain (Linear Chain Transformation, arXiv 2411.00039) adapters as a PEFT method.

Importing this package registers the method with PEFT under ``peft_type="LINCHAIN"``, so
``peft.get_peft_model``, ``save_pretrained``, ``PeftModel.from_pretrained`` and
``merge_and_unload`` work with :class:`LinChainConfig`.
"""

import logging as _logging
import sys as _sys

from .threads import is_command_process as _is_command_process
from .threads import wait_passively_in_commands as _wait_passively_in_commands

__version__ = "0.1.0"

__all__ = ["LINCHAIN", "LinChainConfig", "LinChainLayer", "LinChainModel", "__version__", "export_lora", "register"]

# `linchain` / `linchain --help` only print the list of commands: that process needs neither torch nor
# PEFT (importing them took ~7 s), so the method is not loaded there
_USAGE_ONLY = _is_command_process() and _sys.argv[1:] in ([], ["-h"], ["--help"])

if _is_command_process():
    # Ctrl-C while a command starts (importing torch, PEFT and transformers takes seconds) ends it with
    # one line, not an import traceback; run_command (cli/args.py) puts Python's own handler back,
    # and its KeyboardInterrupt handling takes over
    import signal as _signal

    def _interrupted_while_starting(signum, frame):
        """SIGINT before the command runs (cli/args.py run_command puts Python's handler back)."""
        print("linchain: interrupted while starting; nothing was written", file=_sys.stderr)
        raise SystemExit(130)

    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:  # not when SIGINT is ignored
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)

if not _USAGE_ONLY:
    # a `linchain` command's OpenMP threads sleep while they wait instead of spinning on cores other
    # jobs need (linchain.threads): set before torch is imported below, as OpenMP reads it once
    _wait_passively_in_commands()

    # bitsandbytes (the optional quant extra), imported by PEFT, warns at import on CPUs with
    # AVX512-BF16 that the optional `kernels` package is missing: noise on every command. Only that
    # one logger is quietened (to ERROR), before PEFT is imported.
    _logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

    from .export import export_lora
    from .tuner.config import LINCHAIN, LinChainConfig
    from .tuner.layer import LinChainLayer
    from .tuner.model import LinChainModel
    from .tuner.peft_compat import register

    register()
