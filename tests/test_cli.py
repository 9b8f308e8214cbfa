"""The `mdesc` command as a whole: fast help that loads neither torch nor the extension."""
import argparse
import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return set(out)


def test_help_loads_neither_torch_nor_the_extension():
    mods = _loaded_after("import contextlib, io\nfrom mdesc.cli import main\n"
                         "with contextlib.redirect_stdout(io.StringIO()):\n"
                         "    try:\n        main(['--help'])\n    except SystemExit:\n        pass")
    assert "torch" not in mods and "mdesc._C" not in mods and "matplotlib" not in mods


def test_every_study_registers_its_commands():
    from mdesc.cli import ALIASES, COMMANDS, build_parser

    text = build_parser().format_help()
    for command in ("gain-sweep", "descent", "run", "glassy", "trajectories", "analyse-run"):
        assert command in text and command in COMMANDS
    for command in list(COMMANDS) + list(ALIASES):  # each module registers what the table says
        parser = build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert callable(sub.choices[command].get_default("func")), command


def test_unknown_command_is_a_usage_error(capsys):
    import pytest

    from mdesc.cli import main

    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_import_mdesc_is_light():
    mods = _loaded_after("import mdesc")
    assert "torch" not in mods and "numpy" not in mods


def test_user_errors_are_one_line_with_status_2_and_a_traceback_with_debug(capsys, monkeypatch):
    import pytest

    from mdesc import cli, store
    from mdesc.errors import UserError

    def fail(args):
        raise store.CheckpointError("x.pt is not a checkpoint; save model.state_dict()")

    real = cli.build_parser

    def parser(command=None):
        p = real(None)
        p.set_defaults(func=fail, command="probe")
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err == "mdesc probe: error: x.pt is not a checkpoint; save model.state_dict()\n"
    with pytest.raises(store.CheckpointError):
        cli.main(["--debug"])
    assert issubclass(store.StoreError, UserError) and cli.UserError is UserError
