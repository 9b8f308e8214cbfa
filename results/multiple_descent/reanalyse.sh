#!/usr/bin/env bash
# Issue 22: re-analyse every recorded study-1 run with the current engine (one label with error
# margins, placebo events, conditional tests, Holm over each report's family).  Needs no
# checkpoints: reports are redrawn from the committed sweep records and history.json.
# Run from the repository root:  bash results/multiple_descent/reanalyse.sh
set -euo pipefail
MDESC=${MDESC:-mdesc}
R=results/multiple_descent
P=$R/pang-lee-paper
for run in $R/default $R/rt-300-epochs $P/seed1 $P/seed2 $P/seed3 $P/variant-adam-lr5e-3 \
           $P/variant-adam-lr5e-3-seed2 $P/variant-adam-lr5e-3-seed3 $P/variant-sgd-lr0.5 \
           $P/probe-perturbation-0.1; do
  $MDESC descent report --run-dir "$run"
done
for s in 1 2 3; do                      # the 500-review sweeps are committed as sweep.tar.xz
  (cd "$P/seed$s-r500" && tar xJf sweep.tar.xz)
  $MDESC descent report --run-dir "$P/seed$s-r500"
done
$MDESC descent pool $P/seed1 $P/seed2 $P/seed3 --names seed1 seed2 seed3 --out $P/pooled
$MDESC descent pool $P/seed1-r500 $P/seed2-r500 $P/seed3-r500 \
    --names seed1-r500 seed2-r500 seed3-r500 --out $P/pooled-r500
$MDESC descent pool $P/variant-adam-lr5e-3 $P/variant-adam-lr5e-3-seed2 \
    $P/variant-adam-lr5e-3-seed3 --names adam-seed1 adam-seed2 adam-seed3 \
    --out $P/pooled-adam-lr5e-3
$MDESC descent pool $P/seed1-r500 $P/variant-sgd-lr0.5 --names seed1-r500 sgd-lr0.5 \
    --out $P/tables-single-runs
for s in 1 2 3; do rm -rf "$P/seed$s-r500/sweep"; done
