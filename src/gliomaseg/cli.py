"""The ``gliomaseg`` command: a thin argparse layer over the package's functions."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from gliomaseg.core.defaults import INFERENCE_PRECISIONS, NIFTI_LAYOUTS, VARIANT_CHOICES
from gliomaseg.core.errors import GliomasegError, first_line
from gliomaseg.core.limits import MAX_IMAGE_SIDE

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
    from gliomaseg.training.config import TrainConfig
    from gliomaseg.training.run import train

    values = {k: v for k, v in vars(args).items() if k not in ("command", "named_options")}
    if args.resume:  # what the command line leaves out comes from the run's config.json, as it started
        from gliomaseg.training.run import resume_options

        resumed = resume_options(Path(args.out), values, set(getattr(args, "named_options", ())) | {"out", "resume"})
        taken = {k: v for k, v in resumed.items() if values.get(k) != v}
        if taken:
            print("resuming with the run's own " + ", ".join(f"{k}={v!r}" for k, v in taken.items()) + " (config.json)")
        values = resumed
    result = train(TrainConfig.from_dict(values))
    s = result.summary
    score = (f"best val per-patient Dice {s['best_val_patient_dice']}" if s["model_selection_csv"]
             else "no validation (--val-csv none): the last epoch is the model")
    if not s["train_images_this_session"]:
        print(f"{s['model']}-{s['encoder']} had no epochs left to train: it finished {s['epochs_completed']} epoch(s) "
              f"before (raise --epochs to train more); {score}")
    else:
        print(f"trained {s['model']}-{s['encoder']} for {s['epochs_completed']} epoch(s) in {s['train_seconds']:.0f} s "
              f"({s['train_images_per_second']:.1f} images/s); {score}")
    model = result.model_checkpoint.name if s["model_checkpoint"] else "no model yet: --resume to finish the epochs"
    print(f"run folder: {result.out} ({model}, last.ckpt, summary.json, MODEL_CARD.md)")


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> None:
    from gliomaseg.evaluation.evaluate import evaluate
    from gliomaseg.evaluation.summary import SCORE_FILES, summary_markdown
    from gliomaseg.inference.backend import open_predictor
    from gliomaseg.inference.postprocess import PostProcess

    predictor = open_predictor(args.checkpoint, args.model, device=args.device, variant=args.variant)
    if getattr(predictor, "choice", None) is not None:
        print(predictor.choice.message())
    summary = evaluate(args.checkpoint, args.csv, args.out, batch_size=args.batch_size, compare=not args.no_compare,
                       postprocess=PostProcess.parse(args.postprocess), tta=args.tta, device=args.device, spacing=_spacing_xyz(args),
                       predictor=predictor)
    print(summary_markdown(summary, headline_only=True))
    print(f"wrote {args.out}/" + ", ".join(SCORE_FILES))


@command("predict")
def _predict(args: argparse.Namespace) -> None:
    from gliomaseg.inference.backend import open_predictor
    from gliomaseg.inference.postprocess import PostProcess
    from gliomaseg.predict.files import closing_line, patient_line, predict, resolve_inputs
    from gliomaseg.predict.report import model_summary

    started = time.perf_counter()
    inputs = resolve_inputs(args.input, args.sequences)  # before the model is opened (and ONNX Runtime probed)
    predictor = open_predictor(args.checkpoint, args.model, device=args.device, precision=args.precision,
                               variant=args.variant, threads=args.threads)
    choice = getattr(predictor, "choice", None)  # which variant of an ONNX model runs (fp32 / int8) and why
    if args.verbose and choice is not None:
        print(choice.message(verbose=True))
    if args.verbose and getattr(predictor, "backend", None) == "onnx":  # ONNX Runtime: which threads and micro-batch it chose
        print(predictor.settings.message())
    result = predict(predictor, inputs, args.out, threshold=args.threshold, batch_size=args.batch_size,
                     tta=args.tta, postprocess=PostProcess.parse(args.postprocess), fps=args.fps,
                     allow_grayscale=args.allow_grayscale, allow_16bit=args.allow_16bit, spacing=_spacing_xyz(args),
                     model=model_summary(predictor, shipped=args.checkpoint is None and args.model is None))
    for row in result.patients.to_dict("records"):
        print(patient_line(row))
    print(closing_line(result, time.perf_counter() - started, None if choice is None else choice.message()))
    if len(result.skipped):
        print(f"skipped {len(result.skipped)} file(s), listed in {result.out / 'skipped.csv'}", file=sys.stderr)


@command("score")
def _score(args: argparse.Namespace) -> None:
    from gliomaseg.evaluation.evaluate import score
    from gliomaseg.evaluation.summary import PATIENTS_CSV, SLICES_CSV, SUMMARY_MD, score_table

    summary = score(args.pred, args.truth, args.out, spacing=_spacing_xyz(args))
    print(score_table(summary))
    print(f"all numbers and their meaning: {Path(args.out) / SUMMARY_MD}; per slice and per patient: {SLICES_CSV}, {PATIENTS_CSV}")


@command("convert")
def _convert(args: argparse.Namespace) -> None:
    from gliomaseg.data.convert import convert_to_dicom, convert_to_nifti
    from gliomaseg.data.formats.dicom_series import DICOM
    from gliomaseg.data.formats.nifti_volumes import NIFTI

    if args.to == "dicom":
        if args.layout != "channels":
            raise GliomasegError("convert --layout is for NIfTI output (--to nifti)")
        table = convert_to_dicom(args.input, args.out, spacing=_spacing_xyz(args))
        print(f"wrote {len(table)} patient(s) as DICOM cases <patient>/pre|flair|post/ + sequences.txt (+ {DICOM.mask_name('<patient>')}, "
              f"the truth) to {args.out}, voxels {', '.join(sorted(set(table['spacing_mm'])))} mm (listed in converted.csv)")
        return
    table = convert_to_nifti(args.input, args.out, spacing=_spacing_xyz(args), layout=args.layout)
    names = "<patient>.nii.gz" if args.layout == "channels" else "<patient>_pre-contrast/_flair/_post-contrast.nii.gz"
    units = "voxel size unknown (give --spacing X Y Z to record one)" if args.spacing is None else f"voxels of {' x '.join(f'{v:g}' for v in args.spacing)} mm"
    print(f"wrote {len(table)} patient(s) as {names} + {NIFTI.mask_name('<patient>')} to {args.out}, {units} (listed in converted.csv)")


@command("export")
def _export(args: argparse.Namespace) -> None:
    from gliomaseg.export.onnx import export_messages, export_model

    result = export_model(args.out, checkpoint=args.checkpoint, model=args.model, quantize=args.quantize, opset=args.opset,
                          sample=args.sample, calibration_csv=args.calibration_csv, check_csv=args.check_csv,
                          calibration_slices=args.calibration_slices, max_dice_drop=args.max_dice_drop)
    for line in export_messages(result):
        print(line)


@command("gif")
def _gif(args: argparse.Namespace) -> None:
    from gliomaseg.predict.files import gif_from_folder

    print(f"wrote {gif_from_folder(args.input, args.out, fps=args.fps)}")


@command("experiment")
def _experiment(args: argparse.Namespace) -> None:
    from gliomaseg.experiments.runner import run_experiment
    from gliomaseg.experiments.spec import shipped_experiments

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
    from gliomaseg.reporting.report import build_report

    print(f"wrote {build_report(args.runs, args.out)}")


@command("serve")
def _serve(args: argparse.Namespace) -> None:
    from gliomaseg.inference.backend import open_predictor
    from gliomaseg.inference.postprocess import PostProcess
    from gliomaseg.predict.report import model_summary
    from gliomaseg.serve.app import run_server
    from gliomaseg.serve.limits import ServeLimits
    from gliomaseg.serve.pipeline import SegmentOptions

    predictor = open_predictor(args.checkpoint, args.model, device=args.device, variant=args.variant)
    if getattr(predictor, "choice", None) is not None:
        print(predictor.choice.message())
    limits = ServeLimits().overridden(max_upload_mb=args.max_upload_mb, max_image_side=args.max_image_side)
    label = str(args.checkpoint or args.model or "shipped default model")
    options = SegmentOptions(threshold=args.threshold, tta=args.tta, postprocess=PostProcess.parse(args.postprocess))
    info = model_summary(predictor, shipped=args.checkpoint is None and args.model is None)
    run_server(predictor, host=args.host, port=args.port, options=options, limits=limits, model_label=label, model_info=info,
               spacing=_spacing_xyz(args))


def _number(text: str) -> int | float:
    """An int when the text is one (``--limit-train-batches 2``), else a float (``0.5``)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _add_dataclass_options(p: argparse.ArgumentParser, cls) -> None:
    """One option per dataclass field, named, typed and defaulted by the field itself.

    ``bool`` fields become ``--name`` (default False) or ``--no-name`` (default True); help comes from
    ``field(metadata={"help": ...})`` (required), ``choices`` and ``hidden`` from the same metadata;
    :class:`_Help` adds the default.
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
        help_text = f.metadata.get("help")
        if f.metadata.get("hidden"):
            help_text = argparse.SUPPRESS
        elif not help_text:
            raise TypeError(f"{cls.__name__}.{f.name} has no metadata help: every option needs one")
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
    from gliomaseg.training.config import TrainConfig  # imports torch: only done when the command is `train`

    _add_dataclass_options(p, TrainConfig)


class _Help(argparse.HelpFormatter):
    """Help that shows every option's default (unless the text already says it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and "default" not in text and default not in (None, False, argparse.SUPPRESS)
                and not isinstance(default, bool)):
            shown = " ".join(str(v) for v in default) if isinstance(default, (list, tuple)) else "%(default)s"
            text += f" (default: {shown})"
        return text


SPACING_HELP = ("voxel size in mm: X (column width), Y (row height), Z (slice step); default: a NIfTI header's when its "
                "units are mm, else unknown (volumes in voxels, HD95 in pixels, marked 'spacing unknown')")


def _spacing_xyz(args: argparse.Namespace) -> tuple[float, float, float] | None:
    """``--spacing X Y Z`` as given (x, y, z in mm), or None."""
    spacing = getattr(args, "spacing", None)
    return None if spacing is None else (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _add_model_options(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """--checkpoint or --model (neither: the shipped model), and --variant, for the commands that run a model as given."""
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, help=checkpoint_help)
    model.add_argument("--model", type=Path, help="an exported model.onnx; with neither, the model that ships with gliomaseg")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="for an ONNX model with a checked NAME.int8.onnx beside it (the shipped model has one): auto runs "
                        "whichever is faster on this machine (a short cached probe); fp32 or int8 force one")


def _named_train_options(argv: Sequence[str]) -> set[str]:
    """The ``train`` options named in ``argv`` (the words after ``train``), whatever their value: parsed again with
    every default suppressed, so abbreviations and ``--opt=value`` count as argparse counts them."""
    p = argparse.ArgumentParser(add_help=False)
    _add_train_options(p)
    for action in p._actions:  # a SUPPRESS default leaves an option out of the namespace unless it is given
        action.default = argparse.SUPPRESS
    named, _ = p.parse_known_args(list(argv))
    return set(vars(named))


def build_parser(command_name: str | None = None) -> argparse.ArgumentParser:
    """The parser; the ``train`` options (generated from ``TrainConfig``, which imports torch) are added
    only when ``command_name`` is ``train``, so the other commands stay torch-free."""
    from gliomaseg import __version__
    from gliomaseg.core.defaults import (
        CALIBRATION_SLICES,
        DEFAULT_BATCH_SIZE,
        EXPORT_VARIANTS,
        GIF_FPS,
        MAX_DICE_DROP,
        MAX_PATIENT_DICE_DROP,
        ONNX_OPSET,
        SPLIT_SEED,
        SYNTH_PATIENTS,
        SYNTH_SIZE,
        SYNTH_SLICES,
        TRAIN_SIZE,
        TTA_MODES,
    )

    parser = argparse.ArgumentParser(prog="gliomaseg", formatter_class=_Help,
                                     description="Lower-grade glioma segmentation in brain MRI (research use only, not for diagnosis).")
    parser.add_argument("--version", action="version", version=f"gliomaseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    class _Sub:  # every command gets its help line as its description, and defaults in its help
        @staticmethod
        def add_parser(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
            return subparsers.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                                         formatter_class=_Help)

    sub = _Sub()

    p = sub.add_parser("synth", help="write a synthetic MRI-like dataset in the kaggle_3m layout")
    p.add_argument("--out", required=True, type=Path, help="folder to write <patient>/<patient>_<k>.tif into")
    p.add_argument("--patients", type=POSITIVE_INT, default=SYNTH_PATIENTS, help="number of patients")
    p.add_argument("--slices", type=POSITIVE_INT, default=SYNTH_SLICES, help="about this many slices per patient")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--size", type=_ranged(int, 8, MAX_IMAGE_SIDE), default=SYNTH_SIZE, help="slice size in pixels (kaggle_3m: 256)")

    p = sub.add_parser("prepare", help="scan a kaggle_3m folder into CSVs and split it by patient")
    p.add_argument("--data-path", required=True, type=Path, help="a kaggle_3m root (patient folders of <patient>_<k>.tif and _mask.tif)")
    p.add_argument("--out", required=True, type=Path, help="folder for the CSVs and plots")
    p.add_argument("--split", choices=["patient", "image"], default="patient",
                   help="patient, or image: slices at random, the leakage experiment")
    p.add_argument("--train-size", type=PROBABILITY, default=TRAIN_SIZE, help="fraction of the patients (or slices) in the training CSV")
    p.add_argument("--seed", type=int, default=SPLIT_SEED, help="random_state of the split (the case study's: 42)")
    p.add_argument("--folds", type=_ranged(int, 2), default=None, help="also write K patient-grouped folds (data_folds.csv)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad slices with a warning; list them in skipped.csv")
    p.add_argument("--no-plots", action="store_true", help="skip slices_per_patient.png and sample_slices.png")

    p = sub.add_parser("train", help="train an smp model on the CSVs of prepare",
                       description="Train an smp model on the CSVs of prepare; best.ckpt is the epoch with the best validation "
                                   "mean per-patient Dice.")
    if command_name == "train":
        _add_train_options(p)

    p = sub.add_parser("evaluate", help="per-slice, per-patient and summary metrics of a model on a CSV")
    _add_model_options(p, "a training checkpoint (best.ckpt)")
    p.add_argument("--csv", required=True, type=Path, help="a CSV of prepare (or any input with masks: kaggle_3m folder, NIfTI cases)")
    p.add_argument("--out", required=True, type=Path, help="folder for slices.csv, patients.csv, summary.json/.md, patient_dice.png")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=DEFAULT_BATCH_SIZE, help="slices per model call")
    p.add_argument("--tta", default="flip", choices=[m for m in TTA_MODES if m != "none"], help="TTA measured in the comparison table")
    p.add_argument("--postprocess", default="all", help="steps measured in the comparison table (see predict --help)")
    p.add_argument("--no-compare", action="store_true", help="skip the TTA / post-processing table")
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("X", "Y", "Z"), help=SPACING_HELP)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")

    p = sub.add_parser("predict", help="masks, contour overlays and GIFs for a slice, a folder or a CSV")
    p.add_argument("--checkpoint", type=Path, help="a training checkpoint (PyTorch)")
    p.add_argument("--model", type=Path, help="an exported model.onnx (ONNX Runtime, no torch); with neither, the model that ships with gliomaseg")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="for an ONNX model with a checked NAME.int8.onnx beside it (the shipped model has one): auto (default) "
                        "runs whichever is faster on this machine, by a short cached probe; fp32 or int8 force one")
    p.add_argument("--input", type=Path, nargs="+", default=None,
                   help="a slice, a patient folder, a kaggle_3m root, a CSV, a NIfTI case (X, Y, Z, 3), "
                        "three NIfTI channel files (pre-contrast, FLAIR, post-contrast), a folder of NIfTI cases, a DICOM "
                        "series folder, a DICOM case folder with a sequences.txt, or a folder of those")
    p.add_argument("--sequences", nargs="+", default=None, metavar="ROLE=DIR",
                   help="instead of --input: one DICOM case from three MR series of one geometry, pre=DIR flair=DIR post=DIR "
                        "(DIR@SERIES picks a series of a folder by number, description or UID; flair alone copies FLAIR into "
                        "the missing channels), or one mapping file of such lines (needs gliomaseg[dicom])")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: report.html (open it first), masks, overlays, GIFs, predictions.csv, patients.csv")
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="probability above which a pixel is tumour (default: the model's own)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=DEFAULT_BATCH_SIZE, help="slices per model call")
    p.add_argument("--tta", default="none", choices=TTA_MODES,
                   help="test-time augmentation: none, flip (mean over a horizontal flip), d4 (the 8 flips and rotations)")
    p.add_argument("--postprocess", default="none",
                   help="none, all, or steps: min_size=64,fill_holes,largest_3d,opening=3,closing=3")
    p.add_argument("--fps", type=_ranged(float, 0, 100, open_low=True), default=GIF_FPS, help="frames per second of each patient's GIF")
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("X", "Y", "Z"), help=SPACING_HELP)
    p.add_argument("--device", default="cpu", help="--checkpoint: torch device, e.g. cpu or cuda")
    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=INFERENCE_PRECISIONS[0],
                   help="--checkpoint: inference precision; bf16 holds the weights in bf16 on CPU (2.1-2.7x fp32 measured on "
                        "an AMX Xeon; many times slower on a CPU without bf16 instructions)")
    p.add_argument("--verbose", action="store_true",
                   help="also say the measured slices/s of the model's variants and which ONNX Runtime threads and micro-batch were chosen")
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
    p.add_argument("--out", required=True, type=Path, help="folder for slices.csv, patients.csv, summary.json/.md, patient_dice.png")
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("X", "Y", "Z"), help=SPACING_HELP)

    p = sub.add_parser("convert", help="kaggle_3m patients to NIfTI (<patient>.nii.gz and <patient>_mask.nii.gz) or to DICOM")
    p.add_argument("--input", required=True, type=Path, help="a kaggle_3m root or one patient folder (for --to dicom also NIfTI cases)")
    p.add_argument("--out", required=True, type=Path, help="folder for the NIfTI files (or DICOM cases) and converted.csv")
    p.add_argument("--to", choices=["nifti", "dicom"], default="nifti",
                   help="nifti (default) or dicom: <patient>/pre|flair|post/ MR series, sequences.txt and <patient>_seg.dcm "
                        "(the truth as a DICOM SEG); synthetic UIDs (needs gliomaseg[dicom])")
    p.add_argument("--layout", choices=NIFTI_LAYOUTS, default=NIFTI_LAYOUTS[0],
                   help="NIfTI: channels, one 4D <patient>.nii.gz (X, Y, Z, 3); sequences, three 3D files, <patient>_pre-contrast, "
                        "_flair and _post-contrast.nii.gz (for 3D Slicer, ITK-SNAP)")
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="voxel size in mm to record; default: NIfTI none recorded (units 'unknown': kaggle_3m has no spacing); "
                        "DICOM a NIfTI case's own, else 1 1 1")

    p = sub.add_parser("export", help="export a checkpoint to ONNX and check it against PyTorch, or quantize an ONNX model")
    p.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint (best.ckpt)")
    p.add_argument("--model", type=Path, default=None,
                   help="instead of --checkpoint: an fp32 ONNX model to quantize (`shipped`: the model inside gliomaseg); "
                        "needs --quantize, --check-csv and, for int8, --calibration-csv")
    p.add_argument("--out", required=True, type=Path, help="the model file to write, e.g. model.onnx (an int8 variant: model.int8.onnx)")
    p.add_argument("--opset", type=_ranged(int, 7, 30), default=ONNX_OPSET, help="ONNX opset")
    p.add_argument("--quantize", choices=EXPORT_VARIANTS, default=None,
                   help="int8: static QDQ quantization (per-channel weights) calibrated on training slices, 1.2-2.4x as fast on "
                        "CPUs with VNNI; fp16: weights stored in float16 (half the file, fp32 arithmetic). Either is "
                        f"checked against fp32 on the validation slices and refused when the mean per-patient Dice drops by more than "
                        f"{MAX_DICE_DROP} (or one patient's by more than {MAX_PATIENT_DICE_DROP})")
    p.add_argument("--calibration-csv", type=Path, default=None, help="int8: training CSV to calibrate on (default: the checkpoint's)")
    p.add_argument("--calibration-slices", type=POSITIVE_INT, default=CALIBRATION_SLICES,
                   help="int8: slices drawn at random (seed 0) from the calibration CSV")
    p.add_argument("--check-csv", type=Path, default=None, help="slices to check the variant on (default: the checkpoint's validation CSV)")
    p.add_argument("--max-dice-drop", type=_ranged(float), default=MAX_DICE_DROP,
                   help="refuse the variant when the mean per-patient Dice drops more than this")
    p.add_argument("--sample", type=Path, default=None,
                   help="a CSV of prepare whose slices (8 at random) check the fp32 export; default: the checkpoint's "
                        "validation CSV when it exists here, else synthetic MRI-like slices")

    p = sub.add_parser("experiment", help="run a comparison experiment (NAME: a shipped experiment, or a .yaml file)")
    p.add_argument("name", nargs="?", help="a shipped experiment (--list names them all: encoders, architectures, lowlr, split, losses, crossval, "
                                                "crossval_intensity, crossval_robust, levers) or a path to a .yaml file")
    p.add_argument("--list", action="store_true", help="list the shipped experiments and their runs")
    p.add_argument("--data", type=Path, help="a prepare output folder")
    p.add_argument("--out", type=Path, help="experiments folder; runs go to OUT/NAME/RUN")
    p.add_argument("--preset", default="cpu", help="cpu (2 CPU cores) or gpu (the case study's setting)")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="epochs per run (default: the preset's)")
    p.add_argument("--image-size", type=POSITIVE_INT, default=None, help="image size per run in pixels (default: the preset's)")
    p.add_argument("--max-time", default=None, help="time limit per run, HH:MM:SS (default: none)")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN", help="run only these runs")
    p.add_argument("--all", action="store_true", help="architectures: also UPerNet, Segformer, DPT")

    p = sub.add_parser("report", help="one self-contained HTML page from experiment and run folders")
    p.add_argument("--runs", required=True, type=Path, help="an experiments folder (or run folders) with results.csv files")
    p.add_argument("--out", required=True, type=Path, help="the HTML file to write")

    from gliomaseg.serve.limits import DEFAULT_HOST, DEFAULT_PORT, ServeLimits

    p = sub.add_parser("serve", help="a local web viewer: upload slices, a patient zip or a NIfTI volume, see and download masks")
    _add_model_options(p, "a training checkpoint instead of an ONNX model")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this computer only)")
    p.add_argument("--port", type=_ranged(int, 1, 65535), default=DEFAULT_PORT, help="port to listen on")
    p.add_argument("--threshold", type=PROBABILITY, default=None, help="probability above which a pixel is tumour (default: the model's)")
    p.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation, as for predict")
    p.add_argument("--postprocess", default="none", help="as for predict: none, all, or steps")
    p.add_argument("--spacing", type=POSITIVE, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="voxel size in mm of uploaded slices (default: a NIfTI header's when in mm, else unknown)")
    p.add_argument("--max-upload-mb", type=POSITIVE, default=None, help=f"largest upload in MiB (default: {ServeLimits.max_upload_bytes / 2**20:g})")
    p.add_argument("--max-image-side", type=_ranged(int, 32, MAX_IMAGE_SIDE), default=None, help=f"largest slice height or width in pixels (default: {ServeLimits.max_image_side})")
    p.add_argument("--device", default="cpu", help="--checkpoint: torch device, e.g. cpu or cuda")

    p = sub.add_parser("gif", help="a folder of images into an animated GIF, in numeric order")
    p.add_argument("--input", required=True, type=Path, help="a folder of images (.png, .jpg, .tif)")
    p.add_argument("--out", required=True, type=Path, help="the GIF to write")
    p.add_argument("--fps", type=_ranged(float, 0, 100, open_low=True), default=GIF_FPS, help="frames per second")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    if args.command == "train":
        args.named_options = _named_train_options(argv[1:])
    from gliomaseg.core.terminal import quiet_terminal

    quiet_terminal(args.command)
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
