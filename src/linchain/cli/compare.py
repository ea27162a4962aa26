"""``linchain compare``: flags (over ``--preset`` and ``--config FILE.yaml``) -> :func:`linchain.compare.compare`.

Its own options (:class:`linchain.compare.CompareArguments`) plus every ``linchain train`` option
for the settings the runs share. Precedence: preset < ``--config`` < command line.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from ..messages import bounded
from .args import UsageError, _config_values, _pop_flag, parse, run_command

__all__ = ["main", "parse_args"]

PROG = "linchain compare"


def parse_args(argv: Sequence[str]):
    """(CompareArguments, ModelArguments, DataArguments, LinChainTrainingArguments)."""
    import yaml

    from ..compare import CompareArguments
    from ..compare.presets import preset_values
    from ..train.args import DataArguments, LinChainTrainingArguments, ModelArguments

    types = (CompareArguments, ModelArguments, DataArguments, LinChainTrainingArguments)
    description = "Compare fine-tuning methods: learning rate tuned per method, paired statistics over rows and seeds."
    argv = list(argv)
    preset, argv = _pop_flag(argv, "--preset", "a preset name")
    if preset is None or any(a in ("-h", "--help") for a in argv):
        args = parse(argv, types, PROG, description=description)
        if not any(a in ("-h", "--help") for a in argv):
            _refuse_unused(argv, _config_values(list(argv))[1], args, None)
        return args
    # the preset sits under --config: both go into one file that the shared parser reads
    values = preset_values(preset)
    argv, config, config_path = _config_values(argv)
    values.update(config)
    values["preset"] = preset
    with tempfile.TemporaryDirectory(prefix="linchain-compare-") as folder:
        merged = Path(folder) / f"preset-{preset}.yaml"
        merged.write_text(yaml.safe_dump(values, sort_keys=True), encoding="utf-8")
        try:
            args = parse(["--config", str(merged), *argv], types, PROG, description=description)
        except UsageError as err:
            # name the user's file (and the preset under it), not the temporary one merging both (break-it check)
            where = f"{config_path} (over --preset {preset})" if config_path else f"(--preset {preset})"
            raise UsageError(str(err).replace(str(merged), where)) from None
    _refuse_unused(argv, config, args, preset)
    return args


def _given(argv: list[str], config: dict, name: str) -> bool:
    return name in config or any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)


def _refuse_unused(argv: list[str], config: dict, args: tuple, preset: Optional[str]) -> None:
    """Shared ``linchain train`` flags that compare sets itself, refused when given rather than ignored
    without a word (break-it checks): ``--seed`` and ``--learning_rate`` only stand in for an empty
    ``--seeds`` / ``--learning_rates`` (one of their values is no conflict); ``--overwrite`` and ``--resume`` are the grid's to set per run."""
    compare_args, *_, train_args = args
    for one, many, value in (
        ("seed", "seeds", train_args.seed),
        ("learning_rate", "learning_rates", train_args.learning_rate),
    ):
        listed = getattr(compare_args, many)
        if not _given(argv, config, one) or not listed or float(value) in [float(x) for x in listed.split(",")]:
            continue  # not given, or one of the values run (CompareArguments checked they are numbers)
        source = "--" + many if _given(argv, config, many) or preset is None else f"--preset {preset}"
        raise UsageError(
            f"--{one} {value:g} is not used: the runs' {many.replace('_', ' ')} are --{many} {listed} (from {source}); "
            f"put the values to run in --{many}, e.g. --{many} {listed},{value:g}"
        )
    for flag in ("overwrite", "resume"):
        if getattr(train_args, flag):
            raise UsageError(
                f"--{flag}: compare resumes a study in its --output_dir by itself and never replaces one; "
                "to start afresh, use another --output_dir"
            )


def _compare(argv: list[str]) -> int:
    from ..compare import compare

    args = parse_args(argv)
    report, path = compare(*args)
    print(path.read_text())
    print(f"wrote {path}, {path.with_suffix('.json')}, convergence.png and lr_sweep.png in {path.parent}")
    failures = report.get("failures") or []
    if failures:
        # a study with failed steps is not a result to quote: say which, and exit non-zero (a script notices)
        for f in failures:
            print(
                f"{PROG}: FAILED {f['step']}: {bounded(f['error'].splitlines()[0] if f['error'] else '')}",
                file=sys.stderr,
            )
        print(
            f"{PROG}: error: {len(failures)} step(s) failed (listed above and in {path}); "
            "run the same command again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _compare(argv), interrupted="interrupted; run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
