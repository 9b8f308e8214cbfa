"""Re-run the tests of the curve shapes on the recorded sweep from its committed results alone
(fits.json + curves.safetensors; the run folder is not committed):

    OMP_NUM_THREADS=1 .venv/bin/python results/glassy/reanalyse.py   # -> scaling.json, figures

The analysis settings are the recorded ones (fits.json's "analysis"); the tests use the
defaults of :class:`mdesc.glassy.claims.ScalingSettings`. `mdesc glassy analyze RUN_FOLDER`
writes the same files from a run folder. tests/test_glassy_summary.py re-derives scaling.json
byte for byte.
"""
from pathlib import Path

from mdesc import glassy, store
from mdesc.glassy.claims import scaling_analysis
from mdesc.glassy.figures import write_figures
from mdesc.glassy.summary import censor_at, first_spike_time
from mdesc.glassy.sweep import records_from_results

HERE = Path(__file__).resolve().parent


def reanalyse(results=HERE):
    fits, nets = records_from_results(results)
    a = fits["analysis"]
    result = glassy.analyze_sweep(nets, a["thresholds"], a["fit_from"],
                                  aging_min_tw=a["aging_min_tw"], censor_spikes=a["censor_spikes"])
    analysed = [censor_at(n, first_spike_time(n)) for n in nets] if a["censor_spikes"] else nets
    return nets, analysed, result, scaling_analysis(analysed, result)


if __name__ == "__main__":
    nets, analysed, result, scaling = reanalyse()
    store.write_json(HERE / "scaling.json", scaling)
    print("wrote", ", ".join(write_figures(HERE, nets, result, analysed, scaling)),
          "and scaling.json")
