"""`mdesc descent ...` / `mdesc run`: end to end on a tiny aclImdb folder, and the errors."""
import json

import pytest

from mdesc.cli import main
from test_sentiment import make_aclimdb

TRAIN = ["--vocab-size", "30", "--min-count", "1", "--max-len", "10", "--embed-dim", "4",
         "--hidden-size", "6", "--batch-size", "8", "--lr", "0.05", "--epochs", "3", "--quiet"]
SWEEP = ["--samples", "5", "--total-steps", "30", "--chunk", "3", "--quiet"]
TINY = TRAIN + SWEEP[:-1]


def test_run_end_to_end_and_resume(tmp_path, capsys):
    root = make_aclimdb(tmp_path)
    run = tmp_path / "run"
    args = ["--run-dir", str(run), "--data", str(root)] + TINY
    assert main(["descent", "run"] + args) == 0
    out = capsys.readouterr().out
    assert "3 epochs trained" in out and "4 checkpoints analysed (4 now, 0 before)" in out
    assert (run / "report" / "report.html").is_file()
    assert json.loads((run / "config.json").read_text())["data"]["source"] == str(root)
    # the top-level `mdesc run` is the same pipeline; a re-run only resumes
    more = [a if a != "3" else "4" for a in args]  # --epochs 4
    assert main(["run"] + more) == 0
    out = capsys.readouterr().out
    assert "4 epochs trained" in out and "5 checkpoints analysed (1 now, 4 before)" in out
    # phase settings from the command line reach the analysis recorded in the report
    summary = run / "report" / "summary.json"
    assert main(["descent", "report", "--run-dir", str(run), "--lyapunov-threshold", "-5",
                 "--measure", "lyapunov"]) == 0
    settings = json.loads(summary.read_text())["analysis"]["settings"]
    assert settings["lyapunov_threshold"] == -5 and settings["measure"] == "lyapunov"
    # a second seed, then both pooled side by side
    run2 = tmp_path / "run2"
    seed2 = ["--run-dir", str(run2), "--data", str(root), "--seed", "1"] + TINY
    assert main(["descent", "run"] + seed2) == 0
    capsys.readouterr()
    out_dir = tmp_path / "pooled"
    assert main(["descent", "pool", str(run), str(run2), "--names", "s0", "s1",
                 "--out", str(out_dir), "--permutations", "200"]) == 0
    pooled = json.loads((out_dir / "pooled.json").read_text())
    assert pooled["names"] == ["s0", "s1"] and set(pooled["pooled"]["pooled"]) >= {
        "has_order_chaos_transition", "minima_at_events_significant"}
    for key, v in pooled["pooled"]["pooled"].items():
        assert v["seeds"] == 2 and v["defined"] <= 2, key
    md = (out_dir / "pooled.md").read_text()
    assert md.startswith("| run |") and "| s0 |" in md and "| s1 |" in md
    assert (out_dir / "pooled.png").stat().st_size > 1000
    assert "no sweep" in _error(capsys, ["descent", "pool", str(tmp_path), "--out",
                                         str(out_dir)])


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as e:
        main(["descent", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for step in ("train", "sweep", "report", "run"):
        assert step in text
    assert "--epochs 300 --samples 500 --total-steps 1600" in text.replace("\n", " ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--total-steps" in capsys.readouterr().out


def _error(capsys, argv):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_data_paths_say_what_to_fix(tmp_path, capsys):
    err = _error(capsys, ["descent", "train", "--run-dir", str(tmp_path / "r"),
                          "--data", str(tmp_path / "missing")])
    assert "is not a folder" in err and "aclImdb" in err
    root = make_aclimdb(tmp_path, n_train=4, n_test=4)
    for f in (root / "test" / "pos").iterdir():
        f.unlink()
    (root / "test" / "pos").rmdir()
    err = _error(capsys, ["descent", "train", "--run-dir", str(tmp_path / "r"),
                          "--data", str(root)])
    assert "missing test/pos" in err and "{train,test}/{pos,neg}" in err
    assert not (tmp_path / "r").exists()


def test_bad_settings_and_missing_runs_say_what_to_fix(tmp_path, capsys):
    err = _error(capsys, ["descent", "train", "--run-dir", str(tmp_path / "r"),
                          "--max-len", "0"])
    assert "max_len must be at least 1" in err
    err = _error(capsys, ["descent", "sweep", "--run-dir", str(tmp_path / "none")])
    assert "not a training run folder" in err and "mdesc descent train" in err
    err = _error(capsys, ["descent", "report", "--run-dir", str(tmp_path / "none")])
    assert "not a training run folder" in err
    err = _error(capsys, ["descent", "train", "--run-dir", str(tmp_path / "r"),
                          "--device", "tpu"])
    assert "unknown device" in err


def test_changed_settings_on_resume_are_refused(tmp_path, capsys):
    root = make_aclimdb(tmp_path)
    run = ["--run-dir", str(tmp_path / "run")]
    data = ["--data", str(root)]
    assert main(["descent", "train"] + run + data + TRAIN) == 0
    err = _error(capsys, ["descent", "train"] + run + data + TRAIN + ["--hidden-size", "7"])
    assert "model.hidden_size: on disk 6, asked for 7" in err and "another output folder" in err
    assert main(["descent", "sweep"] + run + SWEEP) == 0
    err = _error(capsys, ["descent", "sweep"] + run + SWEEP + ["--samples", "4"])
    assert "n_samples: on disk 5, asked for 4" in err
    err = _error(capsys, ["descent", "sweep"] + run + SWEEP + ["--total-steps", "5"])
    assert "must exceed the drive length" in err
