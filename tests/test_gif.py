"""GIFs of a patient: one frame per slice, in order, colours close to the overlays."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from gliomaseg.data.files import read_image, read_mask
from gliomaseg.data.overlay import overlay_contours, write_gif


def test_patient_gif_keeps_every_slice_and_its_colours(synth_root: Path, tmp_path: Path):
    patient = sorted(synth_root.iterdir())[0]
    images = sorted((p for p in patient.glob("*.tif") if not p.stem.endswith("_mask")), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    frames = [overlay_contours(read_image(p), prediction=read_mask(p.with_name(f"{p.stem}_mask.tif")), legend=True) for p in images]
    path = write_gif(frames, tmp_path / "p.gif", fps=4)
    got = iio.imread(path, index=None)[..., :3].astype(float)
    assert got.shape == (len(frames), *frames[0].shape)
    errors = [np.abs(g - f).mean() for g, f in zip(got, frames)]
    assert max(errors) < 4.0  # grey levels of 255, fast octree palette per frame, no dithering
    assert iio.immeta(path, index=0)["duration"] == 250
