"""``mdesc descent train --floss TARGET,WEIGHT``: gradient flossing in the study-1 trainer."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mdesc.descent import run as TR
from mdesc.descent.model import RunError
from mdesc.ensemble import train as ET
from test_ensemble_train import corpus, settings  # noqa: F401  (the tiny aclImdb corpus)


def test_flossing_changes_training_records_lambda_and_resumes(corpus, tmp_path):  # noqa: F811
    data, model, plain = settings(corpus, epochs=2)
    _, _, floss = settings(corpus, epochs=2, floss="0.5,10", floss_every=1, floss_probe=4)
    h_plain = TR.train_run(tmp_path / "plain", data, model, plain, progress=False, say=None)
    h_floss = TR.train_run(tmp_path / "floss", data, model, floss, progress=False, say=None)
    # the same start (epoch 0), then the penalty moves the weights elsewhere
    assert h_plain["train_loss"][0] == h_floss["train_loss"][0]
    assert h_plain["train_loss"][2] != h_floss["train_loss"][2]
    assert "floss_lambda" not in h_plain
    assert math.isnan(h_floss["floss_lambda"][0])
    assert h_floss["floss_terms"][1:] == [3, 3]          # 20 reviews / batch 8 = 3 steps
    assert all(math.isfinite(v) for v in h_floss["floss_lambda"][1:])
    # the target 0.5 is far above this tiny LSTM's exponent: the penalty pushes lambda_1 up
    assert h_floss["floss_lambda"][2] > h_floss["floss_lambda"][1]

    # killed after epoch 1 and resumed: the same history as the uninterrupted run
    class Stop(Exception):
        pass

    def stop(epoch, _):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        TR.train_run(tmp_path / "again", data, model, floss, progress=False, say=None,
                     on_epoch=stop)
    h_again = TR.train_run(tmp_path / "again", data, model, floss, progress=False, say=None)
    assert json.dumps(h_again) == json.dumps(h_floss)    # NaN-aware: bit for bit


@pytest.mark.parametrize("value", ["0", "a,b", "0,-1", "nan,1", "0,1,2"])
def test_a_floss_setting_that_does_not_parse_is_one_readable_error(corpus, value):  # noqa: F811
    _, _, train = settings(corpus, floss=value)
    with pytest.raises(RunError, match="--floss needs"):
        train.check()


def test_the_ensemble_refuses_a_bad_floss_setting_before_any_work(corpus, tmp_path):  # noqa: F811
    # the ensemble flosses since issue 28 (tests/test_ensemble_floss.py); a bad setting is
    # still refused before anything is written
    data, model, train = settings(corpus, floss="0,-0.1")
    with pytest.raises(RunError, match="--floss needs"):
        ET.train_ensemble(tmp_path / "ens", [1, 2], data, model, train, progress=False)
    assert not (tmp_path / "ens").exists()
