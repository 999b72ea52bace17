"""What a per-patient-intensity model loses when it sees one slice at a time instead of the whole patient.

``--intensity patient`` models standardize a patient over all of its slices. Given a single slice
(``gliomaseg predict --input one.tif``), the statistics come from that slice alone. This scores each
patient of a CSV both ways, 3D Dice over the patient's slices as one volume, and writes one row a patient.

    .venv/bin/python scripts/single_slice.py RUN/last.ckpt data/data_val.csv --out single_slice.csv
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from gliomaseg.data.files import read_image, read_mask, read_slices_csv, write_csv
from gliomaseg.errors import InputWarning
from gliomaseg.inference.predictor import load_checkpoint
from gliomaseg.inference.segment import segment
from gliomaseg.metrics import confusion_numpy, dice


def volume_dice(predicted: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """3D Dice of a patient's masks stacked as one volume."""
    tp, fp, fn, _ = confusion_numpy(np.stack(predicted), np.stack(truth))
    return dice(tp, fp, fn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("csv")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    predictor = load_checkpoint(args.checkpoint)
    rows = []
    warnings.simplefilter("ignore", InputWarning)  # one slice at a time is the point here
    for patient, group in read_slices_csv(args.csv).groupby("patient", sort=False):
        images = [read_image(path) for path in group["image_path"]]
        truth = [(read_mask(path) > 0).astype(np.uint8) for path in group["mask_path"]]
        whole = segment(predictor, images)[1]
        alone = [segment(predictor, [image])[1][0] for image in images]
        rows.append({"patient": patient, "slices": len(images), "dice_3d_whole_patient": volume_dice(whole, truth),
                     "dice_3d_slice_alone": volume_dice(alone, truth)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table["difference"] = table["dice_3d_slice_alone"] - table["dice_3d_whole_patient"]
    write_csv(table, args.out)
    print(table[["dice_3d_whole_patient", "dice_3d_slice_alone", "difference"]].describe().round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
