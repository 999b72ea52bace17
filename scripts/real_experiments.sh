#!/usr/bin/env bash
# The real-data experiments committed under docs/results/: split and encoders with the cpu preset.
set -euo pipefail
DATA=${1:-../shared/data/kaggle_3m}
OUT=${2:-runs/real}
G=${GLIOMASEG:-.venv/bin/gliomaseg}
$G prepare --data-path "$DATA" --out "$OUT/data"
$G experiment split --data "$OUT/data" --out "$OUT/experiments" --preset cpu
$G experiment encoders --data "$OUT/data" --out "$OUT/experiments" --preset cpu
$G report --runs "$OUT/experiments" --out "$OUT/report.html"
