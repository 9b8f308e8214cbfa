"""`mdesc glassy`: width sweeps of deep RNNs on the Bach chorales (study 2).

    mdesc glassy sweep   --out DIR [--depths 1 2] [--widths 4 8 16 32] [--device cpu] ...
    mdesc glassy analyze DIR

`sweep` trains one run per (depth, width) (each resumable: re-running the same command
continues where it stopped), then fits and plots; `analyze` redoes the fits and figures of a
finished sweep folder. The defaults run on one CPU core in about two minutes.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

SWEEP_FILE = "sweep.json"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "glassy", help="glassy dynamics near the learnability transition (deep RNN, Bach chorales)",
        description="Width sweeps of deep recurrent nets trained by SGD on the four-part Bach "
        "chorales: power-law loss decay, learning-time divergence at a critical width, aging.")
    sub = parser.add_subparsers(dest="glassy_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    sw = sub.add_parser("sweep", help="train a (depth, width) sweep, then fit and plot",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sw.add_argument("--out", required=True, help="sweep folder (runs/, figures, tables)")
    sw.add_argument("--depths", type=int, nargs="+", default=[1, 2])
    sw.add_argument("--widths", type=int, nargs="+", default=[4, 8, 16, 32])
    sw.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn",
                    help="recurrent cell (rnn = vanilla tanh)")
    sw.add_argument("--steps", type=int, default=2000, help="SGD updates per run")
    sw.add_argument("--lr", type=float, default=1.0, help="SGD learning rate")
    sw.add_argument("--momentum", type=float, default=0.0)
    sw.add_argument("--grad-clip", type=float, default=1.0,
                    help="clip the gradient norm to this (0: no clipping)")
    sw.add_argument("--batch-size", type=int, default=4,
                    help="chorales per SGD update (0: all training chorales)")
    sw.add_argument("--data", choices=["music21", "fixture"], default="music21",
                    help="music21: all chorales (parsed once, cached); fixture: the 8 shipped "
                    "with mdesc")
    sw.add_argument("--n-train", type=int, default=8,
                    help="training chorales (the first of the seeded training split; 0: all)")
    sw.add_argument("--n-test", type=int, default=32, help="held-out chorales to evaluate")
    sw.add_argument("--test-fraction", type=float, default=0.2)
    sw.add_argument("--seq-len", type=int, default=64,
                    help="keep each chorale's first SEQ_LEN 16th-note steps (0: whole chorales)")
    sw.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 0.5],
                    help="training-loss thresholds (nats per voice and step) for t*")
    sw.add_argument("--fit-from", type=float, default=0.05,
                    help="fit the power law from t >= FIT_FROM * steps")
    sw.add_argument("--n-records", type=int, default=40, help="log-spaced loss records per run")
    sw.add_argument("--n-lags", type=int, default=20, help="lags per aging waiting time")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    sw.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    sw.add_argument("--no-progress", action="store_true", help="no progress bars")
    sw.set_defaults(func=cmd_sweep)

    an = sub.add_parser("analyze", help="redo the fits and figures of a finished sweep folder",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    an.add_argument("out", help="a folder written by `mdesc glassy sweep`")
    an.add_argument("--thresholds", type=float, nargs="+", default=None,
                    help="override the sweep's loss thresholds")
    an.add_argument("--fit-from", type=float, default=None,
                    help="override the sweep's power-law fit start (fraction of steps)")
    an.set_defaults(func=cmd_analyze)


# ----------------------------------------------------------------------------------------------

def _load_data(args):
    from mdesc.cli import UserError
    from mdesc.data import chorales as ch

    if args.data == "fixture":
        allc = ch.load_fixture_chorales()
    else:
        try:
            allc = ch.load_chorales(progress=not args.no_progress)
        except ImportError as e:
            raise UserError(f"{e}; or use --data fixture for the chorales shipped with mdesc")
    vocab = ch.VoiceVocabulary.from_grids(allc.grids)
    train, test = allc.split(args.test_fraction, seed=args.seed)
    if args.n_train < 0 or args.n_train > len(train):
        raise UserError(f"--n-train {args.n_train}: the training split has {len(train)} "
                        "chorales; pass at most that (0 = all)")
    if args.n_train:
        train = train.subset(range(args.n_train))
    test = test.subset(range(min(args.n_test, len(test))))
    max_len = args.seq_len or None
    tok, lens = ch.padded_tokens(train, vocab, max_len)
    data = {"train": (tok, lens)}
    if len(test):
        data["test"] = ch.padded_tokens(test, vocab, max_len)
    info = {"source": args.data, "n_chorales_available": len(allc),
            "train_names": train.names, "test_names": test.names,
            "seq_len": max_len, "steps_per_quarter": ch.STEPS_PER_QUARTER,
            "vocab_low": list(vocab.low), "vocab_high": list(vocab.high),
            "encoding": "16th-note grid; per voice token 0 = rest, 1 + pitch - low = pitch; "
                        "input = concatenated one-hots; targets = next step of all 4 voices"}
    return data, vocab, info


def cmd_sweep(args) -> int:
    import torch

    from mdesc import glassy
    from mdesc.cli import UserError

    for name in ("steps", "n_records", "n_lags", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.widths) < 1 or min(args.depths) < 1:
        raise UserError("--widths and --depths must be >= 1")
    if args.steps < 16:
        raise UserError("--steps must be >= 16 for log-spaced records and aging waiting times")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device available; use --device cpu")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    data, vocab, data_info = _load_data(args)
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "no_progress")}
    settings["vocab_sizes"] = list(vocab.sizes)
    _write_json(out / SWEEP_FILE, {"settings": settings, "data": data_info})

    tok, lens = data["train"]
    ttok, tlens = data.get("test", (None, None))
    runs = [(d, w) for d in args.depths for w in args.widths]
    progress = not args.no_progress
    for i, (d, w) in enumerate(runs):
        cfg = glassy.GlassyConfig(width=w, depth=d, cell=args.cell, steps=args.steps, lr=args.lr,
                                  momentum=args.momentum,
                                  grad_clip=args.grad_clip if args.grad_clip > 0 else None,
                                  batch_size=args.batch_size or None, n_records=args.n_records,
                                  n_lags=args.n_lags, seed=args.seed, device=args.device)
        try:
            run = glassy.train_glassy_run(_run_dir(out, d, w), tok, lens, cfg, vocab.sizes,
                                          ttok, tlens, data_info=data_info, progress=progress)
        except ValueError as e:
            raise UserError(str(e))
        print(f"[{i + 1}/{len(runs)}] depth {d} width {w}: final training loss "
              f"{run.train_loss[-1]:.4f} after {cfg.steps} steps ({run.info['wall_s']:.1f} s)",
              flush=True)
    return _analyze(out, args.depths, args.widths, args.thresholds, args.fit_from, settings)


def cmd_analyze(args) -> int:
    from mdesc.cli import UserError

    out = Path(args.out)
    if not (out / SWEEP_FILE).exists():
        raise UserError(f"{out} has no {SWEEP_FILE}: give a folder written by "
                        "`mdesc glassy sweep`")
    settings = json.loads((out / SWEEP_FILE).read_text())["settings"]
    thresholds = args.thresholds or settings["thresholds"]
    fit_from = settings["fit_from"] if args.fit_from is None else args.fit_from
    return _analyze(out, settings["depths"], settings["widths"], thresholds, fit_from, settings)


def _run_dir(out: Path, depth: int, width: int) -> Path:
    return out / "runs" / f"d{depth}_w{width}"


# ----------------------------------------------------------------------------------------------

def _analyze(out: Path, depths, widths, thresholds, fit_from, settings) -> int:
    from mdesc import glassy
    from mdesc.cli import UserError

    runs = {}
    missing = []
    for d in depths:
        for w in widths:
            try:
                runs[(d, w)] = glassy.load_glassy_run(_run_dir(out, d, w))
            except FileNotFoundError:
                missing.append(f"d{d}_w{w}")
    if missing:
        raise UserError(f"unfinished runs in {out}: {', '.join(missing)}; re-run the sweep "
                        "command to finish them")
    result = glassy.analyze_sweep(runs, thresholds, fit_from)
    result["settings"] = settings
    result["analysis"] = {"thresholds": list(thresholds), "fit_from": fit_from}
    result["aging_curves"] = {f"d{d}_w{w}": r.aging().to_dict() for (d, w), r in runs.items()}
    _write_json(out / "fits.json", result)
    _write_csv(out / "fits.csv", result["runs"])
    _write_csv(out / "critical_width.csv", result["critical_width"])
    _plot_losses(out / "loss_curves.png", runs, result, thresholds)
    _plot_learning_time(out / "learning_time.png", result, thresholds)
    _plot_aging(out / "aging.png", runs, result)
    _print_summary(result)
    print(f"wrote {out}/fits.json, fits.csv, critical_width.csv, loss_curves.png, "
          "learning_time.png, aging.png")
    return 0


def _print_summary(result) -> None:
    print("depth width  final_loss  L_inf (+-err)        alpha (+-err)    aging ratio")
    for r in result["runs"]:
        print(f"{r['depth']:5d} {r['width']:5d}  {r['final_train_loss']:10.4f}  "
              f"{r.get('l_inf', math.nan):.4f} ({r.get('l_inf_err', math.nan):.2g})"
              f"{'*' if r.get('l_inf_positive') else ' '}      "
              f"{r.get('alpha', math.nan):.3f} ({r.get('alpha_err', math.nan):.2g})     "
              f"{r['aging_ratio']:.3g}")
    print("(* = L_inf > 0 at the 5% level)")
    for c in result["critical_width"]:
        if "w_c" in c:
            print(f"depth {c['depth']}, threshold {c['threshold']:g}: w_c = {c['w_c']:.3g} "
                  f"+- {c['w_c_err']:.2g} from {c['n_points']} widths"
                  + (" (at search bound: no divergence seen)" if c["w_c_at_bound"] else ""))
        else:
            print(f"depth {c['depth']}, threshold {c['threshold']:g}: {c['error']}")


# ----------------------------------------------------------------------------------------------
# files and figures

def _write_json(path: Path, obj) -> None:
    from mdesc.store import atomic_write_text
    from mdesc.glassy import _jsonable

    text = json.dumps(_jsonable(obj), indent=1)
    atomic_write_text(path, text)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from mdesc.store import atomic_write_text

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _save_fig(fig, path: Path) -> None:
    from mdesc.store import atomic_write

    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))


def _plot_losses(path: Path, runs, result, thresholds) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mdesc.glassy import fit_power_law

    depths = sorted({d for d, _ in runs})
    widths = sorted({w for _, w in runs})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.2), squeeze=False,
                             sharey=True)
    fit_from = result["analysis"]["fit_from"]
    for ax, d in zip(axes[0], depths):
        for i, w in enumerate(widths):
            run = runs.get((d, w))
            if run is None:
                continue
            c = cmap(i / max(len(widths) - 1, 1))
            m = run.times > 0
            ax.loglog(run.times[m], run.train_loss[m], "o-", ms=2.5, lw=1, color=c,
                      label=f"w={w}")
            try:
                fit = fit_power_law(run.times, run.train_loss,
                                    t_min=max(1.0, fit_from * run.config.steps))
                tt = np.geomspace(fit.t_min, fit.t_max, 100)
                ax.loglog(tt, fit.predict(tt), "--", color=c, lw=0.9)
            except (ValueError, RuntimeError):
                pass
        for thr in thresholds:
            ax.axhline(thr, color="0.6", lw=0.7, ls=":")
        ax.set_title(f"depth {d}: training loss (dashed: L_inf + A t^-alpha)", fontsize=9)
        ax.set_xlabel("SGD step t")
        ax.grid(True, which="both", alpha=0.2)
    axes[0][0].set_ylabel("training cross-entropy (nats / voice / step)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)


def _plot_learning_time(path: Path, result, thresholds) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["runs"]
    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    markers = "osD^v<>"
    k = 0
    for d in depths:
        for thr in thresholds:
            color = f"C{k}"
            k += 1
            ws = np.array([r["width"] for r in rows if r["depth"] == d], dtype=float)
            ts = np.array([r[f"t_star@{thr:g}"] for r in rows if r["depth"] == d], dtype=float)
            fin = np.isfinite(ts)
            crit = next(c for c in result["critical_width"]
                        if c["depth"] == d and c["threshold"] == thr)
            label = f"d={d}, L*={thr:g}"
            if "w_c" in crit:
                label += f": w_c={crit['w_c']:.3g}±{crit['w_c_err']:.2g}"
            mk = markers[(k - 1) % len(markers)]
            axes[0].semilogy(ws[fin], ts[fin], mk, color=color, label=label)
            axes[1].plot(ws[fin], 1.0 / ts[fin], mk, color=color, label=label)
            if (~fin).any():  # never reached: drawn on the axis of 1/t*
                axes[1].plot(ws[~fin], np.zeros((~fin).sum()), mk, color=color, mfc="none")
            if "w_c" in crit:
                wg = np.linspace(max(crit["w_c"], 0) + 1e-3, ws.max() * 1.05, 200)
                wg = wg[wg > crit["w_c"]]
                axes[0].semilogy(wg, crit["C"] / (wg - crit["w_c"]), "-", color=color, lw=0.8)
                axes[1].plot(wg, (wg - crit["w_c"]) / crit["C"], "-", color=color, lw=0.8)
    axes[0].set_xlabel("width w")
    axes[0].set_ylabel("learning time t* (SGD steps)")
    axes[0].set_title("t* to reach the loss threshold; line: C/(w - w_c)", fontsize=9)
    axes[1].set_xlabel("width w")
    axes[1].set_ylabel("1 / t*")
    axes[1].set_title("1/t* is linear in w, zero at w_c (open: never reached)", fontsize=9)
    axes[1].axhline(0, color="0.5", lw=0.6)
    for ax in axes:
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)


def _plot_aging(path: Path, runs, result) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mdesc.glassy import aging_collapse

    depths = sorted({d for d, _ in runs})
    shown = []
    for d in depths:
        ws = sorted(w for dd, w in runs if dd == d)
        shown += [(d, ws[0])] + ([(d, ws[-1])] if len(ws) > 1 else [])
    fig, axes = plt.subplots(len(shown) + 1, 2, figsize=(10, 3.0 * (len(shown) + 1)),
                             squeeze=False)
    for row, key in enumerate(shown):
        curves = runs[key].aging()
        col = aging_collapse(curves)
        cmap = plt.get_cmap("plasma")
        for i, (tw, lag, delta) in enumerate(zip(curves.waiting_times, curves.lags,
                                                 curves.delta)):
            c = cmap(i / max(len(curves.lags) - 1, 1) * 0.85)
            ok = delta > 0
            axes[row][0].loglog(lag[ok], delta[ok], "o-", ms=2, lw=1, color=c,
                                label=f"tau_w={tw}")
            axes[row][1].loglog(lag[ok] / tw, delta[ok], "o-", ms=2, lw=1, color=c)
        d, w = key
        axes[row][0].set_title(f"d={d}, w={w}: Delta vs tau (spread {col.spread_raw:.3g})",
                               fontsize=9)
        axes[row][1].set_title(f"vs tau/tau_w (spread {col.spread_rescaled:.3g}; "
                               f"ratio {col.ratio:.3g})", fontsize=9)
        axes[row][0].set_ylabel("Delta(tau_w, tau)")
        axes[row][0].legend(fontsize=7)
        for ax in axes[row]:
            ax.grid(True, which="both", alpha=0.2)
    axes[len(shown) - 1][0].set_xlabel("lag tau (SGD steps)")
    axes[len(shown) - 1][1].set_xlabel("tau / tau_w")
    # last row: the collapse ratio across the sweep
    ax = axes[-1][0]
    for d in depths:
        rows = sorted((r for r in result["runs"] if r["depth"] == d), key=lambda r: r["width"])
        ax.semilogy([r["width"] for r in rows], [r["aging_ratio"] for r in rows], "o-",
                    label=f"depth {d}")
    ax.axhline(1.0, color="0.5", lw=0.7, ls=":")
    ax.set_xlabel("width w")
    ax.set_ylabel("spread(tau/tau_w) / spread(tau)")
    ax.set_title("aging collapse ratio (< 1: curves collapse under tau/tau_w)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.2)
    ax = axes[-1][1]
    for d in depths:
        rows = sorted((r for r in result["runs"] if r["depth"] == d), key=lambda r: r["width"])
        ax.plot([r["width"] for r in rows], [r.get("l_inf", np.nan) for r in rows], "o-",
                label=f"depth {d}")
    ax.set_xlabel("width w")
    ax.set_ylabel("fitted L_inf")
    ax.set_title("asymptotic training loss from the power-law fit", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)
