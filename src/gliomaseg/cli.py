"""The ``gliomaseg`` command: a thin argparse layer over the package's functions."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from gliomaseg.errors import GliomasegError

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gliomaseg", description="Lower-grade glioma segmentation in brain MRI.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic MRI-like dataset in the kaggle_3m layout")
    p.add_argument("--out", required=True, type=Path, help="folder to write <patient>/<patient>_<k>.tif into")
    p.add_argument("--patients", type=int, default=12)
    p.add_argument("--slices", type=int, default=20, help="about this many slices per patient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="slice size in pixels (kaggle_3m: 256)")

    p = sub.add_parser("prepare", help="scan a kaggle_3m folder into CSVs and split it by patient")
    p.add_argument("--data-path", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", choices=["patient", "image"], default="patient",
                   help="patient (default) or image: slices at random, the leakage experiment")
    p.add_argument("--train-size", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--folds", type=int, default=None, help="also write K patient-grouped folds (data_folds.csv)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad slices with a warning; list them in skipped.csv")
    p.add_argument("--no-plots", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default", UserWarning)
    try:
        result = COMMANDS[args.command](args)
    except GliomasegError as exc:
        print(f"gliomaseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gliomaseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
