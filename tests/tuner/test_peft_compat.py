"""Every PEFT workaround lives in ``linchain/tuner/peft_compat.py`` (issue 21): no other module of the
package imports a private PEFT name or writes into a PEFT module, so a PEFT upgrade touches one file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "linchain"
COMPAT = PACKAGE / "tuner" / "peft_compat.py"


def peft_workarounds(source: str) -> list[str]:
    """What in ``source`` reaches into PEFT: a private name imported from a ``peft`` module, an
    assignment into a name bound to a PEFT module or object, or ``setattr`` on one."""
    tree = ast.parse(source)
    peft_names: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "peft":
                    peft_names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "peft" and not node.level:
            for alias in node.names:
                peft_names.add(alias.asname or alias.name)
                if alias.name.startswith("_"):
                    found.append(f"line {node.lineno}: imports the private {node.module}.{alias.name}")

    def root(target: ast.AST) -> str | None:
        while isinstance(target, (ast.Attribute, ast.Subscript)):
            target = target.value
        return target.id if isinstance(target, ast.Name) else None

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)) and root(target) in peft_names:
                found.append(f"line {node.lineno}: writes into PEFT's {root(target)}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and node.args
            and root(node.args[0]) in peft_names
        ):
            found.append(f"line {node.lineno}: setattr on PEFT's {root(node.args[0])}")
    return found


def test_the_check_finds_each_kind_of_workaround():
    planted = (
        "import peft\n"
        "from peft import mapping\n"
        "from peft.tuners.tuners_utils import _private_helper\n"
        "mapping.PEFT_TYPE_TO_CONFIG_MAPPING['X'] = object\n"
        "peft.get_model_status = len\n"
        "setattr(mapping, 'y', 1)\n"
        "other = {}\n"
        "other['z'] = 1\n"
    )
    found = peft_workarounds(planted)
    assert len(found) == 4, found
    assert any("_private_helper" in f for f in found)


def test_peft_compat_holds_the_workarounds_it_names():
    found = peft_workarounds(COMPAT.read_text())
    assert any("_get_tuner_state_dict_key_prefixes" in f for f in found), found
    assert any("writes into PEFT's mapping" in f for f in found), found


@pytest.mark.parametrize(
    "module", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p != COMPAT)
)
def test_no_other_module_reaches_into_peft(module):
    assert peft_workarounds((PACKAGE / module).read_text()) == []


@pytest.mark.parametrize("module", sorted(p.name for p in (PACKAGE / "tuner").glob("*.py")))
def test_the_tuner_folder_stands_alone(module):
    """Upstreaming is copying linchain/tuner/: its modules import nothing of linchain outside it."""
    tree = ast.parse((PACKAGE / "tuner" / module).read_text())
    outside = [
        f"line {node.lineno}: {'.' * node.level}{node.module or ''}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.level > 1 or (node.module or "").startswith("linchain"))
    ]
    outside += [
        f"line {node.lineno}: import {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("linchain")
    ]
    assert outside == []
