"""Inference throughput at the model's size, side by side: eager fp32, ONNX Runtime fp32, ONNX Runtime int8.

For Unet-resnet18 (a checkpoint given with --checkpoint, else a randomly initialised one: speed does not
depend on the weights, agreement and Dice do) and for the shipped model (``gliomaseg.assets``) when the
package carries one. Per model:

- slices/s of eager fp32 at batch 1 (the case study's way), eager fp32 channels_last at --batch (micro-batches
  of 2), ONNX Runtime fp32 and int8 at --batch (threads and micro-batch as ``predict`` chooses them);
- the int8 model's check against fp32 on the validation CSV (mask pixel agreement, per-patient Dice, as
  ``gliomaseg export --quantize int8`` does, calibrated on --calibration-slices training slices); for the shipped
  model, the int8 file that ships beside it and the check stored in it (quantized here only when none ships);
- the shipped model's eager rows use its architecture (decoder widths included) with random weights;
- one patient end to end (read, predict, masks, overlays, GIF) with each ONNX model, and where the time goes.

    .venv/bin/python benchmarks/inference_throughput.py [--checkpoint runs/x/best.ckpt] [--slices 64] [--shipped-only] [--quick]

--quick: 16 slices, calibration on 16 slices, the check on 2 validation patients (to see that it runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, prepared_data, print_table, write_results  # noqa: E402

from gliomaseg.core.parallel import thread_map  # noqa: E402
from gliomaseg.data.files import read_image  # noqa: E402
from gliomaseg.data.overlay import encode_png, overlay_contours, write_gif  # noqa: E402
from gliomaseg.data.sources import open_source  # noqa: E402
from gliomaseg.export.quantization import write_variant  # noqa: E402
from gliomaseg.inference.onnx_backend import OnnxPredictor  # noqa: E402
from gliomaseg.inference.segment import predict_probabilities  # noqa: E402
from gliomaseg.inference.torch_backend import TorchPredictor, load_checkpoint  # noqa: E402
from gliomaseg.inference.variants import check_problem, variant_path  # noqa: E402
from gliomaseg.modeling.models import build_model  # noqa: E402
from gliomaseg.modeling.spec import read_onnx_metadata  # noqa: E402
from gliomaseg.predict.files import predict  # noqa: E402


def timed(fn, images: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    fn(images[:batch])  # warm-up
    started = time.perf_counter()
    out = [fn(images[i : i + batch]) for i in range(0, len(images), batch)]
    return len(images) / (time.perf_counter() - started), np.concatenate(out)


def checkpoint_for_bench(path: str | None, work: Path) -> Path:
    """A real checkpoint: the one given, else a freshly initialised Unet-resnet18 at 256 saved like training does."""
    if path:
        return Path(path)
    from gliomaseg.training.task import SegmentationTask

    task = SegmentationTask(arch="Unet", encoder="resnet18", image_size=256, scheduler="none")
    ckpt = work / "bench.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    return ckpt


def stages(predictor, patient_csv: Path, out: Path, batch: int) -> dict[str, float]:
    """Seconds per stage of ``predict`` for one patient, each stage timed alone (same steps as predict())."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    patients, _ = open_source(patient_csv)
    images = thread_map(lambda item: item.image(), [item for patient in patients for item in patient.slices])
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    probs = predict_probabilities(predictor, images, batch)
    seconds["predict"] = time.perf_counter() - t
    t = time.perf_counter()
    masks = [(p > predictor.threshold).astype(np.uint8) for p in probs]
    # on the slice threads, as predict() writes them
    thread_map(lambda i: (out / f"{i}_pred.png").write_bytes(encode_png(masks[i] * 255)), range(len(masks)))
    seconds["masks"] = time.perf_counter() - t
    t = time.perf_counter()
    frames = thread_map(lambda i: overlay_contours(images[i], prediction=masks[i], legend=True), range(len(masks)))
    thread_map(lambda i: (out / f"{i}_overlay.png").write_bytes(encode_png(frames[i])), range(len(frames)))
    seconds["overlays"] = time.perf_counter() - t
    t = time.perf_counter()
    write_gif(frames, out / "patient.gif")
    seconds["gif"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in seconds.items()}


def bench_model(label: str, eager: TorchPredictor | None, fp32_onnx: Path | None, int8_onnx: Path, images: np.ndarray,
                patient_csv: Path, n_patient: int, batch: int, work: Path, eager_same_weights: bool = True) -> list[dict]:
    """Speed rows of one model; mask agreement is against the first row that carries the model's weights."""
    rows, reference = [], None
    paths = []
    if eager is not None:
        paths += [(f"{label}: eager fp32, batch 1 (case study)", eager, 1)]
        paths += [(f"{label}: eager fp32 channels_last, batch {batch} (micro-batches of 2)", eager, batch)]
    onnx = {}
    for name, path in (("fp32", fp32_onnx), ("int8", int8_onnx)):
        if path is None:
            continue
        onnx[name] = OnnxPredictor(path)
        print(f"{label} ORT {name}: {onnx[name].settings.message()}", flush=True)
        paths.append((f"{label}: onnxruntime {name}, batch {batch} ({onnx[name].settings.threads} threads, "
                      f"micro-batch {onnx[name].micro_batch})", onnx[name], batch))
    for name, predictor, b in paths:
        rate, probs = timed(predictor.probabilities, images, b)
        masks = probs > predictor.threshold
        if isinstance(predictor, TorchPredictor) and not eager_same_weights:
            agreement = "- (random weights: speed only)"
        else:
            reference = masks if reference is None else reference
            agreement = f"{(masks == reference).mean():.5f}"
        rows.append({"path": name, "slices_per_s": round(rate, 2), "mask_agreement_vs_first_row": agreement})
        print(f"{name}: {rate:.2f} slices/s", flush=True)
    for name, predictor in onnx.items():
        folder = work / f"e2e-{label}-{name}".replace(" ", "_")
        started = time.perf_counter()
        predict(predictor, patient_csv, folder, batch_size=batch)
        seconds = time.perf_counter() - started
        split = folder / "stages"
        split.mkdir()
        rows.append({"path": f"{label}: end to end, one patient of {n_patient} slices, onnxruntime {name}",
                     "seconds_per_patient": round(seconds, 2), "slices_per_s": round(n_patient / seconds, 2),
                     "stages_s": json.dumps(stages(predictor, patient_csv, split, batch))})
        print(rows[-1], flush=True)
    return rows


def int8_variant(fp32: Path, out: Path, data: Path, check_csv: Path, calibration_slices: int) -> tuple[Path, dict]:
    started = time.perf_counter()
    # A random-init model has no meaningful Dice: the bound is 1 here, the numbers are reported.
    report = write_variant(fp32, out, "int8", check_csv=check_csv, calibration_csv=data / "data_train.csv",
                           calibration_slices=calibration_slices, max_dice_drop=1.0, validation_csvs=[data / "data_val.csv"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    return out, report


def check_row(label: str, report: dict) -> dict:
    return {"path": f"{label}: int8 vs fp32 on {report['check_slices']} slices / {report['check_patients']} patients",
            "mask_agreement_vs_first_row": f"{report['mask_agreement']:.5f}",
            "patient_dice": f"fp32 {report['patient_dice_fp32_mean']:.4f}, int8 {report['patient_dice_mean']:.4f}, "
                            f"largest drop {report['patient_dice_drop_max']:.4f}, mean |diff| {report['patient_dice_diff_mean_abs']:.4f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a Unet-resnet18 checkpoint (default: random init at 256 px)")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calibration-slices", type=int, default=128)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--shipped-only", action="store_true", help="only the shipped model's rows (no Unet-resnet18)")
    parser.add_argument("--quick", action="store_true", help="a short run to check that the benchmark works")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.calibration_slices = min(args.slices, 16), min(args.calibration_slices, 16)
    data, source = prepared_data(not args.synthetic)
    frame = pd.read_csv(data / "data_val.csv")
    work = Path(tempfile.mkdtemp(prefix="gliomaseg-bench-inf-"))
    check_csv = data / "data_val.csv"
    if args.quick:
        keep = list(dict.fromkeys(frame["patient"]))[:2]
        check_csv = work / "check.csv"
        frame[frame["patient"].isin(keep)].to_csv(check_csv, index=False)
    patient = frame["patient"].value_counts().index[0]
    patient_csv = work / "patient.csv"
    frame[frame["patient"] == patient].to_csv(patient_csv, index=False)
    n_patient = int((frame["patient"] == patient).sum())
    raw = [read_image(p) for p in frame["image_path"][: args.slices]]
    rows: list[dict] = []
    notes: list[str] = []

    import cv2

    def at(size: int) -> np.ndarray:
        return np.stack([im if im.shape[0] == size else cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in raw])

    # Unet-resnet18
    if not args.shipped_only:
        from gliomaseg.export.onnx import export_onnx

        ckpt = checkpoint_for_bench(args.checkpoint, work)
        eager = load_checkpoint(ckpt, channels_last=True)
        export_onnx(ckpt, work / "r18.onnx")
        int8, report = int8_variant(work / "r18.onnx", work / "r18-int8.onnx", data, check_csv, args.calibration_slices)
        label = f"Unet-resnet18 {eager.image_size}px ({'given checkpoint' if args.checkpoint else 'random init'})"
        notes.append(f"{label}: int8 calibrated on {report['calibration_slices']} training slices in {report['seconds']} s (quantize + check)")
        rows += bench_model(label, eager, work / "r18.onnx", int8, at(eager.image_size), patient_csv, n_patient, args.batch, work)
        rows.append(check_row(label, report))

    # The shipped model
    from gliomaseg.assets import shipped_model_path
    from gliomaseg.core.errors import CheckpointError

    try:
        shipped = shipped_model_path()
    except CheckpointError as exc:
        notes.append(f"shipped model: missing ({exc}); no rows for it")
        print(notes[-1], flush=True)
    else:
        probe = OnnxPredictor(shipped, micro_batch=1)
        meta, info = probe.meta, probe.info  # the shipped model's own description, decoder widths included
        shipped_label = f"shipped {info.arch}-{info.encoder} {info.image_size}px"
        # Eager speed does not depend on the weights: the same architecture, randomly initialised.
        shipped_eager = TorchPredictor(build_model(info.arch, info.encoder, decoder_channels=info.decoder_channels), info,
                                       channels_last=True)
        weights = meta.get("variant", {}).get("weights", "fp32")
        sibling = variant_path(shipped)
        if weights == "int8":
            fp32, shipped_int8 = None, shipped
            notes.append(f"{shipped_label}: the shipped file is int8 already; no ORT fp32 row")
        elif sibling.is_file() and check_problem(shipped, sibling) is None:
            # the int8 file that ships, with the check export stored in it (not a new quantization)
            fp32, shipped_int8 = shipped, sibling
            report = read_onnx_metadata(sibling)["variant"]
            rows.append(check_row(f"{shipped_label} (the shipped {sibling.name}, its stored check)", report))
        else:
            fp32 = shipped
            shipped_int8, report = int8_variant(shipped, work / "shipped-int8.onnx", data, check_csv, args.calibration_slices)
            rows.append(check_row(f"{shipped_label} (quantized here: no checked {sibling.name} ships)", report))
        rows += bench_model(shipped_label, shipped_eager, fp32, shipped_int8, at(info.image_size), patient_csv, n_patient, args.batch, work,
                            eager_same_weights=False)

    print()
    print(f"{len(raw)} validation slices; data: {source}")
    print(f"machine: {machine()}; onnxruntime settings as chosen by `predict --model` (ONNX)")
    for note in notes:
        print(note)
    print_table(rows, ["path", "slices_per_s", "mask_agreement_vs_first_row", "seconds_per_patient", "stages_s", "patient_dice"])
    print(f"wrote {write_results('inference_throughput_shipped' if args.shipped_only else 'inference_throughput', rows, {'data': source, 'machine': machine(), 'notes': notes, **vars(args)})}")


if __name__ == "__main__":
    main()
