"""NIfTI cases (:mod:`gliomaseg.data.nifti`): ``<case>.nii.gz`` (4D, 3 channels) or ``<case>_pre-contrast``, ``_flair``,
``_post-contrast.nii.gz``, with ``<case>_mask.nii.gz`` beside them as truth; predicted masks are ``<case>_mask.nii.gz``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from gliomaseg.data.formats.base import MASK, PRED, PatientInput, Problems, SliceFormat, SliceInput
from gliomaseg.data.nifti import NIFTI_ENDINGS, SEQUENCES, Geometry, read_mask_case, read_mask_volume, read_volume, write_mask_volume


class NiftiVolumes(SliceFormat):
    """A case's volume(s) in, its 0/1 mask volume out (the input's shape, affine and header)."""

    name = "nifti"
    endings = NIFTI_ENDINGS
    prediction_ending = ".nii.gz"

    def mask_name(self, image_name: str, ending: str | None = None) -> str:
        return f"{image_name}{MASK}{ending or self.prediction_ending}"

    def truth_beside(self, path: Path, case: str) -> Path | None:
        """``<case>_mask.nii.gz`` (or ``.nii``) beside ``path``, when there is one."""
        return next((f for f in (path.with_name(self.mask_name(case, e)) for e in self.endings) if f.is_file()), None)

    def channel_name(self, case: str, sequence: str) -> str:
        """The stem of one sequence's 3D file of a case (``convert --layout sequences``): ``<case>_<sequence>``."""
        return f"{case}_{sequence}"

    def sequence_files(self, folder: Path, case: str) -> list[Path]:
        """A case's three 3D files, in channel order: ``<case>_pre-contrast.nii.gz``, ``_flair``, ``_post-contrast``."""
        return [folder / f"{self.channel_name(case, s)}{self.prediction_ending}" for s in SEQUENCES]

    def case_of_channels(self, paths: Sequence[Path]) -> str:
        """The case ``paths`` hold: the first file's stem, less ``_pre-contrast`` for three sequence files."""
        name = self.stem(paths[0])
        if len(paths) == 3 and name.endswith(f"_{SEQUENCES[0]}"):
            name = name[: -len(SEQUENCES[0]) - 1]
        return name

    def sequence_groups(self, cases: Sequence[Path]) -> list[tuple[Path, list[Path]]]:
        """The groups of three sequence files (``<case>_pre-contrast``, ``_flair``, ``_post-contrast``) among ``cases``,
        each with the ``_flair`` file that found it; a file joins one group at most."""
        remaining, groups = list(cases), []
        for case in [c for c in cases if self.stem(c).endswith(f"_{SEQUENCES[1]}")]:
            stem = self.stem(case)[: -len(SEQUENCES[1]) - 1]
            group = [next((c for c in remaining if self.stem(c) == self.channel_name(stem, s)), None) for s in SEQUENCES]
            if all(group):
                remaining = [c for c in remaining if c not in group]
                groups.append((case, group))
        return groups  # type: ignore[return-value]

    def prediction_candidates(self, folder: Path, case: str) -> list[Path]:
        """Where ``score`` looks for a case's predicted volume: ``<case>_mask``, ``<case>_pred``, ``<case>`` (.nii.gz, .nii)."""
        return [folder / f"{name}{ending}" for name in (f"{case}{MASK}", f"{case}{PRED}", case) for ending in self.endings]

    def open(self, paths: Sequence[Path], problems: Problems) -> list[PatientInput]:
        """One NIfTI case: a 4D (X, Y, Z, 3) file, or three 3D channel files; the mask is ``<case>_mask.nii.gz`` beside it."""
        images, geometry = self.read_image(paths)
        name = self.case_of_channels(paths)
        mask_file = self.truth_beside(paths[0], name)
        truth = read_mask_volume(mask_file, geometry) if mask_file else None
        slices = [
            SliceInput(name, f"{name}_{k + 1}", paths[0], mask_file, k + 1, load_image=(lambda im=im: im),
                       load_mask=None if truth is None else (lambda m=truth[k]: m))
            for k, im in enumerate(images)
        ]
        return [PatientInput(name, slices, geometry)]

    def read_image(self, paths: Sequence[Path], **options) -> tuple[list[np.ndarray], Geometry]:  # type: ignore[override]
        """uint8 RGB (rows, cols, 3) per axial slice of one case, and its geometry (:func:`~gliomaseg.data.nifti.read_volume`)."""
        return read_volume(paths)

    def read_mask(self, path: Path, geometry: Geometry | None = None, **options) -> list[np.ndarray]:
        """uint8 0/1 per axial slice: on ``geometry`` (a case's truth) or on the file's own (a mask read alone)."""
        return read_mask_case(path) if geometry is None else read_mask_volume(path, geometry)

    def write_mask(self, mask: Sequence[np.ndarray], out: Path, geometry: Geometry | None = None, **options) -> Path:
        """The 0/1 masks of every axial slice as one volume lined up with ``geometry`` (the input's)."""
        return write_mask_volume(mask, geometry, out)  # type: ignore[arg-type]


NIFTI = NiftiVolumes()
