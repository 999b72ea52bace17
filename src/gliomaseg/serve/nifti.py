"""NIfTI volumes for the viewer: slices in, a mask volume in the same voxel grid out (nibabel).

Slices run along the third voxel axis. Slice ``k`` of a volume ``V`` of shape (X, Y, Z[, 3]) is shown
as the image ``flipud(V[:, :, k].T)``: rows along Y (top = highest Y), columns along X. The predicted
mask is written back through the inverse, so the downloaded ``.nii.gz`` lies on the input's grid
and carries its affine.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomaseg.errors import DataError
from gliomaseg.serve.limits import UploadTooLarge

SCALE_PERCENTILE = 99.5


@dataclass(frozen=True)
class VolumeGrid:
    """Where a volume's voxels lie: spatial shape (X, Y, Z), the 4x4 affine and the voxel size in mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    zooms: tuple[float, float, float]

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.zooms)) / 1000.0


def to_image(plane: np.ndarray) -> np.ndarray:
    """A volume plane (X, Y[, C]) as an image (H=Y, W=X[, C])."""
    return np.ascontiguousarray(np.flipud(np.swapaxes(plane, 0, 1)))


def to_plane(image: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_image`: an image (H, W[, C]) as a volume plane (X=W, Y=H[, C])."""
    return np.ascontiguousarray(np.swapaxes(np.flipud(image), 0, 1))


def _load(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for files it cannot read
        raise DataError(f"{path}: not a readable NIfTI volume ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None


def _spatial(shape: tuple[int, ...], path: Path) -> tuple[tuple[int, int, int], int]:
    """Spatial shape and channel count; accepted: (X, Y, Z), (X, Y, Z, C) and (X, Y, Z, 1, C) with C 1 or 3."""
    if len(shape) == 3:
        return (shape[0], shape[1], shape[2]), 1
    if len(shape) == 4 and shape[3] in (1, 3):
        return (shape[0], shape[1], shape[2]), shape[3]
    if len(shape) == 5 and shape[3] == 1 and shape[4] in (1, 3):
        return (shape[0], shape[1], shape[2]), shape[4]
    raise DataError(f"{path}: a volume must have shape (X, Y, Z) or (X, Y, Z, 3) for three channels, found {shape}")


def read_volume(path: str | Path, *, max_side: int, max_slices: int) -> tuple[list[np.ndarray], VolumeGrid, list[str]]:
    """A NIfTI volume as uint8 RGB slices (H, W, 3), its grid, and notes on how its values were mapped.

    uint8 volumes are used as they are; other types are scaled per channel from the minimum to the
    99.5th percentile onto 0..255. One channel is copied to all three (the model expects the three
    kaggle_3m channels: pre-contrast, FLAIR, post-contrast). The shape is checked against
    ``max_side`` and ``max_slices`` from the header, before any voxel is read.
    """
    path = Path(path)
    volume = _load(path)
    spatial, channels = _spatial(tuple(int(n) for n in volume.shape), path)
    if max(spatial[:2]) > max_side:
        raise UploadTooLarge(f"{path}: slices of {spatial[0]}x{spatial[1]} voxels, larger than the limit of {max_side} a side")
    if spatial[2] > max_slices:
        raise UploadTooLarge(f"{path}: {spatial[2]} slices, more than the limit of {max_slices}")
    try:
        data = np.asanyarray(volume.dataobj).reshape(*spatial, channels)
    except Exception as exc:
        raise DataError(f"{path}: voxel data does not read ({type(exc).__name__}: {str(exc)[:200]})") from None
    notes = []
    if data.dtype != np.uint8:
        data = _scale(data.astype(np.float32), path)
        notes.append(f"{path}: {volume.get_data_dtype()} values scaled per channel to 0-255 (minimum to {SCALE_PERCENTILE}th percentile)")
    if channels == 1:
        data = np.repeat(data, 3, axis=3)
        notes.append(f"{path}: one channel copied to the three the model expects (pre-contrast, FLAIR, post-contrast)")
    zooms = tuple(float(z) for z in volume.header.get_zooms()[:3])
    grid = VolumeGrid(spatial, np.asarray(volume.affine, dtype=np.float64), zooms)  # type: ignore[arg-type]
    return [to_image(data[:, :, k]) for k in range(spatial[2])], grid, notes


def _scale(data: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(data).all():
        raise DataError(f"{path}: volume holds NaN or infinite values")
    out = np.zeros(data.shape, np.uint8)
    for c in range(data.shape[3]):
        channel = data[..., c]
        low, high = float(channel.min()), float(np.percentile(channel, SCALE_PERCENTILE))
        if high > low:
            out[..., c] = np.clip((channel - low) / (high - low) * 255.0, 0, 255).round().astype(np.uint8)
    return out


def read_volume_mask(path: str | Path, grid: VolumeGrid) -> list[np.ndarray]:
    """A truth volume on ``grid`` as uint8 0/1 slices (H, W); any nonzero voxel is tumour."""
    path = Path(path)
    volume = _load(path)
    spatial, channels = _spatial(tuple(int(n) for n in volume.shape), path)
    if spatial != grid.shape or channels != 1:
        raise DataError(f"{path}: mask of shape {tuple(volume.shape)} does not match its volume of shape {grid.shape}")
    data = np.asanyarray(volume.dataobj).reshape(spatial)
    return [to_image((data[:, :, k] != 0).astype(np.uint8)) for k in range(spatial[2])]


def mask_volume_bytes(masks: list[np.ndarray], grid: VolumeGrid | None) -> bytes:
    """The masks (each (H, W), 0/1) as a gzipped NIfTI of uint8 0/1 on ``grid``.

    Without a grid (slices that did not come from a volume) the affine is the identity with 1 mm voxels.
    """
    import nibabel as nib

    data = np.stack([to_plane(m.astype(np.uint8)) for m in masks], axis=2)
    affine = np.eye(4) if grid is None else grid.affine
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(np.uint8)
    if grid is not None:
        image.header.set_zooms(grid.zooms)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
