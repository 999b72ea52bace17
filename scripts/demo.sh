#!/usr/bin/env bash
# The demo: every step is a plain `gliomaseg` command, so it doubles as a tutorial.
set -euo pipefail
OUT=${1:-demo_out}
G=${GLIOMASEG:-.venv/bin/gliomaseg}
rm -rf "$OUT"
start=$(date +%s)
echo "== 1/7 synthetic data in the kaggle_3m layout"
$G synth --out "$OUT/kaggle_synth" --patients 16 --slices 16 --seed 0
echo "== 2/7 prepare: CSVs, patient split, plots"
$G prepare --data-path "$OUT/kaggle_synth" --out "$OUT/data"
echo "== 3/7 train Unet-resnet18 from scratch (128 px, fp32 or bf16-mixed as measured here, cached slices)"
$G train --data "$OUT/data" --out "$OUT/run" --model unet --encoder resnet18 --image-size 128 \
  --epochs 8 --batch-size 8 --optimizer adam --lr 0.002 --scheduler cosine --precision auto --workers 0 --no-progress
echo "== 4/7 evaluate on the validation patients"
$G evaluate --checkpoint "$OUT/run/best.ckpt" --csv "$OUT/data/data_val.csv" --out "$OUT/eval"
echo "== 5/7 predict: masks, contour overlays, one GIF per patient"
$G predict --checkpoint "$OUT/run/best.ckpt" --input "$OUT/data/data_val.csv" --out "$OUT/predictions" --postprocess largest_3d
echo "== 6/7 export to ONNX (checked against PyTorch)"
$G export --checkpoint "$OUT/run/best.ckpt" --out "$OUT/model.onnx"
echo "== 7/7 predict again with ONNX Runtime, no torch"
$G predict --model "$OUT/model.onnx" --input "$OUT/data/data_val.csv" --out "$OUT/predictions_onnx"
echo
echo "demo finished in $(( $(date +%s) - start )) s; outputs under $OUT/:"
echo "  data/        CSVs, slices_per_patient.png, sample_slices.png"
echo "  run/         best.ckpt, last.ckpt, config.json, summary.json, logs (CSV, TensorBoard)"
echo "  eval/        summary.md, summary.json, slices.csv, patients.csv, patient_dice.png"
echo "  predictions/ <patient>/*_overlay.png, *_pred.png, <patient>.gif, predictions.csv, patients.csv"
echo "  model.onnx   and predictions_onnx/"
