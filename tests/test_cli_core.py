import pytest

from mdesc.cli import main


def test_gain_sweep_shows_order_then_chaos(capsys):
    assert main(["gain-sweep", "--gains", "0.5,32", "--hidden", "24", "--batch", "4", "--steps", "400",
                 "--drive", "100", "--warmup", "100"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[-1] for r in rows] == ["order", "chaos"]
    assert float(rows[0][1]) < 0 < float(rows[1][1])
    assert float(rows[0][3]) == -15.0


@pytest.mark.parametrize("argv, message", [
    (["gain-sweep", "--gains", "a,b"], "comma-separated numbers"),
    (["gain-sweep", "--drive", "10", "--steps", "5"], "cannot exceed --steps"),
    (["gain-sweep", "--hidden", "0"], "--hidden must be >= 1"),
])
def test_gain_sweep_bad_input(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_help_lists_every_study(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("gain-sweep", "run", "descent", "glassy", "trajectories"):
        assert command in out
