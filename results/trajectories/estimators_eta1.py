"""Issue 25: the recorded eta = 1 ensemble re-analysed with three estimators of each
initialisation's exponent, for every perturbation size (the eps scan).

The raw per-initialisation distances are not committed (chunks/), so the replica distances of the
same 500 initialisations x 5 perturbations x 14 sizes (200 epochs, seed 0, the preset's draws)
are recomputed here without twin and tangent (cached in CACHE, a few CPU minutes); the tangent
exponents are the recorded ones (rate/lr=1.safetensors, the same initialisations).

    python results/trajectories/estimators_eta1.py CACHE   # writes estimators_eta1.json here
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

from mdesc import store
from mdesc import trajectories as tr
from mdesc.trajectories import analysis as an

HERE = Path(__file__).resolve().parent
EPS = [float(x) for x in np.logspace(-14, -1, 14)]
N_INIT, STEPS, CHUNK = 500, 200, 25


def distances(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """ln(mean replica L1 distance) (201, 500, 14) and |w|_1 (201, 500) of the eta = 1 job."""
    problem = tr.paper_problem()
    parts = []
    for a in range(0, N_INIT, CHUNK):
        path = cache / f"c{a:03d}.npz"
        if not path.exists():
            r = tr.run_ensemble(problem, problem.init(CHUNK, 0, start=a), 1.0, STEPS, eps=EPS,
                                n_pert=5, seed=0, init_ids=range(a, a + CHUNK), tangent=False,
                                twin=False)
            np.savez(str(path) + ".tmp.npz", log_dist=r["log_dist"], weight_l1=r["weight_l1"])
            os.replace(str(path) + ".tmp.npz", path)
        parts.append(np.load(path))
    return (np.concatenate([p["log_dist"] for p in parts], axis=1).astype(np.float64),
            np.concatenate([p["weight_l1"] for p in parts], axis=1).astype(np.float64))


def main(cache: Path) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    log_dist, weight_l1 = distances(cache)
    recorded, _ = store.load_tensors(HERE / "rate" / "lr=1.safetensors")
    lam_tangent = recorded["lam_tangent"].numpy()
    endpoint, _ = an.finite_time_exponents(log_dist, weight_l1)
    slope, r2, window = an.windowed_exponents(log_dist)
    med, lo, hi = an.bootstrap_median(lam_tangent)
    out = {"tangent": {"median": med, "low": lo, "high": hi,
                       "mean": float(np.mean(lam_tangent)), "std": float(np.std(lam_tangent)),
                       "n": int(lam_tangent.size)},
           "windowed_fit": {"starts": "0..100 step 5", "lengths": "30..100 step 5",
                            "r2_min": an.WindowedFit.r2_min, "slope_min": an.WindowedFit.slope_min},
           "eps": []}
    rec_endpoint = recorded["lam_finite_time"].numpy()
    for e, eps in enumerate(EPS):
        m, l, h = an.bootstrap_median(endpoint[:, e])
        ok = np.isfinite(endpoint[:, e])
        out["eps"].append({
            "eps": eps,
            "endpoint": {"median": m, "low": l, "high": h,
                         "mean": float(np.mean(endpoint[ok, e])) if ok.any() else None,
                         "recorded_median": float(np.nanmedian(rec_endpoint[:, e]))
                         if np.isfinite(rec_endpoint[:, e]).any() else None},
            "windowed": an.windowed_summary(slope[:, e], r2[:, e]),
            "windowed_all": {"median": float(np.nanmedian(slope[:, e])),
                             "median_start": float(np.median(window[:, e, 0])),
                             "median_length": float(np.median(window[:, e, 1] - window[:, e, 0]))}})
    store.write_json(HERE / "estimators_eta1.json", out)
    return out


def table(out: dict) -> str:
    t = out["tangent"]
    rows = ["| ε | tangent (all 200 steps): median [95 % CI]; mean ± std | endpoint slope (t = 0 to "
            "saturation): median [95 % CI] | authors' windowed max-R²: mean ± std (pass R² > 0.9, "
            "Λ > 0.05) | passing: median [95 % CI] |", "|---|---|---|---|---|"]
    for r in out["eps"]:
        en, w = r["endpoint"], r["windowed"]
        fmt = lambda x: "n/a" if x is None or x != x else f"{x:+.3f}"  # noqa: E731
        rows.append(f"| {r['eps']:.0e} | {fmt(t['median'])} [{fmt(t['low'])}, {fmt(t['high'])}]; "
                    f"{t['mean']:.3f} ± {t['std']:.3f} | {fmt(en['median'])} [{fmt(en['low'])}, "
                    f"{fmt(en['high'])}] | {fmt(w['mean'])} ± {w['std']:.3f} "
                    f"({w['n_pass']}/{w['n']} = {w['fraction_pass']:.0%}) | {fmt(w['median'])} "
                    f"[{fmt(w['low'])}, {fmt(w['high'])}] |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/estimators-eta1"))))
