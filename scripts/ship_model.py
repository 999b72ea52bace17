"""Ship a trained run as gliomaseg's default model: ONNX, its int8 variant and MODEL_CARD.md in src/gliomaseg/assets/.

    .venv/bin/python scripts/ship_model.py RUN --checkpoint final.ckpt \
        --crossval docs/results/crossval_robust/patients.csv --info data/data_info.csv \
        --calibration-csv data/data_train.csv --check-csv data/data_val.csv \
        --reproduce docs/results/recipe_reproduce.md

The card leads with the recipe's cross-validated per-patient Dice (``--crossval``: an experiment folder or its
pooled ``patients.csv``; ``--info`` names the patients with a missing sequence), stored in the run's checkpoint
first so that every card of it says the same. Exports through ``gliomaseg.export.onnx.export_onnx`` (checked
against PyTorch; its metadata carries no folder of the training machine), checks the size limit, then writes
the int8 variant through ``gliomaseg.export.quantization.write_variant`` (calibrated on ``--calibration-csv``,
checked against fp32 on ``--check-csv``). Nothing in assets/ changes unless the fp32 export passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gliomaseg.assets import SHIPPED_MODEL, SHIPPED_MODEL_CARD  # noqa: E402
from gliomaseg.core.errors import GliomasegError  # noqa: E402
from gliomaseg.core.io import atomic_write, write_text  # noqa: E402
from gliomaseg.experiments.summary import crossval_headline, fold_patients, missing_sequence_patients  # noqa: E402
from gliomaseg.export.onnx import export_onnx  # noqa: E402
from gliomaseg.export.quantization import write_variant  # noqa: E402
from gliomaseg.inference.variants import variant_path  # noqa: E402
from gliomaseg.modeling.card import render_markdown, write_run_card  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "src" / "gliomaseg" / "assets"
MAX_BYTES = 30 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default=None, help="the run's model: best.ckpt (default when present) or final.ckpt")
    parser.add_argument("--crossval", type=Path, required=True, help="the recipe's cross-validation: experiment folder or pooled patients.csv")
    parser.add_argument("--info", type=Path, required=True, help="data_info.csv of prepare (names the missing-sequence patients)")
    parser.add_argument("--calibration-csv", type=Path, required=True, help="int8: training slices to calibrate on")
    parser.add_argument("--check-csv", type=Path, required=True, help="int8: slices to check against fp32 (none of them calibrated on)")
    parser.add_argument("--calibration-slices", type=int, default=None, help="int8: how many training slices to calibrate on")
    parser.add_argument("--reproduce", type=Path, required=True, help="Markdown appended to the card: how to reproduce")
    args = parser.parse_args(argv)
    name = args.checkpoint or ("best.ckpt" if (args.run / "best.ckpt").is_file() else "final.ckpt")
    source = args.crossval
    experiment = source.parent.name if source.is_file() else source.name
    try:
        headline = crossval_headline(fold_patients(source), missing_sequence_patients(args.info), experiment)
        write_run_card(args.run, name, cross_validation=headline)
        target = ASSETS / SHIPPED_MODEL
        with tempfile.TemporaryDirectory() as tmp:
            result = export_onnx(args.run / name, Path(tmp) / SHIPPED_MODEL, write_card=False)
            size = Path(result["path"]).stat().st_size
            if size > MAX_BYTES:  # refused before anything in assets/ is touched: the shipped model stays as it was
                print(f"{args.run / name}: {size / 2**20:.1f} MiB as ONNX is over the {MAX_BYTES / 2**20:.0f} MiB limit; "
                      "not shipped", file=sys.stderr)
                return 1
            variant_path(target, "int8").unlink(missing_ok=True)  # made from the old fp32 file: never beside the new one
            atomic_write(target, lambda tmp_file: Path(tmp_file).write_bytes(Path(result["path"]).read_bytes()))
        write_text(render_markdown(result["card"]) + "\n" + args.reproduce.read_text(), ASSETS / SHIPPED_MODEL_CARD)
        print(f"shipped {target} ({size / 2**20:.1f} MiB, ONNX vs PyTorch max abs logit difference {result['max_abs_diff']:.1e}) "
              f"and {ASSETS / SHIPPED_MODEL_CARD}; card headline: mean {headline['mean']:.3f} / median {headline['median']:.3f} "
              f"over {headline['patients']} cross-validated patients")
        int8 = variant_path(target, "int8")
        extra = {"calibration_slices": args.calibration_slices} if args.calibration_slices else {}
        report = write_variant(target, int8, "int8", check_csv=args.check_csv, calibration_csv=args.calibration_csv, **extra)
    except GliomasegError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"shipped {int8} ({int8.stat().st_size / 2**20:.1f} MiB): per-patient Dice drop {report['patient_dice_drop']:.4f} "
          f"(largest for one patient {report['patient_dice_drop_max']:.4f}), mask agreement {report['mask_agreement']:.5f} "
          f"on {report['check_slices']} slices of {report['check_csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
