"""The ``gliomaseg`` command: a thin argparse layer over the package's functions."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from gliomaseg.errors import GliomasegError, first_line
from gliomaseg.inference.variants import VARIANT_CHOICES

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def _ranged(kind: type, low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False) -> Callable[[str], int | float]:
    """An argparse type: ``kind(text)`` within [low, high] (open ends where asked); NaN, inf and anything else
    get argparse's one-line error naming the option, so no bad number reaches the package."""
    import math

    lo = "(" if open_low else "["
    hi = ")" if open_high else "]"
    expected = (f"a number in {lo}{low:g}, {high:g}{hi}" if low is not None and high is not None
                else f"a number {'>' if open_low else '>='} {low:g}" if low is not None else "a number")
    if kind is int:
        expected = expected.replace("a number", "an integer")

    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        bad = (not math.isfinite(value) or (low is not None and (value <= low if open_low else value < low))
               or (high is not None and (value >= high if open_high else value > high)))
        if bad:
            raise argparse.ArgumentTypeError(f"{text} is not {expected}")
        return value

    return convert


PROBABILITY = _ranged(float, 0, 1, open_low=True, open_high=True)
POSITIVE_INT = _ranged(int, 1)
POSITIVE = _ranged(float, 0, open_low=True)


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


@command("synth")
def _synth(args: argparse.Namespace) -> None:
    from gliomaseg.data.synth import generate

    summary = generate(args.out, patients=args.patients, slices=args.slices, seed=args.seed, size=args.size)
    print(f"wrote {summary.patients} synthetic patients, {summary.slices} slices "
          f"({summary.tumour_slices} with tumour) to {summary.out}")


@command("prepare")
def _prepare(args: argparse.Namespace) -> None:
    from gliomaseg.data.prepare import prepare

    result = prepare(
        args.data_path, args.out, split=args.split, train_size=args.train_size, seed=args.seed,
        folds=args.folds, skip_bad=args.skip_bad, plots=not args.no_plots,
    )
    print(f"{args.split} split of {args.data_path}:")
    print(result.summary.to_string(index=False))
    if len(result.skipped):
        print(f"skipped {len(result.skipped)} bad slice(s), listed in {Path(args.out) / 'skipped.csv'}")
    print("wrote " + ", ".join(str(p) for p in result.written))


@command("train")
def _train(args: argparse.Namespace) -> None:
    from gliomaseg.training import TrainConfig, train

    result = train(TrainConfig.from_dict({k: v for k, v in vars(args).items() if k != "command"}))
    s = result.summary
    if not s["train_images_this_session"]:
        print(f"{s['model']}-{s['encoder']} had no epochs left to train: it finished {s['epochs_completed']} epoch(s) "
              f"before (raise --epochs to train more); best val per-patient Dice {s['best_val_patient_dice']}")
    else:
        print(f"trained {s['model']}-{s['encoder']} for {s['epochs_completed']} epoch(s) in {s['train_seconds']:.0f} s "
              f"({s['train_images_per_second']:.1f} images/s); best val per-patient Dice {s['best_val_patient_dice']}")
    print(f"run folder: {result.out} (best.ckpt, last.ckpt, summary.json, MODEL_CARD.md)")


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> None:
    from gliomaseg.evaluation import evaluate
    from gliomaseg.inference.postprocess import PostProcess
    from gliomaseg.inference.predictor import open_predictor

    predictor = open_predictor(args.checkpoint, args.model, device=args.device, variant=args.variant)
    if getattr(predictor, "choice", None) is not None:
        print(predictor.choice.message())
    summary = evaluate(args.checkpoint, args.csv, args.out, batch_size=args.batch_size, compare=not args.no_compare,
                       postprocess=PostProcess.parse(args.postprocess), tta=args.tta, device=args.device, spacing=args.spacing,
                       predictor=predictor)
    print((Path(args.out) / "summary.md").read_text().split("## All smp metrics")[0])
    print(f"wrote {args.out}/slices.csv, patients.csv, summary.json, summary.md, patient_dice.png")


@command("predict")
def _predict(args: argparse.Namespace) -> None:
    from gliomaseg.inference.postprocess import PostProcess
    from gliomaseg.inference.predict import predict

    from gliomaseg.inference.predictor import open_predictor

    inputs = _predict_inputs(args)
    predictor = open_predictor(args.checkpoint, args.model, backend=args.backend, device=args.device, precision=args.precision,
                               variant=args.variant, threads=args.threads)
    if getattr(predictor, "choice", None) is not None:  # which variant of an ONNX model runs (fp32 / int8) and why
        print(predictor.choice.message())
    if hasattr(predictor, "settings"):  # ONNX Runtime: say which threads and micro-batch it chose
        print(predictor.settings.message())
    result = predict(predictor, inputs, args.out, threshold=args.threshold, batch_size=args.batch_size,
                     tta=args.tta, postprocess=PostProcess.parse(args.postprocess), fps=args.fps,
                     allow_grayscale=args.allow_grayscale, allow_16bit=args.allow_16bit)
    print(f"predicted {len(result.predictions)} slice(s) of {len(result.patients)} patient(s) into {result.out}")
    if len(result.patients):
        print(result.patients.drop(columns=[c for c in ("gif",) if c in result.patients]).to_string(index=False))
    if len(result.skipped):
        print(f"skipped {len(result.skipped)} file(s), listed in {result.out / 'skipped.csv'}", file=sys.stderr)


def _predict_inputs(args: argparse.Namespace):
    """``--input`` paths, or the DICOM series that ``--sequences`` names by role (``role=DIR`` entries or one mapping file)."""
    if (args.input is None) == (args.sequences is None):
        raise GliomasegError("predict needs --input PATH ... or --sequences pre=DIR flair=DIR post=DIR (or a mapping file), not both")
    if args.sequences is None:
        return args.input
    from gliomaseg.data.dicom import parse_sequences, read_mapping_file

    if len(args.sequences) == 1 and "=" not in args.sequences[0]:
        return read_mapping_file(Path(args.sequences[0]))
    return parse_sequences(args.sequences)


@command("score")
def _score(args: argparse.Namespace) -> None:
    from gliomaseg.evaluation import score

    score(args.pred, args.truth, args.out, spacing=args.spacing)
    print((Path(args.out) / "summary.md").read_text().split("## All smp metrics")[0])
    print(f"wrote {args.out}/slices.csv, patients.csv, summary.json, summary.md, patient_dice.png")


@command("convert")
def _convert(args: argparse.Namespace) -> None:
    from gliomaseg.data.convert import convert_to_dicom, convert_to_nifti

    if args.to == "dicom":
        table = convert_to_dicom(args.input, args.out, spacing=args.spacing)
        print(f"wrote {len(table)} patient(s) as DICOM cases <patient>/pre|flair|post/ + sequences.txt (+ <patient>_seg.dcm, "
              f"the truth) to {args.out}, voxels {', '.join(sorted(set(table['spacing_mm'])))} mm (listed in converted.csv)")
        return
    if args.spacing is not None:
        raise GliomasegError("convert --spacing is for --to dicom (NIfTI output keeps 1 mm voxels)")
    table = convert_to_nifti(args.input, args.out)
    print(f"wrote {len(table)} patient(s) as <patient>.nii.gz + <patient>_mask.nii.gz to {args.out} (listed in converted.csv)")


@command("export")
def _export(args: argparse.Namespace) -> None:
    from gliomaseg.export import export_onnx, export_variant, quantize_model

    if (args.checkpoint is None) == (args.model is None):
        raise GliomasegError("export needs --checkpoint (a training checkpoint) or --model (an fp32 ONNX model), not both")
    if args.model is not None:
        if not (args.quantize and args.check_csv):
            raise GliomasegError("export --model needs --quantize and --check-csv (validation slices; for int8 also --calibration-csv, "
                                 "training slices): an ONNX model does not name its CSVs")
        result = quantize_model(args.model, args.out, args.quantize, check_csv=args.check_csv, calibration_csv=args.calibration_csv,
                                calibration_slices=args.calibration_slices, max_dice_drop=args.max_dice_drop)
        _print_variant(result["variant"])
        print(f"wrote {result['path']} from {result['model']}")
        return
    if args.quantize:
        result = export_variant(args.checkpoint, args.out, args.quantize, opset=args.opset, calibration_csv=args.calibration_csv,
                                check_csv=args.check_csv, calibration_slices=args.calibration_slices, max_dice_drop=args.max_dice_drop,
                                sample=args.sample)
    else:
        result = export_onnx(args.checkpoint, args.out, opset=args.opset, sample=args.sample)
    print(f"fp32: ONNX Runtime vs PyTorch on {result['inputs']}: max abs logit difference {result['max_abs_diff']:.2e}, relative "
          f"{result['max_rel_diff']:.2e} (limit {result['rtol']:.0e}); masks agree on {result['mask_agreement']:.4%} of the pixels "
          f"(limit {result['min_agreement']:.2%}, {result['positive_pixels']} tumour pixels)")
    if result.get("variant"):
        _print_variant(result["variant"])
    print(f"wrote {result['path']}; model card {result['model_card']}")


def _print_variant(v: dict) -> None:
    if "calibration" in v:
        print(f"{v['weights']}: calibrated on {v['calibration_slices']} slices of {v['calibration_csv']} ({v['calibration']})")
    print(f"{v['weights']} vs fp32 on {v['check_slices']} slices of {v['check_patients']} patients ({v['check_csv']}): "
          f"mask pixel agreement {v['mask_agreement']:.5f}, {v['slices_with_different_masks']} slice(s) differ; "
          f"per-patient Dice mean {v['patient_dice_mean']:.4f} vs {v['patient_dice_fp32_mean']:.4f} "
          f"(drop {v['patient_dice_drop']:.4f}, limit {v['max_dice_drop_allowed']}), one patient's largest drop "
          f"{v['patient_dice_drop_max']:.4f} ({v['worst_patient']}; limit {v['max_single_patient_dice_drop_allowed']}); "
          f"{v['file_bytes'] / 1e6:.1f} MB vs {v['fp32_file_bytes'] / 1e6:.1f} MB")


@command("gif")
def _gif(args: argparse.Namespace) -> None:
    from gliomaseg.inference.predict import gif_from_folder

    print(f"wrote {gif_from_folder(args.input, args.out, fps=args.fps)}")


@command("experiment")
def _experiment(args: argparse.Namespace) -> None:
    from gliomaseg.experiments import run_experiment, shipped_experiments

    if args.list:
        for experiment in shipped_experiments():
            print(f"{experiment.name}: {len(experiment.runs)} runs ({', '.join(r.name for r in experiment.runs)}): {experiment.description}")
        return
    if not (args.name and args.data and args.out):
        raise GliomasegError("experiment needs NAME, --data and --out (or --list)")
    results = run_experiment(args.name, args.data, args.out, preset=args.preset, epochs=args.epochs, image_size=args.image_size,
                             max_time=args.max_time, only=args.only, include_extra=args.all)
    shown = [c for c in ("run", "patient_dice_mean", "patient_dice_mean_last", "iou_imagewise", "reference_iou", "epochs", "status") if c in results]
    print(results[shown].to_string(index=False))
    print(f"results in {results.attrs['folder']}/results.md")


@command("report")
def _report(args: argparse.Namespace) -> None:
    from gliomaseg.report import build_report

    print(f"wrote {build_report(args.runs, args.out)}")


@command("serve")
def _serve(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from gliomaseg.inference.postprocess import PostProcess
    from gliomaseg.inference.predictor import open_predictor
    from gliomaseg.serve.app import run_server
    from gliomaseg.serve.limits import ServeLimits
    from gliomaseg.serve.pipeline import SegmentOptions

    predictor = open_predictor(args.checkpoint, args.model, device=args.device, variant=args.variant)
    if getattr(predictor, "choice", None) is not None:
        print(predictor.choice.message())
    limits = ServeLimits()
    if args.max_upload_mb is not None:
        limits = replace(limits, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    if args.max_image_side is not None:
        limits = replace(limits, max_image_side=args.max_image_side)
    label = str(args.checkpoint or args.model or "shipped default model")
    options = SegmentOptions(threshold=args.threshold, tta=args.tta, postprocess=PostProcess.parse(args.postprocess))
    run_server(predictor, host=args.host, port=args.port, options=options, limits=limits, model_label=label)


def _number(text: str) -> int | float:
    """An int when the text is one (``--limit-train-batches 2``), else a float (``0.5``)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _add_dataclass_options(p: argparse.ArgumentParser, cls) -> None:
    """One option per dataclass field, named, typed and defaulted by the field itself.

    ``bool`` fields become ``--name`` (default False) or ``--no-name`` (default True); help comes from
    ``field(metadata={"help": ...})``, ``choices`` and ``hidden`` from the same metadata.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = f.name.replace("_", "-")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        help_text = f.metadata.get("help", f"{f.name} of {cls.__name__}")
        if f.metadata.get("hidden"):
            help_text = argparse.SUPPRESS
        elif default is not None and not isinstance(default, bool):
            help_text += f" (default: {default})"
        kind = hints[f.name]
        if kind is bool:
            if default:
                p.add_argument(f"--no-{flag}", dest=f.name, action="store_false", help=help_text)
            else:
                p.add_argument(f"--{flag}", dest=f.name, action="store_true", help=help_text)
            continue
        types = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
        convert = types[0] if len(types) == 1 else _number
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        p.add_argument(f"--{flag}", dest=f.name, type=convert, default=default, required=required,
                       choices=f.metadata.get("choices"), help=help_text)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from gliomaseg.training import TrainConfig  # imports torch: only done when the command is `train`

    _add_dataclass_options(p, TrainConfig)


def build_parser(command_name: str | None = None) -> argparse.ArgumentParser:
    """The parser; the ``train`` options (generated from ``TrainConfig``, which imports torch) are added
    only when ``command_name`` is ``train``, so the other commands stay torch-free."""
    from gliomaseg.choices import CALIBRATION_SLICES, DEFAULT_BATCH_SIZE, EXPORT_VARIANTS, MAX_DICE_DROP, MAX_PATIENT_DICE_DROP

    parser = argparse.ArgumentParser(prog="gliomaseg", description="Lower-grade glioma segmentation in brain MRI.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic MRI-like dataset in the kaggle_3m layout")
    p.add_argument("--out", required=True, type=Path, help="folder to write <patient>/<patient>_<k>.tif into")
    p.add_argument("--patients", type=POSITIVE_INT, default=12)
    p.add_argument("--slices", type=POSITIVE_INT, default=20, help="about this many slices per patient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=_ranged(int, 8, 4096), default=256, help="slice size in pixels (kaggle_3m: 256)")

    p = sub.add_parser("prepare", help="scan a kaggle_3m folder into CSVs and split it by patient")
    p.add_argument("--data-path", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", choices=["patient", "image"], default="patient",
                   help="patient (default) or image: slices at random, the leakage experiment")
    p.add_argument("--train-size", type=PROBABILITY, default=0.8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--folds", type=_ranged(int, 2), default=None, help="also write K patient-grouped folds (data_folds.csv)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad slices with a warning; list them in skipped.csv")
    p.add_argument("--no-plots", action="store_true")

    p = sub.add_parser("train", help="train an smp model on the CSVs of prepare")
    if command_name == "train":
        _add_train_options(p)

    p = sub.add_parser("evaluate", help="per-slice, per-patient and summary metrics of a model on a CSV")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, help="a training checkpoint (PyTorch)")
    model.add_argument("--model", type=Path, help="an exported model.onnx; with neither, the model that ships with gliomaseg")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="fp32 / int8 variant of an ONNX model: auto (default: the faster here), fp32 or int8")
    p.add_argument("--csv", required=True, type=Path, help="a CSV of prepare (or any input with masks: kaggle_3m folder, NIfTI cases)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--tta", default="flip", choices=["flip", "d4"], help="TTA measured in the comparison table")
    p.add_argument("--postprocess", default="all", help="steps measured in the comparison table (see predict --help)")
    p.add_argument("--no-compare", action="store_true", help="skip the TTA / post-processing table")
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("SLICE", "ROW", "COL"),
                   help="voxel size (e.g. mm) for HD95; default: pixels, the slice step counted as one pixel")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("predict", help="masks, contour overlays and GIFs for a slice, a folder or a CSV")
    p.add_argument("--checkpoint", type=Path, help="a training checkpoint (PyTorch)")
    p.add_argument("--model", type=Path, help="an exported model.onnx (ONNX Runtime, no torch); with neither, the model that ships with gliomaseg")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="for an ONNX model with a checked NAME.int8.onnx beside it (the shipped model has one): auto (default) "
                        "runs whichever is faster on this machine, by a short cached probe; fp32 or int8 force one")
    p.add_argument("--backend", choices=["torch", "onnx"], default=None,
                   help="kept for older scripts: the backend follows from --checkpoint (torch) or --model / the shipped model (onnx)")
    p.add_argument("--input", type=Path, nargs="+", default=None,
                   help="a slice, a patient folder, a kaggle_3m root, a CSV, a NIfTI case (X, Y, Z, 3), "
                        "three NIfTI channel files (pre-contrast, FLAIR, post-contrast), a folder of NIfTI cases, a DICOM "
                        "series folder, a DICOM case folder with a sequences.txt, or a folder of those")
    p.add_argument("--sequences", nargs="+", default=None, metavar="ROLE=DIR",
                   help="instead of --input: one DICOM case from three MR series of one geometry, pre=DIR flair=DIR post=DIR "
                        "(DIR@SERIES picks a series of a folder by number, description or UID; flair alone copies FLAIR into "
                        "the missing channels), or one mapping file of such lines (needs gliomaseg[dicom])")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="default: the model's own")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    p.add_argument("--postprocess", default="none",
                   help="none, all, or steps: min_size=64,fill_holes,largest_3d,opening=3,closing=3")
    p.add_argument("--fps", type=_ranged(float, 0, 100, open_low=True), default=2.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["32", "bf16"], default="32")
    p.add_argument("--threads", type=POSITIVE_INT, default=None,
                   help="onnx backend: intra-op threads (default: chosen for this machine, and said)")
    p.add_argument("--allow-grayscale", action="store_true",
                   help="copy a grayscale slice into the 3 channels (default: refused, the model expects 3 MRI sequences)")
    p.add_argument("--allow-16bit", action="store_true",
                   help="scale 16-bit slices per patient (0.5-99.5 percentiles to 0..255) (default: refused)")

    p = sub.add_parser("score", help="the metrics of evaluate for mask files written by predict, another tool or a reader")
    p.add_argument("--pred", required=True, type=Path,
                   help="folder of predicted masks: <patient>_mask.nii.gz, or <slice>_pred.png / <slice>.png (in <patient>/ or not)")
    p.add_argument("--truth", required=True, type=Path,
                   help="a CSV of prepare, a kaggle_3m folder, a folder of NIfTI cases with masks, a DICOM case folder with a SEG, "
                        "or a DICOM SEG file (its series beside it)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("SLICE", "ROW", "COL"),
                   help="voxel size (e.g. mm) for HD95; default: pixels, the slice step counted as one pixel")

    p = sub.add_parser("convert", help="kaggle_3m patients to NIfTI (<patient>.nii.gz and <patient>_mask.nii.gz) or to DICOM")
    p.add_argument("--input", required=True, type=Path, help="a kaggle_3m root or one patient folder (for --to dicom also NIfTI cases)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--to", choices=["nifti", "dicom"], default="nifti",
                   help="nifti (default) or dicom: <patient>/pre|flair|post/ MR series, sequences.txt and <patient>_seg.dcm "
                        "(the truth as a DICOM SEG); synthetic UIDs (needs gliomaseg[dicom])")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("SLICE", "ROW", "COL"),
                   help="--to dicom: voxel size in mm to state (default: a NIfTI case's own, else 1 1 1: kaggle_3m records none)")

    p = sub.add_parser("export", help="export a checkpoint to ONNX and check it against PyTorch, or quantize an ONNX model")
    p.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint (best.ckpt)")
    p.add_argument("--model", type=Path, default=None,
                   help="instead of --checkpoint: an fp32 ONNX model to quantize (`shipped`: the model inside gliomaseg); "
                        "needs --quantize, --check-csv and, for int8, --calibration-csv")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--opset", type=_ranged(int, 7, 30), default=17)
    p.add_argument("--quantize", choices=EXPORT_VARIANTS, default=None,
                   help="int8: static QDQ quantization (per-channel weights) calibrated on training slices, ~2x faster on "
                        "CPUs with VNNI; fp16: weights stored in float16 (half the file, fp32 arithmetic). Either is "
                        f"checked against fp32 on the validation slices and refused when the mean per-patient Dice drops by more than "
                        f"{MAX_DICE_DROP} (or one patient's by more than {MAX_PATIENT_DICE_DROP})")
    p.add_argument("--calibration-csv", type=Path, default=None, help="int8: training CSV to calibrate on (default: the checkpoint's)")
    p.add_argument("--calibration-slices", type=POSITIVE_INT, default=CALIBRATION_SLICES,
                   help=f"int8: slices drawn at random (seed 0) from the calibration CSV (default {CALIBRATION_SLICES})")
    p.add_argument("--check-csv", type=Path, default=None, help="slices to check the variant on (default: the checkpoint's validation CSV)")
    p.add_argument("--max-dice-drop", type=_ranged(float), default=MAX_DICE_DROP,
                   help=f"refuse the variant when the mean per-patient Dice drops more than this (default {MAX_DICE_DROP})")
    p.add_argument("--sample", type=Path, default=None,
                   help="a CSV of prepare whose slices (8 at random) check the fp32 export; default: the checkpoint's "
                        "validation CSV when it exists here, else synthetic MRI-like slices")

    p = sub.add_parser("experiment", help="run a comparison experiment (NAME: a shipped experiment, or a .yaml file)")
    p.add_argument("name", nargs="?", help="a shipped experiment (see --list: encoders, architectures, lowlr, split, losses, crossval, crossval_intensity, levers) or a path to a .yaml file")
    p.add_argument("--list", action="store_true", help="list the shipped experiments and their runs")
    p.add_argument("--data", type=Path, help="a prepare output folder")
    p.add_argument("--out", type=Path, help="experiments folder; runs go to OUT/NAME/RUN")
    p.add_argument("--preset", default="cpu", help="cpu (2 CPU cores) or gpu (the case study's setting)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None)
    p.add_argument("--image-size", type=POSITIVE_INT, default=None)
    p.add_argument("--max-time", default=None, help="per run, HH:MM:SS")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN", help="run only these runs")
    p.add_argument("--all", action="store_true", help="architectures: also UPerNet, Segformer, DPT")

    p = sub.add_parser("report", help="one self-contained HTML page from experiment and run folders")
    p.add_argument("--runs", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)

    from gliomaseg.choices import MAX_IMAGE_SIDE
    from gliomaseg.serve.limits import DEFAULT_HOST, DEFAULT_PORT, ServeLimits

    p = sub.add_parser("serve", help="a local web viewer: upload slices, a patient zip or a NIfTI volume, see and download masks")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="an exported model.onnx (default: the model shipped with gliomaseg)")
    model.add_argument("--checkpoint", type=Path, help="a training checkpoint instead of an ONNX model")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="fp32 / int8 variant of an ONNX model: auto (default: the faster here), fp32 or int8")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this computer only)")
    p.add_argument("--port", type=_ranged(int, 1, 65535), default=DEFAULT_PORT)
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="default: the model's (0.5)")
    p.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    p.add_argument("--postprocess", default="none", help="as for predict: none, all, or steps")
    p.add_argument("--max-upload-mb", type=POSITIVE, default=None, help=f"largest upload in MiB (default {ServeLimits.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-image-side", type=_ranged(int, 32, MAX_IMAGE_SIDE), default=None, help=f"largest slice height or width in pixels (default {ServeLimits.max_image_side})")
    p.add_argument("--device", default="cpu", help="for --checkpoint")

    p = sub.add_parser("gif", help="a folder of images into an animated GIF, in numeric order")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--fps", type=_ranged(float, 0, 100, open_low=True), default=2.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    warnings.simplefilter("default", UserWarning)
    try:
        result = COMMANDS[args.command](args)
    except GliomasegError as exc:
        print(f"gliomaseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full output folder, a file removed mid-run: the file and the problem
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"gliomaseg {args.command}: error: {where}{exc.strerror or first_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"gliomaseg {args.command}: error: out of memory; give fewer or smaller inputs", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gliomaseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
