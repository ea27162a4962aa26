"""Shared by the table-driven "nothing lost, nothing silent" cases (issue 17): each case runs a real
command on a tiny model, checks the exit status, that stderr ends in ONE line naming the flag, file
or value (no traceback), and that nothing the user did not ask to replace was touched."""

from __future__ import annotations

import json
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


def reader_argv(command: str, folder: Path, model_dir: Path, out: Path) -> list[str]:
    """``command`` (eval, eval-merged, export-lora, analyze or merge) reading the adapter ``folder`` on the
    base ``model_dir`` and writing ``out``; eval scores one boolq row written beside ``out``."""
    if command.startswith("eval"):
        rows = out.parent / "boolq.json"
        rows.write_text(json.dumps([{"instruction": "Is it?", "input": "", "output": "true", "answer": "true"}]))
        argv = ["eval", "--model_name_or_path", str(model_dir), "--adapter", str(folder), "--data", str(rows)]
        argv += ["--task", "boolq", "--scorer", "loglik", "--output_dir", str(out)]
        return argv + (["--merge_adapter"] if command == "eval-merged" else [])
    return {
        "export-lora": ["export-lora", str(folder), str(out)],
        "analyze": ["analyze", str(folder), "--out", str(out)],
        "merge": ["merge", "--adapter", str(folder), "--base_model", str(model_dir), "--output_dir", str(out)],
    }[command]
