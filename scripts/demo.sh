#!/usr/bin/env bash
# The demo: every step is a plain `gliomaseg` command, so it doubles as a tutorial.
set -euo pipefail
OUT=${1:-demo_out}
G=${GLIOMASEG:-.venv/bin/gliomaseg}
rm -rf "$OUT"
echo "== 1/2 synthetic data (kaggle_3m layout)"
$G synth --out "$OUT/kaggle_synth" --patients 16 --slices 16 --seed 0
echo "== 2/2 prepare: CSVs, patient split, plots"
$G prepare --data-path "$OUT/kaggle_synth" --out "$OUT/data"
echo
echo "demo outputs under $OUT/: data CSVs and plots in $OUT/data"
echo "(training, evaluation and prediction join the demo as they land)"
