"""The claims of one run, refused when their values cannot carry them; one verdict per
checkpoint; several seeds pooled.  Pure numpy/scipy on arrays (no files, no matplotlib).

*Refusal.*  A correlation, a p-value or a label computed from values that do not vary beyond
their numerical resolution is rounding, not signal (issue 10: a Spearman p = 0.03 on D~ values
all within 1.5e-9 of the -15 floor).  :func:`flat_reason` says why values are flat, and every
claim built on them carries ``refused`` = that reason instead of a number.  Resolutions:
D~: ``distance_resolution`` (default 1e-6: float64 D~ of an ordered run sits within ~1e-9 of
the floor); lambda_1: twice the median standard error over reviews (values closer than that are
the same within their errors); losses: 1e-12.

*Verdict.*  Each checkpoint gets one verdict from the asymptotic lambda_1 (zero-input window)
and D~ (primary twin): ``ordered``/``chaotic`` when both agree, ``disagree`` with the reason
otherwise, ``unknown`` where either is missing.  Why they can disagree: D~ above its floor with
lambda_1 < 0 means the finite perturbation (1e-3) left the basin of a locally stable attractor
(multistability), or did not decay within the zero-input steps (a long transient, lambda_1 close
to 0); lambda_1 > 0 with D~ at its floor means the twins had not separated within the run
(lambda_1 too small for e^(lambda_1 Z) to lift 1e-3 above e^-15) or the exponent is within its
error of 0.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

from mdesc.stats import fraction_interval, series_correlation
from mdesc.sweep.controls import family

LOSS_RESOLUTION = 1e-12


def flat_reason(values, resolution: float, name: str, floor: float | None = None) -> str | None:
    """None if the finite ``values`` vary by more than ``resolution``; else the reason."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 3:
        return f"{name}: only {v.size} finite value(s), at least 3 are needed"
    spread = float(np.ptp(v))
    if floor is not None and np.all(np.abs(v - floor) <= resolution):
        return (f"{name}: every value lies within {resolution:g} of the floor {floor:g} "
                f"(largest excess {float(np.max(v - floor)):.3g}): at the floor, no variation "
                "beyond numerical resolution")
    if spread <= resolution:
        return (f"{name}: the values span {spread:.3g}, within their numerical resolution "
                f"{resolution:g}")
    return None


def lyapunov_resolution(stderr) -> float:
    se = np.asarray(stderr, dtype=float)
    se = se[np.isfinite(se)]
    return max(2.0 * float(np.median(se)), 1e-12) if se.size else 1e-12


def correlation(x, y, x_name: str, x_resolution: float, y_name: str = "test loss",
                y_resolution: float = LOSS_RESOLUTION, x_floor: float | None = None
                ) -> dict[str, Any]:
    """Spearman and Pearson correlation of finite pairs, or ``refused`` with the reason."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    res = {"n": int(ok.sum()), "spearman": math.nan, "spearman_p": math.nan,
           "pearson": math.nan, "pearson_p": math.nan, "refused": None}
    reason = (flat_reason(x[ok], x_resolution, x_name, x_floor)
              or flat_reason(y[ok], y_resolution, y_name))
    if reason:
        res["refused"] = reason
        return res
    # values closer than their resolution are the same value: rank them as ties, so rounding
    # noise (D~ wiggling by 1e-9 on its floor) cannot order them
    x = np.round(x / x_resolution) * x_resolution
    levels = np.unique(x[ok]).size
    if levels < 3:
        res["refused"] = (f"{x_name}: only {levels} distinct values beyond its resolution "
                          f"{x_resolution:g} among {int(ok.sum())} checkpoints (the rest are "
                          "ties, e.g. on the floor): too few for a correlation")
        return res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = stats.spearmanr(x[ok], y[ok])
        pe = stats.pearsonr(x[ok], y[ok])
    res.update(spearman=float(sp.statistic), spearman_p=float(sp.pvalue),
               pearson=float(pe.statistic), pearson_p=float(pe.pvalue))
    return res


VERDICTS = ("ordered", "chaotic", "marginal", "disagree", "unknown")
MARGINAL = 0.01   # |lambda_1| below this (per step) with D~ above its floor: marginal dynamics


def verdicts(label_distance, label_lyapunov, lam, log_distance, floor: float
             ) -> tuple[list[str], list[str]]:
    """One verdict per checkpoint and, where the measures disagree, why (module doc)."""
    out, why = [], []
    for ld, ll, l1, d in zip(label_distance, label_lyapunov, lam, log_distance):
        if ld < 0 or ll < 0:
            out.append("unknown")
            why.append("D~ or lambda_1 missing or non-finite")
        elif ld == ll:
            out.append("chaotic" if ld == 1 else "ordered")
            why.append("")
        elif ld == 1 and abs(l1) < MARGINAL:
            out.append("disagree")
            why.append(f"D~ = {d:.3g} is above its floor while lambda_1 = {l1:.3g} is within "
                       f"{MARGINAL:g} of 0: marginal dynamics (a limit cycle or torus: a shift "
                       "along the orbit neither grows nor decays, so D_i stays near the "
                       "perturbation's size)")
        elif ld == 1:
            out.append("disagree")
            why.append(f"D~ = {d:.3g} is above its floor while lambda_1 = {l1:.3g} < 0: the "
                       "finite perturbation left the basin of a locally stable attractor "
                       "(several attractors) or had not decayed yet (long transient)")
        else:
            out.append("disagree")
            why.append(f"lambda_1 = {l1:.3g} > 0 while D~ = {d:.3g} sits at its floor "
                       f"{floor:g}: the twins had not separated within the zero-input steps "
                       "(a weak exponent) or lambda_1 is within its error of 0")
    return out, why


def combined_verdicts(combined, label_distance, label_lyapunov, cols, s
                      ) -> tuple[list[str], list[str]]:
    """The verdict of each checkpoint is its combined label (:func:`mdesc.sweep.phases.
    combined_label`, the label the table, the figures and every claim use), with the reason
    where it is neither ordered nor chaotic."""
    names = {-1: "unknown", 0: "ordered", 1: "chaotic", 2: "marginal", 3: "disagree"}
    _, why_single = verdicts(label_distance, label_lyapunov, cols["lyapunov_max"],
                             cols["log_distance"], s.floor)
    out, why = [], []
    k = s.lyapunov_sigmas
    for c, w, lam, se, d in zip(combined, why_single, cols["lyapunov_max"],
                                cols["lyapunov_stderr"], cols["log_distance"]):
        v = names[int(c)]
        out.append(v)
        if v == "disagree":
            why.append(w)
        elif v == "marginal":
            x = d - s.floor
            if abs(lam - s.lyapunov_threshold) <= k * (se if np.isfinite(se) else 0.0):
                why.append(f"lambda_1 = {lam:.3g} +- {se:.2g} is within {k:g} standard errors "
                           f"of {s.lyapunov_threshold:g}")
            else:
                why.append(f"D~ - floor = {x:.3g} lies between the order level "
                           f"{s.distance_ordered_tol:g} and the chaos margin "
                           f"{s.distance_margin:g}")
        else:
            why.append("" if v != "unknown" else w or "D~ or lambda_1 missing or non-finite")
    return out, why


def twin_comparison(epoch, d_end, d_start, n_collapsed, n_reviews: int, floor: float,
                    margin: float) -> dict[str, Any]:
    """Where the drive-end and t = 0 twins disagree, and which t = 0 twins collapsed."""
    epoch = np.asarray(epoch, float)
    d_end, d_start = np.asarray(d_end, float), np.asarray(d_start, float)
    n_col = np.nan_to_num(np.asarray(n_collapsed, float), nan=0.0)
    have = np.isfinite(d_end) & np.isfinite(d_start)
    out: dict[str, Any] = {"available": bool(have.any())}
    if not have.any():
        out["reason"] = "the sweep ran one twin only"
        return out
    lab_end = d_end - floor > margin
    lab_start = d_start - floor > margin
    collapsed_all = n_col >= n_reviews
    disagree = have & (lab_end != lab_start)
    out.update(
        n_checkpoints=int(have.sum()),
        n_disagree=int(disagree.sum()),
        disagree_epochs=epoch[disagree].tolist(),
        n_any_collapsed=int(np.sum(have & (n_col > 0))),
        n_all_collapsed=int(np.sum(have & collapsed_all)),
        collapsed_epochs=epoch[have & (n_col > 0)].tolist(),
        mean_collapsed_fraction=float(np.mean(n_col[have]) / n_reviews) if n_reviews else None,
        note=("a t = 0 twin that the drive made bit-identical to its run says nothing about the "
              "zero-input dynamics: it is reported as collapsed, never as ordered"))
    return out


# ----------------------------------------------------------------------------- one run's claims

MEASURE_COLUMN = {"distance": "log_distance", "lyapunov": "lyapunov_max"}


def run_claims(epoch, cols, labels, measure, transitions, stretches, minima, global_min,
               cycles, window, rec_idx, n, *, floor: float = -15.0,
               distance_resolution: float = 1e-6) -> dict[str, Any]:
    """Every measured claim of one run (see :func:`mdesc.sweep.analysis.analyse`)."""
    nan = math.nan
    loss = cols["test_loss"]
    c: dict[str, Any] = {"n_checkpoints": n, "measure": measure, "window_epochs": window}
    c["n_transitions"] = len(transitions)
    c["n_order_to_chaos"] = sum(t.kind == "order_to_chaos" for t in transitions)
    c["n_chaos_to_order"] = sum(t.kind == "chaos_to_order" for t in transitions)
    first = next((t for t in transitions if t.kind == "order_to_chaos"), None)
    c["first_order_to_chaos_epoch"] = first.epoch if first else nan
    c["global_min_epoch"] = global_min["epoch"] if global_min else nan
    c["global_min_test_loss"] = global_min["test_loss"] if global_min else nan
    c["first_transition_minus_global_min"] = (
        first.epoch - global_min["epoch"] if first and global_min else nan)
    c["first_transition_within_window_of_global_min"] = (
        bool(abs(c["first_transition_minus_global_min"]) <= window)
        if first and global_min else None)

    t_epochs = np.array([t.epoch for t in transitions])
    c["n_local_minima"] = len(minima)
    near = [m for m in minima if m.distance_to_transition is not None
            and m.distance_to_transition <= window]
    c["n_minima_near_transition"] = len(near)
    c["minima_near_transition_fraction"] = len(near) / len(minima) if minima else nan
    interior = np.flatnonzero(np.isfinite(loss))[1:-1]
    if interior.size and t_epochs.size:
        d = np.min(np.abs(epoch[interior, None] - t_epochs[None, :]), axis=1)
        c["minima_near_transition_chance"] = float(np.mean(d <= window))
    else:
        c["minima_near_transition_chance"] = 0.0 if interior.size else nan

    _overtrained_claims(c, epoch, cols, loss, global_min, floor, distance_resolution)
    _stretch_claims(c, stretches)
    c["n_cycles"] = len(cycles)
    c["n_overtrained_cycles"] = sum(cy.overtrained for cy in cycles)
    c["fraction_cycles_sharp_drop"] = (
        float(np.mean([cy.asymmetry > 1 for cy in cycles])) if cycles else nan)
    c["fraction_cycles_transition_in_drop"] = (
        float(np.mean([cy.transition_in_drop for cy in cycles])) if cycles else nan)
    fr = [cy.chaotic_fraction_rise for cy in cycles if cy.chaotic_fraction_rise is not None]
    c["mean_chaotic_fraction_rise"] = float(np.mean(fr)) if fr else nan

    c["distance_refused"] = flat_reason(cols["log_distance"], distance_resolution, "D~", floor)
    c["lyapunov_refused"] = flat_reason(cols["lyapunov_max"],
                                        lyapunov_resolution(cols["lyapunov_stderr"]), "lambda_1")
    # the combined label's transitions are dated by lambda_1: refused when lambda_1 is flat
    c["combined_refused"] = c["lyapunov_refused"]
    if c[f"{measure}_refused"]:
        c["transitions_refused"] = (f"the labels of {measure} rest on values that do not vary: "
                                    f"{c[f'{measure}_refused']}")
    else:
        c["transitions_refused"] = None
    both = (labels["distance"] >= 0) & (labels["lyapunov"] >= 0)
    c["label_agreement"] = (float(np.mean(labels["distance"][both] == labels["lyapunov"][both]))
                            if both.any() else nan)
    c["recommended_epoch"] = float(epoch[rec_idx]) if rec_idx is not None else nan
    rl = loss[rec_idx] if rec_idx is not None else nan
    c["recommended_test_loss"] = float(rl)
    c["recommended_regret"] = (float(rl - global_min["test_loss"])
                               if global_min is not None and np.isfinite(rl) else nan)
    return c

def _overtrained_claims(c, epoch, cols, loss, global_min, floor, distance_resolution) -> None:
    """Test loss against each chaos measure after the global minimum (into ``c``)."""
    c["overtrained_n"] = 0
    if global_min is not None:
        after = epoch > global_min["epoch"]
        c["overtrained_n"] = int(np.sum(after & np.isfinite(loss)))
        res = {"distance": (distance_resolution, "D~", floor),
               "lyapunov": (lyapunov_resolution(cols["lyapunov_stderr"]), "lambda_1", None)}
        for m in ("distance", "lyapunov"):
            r_, name, fl = res[m]
            col = cols["log_distance" if m == "distance" else "lyapunov_max"]
            r = correlation(col[after], loss[after], name, r_, x_floor=fl)
            c[f"overtrained_{m}"] = r
            # both series drift with training time: the honest tests keep that (mdesc.stats)
            if r["refused"]:
                c[f"overtrained_series_{m}"] = {"refused": r["refused"]}
            else:
                x = np.round(col[after] / r_) * r_   # ties below the resolution, as above
                c[f"overtrained_series_{m}"] = series_correlation(x, loss[after])
            for k in ("spearman", "spearman_p", "pearson", "pearson_p"):
                c[f"overtrained_{k}_{m}"] = r[k]
            c[f"overtrained_pairs_{m}"] = r["n"]


def _stretch_claims(c, stretches) -> None:
    """The widest critical stretch and the first order->chaos one (into ``c``)."""
    nan = math.nan
    o2c = [st for st in stretches if st.kind == "order_to_chaos"]
    if stretches:
        widest = max(stretches, key=lambda st: (st.width, -st.start_epoch))
        c["widest_stretch_width"] = widest.width
        c["widest_stretch_centre_epoch"] = widest.centre_epoch
        c["widest_stretch_kind"] = widest.kind
    else:
        c["widest_stretch_width"] = c["widest_stretch_centre_epoch"] = nan
        c["widest_stretch_kind"] = None
    c["first_transition_stretch_width"] = o2c[0].width if o2c else nan
    c["first_transition_stretch_is_widest"] = (
        bool(o2c[0].width >= max(st.width for st in stretches)) if o2c else None)


# ----------------------------------------------------------------------------- seeds pooled

#: boolean claims compared across seeds: key in claims -> description.  Every p-value is the
#: Holm-adjusted one of the run's family (mdesc.sweep.controls.FAMILY); the phases are the one
#: combined label's (unless another labelling was asked for).
POOLED_CLAIMS = {
    "has_order_chaos_transition": "at least one order<->chaos transition",
    "global_min_at_first_order_to_chaos": "global test-loss optimum at the first order->chaos "
                                          "transition (within the window)",
    "minima_at_events_significant": "test-loss minima sit at stability events more often than "
                                    "random events (uniform null, Holm p < 0.05)",
    "drops_at_events_significant": "sharp test-loss drops sit at stability events more often "
                                   "than random events (uniform null, Holm p < 0.05)",
    "minima_at_events_beyond_controls": "test-loss minima sit at stability events beyond "
                                        "parameter change and training-loss spikes (stratified "
                                        "null and logistic LRT, both Holm p < 0.05)",
    "drops_at_events_beyond_controls": "sharp test-loss drops sit at stability events beyond "
                                       "parameter change and training-loss spikes (stratified "
                                       "null and logistic LRT, both Holm p < 0.05)",
    "drops_at_spikes_significant": "placebo: sharp test-loss drops sit at training-loss spikes "
                                   "(uniform null, Holm p < 0.05)",
    "overtrained_loss_rises_with_chaos": "after the global optimum, test loss rises with "
                                         "lambda_1: levels (circular-shift null) and changes "
                                         "both Spearman > 0 with Holm p < 0.05",
}


def _holm_sig(claims, key, sub) -> bool | None:
    for row in claims.get("tests") or family(claims):
        if row["key"] == key and row["test"] == sub:
            return None if row["p_holm"] is None else bool(row["p_holm"] < 0.05)
    return None


def seed_claims(claims: dict[str, Any]) -> dict[str, bool | None]:
    """The booleans of :data:`POOLED_CLAIMS` for one run (None where refused/undefined)."""
    def beyond(key):
        a, b = _holm_sig(claims, key, "stratified"), _holm_sig(claims, key, "logistic")
        return None if a is None and b is None else bool(a and b)

    first = claims.get("first_transition_within_window_of_global_min")
    corr = claims.get("overtrained_series_lyapunov") or {}
    rises = None
    if corr and not corr.get("refused") and corr.get("levels") is not None:
        # a shared drift moves the levels together; only changes that co-vary are evidence
        sig = _holm_sig(claims, "overtrained_series_lyapunov", "levels_p_shift")
        sig_d = _holm_sig(claims, "overtrained_series_lyapunov", "differences_p")
        rises = None if sig is None else bool(
            corr["levels"] > 0 and sig and (corr.get("differences") or 0) > 0 and sig_d)
    return {
        "has_order_chaos_transition": bool(claims.get("n_transitions", 0) > 0),
        "global_min_at_first_order_to_chaos": first,
        "minima_at_events_significant": _holm_sig(claims, "minima_at_events", "uniform"),
        "drops_at_events_significant": _holm_sig(claims, "drops_at_events", "uniform"),
        "minima_at_events_beyond_controls": beyond("minima_at_events"),
        "drops_at_events_beyond_controls": beyond("drops_at_events"),
        "drops_at_spikes_significant": _holm_sig(claims, "drops_at_spikes", None),
        "overtrained_loss_rises_with_chaos": rises,
    }


def pool(names: Sequence[str], claims_list: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed claims and, for each, the number of seeds (with a defined answer) holding it,
    with a 95 % Wilson interval on the fraction."""
    per = {n: seed_claims(c) for n, c in zip(names, claims_list)}
    frac = {}
    for key, text in POOLED_CLAIMS.items():
        fi = fraction_interval([v[key] for v in per.values()])
        frac[key] = {"claim": text, "holds": fi["k"], "defined": fi["n"], "seeds": len(per),
                     "fraction": fi["fraction"] if fi["n"] else None,
                     "interval": fi["interval"] if fi["n"] else None}
    return {"per_seed": per, "pooled": frac}
