"""The one write path (issue 17, linchain/outputs.py) through the commands that replace a folder whole:
merge, export-lora, analyze. Each row runs the real command and checks the exit status, the one-line
refusal, and that nothing else changed."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
import transformers

from linchain import outputs
from linchain.cli.main import main as cli
from linchain.outputs import MARKER, OutputFolder, read_marker

from .helpers import copy_adapter, error_line, tree


@pytest.fixture
def src(adapter, tmp_path) -> Path:
    """A private copy of the adapter (a bare adapter folder, not inside a run)."""
    return copy_adapter(adapter, tmp_path / "src")


def _argv(command: str, src: Path, out: Path, *extra: str) -> list[str]:
    return {
        "merge": ["merge", "--adapter", str(src), "--output_dir", str(out)],
        "export-lora": ["export-lora", str(src), str(out)],
        "analyze": ["analyze", str(src), "--out", str(out), "--no_plots"],
    }[command] + list(extra)


def _written(command: str, src: Path, out: Path) -> None:
    assert cli(_argv(command, src, out)) == 0, command


KIND = {"merge": "merge", "export-lora": "export-lora", "analyze": "analyze"}
COMMANDS = sorted(KIND)


# ------------------------------------------------------------------------------- what --overwrite may replace
@pytest.mark.parametrize("command", COMMANDS)
def test_an_earlier_output_of_the_same_kind_is_replaced_only_with_overwrite_and_marked(command, src, tmp_path, capsys):
    out = tmp_path / "out"
    _written(command, src, out)
    marker = read_marker(out)
    assert marker["kind"] == KIND[command] and marker["status"] == "complete"
    assert cli(_argv(command, src, out)) == 2
    assert "pass --overwrite" in error_line(capsys, command)
    assert cli(_argv(command, src, out, "--overwrite")) == 0
    assert read_marker(out)["kind"] == KIND[command]


@pytest.mark.parametrize("command, other", list(itertools.permutations(COMMANDS, 2)))
def test_an_output_of_another_kind_is_never_replaced(command, other, src, tmp_path, capsys):
    out = tmp_path / "out"
    _written(other, src, out)
    before = tree(out)
    assert cli(_argv(command, src, out, "--overwrite")) == 2
    article = {"merge": "a", "export-lora": "an", "analyze": "an"}
    assert (
        f"holds {article[other]} {KIND[other]} output of linchain, not {article[command]} {KIND[command]} output"
        in error_line(capsys, command)
    )
    assert tree(out) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_the_current_folder_is_never_an_output(command, src, tmp_path, monkeypatch, capsys):
    """Before: `merge ... --output_dir . --overwrite` swapped the current folder (and all it held) away."""
    work = tmp_path / "work"
    _written(command, src, work)  # even an earlier output of the same kind
    (work / "notes.txt").write_text("keep me")
    monkeypatch.chdir(work)
    before = tree(work)
    assert cli(_argv(command, src, Path("."), "--overwrite")) == 2
    assert "is the current folder" in error_line(capsys, command)
    assert tree(work) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_the_home_folder_and_folders_above_it_are_never_outputs(command, src, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for out, relation in ((home, "is"), (home.parent, "holds")):
        assert cli(_argv(command, src, out, "--overwrite")) == 2
        assert f"{relation} your home folder" in error_line(capsys, command)
    assert os.listdir(home) == []


# ------------------------------------------------------------------------------- checks before any work
def _no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_that_is_a_file_is_refused_before_any_model_loads(command, src, tmp_path, monkeypatch, capsys):
    """Before: merge found it only after loading the base model and merging."""
    out = tmp_path / "out"
    out.write_text("mine")
    _no_model_loads(monkeypatch)
    assert cli(_argv(command, src, out, "--overwrite")) == 2
    assert "is a file, not a folder" in error_line(capsys, command)
    assert out.read_text() == "mine"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_that_cannot_be_written_is_refused_before_any_model_loads(command, src, tmp_path, monkeypatch, capsys):
    """Before: a read-only folder ended in a PermissionError traceback (tested through the check, as root can write anywhere)."""
    monkeypatch.setattr(outputs, "_writable", lambda folder: False)
    _no_model_loads(monkeypatch)
    assert cli(_argv(command, src, tmp_path / "out")) == 2
    assert "is not writable" in error_line(capsys, command)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk_is_refused_before_any_model_loads(command, src, tmp_path, monkeypatch, capsys):
    """Before: ENOSPC midway through save_pretrained, a traceback."""
    monkeypatch.setattr(outputs, "_free_bytes", lambda folder: 10 * 2**20)
    _no_model_loads(monkeypatch)
    assert cli(_argv(command, src, tmp_path / "out")) == 2
    assert "10 MiB free on its disk" in error_line(capsys, command)
    assert not (tmp_path / "out").exists()


def test_merge_asks_for_room_for_the_merged_weights(src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    base_bytes = sum(f.stat().st_size for f in Path(tiny_model_dir).glob("*.safetensors"))
    # enough for the minimum, not for a float32 copy of a base that were 100 MiB
    monkeypatch.setattr(outputs, "folder_bytes", lambda path, pattern="*.safetensors": 100 * 2**20 if path else 0)
    monkeypatch.setattr(outputs, "_free_bytes", lambda folder: 150 * 2**20)
    import linchain.merge

    monkeypatch.setattr(linchain.merge, "folder_bytes", outputs.folder_bytes)
    assert base_bytes > 0
    assert cli(_argv("merge", src, tmp_path / "out")) == 2
    assert "needs at least 200 MiB" in error_line(capsys, "merge")


# ------------------------------------------------------------------------------- one writer at a time
@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_writer_is_refused_at_once(command, src, tmp_path, capsys):
    """Before: two commands into one folder both exited 0, one silently replacing the other's output."""
    out = tmp_path / "out"
    with OutputFolder(out, KIND[command]).locked():
        assert cli(_argv(command, src, out)) == 2
        line = error_line(capsys, command)
    assert "is being written by another linchain process (pid " in line and f"pid {os.getpid()} " in line
    assert not out.exists() or os.listdir(out) == []
    _written(command, src, out)  # the lock went with its holder
    assert not (tmp_path / ".out.lock").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_lock_left_by_a_killed_process_is_taken_over_saying_so(command, src, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / ".out.lock").write_text("pid 999999999 on elsewhere since 2026-01-01T00:00:00+00:00")
    assert cli(_argv(command, src, out)) == 0
    err = capsys.readouterr().err
    assert "taking over the lock" in err and "pid 999999999" in err
    assert read_marker(out)["status"] == "complete" and not (tmp_path / ".out.lock").exists()


def test_a_held_lock_refuses_a_killed_holders_successor_only_while_held(tmp_path):
    """The kernel releases a killed process's flock: the file alone never blocks (no pid guessing)."""
    folder = OutputFolder(tmp_path / "out", "eval")
    with folder.locked():
        with pytest.raises(outputs.OutputLockedError):
            with OutputFolder(tmp_path / "out", "eval").locked():
                pass
    with OutputFolder(tmp_path / "out", "eval").locked():
        pass


# ------------------------------------------------------------------------------- together or not at all
def test_a_failed_overwrite_keeps_the_earlier_output_whole(src, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert cli(["analyze", str(src), "--out", str(out)]) == 0  # with plots
    before = tree(out)
    import linchain.analysis

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(linchain.analysis, "plot_analysis", broken)
    assert cli(["analyze", str(src), "--out", str(out), "--overwrite"]) == 2
    assert "No space left on device" in error_line(capsys, "analyze")
    assert tree(out) == before and sorted(os.listdir(tmp_path)) == ["out", "src"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_without_its_marker_is_never_replaced(command, src, tmp_path, capsys):
    """Issue 17's break-it check: a folder was taken for linchain's by its file names alone (a user's
    results.json, config.json, adapter_config.json or analysis.json was replaced with --overwrite)."""
    out = tmp_path / "out"
    _written(command, src, out)
    (out / MARKER).unlink()
    before = tree(out)
    assert cli(_argv(command, src, out, "--overwrite")) == 2
    assert "holds files linchain did not write" in error_line(capsys, command)
    assert tree(out) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_of_yours_inside_an_output_stops_overwrite(command, src, tmp_path, capsys):
    """Issue 17's break-it check: --overwrite swapped a merge output away with the notes put into it."""
    out = tmp_path / "out"
    _written(command, src, out)
    (out / "notes.md").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "more.txt").write_text("mine too")
    before = tree(out)
    assert cli(_argv(command, src, out, "--overwrite")) == 2
    assert "holds files linchain did not write (notes.md, sub/more.txt): move them" in error_line(capsys, command)
    assert tree(out) == before


def test_analysis_inside_the_adapters_run_is_allowed_but_not_the_run_itself(adapter, tmp_path, capsys):
    run = adapter.parent
    assert cli(["analyze", str(adapter), "--out", str(run), "--overwrite"]) == 2
    assert "holds adapter" in error_line(capsys, "analyze")
    project = tmp_path / "project"
    shutil.copytree(run, project / "run")
    assert cli(["analyze", str(project / "run" / "adapter"), "--out", str(project), "--overwrite", "--no_plots"]) == 2
    assert "holds adapter" in error_line(capsys, "analyze")
    assert cli(["analyze", str(project / "run" / "adapter"), "--no_plots"]) == 0  # RUN/analysis
    assert json.loads((project / "run" / "analysis" / "analysis.json").read_text())["adapters"]


def test_an_edited_marker_never_leads_overwrite_out_of_the_folder(tmp_path):
    """The marker's list is what --overwrite removes: a listed '../x', an absolute path or a path through
    a symlinked folder names files elsewhere, which are never touched (a listed symlink goes, not its target)."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "a.txt").write_text("ours")
    (tmp_path / "victim.txt").write_text("keep")
    (elsewhere / "b.txt").write_text("keep too")
    os.symlink(elsewhere, out / "sub")
    listed = ["a.txt", "../victim.txt", str(tmp_path / "victim.txt"), "sub/b.txt", "sub"]
    (out / MARKER).write_text(json.dumps({"kind": "train", "status": "complete", "files": listed}))
    folder = OutputFolder(out, "train", overwrite=True)
    with folder.locked():
        assert sorted(folder.clear()) == ["a.txt", "sub"]
    assert os.listdir(out) == [MARKER] and (tmp_path / "victim.txt").read_text() == "keep"
    assert (elsewhere / "b.txt").read_text() == "keep too"


@pytest.mark.parametrize("damage", ["too large", "files not strings"])
def test_a_marker_that_is_not_one_linchain_wrote_counts_as_damaged(damage, tmp_path, monkeypatch):
    """Second break-it check: a 40 MB marker list was read whole (1.8 GB, a minute); a list of numbers
    would name no files."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("x")
    if damage == "too large":
        monkeypatch.setattr(outputs, "MARKER_MAX_BYTES", 100)
        files = [f"f{i}" for i in range(50)]
    else:
        files = [1, 2]
    (out / MARKER).write_text(json.dumps({"kind": "eval", "status": "complete", "files": files}))
    assert read_marker(out) is None
    with pytest.raises(outputs.OutputExistsError, match="holds files linchain did not write"):
        OutputFolder(out, "eval", overwrite=True).check()
