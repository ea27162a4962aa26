"""Shared by the table-driven "nothing lost, nothing silent" cases (issue 17): each case runs a real
command on a tiny model, checks the exit status, that stderr ends in ONE line naming the flag, file
or value (no traceback), and that nothing the user did not ask to replace was touched."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file


def error_line(capsys, command: str) -> str:
    """The last stderr line, which must be ``linchain COMMAND: error: ...``; fails on a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"linchain {command}: error: "), err
    return last


def tree(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: compare before/after to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def copy_adapter(adapter: Path, dest: Path, poison: str | None = None) -> Path:
    """A copy of a saved adapter folder; ``poison`` ('nan', 'inf', a number) goes into one linchain_B entry."""
    dest.mkdir(parents=True)
    (dest / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    if poison:
        key = next(k for k in sorted(tensors) if "linchain_B" in k)
        tensors[key][0, 0] = float(poison)
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    return dest
