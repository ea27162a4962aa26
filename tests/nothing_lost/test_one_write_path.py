"""The mechanism, not the cases (issue 17): what may be deleted or replaced is decided in one place.

Every file or folder removal in the package goes through linchain/io.py or linchain/outputs.py, and
every kind of output folder a command writes is opened through ``OutputFolder``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import linchain
from linchain.outputs import KINDS

PACKAGE = Path(linchain.__file__).parent
THE_WRITE_PATH = {"io.py", "outputs.py"}
#: calls that delete or move files: module functions, and methods of Path objects
REMOVING_FUNCTIONS = {
    ("shutil", "rmtree"),
    ("shutil", "move"),
    ("os", "remove"),
    ("os", "unlink"),
    ("os", "rmdir"),
    ("os", "rename"),
    ("os", "replace"),
    ("os", "removedirs"),
}
REMOVING_METHODS = {"unlink", "rmdir", "rename"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def _removals(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, name = node.func.value, node.func.attr
        if isinstance(owner, ast.Name) and (owner.id, name) in REMOVING_FUNCTIONS:
            found.append(f"{owner.id}.{name} (line {node.lineno})")
        elif name in REMOVING_METHODS and not (isinstance(owner, ast.Name) and owner.id in ("os", "shutil")):
            found.append(f".{name}() (line {node.lineno})")
    return found


def test_only_the_write_path_removes_files():
    outside = {
        str(path.relative_to(PACKAGE)): calls
        for path, tree in _modules()
        if path.name not in THE_WRITE_PATH or path.parent != PACKAGE
        for calls in [_removals(tree)]
        if calls
    }
    assert outside == {}, f"files removed or moved outside linchain/io.py and linchain/outputs.py: {outside}"


def test_the_scan_sees_a_removal():
    """The scan itself can fail: each form it looks for is found in a sample."""
    sample = ast.parse("import os, shutil\nshutil.rmtree(p)\nos.replace(a, b)\npath.unlink()\nfolder.rmdir()\n")
    assert len(_removals(sample)) == 4


def test_every_kind_of_output_is_written_through_an_output_folder():
    """Each kind in outputs.KINDS is opened somewhere as OutputFolder(path, "KIND", ...)."""
    opened = set()
    for path, tree in _modules():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "OutputFolder"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                opened.add(node.args[1].value)
    assert opened == set(KINDS), f"kinds never opened: {set(KINDS) - opened}; unknown kinds: {opened - set(KINDS)}"
