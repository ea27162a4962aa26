"""Every sub-command answers --help (argparse formats help strings with %, so a stray % breaks it)."""

import pytest

from linchain.cli.main import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_top_level_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["nope"]) == 2
    assert "'nope'" in capsys.readouterr().err
