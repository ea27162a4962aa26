"""The one argument layer of every ``linchain`` command.

Each command declares its options as dataclasses (help in field metadata, validation in
``__post_init__``) and calls :func:`parse`, which gives every command the same behaviour:

- ``--config FILE.yaml``: a mapping of option names to values; flags on the command line win;
- list options may be repeated (``--data a --data b`` == ``--data a b``);
- positional fields (``export-lora SRC DST``) are ordinary fields, also accepted as ``--src``;
- no prefix matching (``--max_step`` is an error, not ``--max_steps``), and a typo'd flag is
  answered with the closest valid one, in one line;
- ``--task_type causal_lm|seq_cls`` picks the causal-LM or the sequence-classification path.

User errors (bad flags or values, missing files, bad data) surface as one line
``linchain CMD: error: ...`` and exit status 2 through :func:`run_command`;
``LINCHAIN_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import errno
import os
import re
import signal
import sys
import threading
import types as types_module
import typing
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..messages import ECHO_LIMIT, bounded

__all__ = [
    "TASK_TYPES",
    "YES_NO_OPTIONS",
    "bounded",
    "flag_names",
    "UsageError",
    "merge_repeated",
    "parse",
    "pop_task_type",
    "run_command",
]

#: --task_type values: the causal-LM path (default) and the encoder sequence-classification path
TASK_TYPES = ("causal_lm", "seq_cls")
_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}
_YES_WORDS, _NO_WORDS = {"true", "yes", "1", "t", "y", "on"}, {"false", "no", "0", "f", "n", "off"}
#: options that take auto/yes/no: a boolean word (true/false, 1/0, y/n, on/off, YAML's true/false) means yes/no
YES_NO_OPTIONS = {"eval_accuracy"}
#: a --config file is a page of options; anything much larger is not one (and is not read into memory)
CONFIG_MAX_BYTES = 1 << 20


class UsageError(ValueError):
    """A bad command line: the message names the flag or file and what would be valid."""


#: options whose one value names several things (comma-separated modules or columns) or one data source:
#: given twice, a user may mean "both" where argparse keeps the last, so a repeat is refused. Other options
#: keep argparse's "last wins", which scripts use to override a shared set of flags (benchmarks/gpu_compare.sh
#: repeats compare's --seeds); list options such as train's --data are merged (:func:`merge_repeated`).
ONE_VALUE_LISTS = ("target_modules", "text_columns", "data", "eval_data")
#: options whose one value is a comma-separated list of names: in a --config file a YAML list of the
#: names is the same value (PEFT's configs write target_modules as a list)
COMMA_LISTS = ("target_modules", "text_columns")


def refuse_repeated(argv: Sequence[str], parser) -> None:
    """``--target_modules q_proj --target_modules v_proj`` would adapt v_proj alone: refused, naming the flag."""
    dest_of = {
        s: a.dest
        for a in parser._actions
        if a.dest in ONE_VALUE_LISTS and a.nargs not in ("+", "*")
        for s in a.option_strings
        if s.startswith("--")
    }
    seen: set[str] = set()
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag not in dest_of:
            continue
        if dest_of[flag] in seen:
            raise UsageError(
                f"{bounded(flag)} is given twice; it takes one value: give several as one comma-separated value"
                if dest_of[flag] not in ("data", "eval_data")
                else f"{bounded(flag)} is given twice; this command reads one {flag}: give it once"
            )
        seen.add(dest_of[flag])


def merge_repeated(argv: list[str], flags: Sequence[str]) -> list[str]:
    """``--data a --task x --data b --task y`` -> ``--data a b --task x y`` (argparse's
    ``nargs='+'`` would keep only the last occurrence). ``--flag=value`` counts as one value."""
    values: dict[str, list[str]] = {f: [] for f in flags}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in values:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values[arg].append(argv[i])
                i += 1
            continue
        if eq and name in values:
            values[name].append(value)
        else:
            rest.append(arg)
        i += 1
    for flag, vals in values.items():
        if vals:
            rest += [flag, *vals]
    return rest


def _pop_flag(argv: list[str], flag: str, needs: str) -> tuple[Optional[str], list[str]]:
    """``(value, argv without the flag)`` for ``flag value`` or ``flag=value``; ``(None, argv)`` if absent."""
    for i, arg in enumerate(argv):
        if arg == flag or arg.startswith(flag + "="):
            if "=" in arg:
                return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
            if i + 1 < len(argv):
                return argv[i + 1], argv[:i] + argv[i + 2 :]
            raise UsageError(f"{flag} needs {needs}")
    return None, argv


def pop_task_type(argv: Sequence[str], prog: str) -> tuple[str, list[str]]:
    """``(task_type, argv without it)`` from ``--task_type X`` or ``--task_type=X`` (default causal_lm)."""
    value, rest = _pop_flag(list(argv), "--task_type", f"a value: {' or '.join(TASK_TYPES)}")
    if value is None:
        return TASK_TYPES[0], rest
    if value not in TASK_TYPES:
        raise UsageError(f"--task_type={bounded(value)!r} is not valid; use {' or '.join(TASK_TYPES)}")
    return value, rest


def _parser_class():
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        """HfArgumentParser without prefix matching whose errors are exceptions (one line, no usage dump)."""

        def error(self, message: str):
            raise UsageError(message)

    return Parser


def _option_names(parser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def _unknown_flag(flag: str, parser) -> UsageError:
    name = flag.split("=", 1)[0]
    close = difflib.get_close_matches(name, _option_names(parser), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; see {parser.prog} --help"
    return UsageError(f"unknown option {bounded(name)}{hint}")


def _takes_value(action, token: str) -> bool:
    """Whether the token after ``action``'s flag is its value (bool flags take an optional true/false)."""
    if action.nargs == 0:
        return False
    if action.nargs == "?":
        return token.lower() in _BOOL_WORDS if action.const is True else not token.startswith("--")
    return not token.startswith("--")


def _positionals_to_flags(argv: list[str], parser, positional: Sequence[str]) -> list[str]:
    """Bare tokens (not flags, not flag values) become ``--field value`` for ``positional`` in order."""
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    flags, bare, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            flags.append(arg)
            action = by_flag.get(arg)
            i += 1
            if action is None or "=" in arg:
                continue
            many = action.nargs in ("+", "*")
            while i < len(argv) and _takes_value(action, argv[i]):
                flags.append(argv[i])
                i += 1
                if not many:
                    break
        else:
            bare.append(arg)
            i += 1
    if len(bare) > len(positional):
        raise UsageError(
            f"unexpected argument(s) {bounded(' '.join(bare[len(positional) :]))!r}; see {parser.prog} --help"
        )
    for name, value in zip(positional, bare):
        given = [f for f in flags if f == f"--{name}" or f.startswith(f"--{name}=")]
        if given:  # argparse would keep the last one and drop the other without a word
            metavar = by_flag[f"--{name}"].metavar or name.upper()
            raise UsageError(
                f"{metavar} given twice: {bounded(value)!r} and {given[0]}; give it once, bare or as --{name}"
            )
    return [tok for name, value in zip(positional, bare) for tok in (f"--{name}", value)] + flags


def _config_values(argv: list[str]) -> tuple[list[str], dict[str, Any], Optional[str]]:
    """Remove ``--config FILE`` from ``argv``; return the YAML mapping it names."""
    import yaml

    path, rest = _pop_flag(argv, "--config", "a FILE.yaml")
    if path is None:
        return argv, {}, None
    try:
        size = Path(path).stat().st_size
        if size > CONFIG_MAX_BYTES:
            raise UsageError(
                f"--config {bounded(path)}: {size} bytes is no options file (at most {CONFIG_MAX_BYTES} bytes)"
            )
        # safe_load keeps an alias as a reference (cheap), but anything that walks or prints the value pays
        # for every copy: bound the expanded size before any option sees it. Anchors that yaml.safe_dump
        # writes for a repeated list (a saved train_config.yaml) stay accepted.
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"--config {bounded(path)}: cannot read it as YAML ({bounded(first)})") from None
    if _expanded_size(values, CONFIG_MAX_VALUES) > CONFIG_MAX_VALUES:
        raise UsageError(
            f"--config {bounded(path)}: its YAML aliases (*name) expand to more than {CONFIG_MAX_VALUES:,} "
            "values (an alias bomb?); write the options out without nested aliases"
        )
    if not isinstance(values, dict):
        raise UsageError(
            f"--config {bounded(path)}: expected a mapping of option names to values, got {type(values).__name__}"
        )
    return rest, values, path


#: how many values (scalars, list items, mapping entries) a --config file may stand for once its aliases
#: are expanded: a page of options is a few hundred; a YAML alias bomb is billions
CONFIG_MAX_VALUES = 100_000


def _expanded_size(value: Any, limit: int) -> int:
    """How many values ``value`` stands for when every alias is written out, counted without writing them
    out (a shared node is sized once) and stopping past ``limit``; a node that holds itself counts as over."""
    sizes: dict[int, int] = {}

    def size(node: Any, path: tuple) -> int:
        if not isinstance(node, (list, dict)):
            return 1
        key = id(node)
        if key in path:
            return limit + 1  # a recursive alias (&a [*a]): endless once expanded
        if key not in sizes:
            children = list(node.items()) if isinstance(node, dict) else node
            total = 1
            for child in children:
                total += (
                    sum(size(c, path + (key,)) for c in child) if isinstance(node, dict) else size(child, path + (key,))
                )
                if total > limit:
                    break
            sizes[key] = total
        return sizes[key]

    return size(value, ())


def _yes_no(value: Any) -> Any:
    """true/false (and 1/0, y/n, on/off, YAML booleans) as yes/no for an auto/yes/no option; else unchanged."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    word = str(value).strip().lower()
    return "yes" if word in _YES_WORDS else "no" if word in _NO_WORDS else value


def _normalise_yes_no(argv: list[str], values: dict[str, Any], parser) -> list[str]:
    """Boolean words accepted wherever an option takes auto/yes/no, on the command line and in --config."""
    flags = {s for a in parser._actions if a.dest in YES_NO_OPTIONS for s in a.option_strings}
    for key in YES_NO_OPTIONS & set(values):
        values[key] = _yes_no(values[key])
    out, i = [], 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if name in flags and eq:
            out.append(f"{name}={_yes_no(value)}")
        elif argv[i] in flags and i + 1 < len(argv):
            out += [argv[i], _yes_no(argv[i + 1])]
            i += 1
        else:
            out.append(argv[i])
        i += 1
    return out


def parse(
    argv: Sequence[str],
    types: Sequence[type],
    prog: str,
    description: Optional[str] = None,
    positional: Sequence[str] = (),
    ignore_config_keys: Sequence[str] = (),
    task_type: Optional[str] = None,
) -> tuple:
    """Instances of the dataclasses ``types`` from ``--config`` defaults overridden by ``argv``.

    ``positional`` names fields that may be given bare, in that order. Keys of a config file in
    ``ignore_config_keys`` are accepted and dropped (records a command writes for itself).
    Raises :class:`UsageError` (bad flags) or the ``ValueError`` of a dataclass's ``__post_init__``.
    """
    parser = _parser_class()(tuple(types), prog=prog, description=description, allow_abbrev=False)
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="A YAML file of options; flags on the command line override it.",
    )
    if task_type is not None:  # read before parsing (pop_task_type); listed here so that --help shows it
        parser.add_argument(
            "--task_type",
            default=task_type,
            metavar="{" + ",".join(TASK_TYPES) + "}",
            help=f"causal_lm: a causal language model (these options); seq_cls: sequence classification, "
            f"with its own options (see `{prog} --task_type seq_cls --help`).",
        )
    _tidy_help(parser, positional)
    argv, values, config_path = _config_values(list(argv))
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known - set(ignore_config_keys))
    if unknown:
        raise UsageError(f"--config {bounded(config_path)}: unknown option(s) {bounded(unknown)}; see {prog} --help")
    for key in ignore_config_keys:
        values.pop(key, None)
    if task_type is not None and values.get("task_type", task_type) != task_type:
        # the path (and so which options exist) is chosen from the command line before the file is read
        raise UsageError(
            f"--config {bounded(config_path)}: task_type {bounded(str(values['task_type']))!r} differs from this "
            f"command's {task_type}; give --task_type on the command line ({' or '.join(TASK_TYPES)})"
        )
    argv = _normalise_yes_no(argv, values, parser)
    by_dest = {action.dest: action for action in parser._actions}
    simple, loose = _simple_fields(types)
    values = {
        key: _config_value(by_dest[key], key, value, config_path, key in loose) if key in simple else value
        for key, value in values.items()
    }
    parser.set_defaults(**values)
    for action in parser._actions:
        if action.dest in values:
            action.required = False  # given by the file
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        raise SystemExit(0)
    known_flags = {s for a in parser._actions for s in a.option_strings}
    for arg in argv:
        if arg.startswith("--") and arg.split("=", 1)[0] not in known_flags:
            raise _unknown_flag(arg, parser)  # before any missing-option or value error: a typo is the cause
        flag, _, value = arg.partition("=")
        if arg.startswith("--") and value.split("=", 1)[0] in known_flags:
            # break-it check: --dst=--overwrite made a folder named "--overwrite" where the user meant the flag
            raise UsageError(
                f"{bounded(arg)}: the value of {flag} is the option {value.split('=', 1)[0]}; give {flag} its "
                f"value and the option apart (a path of that name: ./{bounded(value)})"
            )
    list_flags = [s for a in parser._actions if a.nargs in ("+", "*") for s in a.option_strings if s.startswith("--")]
    argv = merge_repeated(argv, list_flags)
    refuse_repeated(argv, parser)
    if positional:
        argv = _positionals_to_flags(argv, parser, positional)
    *parsed, extra = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    for arg in extra:
        if arg.startswith("-"):
            raise _unknown_flag(arg, parser)
    if extra:
        raise UsageError(f"unexpected argument(s) {bounded(' '.join(extra))!r}; see {prog} --help")
    return tuple(parsed[: len(types)])


def _simple_fields(types: Sequence[type]) -> tuple[set[str], set[str]]:
    """``(simple, loose)``: the fields declared int, float, bool, str or a list of str (optional or not),
    which a --config value is checked against (others, TrainingArguments' dict-or-JSON fields, pass as
    they are), and those of transformers' own dataclasses, whose str fields also take a list of strings
    (``report_to: []``, as a saved train_config.yaml holds it)."""
    simple, loose = set(), set()
    for t in types:
        for base in t.__mro__:
            if base.__module__.startswith("transformers.") and dataclasses.is_dataclass(base):
                loose.update(f.name for f in dataclasses.fields(base))
        for name, hint in typing.get_type_hints(t).items():
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if typing.get_origin(hint) in (typing.Union, types_module.UnionType) and len(args) == 1:
                hint = args[0]
            if hint in (int, float, bool, str) or hint in (list[str], typing.List[str]):
                simple.add(name)
    return simple, loose


def _config_value(action, key: str, value: Any, path: Optional[str], loose: bool = False) -> Any:
    """A --config value as the option's type wants it, or a UsageError naming file, key and value.

    argparse converts only *string* defaults; a YAML number, list or mapping would otherwise reach the
    settings as it is (``data: 5``, ``max_steps: 2.7``, ``adapter: [1]``) and fail far from its cause."""

    def refuse(wants: str) -> UsageError:
        return UsageError(f"--config {bounded(path)}: {key}: {bounded(repr(value))} is not {wants}")

    if value is None:
        return None
    if isinstance(value, dict):
        raise refuse("a single value or a list")
    convert = action.type if callable(action.type) else None
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, (list, dict)) for item in items):
            raise refuse("a list of values")
        return [_config_scalar(convert, item, refuse) for item in items]
    if isinstance(value, list):
        if loose and action.type is str and all(isinstance(item, str) for item in value):
            return value  # transformers' str-or-list fields
        if key in COMMA_LISTS:
            if value and all(isinstance(item, str) and item.strip() and "," not in item for item in value):
                return ",".join(item.strip() for item in value)
            raise refuse("a comma-separated string or a list of names")
        raise refuse("a single value")
    converted = _config_scalar(convert, value, refuse)
    if action.choices is not None and converted not in action.choices:
        raise refuse(f"one of {', '.join(map(str, action.choices))}")
    return converted


def _config_scalar(convert, value: Any, refuse) -> Any:
    if convert is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
            raise refuse("an integer")
        return value
    if convert is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise refuse("a number")
        try:
            return float(value)
        except ValueError:
            raise refuse("a number") from None
    if convert is str or convert is None:
        if isinstance(value, bool):
            return value if convert is None else str(value).lower()
        return value if convert is None else str(value)
    if isinstance(value, bool):  # HF's string_to_bool and the like take the YAML boolean as it is
        return value
    try:
        return convert(value if isinstance(value, str) else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        name = getattr(convert, "__name__", "value")
        raise refuse("true or false" if name == "string_to_bool" else f"a valid {name}") from None


def _tidy_help(parser, positional: Sequence[str]) -> None:
    """``--help`` as a user reads it: each option string once (a field's own dash alias and
    HfArgumentParser's coincide), a ``--no_X`` flag described as what it does, and the positional
    form (``export-lora SRC DST``) first in the usage line."""
    by_dest = {}
    for action in parser._actions:
        action.option_strings = list(dict.fromkeys(action.option_strings))
        if action.option_strings and action.option_strings[0].startswith("--no_") and action.dest in by_dest:
            action.help = f"The opposite of --{action.dest}."
        by_dest.setdefault(action.dest, action)
    if positional:
        names = [by_dest[name].metavar or name.upper() for name in positional]
        words = [n if by_dest[p].required else f"[{n}]" for n, p in zip(names, positional)]
        flags = " ".join(f"--{p} {n}" for n, p in zip(names, positional))
        parser.usage = f"{parser.prog} {' '.join(words)} [options]\n       {parser.prog} {flags} [options]"


#: OSError numbers that describe the machine (space, permissions, read-only mounts), answered in one line
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _user_errors() -> tuple[type, ...]:
    from ..data import DataError
    from ..offline import OfflineError
    from ..outputs import OutputUnwritableError

    return (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
        OutputUnwritableError,
        DataError,
        OfflineError,
    )


#: ``ModelArguments.r=`` in a settings class's message: the field, which the command line calls ``--r``
_FIELD_OF_CLASS = re.compile(r"\b[A-Z]\w*Arguments\.(\w+)=")


def flag_names(message: str) -> str:
    """A settings class's error as the command line reads it: ``ModelArguments.r=-5: ...`` (how the
    Python API names the field) becomes ``--r=-5: ...`` (the flag that set it)."""
    return _FIELD_OF_CLASS.sub(r"--\1=", message)


#: what a Ctrl-C outside a training loop (which saves a checkpoint itself) says: the write path has marked
#: the output folder it held "interrupted" and kept only whole files
INTERRUPTED = "interrupted; nothing half-written was kept (a training run continues with --resume)"


def run_command(prog: str, body: Callable[[], Optional[int]], interrupted: str = INTERRUPTED) -> int:
    """Run a command's body; a user error becomes one line on stderr and exit status 2, a Ctrl-C one
    line and status 130 (``interrupted``: what that line says).

    SIGTERM becomes an exit through Python (status 143), so temporary folders are cleaned up."""

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
        import linchain

        if signal.getsignal(signal.SIGINT) is getattr(linchain, "_interrupted_while_starting", None):
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a KeyboardInterrupt again, caught below
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        if os.environ.get("LINCHAIN_TRACEBACK"):
            raise
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except (*_user_errors(), OSError) as err:
        # a full disk, a read-only or forbidden folder met while writing is the machine's state, not a bug
        if os.environ.get("LINCHAIN_TRACEBACK") or not (
            isinstance(err, _user_errors()) or err.errno in _MACHINE_ERRNOS
        ):
            raise
        if isinstance(err, OSError) and err.errno in _MACHINE_ERRNOS and err.strerror:
            # the machine's state (space, permissions), said plainly: what failed, and on which file
            message = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
        else:
            message = flag_names(str(err).strip() or type(err).__name__)
        # a backstop: a message that repeats a user's value whole (a data row, a config value) is cut
        print(f"{prog}: error: {bounded(message, 8 * ECHO_LIMIT)}", file=sys.stderr)
        return 2
