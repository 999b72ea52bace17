"""What a per-patient-intensity model loses when it sees one slice at a time instead of the whole patient.

``--intensity patient`` models standardize a patient over all of its slices. Given a single slice
(``gliomaseg predict --input one.tif``), the statistics come from that slice alone. This scores each
patient of a CSV both ways, 3D Dice over the patient's slices as one volume, and writes one row a patient.

    .venv/bin/python scripts/single_slice.py RUN/last.ckpt data/data_val.csv --out single_slice.csv
"""

from __future__ import annotations

import argparse
import warnings

import pandas as pd

from gliomaseg.core.errors import InputWarning
from gliomaseg.core.io import write_csv
from gliomaseg.data.sources import open_source
from gliomaseg.evaluation.evaluate import score_masks, truth_masks
from gliomaseg.inference.segment import segment
from gliomaseg.inference.torch_backend import load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("csv")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    predictor = load_checkpoint(args.checkpoint)
    patients, _ = open_source(args.csv, strict=True)
    whole, alone = [], []
    for patient in patients:
        images = [item.image(lenient=False) for item in patient.slices]
        truths = truth_masks(patient)
        whole.append((patient, segment(predictor, images)[1], truths))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)  # one slice at a time is the point here
            alone.append((patient, [segment(predictor, [image])[1][0] for image in images], truths))
        print(f"{patient.name}: {len(images)} slices", flush=True)
    names = [p.name for p in patients]

    def dice_3d(cases: list) -> list[float]:  # scored as `gliomaseg evaluate` scores: each patient's slices as one volume
        return score_masks(cases)[1].set_index("patient").loc[names, "dice_3d"].tolist()

    table = pd.DataFrame({"patient": names, "slices": [len(p.slices) for p in patients],
                          "dice_3d_whole_patient": dice_3d(whole), "dice_3d_slice_alone": dice_3d(alone)})
    table["difference"] = table["dice_3d_slice_alone"] - table["dice_3d_whole_patient"]
    write_csv(table, args.out)
    print(table[["dice_3d_whole_patient", "dice_3d_slice_alone", "difference"]].describe().round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
