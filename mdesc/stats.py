"""The statistics every report uses, in one place: intervals, multiple testing, event tests.

Pure numpy/scipy on arrays; no files, no torch.  Conventions:

- every test returns a dict with ``refused`` (``None``, or why the test cannot be made: too few
  values, values that do not vary beyond their resolution, ...) and, where it makes one, an
  effect size with a 95 % interval besides ``p_value``;
- random draws come from ``numpy.random.default_rng(seed)``: the same inputs give the same
  answer on every machine;
- p-values of permutation tests are ``(1 + #null >= observed) / (1 + draws)`` (never 0).

Intervals: :func:`mean_interval` (Student t over seeds), :func:`bootstrap_median`,
:func:`wilson_interval` / :func:`fraction_interval` (a fraction of runs).  Multiple testing:
:func:`holm`.  Events: :func:`event_hits_test` (targets near events, with a uniform, circular-shift
or stratified null), :func:`logistic_lrt` (does a regressor predict an outcome beyond others:
Firth-penalised logistic regression and its likelihood-ratio test).  Drifting series:
:func:`series_correlation` (levels with a circular-shift null, and differences).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats as _sp

__all__ = ["Z95", "mean_interval", "bootstrap_median", "wilson_interval", "fraction_interval",
           "holm", "event_hits_test", "NULLS", "logistic_lrt", "series_correlation"]

Z95 = 1.959963984540054


# ----------------------------------------------------------------------------- intervals

def mean_interval(values, confidence: float = 0.95) -> dict[str, Any]:
    """Mean and Student-t interval over the finite ``values`` (e.g. one per seed).

    Returns ``n`` (finite values), ``n_total``, ``mean``, ``sem``, ``lo``, ``hi``, ``median``,
    ``min``, ``max``; ``sem/lo/hi`` are NaN for n < 2, and ``sem = 0`` with ``lo = hi = mean``
    when all values are equal.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    fin = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(fin.size), "n_total": int(v.size)}
    if fin.size == 0:
        return out | {k: math.nan for k in ("mean", "sem", "lo", "hi", "median", "min", "max")}
    mean = float(fin.mean())
    out.update(mean=mean, median=float(np.median(fin)), min=float(fin.min()), max=float(fin.max()))
    if fin.size < 2:
        return out | {"sem": math.nan, "lo": math.nan, "hi": math.nan}
    sem = float(fin.std(ddof=1) / math.sqrt(fin.size))
    half = float(_sp.t.ppf(0.5 + confidence / 2, fin.size - 1)) * sem
    return out | {"sem": sem, "lo": mean - half, "hi": mean + half}


def bootstrap_median(values, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of the finite ``values`` and its percentile-bootstrap
    interval (``n_boot`` seeded resamples with replacement).  NaN for an empty sample."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    meds = np.median(x[rng.integers(0, x.size, (int(n_boot), x.size))], axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(meds, [a, 1 - a])
    return float(np.median(x)), float(lo), float(hi)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a fraction k/n (NaN, NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact ends for none / all (the formula leaves rounding residue like 5.6e-17 there)
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def fraction_interval(flags: Sequence[bool | None]) -> dict[str, Any]:
    """How many of the runs with a defined answer (``None`` = undefined) hold a claim:
    ``{"k", "n", "n_total", "fraction", "interval"}`` (Wilson, 95 %)."""
    defined = [bool(f) for f in flags if f is not None]
    k, n = sum(defined), len(defined)
    return {"k": k, "n": n, "n_total": len(flags), "fraction": k / n if n else math.nan,
            "interval": list(wilson_interval(k, n))}


# ----------------------------------------------------------------------------- multiple tests

def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (same order; ``None``/NaN entries
    are not tests and stay ``None``; the family is the rest).  Controls the family-wise error
    rate under any dependence between the tests."""
    p = [None if v is None or not math.isfinite(float(v)) else float(v) for v in p_values]
    idx = sorted((i for i, v in enumerate(p) if v is not None), key=lambda i: p[i])
    m, out, running = len(idx), [None] * len(p), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ----------------------------------------------------------------------------- event tests

NULLS = ("uniform", "circular", "stratified")


def _hits(event_pos: np.ndarray, target_pos: np.ndarray, reach: float) -> np.ndarray:
    """Per target: is an event within ``reach`` (positions in checkpoint units)?"""
    if event_pos.size == 0:
        return np.zeros(target_pos.size, dtype=bool)
    return np.min(np.abs(target_pos[:, None] - event_pos[None, :]), axis=1) <= reach + 1e-9


def _placements(null: str, usable: np.ndarray, events: np.ndarray, strata: np.ndarray | None,
                rng: np.random.Generator) -> np.ndarray:
    """One draw of event gaps under the null (see :func:`event_hits_test`)."""
    if null == "uniform":
        return rng.choice(usable, size=events.size, replace=False)
    if null == "circular":  # every event moves by one offset: their clustering is kept
        shift = rng.integers(0, usable.size)
        pos = np.searchsorted(usable, events)
        return usable[(pos + shift) % usable.size]
    out = []  # stratified: events re-drawn among the gaps of their own stratum
    for s in np.unique(strata[np.searchsorted(usable, events)]):
        pool = usable[strata == s]    # a stratum the events fill keeps them where they are
        count = int(np.sum(strata[np.searchsorted(usable, events)] == s))
        out.append(rng.choice(pool, size=count, replace=False))
    return np.concatenate(out)


def _refuse_events(ev, tp, usable, null, strata) -> str | None:
    if ev.size == 0:
        return "no events: nothing to test"
    if tp.size == 0:
        return "no targets: nothing to test"
    if not np.all(np.isin(ev, usable)):
        return "some events sit outside the usable gaps"
    if ev.size >= usable.size:
        return "events fill every gap: every placement gives the same count"
    if null == "stratified":
        if strata is None or len(strata) != usable.size:
            return "the stratified null needs one stratum per usable gap"
        held = [s for s in np.unique(strata) if np.any(np.isin(ev, usable[strata == s]))]
        if all(np.sum(np.isin(ev, usable[strata == s])) >= np.sum(strata == s) for s in held):
            return (f"events fill every stratum they occupy ({', '.join(map(str, held))}): "
                    "given the strata their placement is fixed, nothing to permute")
    return None


def event_hits_test(n_gaps: int, event_gaps, target_positions, *, tolerance: int = 1,
                    null: str = "uniform", strata=None, usable_gaps=None, draws: int = 10000,
                    seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Do targets sit at events more often than events placed by the null would make them?

    Positions are in checkpoint units: gap g (between checkpoints g and g+1) sits at g + 1/2, a
    checkpoint i at i; a target is *hit* when an event gap lies within ``tolerance + 1/2`` of it.
    ``event_gaps``: the gaps with an event; ``target_positions``: minima (integers) or drops
    (gap + 0.5); ``usable_gaps``: the gaps events may occupy (default all ``n_gaps``).

    Nulls: ``uniform`` (events anywhere among the usable gaps), ``circular`` (all events shifted
    by one random offset, so their clustering is kept), ``stratified`` (events re-drawn within
    their own stratum, ``strata`` = one label per usable gap, e.g. the size class of the
    parameter change: association *beyond* that covariate).

    Returns ``observed``/``expected`` hits, ``excess`` (observed - expected) with a 95 %
    bootstrap interval over targets, ``ratio`` (observed/expected), ``p_value`` (one-sided), and
    the settings; or ``refused`` with the reason.
    """
    if null not in NULLS:
        raise ValueError(f"null must be one of {NULLS}, got {null!r}")
    ev = np.unique(np.asarray(event_gaps, dtype=int))
    tp = np.asarray(target_positions, dtype=float).reshape(-1)
    usable = np.arange(n_gaps) if usable_gaps is None else np.unique(np.asarray(usable_gaps, int))
    st = None if strata is None else np.asarray(strata)
    out: dict[str, Any] = {"null": null, "n_events": int(ev.size), "n_targets": int(tp.size),
                           "n_gaps": int(usable.size), "tolerance": tolerance, "draws": draws,
                           "observed": None, "expected": None, "excess": None,
                           "excess_interval": None, "ratio": None, "p_value": None,
                           "refused": _refuse_events(ev, tp, usable, null, st)}
    if out["refused"]:
        return out
    reach = tolerance + 0.5
    observed = _hits(ev + 0.5, tp, reach)
    rng = np.random.default_rng(seed)
    null_hits = np.empty((draws, tp.size), dtype=bool)
    for k in range(draws):
        null_hits[k] = _hits(_placements(null, usable, ev, st, rng) + 0.5, tp, reach)
    per_target = null_hits.mean(axis=0)            # P(target hit) under the null
    counts = null_hits.sum(axis=1)
    obs, exp = int(observed.sum()), float(per_target.sum())
    boot = rng.integers(0, tp.size, (n_boot, tp.size))
    excess = (observed[boot] - per_target[boot]).sum(axis=1)
    out.update(observed=obs, expected=exp, excess=obs - exp,
               excess_interval=[float(v) for v in np.quantile(excess, [0.025, 0.975])],
               ratio=obs / exp if exp > 0 else math.inf,
               p_value=float((1 + np.sum(counts >= obs)) / (1 + draws)))
    return out


# ----------------------------------------------------------------------------- logistic model

def _firth_fit(y: np.ndarray, X: np.ndarray, iters: int = 100, tol: float = 1e-10):
    """Firth-penalised logistic regression (finite under separation): (beta, penalised
    log-likelihood, covariance)."""
    beta = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(X @ beta, -30, 30)))
        w = p * (1 - p)
        info = X.T @ (X * w[:, None])
        cov = np.linalg.pinv(info)
        h = w * np.einsum("ij,jk,ik->i", X, cov, X)          # leverages
        step = cov @ (X.T @ (y - p + h * (0.5 - p)))
        size = float(np.max(np.abs(step)))
        if size > 5:                                          # damp early overshoots
            step *= 5 / size
        beta = beta + step
        if size < tol:
            break
    p = 1 / (1 + np.exp(-np.clip(X @ beta, -30, 30)))
    w = p * (1 - p)
    info = X.T @ (X * w[:, None])
    sign, logdet = np.linalg.slogdet(info)
    loglik = float(np.sum(y * np.log(p + 1e-300) + (1 - y) * np.log(1 - p + 1e-300)))
    return beta, loglik + 0.5 * (logdet if sign > 0 else -np.inf), np.linalg.pinv(info)


def _standardise(columns: Sequence[np.ndarray]) -> np.ndarray:
    cols = [np.asarray(c, float) for c in columns]
    return np.column_stack([(c - c.mean()) / (c.std() or 1.0) for c in cols]) if cols else \
        np.empty((0, 0))


def logistic_lrt(outcome, tested, controls: dict[str, Sequence[float]] | None = None,
                 tested_name: str = "event") -> dict[str, Any]:
    """Does ``tested`` predict the binary ``outcome`` beyond the ``controls``?

    Fits ``logit P(outcome) = a + b * tested + sum c_j * control_j`` and the same without
    ``tested`` (Firth-penalised, so rare or perfectly separating events stay finite), and
    reports the likelihood-ratio test (chi2, 1 df), the odds ratio of ``tested`` per unit (per
    standard deviation for a continuous regressor) with its 95 % Wald interval, and the
    controls' odds ratios.  Controls are standardised; a control that does not vary is dropped
    (named in ``dropped``).  ``refused`` when the outcome or ``tested`` does not vary.
    """
    y = np.asarray(outcome, float).reshape(-1)
    t = np.asarray(tested, float).reshape(-1)
    controls = {k: np.asarray(v, float).reshape(-1) for k, v in (controls or {}).items()}
    out: dict[str, Any] = {"n": int(y.size), "tested": tested_name, "odds_ratio": None,
                           "odds_ratio_interval": None, "chi2": None, "p_value": None,
                           "controls": {}, "dropped": [], "refused": None}
    ok = np.isfinite(y) & np.isfinite(t)
    for v in controls.values():
        ok &= np.isfinite(v)
    y, t = y[ok], t[ok]
    out["n"] = int(y.size)
    if y.size < 4 or np.all(y == y[0]):
        out["refused"] = "the outcome does not vary (all events or none): nothing to predict"
        return out
    if np.all(t == t[0]):
        out["refused"] = f"{tested_name} does not vary: its effect cannot be estimated"
        return out
    kept = {k: v[ok] for k, v in controls.items() if np.ptp(v[ok]) > 0}
    out["dropped"] = sorted(set(controls) - set(kept))
    binary = set(np.unique(t)) <= {0.0, 1.0}
    t_col = t if binary else (t - t.mean()) / t.std()
    base = np.column_stack([np.ones_like(y)] + ([_standardise(list(kept.values()))]
                                                if kept else []))
    full = np.column_stack([base, t_col])
    b_full, ll_full, cov = _firth_fit(y, full)
    _, ll_base, _ = _firth_fit(y, base)
    chi2 = max(0.0, 2 * (ll_full - ll_base))
    se = math.sqrt(max(cov[-1, -1], 0.0))
    out.update(chi2=chi2, p_value=float(_sp.chi2.sf(chi2, 1)),
               odds_ratio=float(math.exp(b_full[-1])), per="unit" if binary else "standard deviation",
               odds_ratio_interval=[float(math.exp(b_full[-1] - Z95 * se)),
                                    float(math.exp(b_full[-1] + Z95 * se))],
               controls={k: float(math.exp(b)) for k, b in zip(kept, b_full[1:-1])})
    return out


# ----------------------------------------------------------------------------- drifting series

def series_correlation(x, y, *, shifts: int = 2000, seed: int = 0, min_shift: int | None = None
                       ) -> dict[str, Any]:
    """Spearman correlation of two series measured along one axis (e.g. per checkpoint), made
    honest for series that drift: ``levels`` (the correlation of the values) is tested against
    circular shifts of ``y`` relative to ``x``, which keep each series' own autocorrelation and
    trend; ``differences`` correlates the changes from one point to the next (a trend shared by
    both no longer counts).  Finite pairs only; ``refused`` for fewer than 8 pairs or a series
    that does not vary.  Callers check numerical resolution first (flat values are ties)."""
    x, y = np.asarray(x, float).reshape(-1), np.asarray(y, float).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    out: dict[str, Any] = {"n": n, "levels": None, "levels_p_shift": None,
                           "differences": None, "differences_p": None, "refused": None}
    if n < 8 or np.ptp(x) == 0 or np.ptp(y) == 0:
        out["refused"] = (f"only {n} finite pairs" if n < 8 else "a series does not vary")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = float(_sp.spearmanr(x, y).statistic)
        dx, dy = np.diff(x), np.diff(y)
        if np.ptp(dx) > 0 and np.ptp(dy) > 0:
            d = _sp.spearmanr(dx, dy)
            out.update(differences=float(d.statistic), differences_p=float(d.pvalue))
    lo = max(1, n // 10) if min_shift is None else min_shift  # shifts too small keep the pairing
    offsets = np.random.default_rng(seed).integers(lo, n - lo + 1, shifts) if n - lo >= lo else \
        np.arange(1, n)
    rx = _sp.rankdata(x)
    ry = _sp.rankdata(y)
    null = np.array([np.corrcoef(rx, np.roll(ry, int(s)))[0, 1] for s in offsets])
    out.update(levels=r, levels_p_shift=float((1 + np.sum(np.abs(null) >= abs(r))) /
                                              (1 + null.size)))
    return out
