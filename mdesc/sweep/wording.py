"""The report's words: the claims as rows people read, and the run's header, in the words of
the run's :class:`~mdesc.sweep.RunDescription` (its task, its loss, its held-out loss, its
probe); :func:`mdesc.sweep.report.write_report` lays them out."""
from __future__ import annotations

import html
from typing import Any

from mdesc.sweep.controls import describe
from mdesc.sweep.figures import _fmt
from mdesc.sweep.settings import RunDescription


def header(d: RunDescription) -> str:
    """The report's second line about the run: its task, its loss and held-out loss, its probe
    (HTML)."""
    e = html.escape
    return (f"<p class='sub'>{e(d.task)} · loss: <b>{e(d.loss)}</b> · held-out loss: "
            f"<b>{e(d.metric)}</b> · probe: {e(d.probe)}</p>")


def claims_rows(analysis, description: RunDescription | None = None) -> list[tuple[str, str]]:
    """The paper's claims as (what, measured value) rows, formatted for people, in the run's
    words (its held-out loss, its probe)."""
    d = description or RunDescription()
    c = analysis.claims
    w = c["window_epochs"]
    rows = [
        ("checkpoints analysed", _fmt(c["n_checkpoints"])),
        ("chaos measure for transitions", analysis.measure),
        ("transitions (order→chaos / chaos→order)",
         f"{c['n_order_to_chaos']} / {c['n_chaos_to_order']}"),
        ("first order→chaos transition (epoch)", _fmt(c["first_order_to_chaos_epoch"])),
        ("global test-loss minimum (epoch; loss)",
         f"{_fmt(c['global_min_epoch'])}; {_fmt(c['global_min_test_loss'])}"),
        ("first transition − global minimum (epochs)",
         _fmt(c["first_transition_minus_global_min"])),
        (f"test-loss local minima within ±{_fmt(w)} epochs of a transition",
         f"{c['n_minima_near_transition']} of {c['n_local_minima']} "
         f"(fraction {_fmt(c['minima_near_transition_fraction'], 3)}; by chance "
         f"{_fmt(c['minima_near_transition_chance'], 3)})"),
    ]
    rows += _overtrained_rows(c)
    for key, what in (("distance_refused", "D̃"), ("lyapunov_refused", "λ₁")):
        if c.get(key):
            rows.append((f"claims on {what}", f"refused: {c[key]}"))
    rows += [
        ("widest critical stretch (width in epochs; centre)",
         f"{_fmt(c['widest_stretch_width'])}; {_fmt(c['widest_stretch_centre_epoch'])}"),
        ("first order→chaos stretch width (epochs); is it the widest?",
         f"{_fmt(c['first_transition_stretch_width'])}; "
         f"{_fmt(c['first_transition_stretch_is_widest'])}"),
        ("descent cycles (all / after the global minimum)",
         f"{c['n_cycles']} / {c['n_overtrained_cycles']}"),
        ("cycles whose drop is faster than their rise",
         _of(c["fraction_cycles_sharp_drop"], c["n_cycles"])),
        ("cycles with a transition during the drop",
         _of(c["fraction_cycles_transition_in_drop"], c["n_cycles"])),
        ("mean chaotic fraction of checkpoints during rises",
         _fmt(c["mean_chaotic_fraction_rise"], 3)),
        ("agreement of D̃ and λ₁ labels", _fmt(c["label_agreement"], 3)),
        ("verdicts from λ₁ (zero-input) and D̃ together",
         ", ".join(f"{k} {v}" for k, v in c.get("verdict_counts", {}).items() if v) or "—"),
        ("stability events (λ₁ jumps / attractor rearrangements)",
         f"{c.get('n_events', 0)} gaps ({c.get('n_lyapunov_events', 0)} λ₁, "
         f"{c.get('n_structure_events', 0)} structure); sharp test-loss drops: "
         f"{len(c.get('drop_epochs', []))}"),
        ("placebo events (training-loss spikes / parameter jumps)",
         f"{len(c.get('spike_epochs', []))} / {len(c.get('param_jump_epochs', []))}"
         + (f" ({c['controls_note']})" if c.get("controls_note") else "")),
        ("initial learning phase ends (epoch); test-loss noise (robust, per checkpoint)",
         f"{_fmt(c.get('learning_phase_end_epoch'))}; {_fmt(c.get('test_loss_noise'), 3)}"),
        ("test-loss minima at events vs random events (permutation test)",
         _perm(c.get("minima_at_events"))),
        ("sharp test-loss drops at events vs random events (permutation test)",
         _perm(c.get("drops_at_events"))),
        ("sharp test-loss drops at events beyond parameter change and spikes",
         _perm((c.get("drops_at_events") or {}).get("stratified")) + "; "
         + _perm((c.get("drops_at_events") or {}).get("logistic"))),
        ("placebo: sharp test-loss drops at training-loss spikes",
         _perm(c.get("drops_at_spikes"))),
        ("twins: drive-end vs t = 0 perturbation", _twins_row(c.get("twins") or {}, d)),
        (f"recommended checkpoint (rule: {analysis.recommendation_rule})",
         (f"epoch {_fmt(analysis.recommended_epoch)}: " if analysis.recommended_epoch is not None
          else "none: ") + analysis.recommendation_reason),
        ("recommended checkpoint: test loss; excess over the global minimum",
         f"{_fmt(c['recommended_test_loss'])}; {_fmt(c['recommended_regret'])}"),
    ]
    return [(d.words(what), d.words(value)) for what, value in rows]


def _overtrained_rows(c: dict[str, Any]) -> list[tuple[str, str]]:
    """Test loss against each chaos measure after the global minimum: levels (circular-shift
    null) and changes, the naive p beside."""
    rows = []
    n_after = c.get("overtrained_n", 0)
    for m, name in (("distance", "D̃"), ("lyapunov", "λ₁")):
        refused = (c.get(f"overtrained_{m}") or {}).get("refused")
        if refused:
            rows.append((f"overtrained phase (after the global minimum, n = {n_after}): "
                         f"test loss vs {name}", f"refused: {refused}"))
        elif f"overtrained_spearman_{m}" in c:
            sc = c.get(f"overtrained_series_{m}") or {}
            rows.append((f"overtrained phase (after the global minimum, n = {n_after}): "
                         f"test loss vs {name} (both drift with training time)",
                         f"levels: Spearman {_fmt(c[f'overtrained_spearman_{m}'], 3)} "
                         f"(circular-shift p = {_fmt(sc.get('levels_p_shift'), 2)}; the naive "
                         f"p = {_fmt(c[f'overtrained_spearman_p_{m}'], 2)} treats the "
                         f"checkpoints as independent); changes: Spearman "
                         f"{_fmt(sc.get('differences'), 3)} "
                         f"(p = {_fmt(sc.get('differences_p'), 2)})"))
    return rows


def _perm(test) -> str:
    return describe(test)


def _twins_row(tw, d: RunDescription) -> str:
    if not tw.get("available"):
        return tw.get("reason", "—")
    return (f"labels differ at {tw['n_disagree']} of {tw['n_checkpoints']} checkpoints"
            + (f" (epochs {_short(tw['disagree_epochs'])})" if tw["n_disagree"] else "")
            + f"; t = 0 twins collapsed by the drive at {tw['n_any_collapsed']} checkpoints "
            f"(all {d.probe} at {tw['n_all_collapsed']}; mean fraction "
            f"{_fmt(tw['mean_collapsed_fraction'], 3)}): collapsed twins are not evidence of order")


def _short(values, k: int = 8) -> str:
    out = ", ".join(_fmt(v) for v in values[:k])
    return out + (", …" if len(values) > k else "")


def _of(fraction: float, n: int) -> str:
    """'k of n' for a fraction of n items (an em dash when n == 0)."""
    return f"{round(fraction * n)} of {n}" if n else "—"
