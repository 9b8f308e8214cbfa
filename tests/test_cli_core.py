import pytest

from mdesc.cli import main


def test_gain_sweep_shows_order_then_chaos(capsys):
    assert main(["gain-sweep", "--gains", "0.5,32", "--hidden", "24", "--batch", "4", "--steps", "400",
                 "--drive", "100", "--warmup", "100"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[-1] for r in rows] == ["order", "chaos"]
    assert [r[5:7] for r in rows] == [["order", "order"], ["chaos", "chaos"]]  # by lambda_1, by D~
    assert float(rows[0][1]) < 0 < float(rows[1][1])
    assert float(rows[0][4]) == -15.0 and float(rows[1][4]) > -15.0


def test_gain_sweep_counts_the_zero_input_phase(capsys):
    """The issue's case: at gain 4 the drive contracts (-0.18 per step) while the zero-input
    phase is chaotic (+0.05); the whole-run average said "order"."""
    assert main(["gain-sweep", "--gains", "0.5,1,2,4", "--batch", "4", "--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "lambda_1 over the zero-input steps" in out and "perturbed at the drive's end" in out
    gain4 = out.splitlines()[-1].split()
    assert gain4[0] == "4" and gain4[-1] == "chaos"
    assert float(gain4[1]) > 0.03 and float(gain4[3]) < -0.1  # zero-input lambda_1, driven


@pytest.mark.parametrize("argv, message", [
    (["gain-sweep", "--gains", "a,b"], "comma-separated numbers"),
    (["gain-sweep", "--drive", "10", "--steps", "5"], "cannot exceed --steps"),
    (["gain-sweep", "--hidden", "0"], "--hidden must be >= 1"),
    (["gain-sweep", "--steps", "600", "--drive", "500", "--warmup", "100"], "leave counted zero-input steps"),
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
