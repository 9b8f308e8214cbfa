"""Issue 26, step 5: the study's questions answered over the seeds of every campaign arm, from
committed files only (each arm's pooled.json from `campaign.py pool`, and each member's
history.json and the shared split in campaign/state/ from `campaign.py pack`).

    python results/multiple_descent/campaign/answers.py   # writes answers.md and answers.json

Every answer is a fraction of seeds with a 95% Wilson interval (or a mean with a t interval).
The stability labels, transitions and events are the sweep engine's (one label per checkpoint,
with its margins: docs/conventions.md); the spikes and drops use the engine's own detectors
(mdesc.sweep.controls.jumps) with the default PhaseSettings, so they are the ones the pooled
tests controlled for.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))
from mdesc.stats import fraction_interval, mean_interval, wilson_interval  # noqa: E402
from mdesc.sweep import controls  # noqa: E402
from mdesc.sweep.phases import PhaseSettings  # noqa: E402

#: the claims of the pooled table reported per arm (pooled.json -> pooled -> pooled)
POOLED_CLAIMS = ["has_order_chaos_transition", "global_min_at_first_order_to_chaos",
                 "minima_at_events_significant", "minima_at_events_beyond_controls",
                 "drops_at_events_significant", "drops_at_events_beyond_controls",
                 "drops_at_spikes_significant"]


def chance(arm_state: Path) -> float:
    """Accuracy of always answering the test split's most frequent label."""
    labels = load_file(str(arm_state / "data.safetensors"))["test_labels"]
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / counts.sum())


def member(history: dict, claims: dict, s: PhaseSettings, n_test: int, base: float) -> dict:
    """One seed's answers: learning, descents after overfitting, spikes, chaos."""
    val = np.asarray(history["val_loss"], float)
    i = int(np.nanargmin(val[1:])) + 1  # epoch 0 is the untrained model
    acc = float(history["test_acc"][i])
    lo, _ = wilson_interval(round(acc * n_test), n_test)
    train, test = history["train_loss"], np.asarray(history["test_loss"], float)
    start, drops, spikes = controls.loss_jumps(test, train, s.event_jump, s.noise_sigmas)

    def near_spike(g: int) -> bool:
        return any(abs(g - k) <= s.control_window for k in spikes)

    near = [g for g in drops if near_spike(g)]
    # chance: the share of the gaps a drop could sit in (after learning) that are that close
    gaps = np.arange(start, len(test) - 1)
    covered = float(np.mean([near_spike(g) for g in gaps])) if gaps.size else float("nan")
    verdicts = claims.get("verdict_counts") or {}
    return {"val_epoch": history["epoch"][i], "test_acc": acc, "test_loss": float(test[i]),
            "beats_chance": lo > base,
            "overtrained_cycles": claims.get("n_overtrained_cycles"),
            "spikes": len(spikes), "drops_after_learning": len(drops),
            "drops_near_spike": len(near), "spike_coverage": covered,
            "chaotic_checkpoints": int(verdicts.get("chaotic", 0)),
            "checkpoints": claims.get("n_checkpoints")}


def arm_answers(arm: str) -> dict | None:
    pooled_path = HERE / "pooled" / arm / "pooled.json"
    state = HERE / "state" / arm
    if not pooled_path.exists() or not state.is_dir():
        return None
    pooled = json.loads(pooled_path.read_text())
    s = PhaseSettings()
    base = chance(state)
    rows = {}
    for name, claims in pooled["claims"].items():
        folder = state / name
        history = json.loads((folder / "history.json").read_text())
        n_test = json.loads((folder / "config.json").read_text())["n_test"]
        rows[name] = member(history, claims, s, n_test, base)
    r = list(rows.values())
    drops = sum(x["drops_after_learning"] for x in r)
    return {
        "arm": arm, "seeds": len(r), "chance": base, "members": rows,
        "test_acc": mean_interval([x["test_acc"] for x in r]),
        "beats_chance": fraction_interval([x["beats_chance"] for x in r]),
        "descent_after_overfit": fraction_interval([x["overtrained_cycles"] >= 1 for x in r
                                                    if x["overtrained_cycles"] is not None]),
        "multiple_descents": fraction_interval([x["overtrained_cycles"] >= 2 for x in r
                                                if x["overtrained_cycles"] is not None]),
        "any_spike": fraction_interval([x["spikes"] > 0 for x in r]),
        "drops_near_spike": {"k": sum(x["drops_near_spike"] for x in r), "n": drops,
                             "interval": list(wilson_interval(
                                 sum(x["drops_near_spike"] for x in r), drops)),
                             # expected share if each seed's drops sat at random gaps
                             "chance": (sum(x["drops_after_learning"] * x["spike_coverage"]
                                            for x in r) / drops) if drops else None},
        "any_chaos": fraction_interval([x["chaotic_checkpoints"] > 0 for x in r]),
        "pooled": {k: pooled["pooled"]["pooled"].get(k) for k in POOLED_CLAIMS},
    }


def _frac(f: dict | None) -> str:
    if not f:
        return "—"
    k, n = f.get("k", f.get("holds")), f.get("n", f.get("defined"))
    if not n:
        return f"undefined (0 of {f.get('n_total', f.get('seeds', '?'))} seeds)"
    lo, hi = f["interval"]
    return f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def table(answers: list[dict]) -> str:
    head = ["question"] + [a["arm"] for a in answers]
    rows = [
        ("seeds", [str(a["seeds"]) for a in answers]),
        ("test acc at the val-chosen epoch, mean [95% CI]",
         [f"{a['test_acc']['mean']:.3f} [{a['test_acc']['lo']:.3f}, {a['test_acc']['hi']:.3f}]"
          for a in answers]),
        ("chance (majority label)", [f"{a['chance']:.3f}" for a in answers]),
        ("seeds above chance (Wilson lower bound)", [_frac(a["beats_chance"]) for a in answers]),
        (">= 1 descent cycle after the global optimum", [_frac(a["descent_after_overfit"])
                                                         for a in answers]),
        (">= 2 descent cycles after the global optimum (multiple descent)",
         [_frac(a["multiple_descents"]) for a in answers]),
        ("seeds with a training-loss spike", [_frac(a["any_spike"]) for a in answers]),
        ("test-loss drops within the control window (±1 checkpoint) of a training-loss spike, "
         "all seeds (chance: the share of gaps that close to a spike)",
         [_frac(a["drops_near_spike"]) + (f" (chance {a['drops_near_spike']['chance']:.2f})"
                                          if a["drops_near_spike"]["chance"] is not None else "")
          for a in answers]),
        ("seeds with any chaotic checkpoint", [_frac(a["any_chaos"]) for a in answers]),
    ]
    for key in POOLED_CLAIMS:
        claim = next((a["pooled"][key]["claim"] for a in answers if a["pooled"].get(key)), key)
        rows.append((claim, [_frac(a["pooled"].get(key)) for a in answers]))
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + name + " | " + " | ".join(vals) + " |" for name, vals in rows]
    return "\n".join(out) + "\n"


def main() -> int:
    found = {p.name for p in (HERE / "pooled").iterdir() if p.is_dir()} \
        if (HERE / "pooled").is_dir() else set()
    arms = sorted(found, key=lambda a: (a != "ng1k", a))  # the ten-seed setting first
    answers = [a for a in (arm_answers(arm) for arm in arms) if a]
    if not answers:
        print("no pooled arm with packed state yet: run campaign.py pool and pack first")
        return 1
    (HERE / "answers.json").write_text(json.dumps(answers, indent=1, default=float))
    text = table(answers)
    (HERE / "answers.md").write_text(text)
    _update_readme(text)
    print(text)
    return 0


def _update_readme(text: str) -> None:
    """The README's table between its markers, re-derived from the committed files."""
    path = HERE / "README.md"
    start, end = "<!-- answers: written by answers.py -->\n", "\n<!-- /answers -->"
    if path.exists() and start in (old := path.read_text()) and end in old:
        head, rest = old.split(start, 1)
        path.write_text(head + start + text.strip() + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    sys.exit(main())
