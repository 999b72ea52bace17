"""NIfTI volumes in and out (nibabel): the slice convention shared by ``predict``, ``score`` and ``convert``.

Axial axis: a volume is first reoriented (a lossless permutation / flip of voxel axes, no
resampling) to the voxel order closest to LPS: array axis 0 runs to the patient's Left, axis 1 to
Posterior, axis 2 to Superior. Axis 2 is the axial one; slice ``k`` (1-based slice number ``k + 1``)
is ``data[:, :, k]`` shown as an image with rows along axis 1 (anterior at the top) and columns
along axis 0 (the patient's right on the image's left: radiological display). kaggle_3m's tif files
record no orientation, so reading them as radiological is an assumption, the one ``convert`` writes.
Masks are written back through the inverse reordering, so they have the input's shape, affine and
header. ``convert`` writes kaggle_3m patients in exactly this layout (affine ``diag(-1, -1, 1)`` and
units "unknown", since kaggle_3m does not record the spacing; ``--spacing`` gives the voxels a size in mm).

Images: uint8 volumes are taken as they are; any other type (or scaled uint8) is read channel by
channel as float32 and scaled from its 0.5th to its 99.5th percentile onto 0..255, with a warning
(the model saw kaggle_3m's 8-bit slices, so intensities from another pipeline may not match what it
learnt). Non-finite voxels (NaN, +-inf) take no part in the percentiles and become 0, with a warning.

Memory: before any voxel is read, the bytes the volume will be held in (every dimension x 1 byte for
plain uint8, x 4 for anything read as float32) are checked against
:data:`gliomaseg.data.files.MAX_DECODED_BYTES`, so a small compressed file cannot claim gigabytes.
"""

from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gliomaseg.core.errors import DataError, first_line
from gliomaseg.core.io import atomic_write
from gliomaseg.core.limits import MAX_DECODED_BYTES
from gliomaseg.data.files import DEEP_PERCENTILES

NIFTI_ENDINGS = (".nii.gz", ".nii")
LPS = ("L", "P", "S")
CONVERT_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def case_name(path: Path) -> str:
    """``case.nii.gz`` -> ``case``."""
    name = path.name
    for ending in NIFTI_ENDINGS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem


@dataclass
class Geometry:
    """Where a volume's slices came from: enough to write a mask volume that lines up with the input."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    header: object
    transform: np.ndarray  # nibabel orientation transform native -> LPS

    @property
    def nbytes(self) -> int:
        """Memory held beyond the slices themselves (a header and an affine: next to nothing)."""
        return int(self.affine.nbytes)

    def to_native(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        """Masks (one (H, W) per axial slice, in slice order) -> a uint8 volume of the input's spatial shape."""
        from nibabel import orientations

        lps = np.stack(masks).transpose(2, 1, 0)  # (S, rows, cols) -> (L, P, S)
        inverse = orientations.ornt_transform(orientations.axcodes2ornt(LPS), self._native_ornt())
        return np.ascontiguousarray(orientations.apply_orientation(lps, inverse)).astype(np.uint8)

    def _native_ornt(self) -> np.ndarray:
        import nibabel as nib

        return nib.io_orientation(self.affine)

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm along the slice's columns, rows and the axial axis (L, P, S order), from the header."""
        zooms = [float(z) for z in self.header.get_zooms()[:3]]  # type: ignore[attr-defined]
        lps = [0.0, 0.0, 0.0]
        for native, (axis, _) in enumerate(self.transform):
            lps[int(axis)] = zooms[native]
        return lps[0], lps[1], lps[2]

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """:attr:`voxel_mm` when the header's space unit is a length (mm, micron, meter), else ``None``: the
        size is unknown (``convert`` without ``--spacing`` writes units "unknown")."""
        from gliomaseg.core.units import LENGTH_MM, check_spacing

        unit = self.header.get_xyzt_units()[0]  # type: ignore[attr-defined]
        if unit not in LENGTH_MM:
            return None
        try:
            return check_spacing([v * LENGTH_MM[unit] for v in self.voxel_mm])
        except ValueError:
            return None


def convert_affine(spacing: Sequence[float] | None = None) -> np.ndarray:
    """``CONVERT_AFFINE`` scaled by ``spacing`` (x, y, z in mm); unit voxels without one."""
    x, y, z = spacing if spacing is not None else (1.0, 1.0, 1.0)
    return np.diag([-float(x), -float(y), float(z), 1.0])


def slices_geometry(path: Path, height: int, width: int, count: int, spacing: Sequence[float] | None = None) -> Geometry:
    """The geometry ``convert`` gives ``count`` kaggle_3m slices of (height, width): LPS, affine ``CONVERT_AFFINE``.

    With ``spacing`` (x, y, z in mm) the voxels have that size and the units are mm; without it the
    units are "unknown" (kaggle_3m records no spacing), so no tool can take the voxels for 1 mm.
    """
    import nibabel as nib

    affine = convert_affine(spacing)
    header = nib.Nifti1Header()
    header.set_data_shape((width, height, count))
    header.set_zooms(tuple(float(v) for v in np.abs(np.diag(affine)[:3])))
    header.set_xyzt_units("mm" if spacing is not None else "unknown")
    return Geometry(Path(path), (width, height, count), affine, header, _orientation(Path(path), affine))


def _header(path: Path):
    """The nibabel image with its header read, its voxels not yet read, and its decoded size within the budget."""
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({first_line(exc, 160)})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI image (found {type(image).__name__})")
    held = held_bytes(image)
    if held > MAX_DECODED_BYTES:
        raise DataError(f"{path}: volume of shape {tuple(image.shape)} ({image.get_data_dtype()}) decodes to {held / 2**20:.0f} MiB, "
                        f"more than the memory budget of {MAX_DECODED_BYTES / 2**20:.0f} MiB")
    return image


def _plain(image) -> bool:
    """True when the voxels are uint8 with no scaling: they are held as they are stored."""
    proxy = image.dataobj
    slope, inter = (float(getattr(proxy, name, default)) for name, default in (("slope", 1.0), ("inter", 0.0)))
    return image.get_data_dtype() == np.uint8 and slope == 1.0 and inter == 0.0


def held_bytes(image) -> int:
    """Bytes a volume is held in once read (every dimension, 1 byte a voxel for plain uint8, else 4: float32)."""
    voxels = 1
    for n in image.shape:
        voxels *= max(int(n), 0)
    return voxels * (1 if _plain(image) else 4)


def volume_bytes(path: Path) -> int:
    """The bytes a NIfTI file is held in once read (see :func:`held_bytes`), from its header alone."""
    return held_bytes(_header(Path(path)))


def axial_shape(path: Path) -> tuple[int, int, int]:
    """(rows, cols, slices) of a NIfTI case's axial slices as :func:`read_volume` gives them, from the header alone.

    No voxel is read, so a caller can refuse a too large volume before decoding it.
    """
    path = Path(path)
    image = _header(path)
    if len(image.shape) < 3:
        raise DataError(f"{path}: a {len(image.shape)}D NIfTI of shape {image.shape}; expected a volume (X, Y, Z, 3)")
    lps = [0, 0, 0]
    for native, (axis, _) in enumerate(_orientation(path, image.affine)):
        lps[int(axis)] = int(image.shape[native])
    return lps[1], lps[0], lps[2]


def _voxels(path: Path, proxy, slicer=(), dtype=None) -> np.ndarray:
    """Voxels of ``proxy[slicer]`` (as ``dtype`` when given), with one error for truncated or corrupt data."""
    try:
        data = np.asanyarray(proxy[slicer] if slicer != () else proxy)
        return data if dtype is None else data.astype(dtype, copy=False)
    except Exception as exc:  # truncated or corrupt compressed data shows up only when the voxels are read
        raise DataError(f"{path}: NIfTI voxel data cannot be read, the file may be truncated ({first_line(exc, 160)})") from exc


def _load_uint8(path: Path, image) -> np.ndarray:
    """A 4D (X, Y, Z, C) image's voxels as uint8: as stored when plain uint8, else one float32 channel at a time
    scaled to 0..255 (see :func:`_scale_channel`), so the float copy is one channel, never the volume."""
    if _plain(image):
        return _voxels(path, image.dataobj, dtype=np.uint8)
    warnings.warn(f"{path}: {image.get_data_dtype()} intensities scaled per channel to 8 bits "
                  f"({DEEP_PERCENTILES[0]}th..{DEEP_PERCENTILES[1]}th percentile)", stacklevel=3)
    out = np.empty(image.shape, np.uint8)
    for c in range(image.shape[-1]):
        out[..., c] = _scale_channel(path, _voxels(path, image.dataobj, (..., c), np.float32))
    return out


def _orientation(path: Path, affine: np.ndarray) -> np.ndarray:
    import nibabel as nib
    from nibabel import orientations

    try:
        return orientations.ornt_transform(nib.io_orientation(affine), orientations.axcodes2ornt(LPS))
    except Exception as exc:
        raise DataError(f"{path}: NIfTI affine has no usable orientation ({exc})") from exc


def _scale_channel(path: Path, channel: np.ndarray) -> np.ndarray:
    """One float32 channel -> uint8: the :data:`DEEP_PERCENTILES` of its finite voxels become 0 and 255.

    A low percentile, not the minimum: one ``-inf`` or outlier voxel would otherwise squeeze every other
    value into a few grey levels. Non-finite voxels become 0, with a warning that counts them.
    """
    finite = np.isfinite(channel)
    bad = int(channel.size - np.count_nonzero(finite))
    if bad:
        warnings.warn(f"{path}: {bad} non-finite voxel(s) (NaN or infinite) ignored for the scaling and set to 0", stacklevel=4)
        values = channel[finite]
    else:
        values = channel.reshape(-1)
    if values.size == 0:
        return np.zeros(channel.shape, np.uint8)
    lo, hi = (float(v) for v in np.percentile(values, DEEP_PERCENTILES))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    scaled = np.clip((np.where(finite, channel, lo) - lo) * scale, 0, 255) if bad else np.clip((channel - lo) * scale, 0, 255)
    return scaled.round().astype(np.uint8)


def read_volume(paths: Sequence[Path]) -> tuple[list[np.ndarray], Geometry]:
    """One case: a 4D (X, Y, Z, 3) NIfTI, or three 3D NIfTI files (pre-contrast, FLAIR, post-contrast).

    Returns the axial slices in slice order, each uint8 RGB (rows, cols, 3), and the geometry
    that :meth:`Geometry.to_native` needs to write masks back.
    """
    paths = [Path(p) for p in paths]
    first = _header(paths[0])
    shape = tuple(int(n) for n in first.shape)
    if len(paths) == 1:
        if len(shape) < 3:
            raise DataError(f"{paths[0]}: a {len(shape)}D NIfTI of shape {shape}; expected a volume (X, Y, Z, 3)")
        vector = len(shape) == 5 and shape[3] == 1  # NIfTI's vector convention: (X, Y, Z, 1, C)
        if (shape[3:] if not vector else shape[4:]) != (3,):
            channels = 1 if len(shape) == 3 else int(np.prod(shape[3:]))
            raise DataError(f"{paths[0]}: volume of shape {shape} has {channels} channel(s); expected 3 channels "
                            "(pre-contrast, FLAIR, post-contrast) as (X, Y, Z, 3), or give three 3D files")
        data = _load_uint8(paths[0], first)
        if vector:
            data = data[:, :, :, 0, :]
    elif len(paths) == 3:
        images = [first, *(_header(path) for path in paths[1:])]
        for path, image in zip(paths, images):
            if len(image.shape) != 3 or tuple(image.shape) != shape:
                raise DataError(f"{path}: shape {tuple(image.shape)}; the three channel files must be 3D volumes of one shape ({shape})")
        data = np.empty((*shape, 3), np.uint8)
        for c, (path, image) in enumerate(zip(paths, images)):
            if _plain(image):
                data[..., c] = _voxels(path, image.dataobj, dtype=np.uint8)
            else:
                if c == next(k for k, im in enumerate(images) if not _plain(im)):
                    warnings.warn(f"{path}: {image.get_data_dtype()} intensities scaled per channel to 8 bits "
                                  f"({DEEP_PERCENTILES[0]}th..{DEEP_PERCENTILES[1]}th percentile)", stacklevel=2)
                data[..., c] = _scale_channel(path, _voxels(path, image.dataobj, dtype=np.float32))
    else:
        raise DataError(f"{paths[0]}: give one 4D NIfTI or three 3D NIfTI files (pre-contrast, FLAIR, post-contrast), got {len(paths)} files")
    from nibabel import orientations

    transform = _orientation(paths[0], first.affine)
    lps = orientations.apply_orientation(data, transform)
    slices = [np.ascontiguousarray(lps[:, :, k].transpose(1, 0, 2)) for k in range(lps.shape[2])]
    geometry = Geometry(paths[0], tuple(data.shape[:3]), first.affine, first.header, transform)
    return slices, geometry


def read_mask_volume(path: Path, geometry: Geometry) -> list[np.ndarray]:
    """A mask volume (0/1 or 0/255) of the image's spatial shape -> uint8 0/1 (rows, cols) per axial slice.

    The shape is compared from the header, before any voxel is read.
    """
    from nibabel import orientations

    image = _header(path)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if shape != tuple(geometry.shape):
        raise DataError(f"{path}: mask volume of shape {shape} does not match its image {geometry.path} of shape {geometry.shape}")
    data = _voxels(path, image.dataobj, dtype=None if _plain(image) else np.float32).reshape(shape)
    values = set(np.unique(data).tolist())
    if not (values <= {0, 1} or values <= {0, 255}):
        raise DataError(f"{path}: mask is not binary: expected only 0 and 1 (or 255), found {sorted(values)[:8]}")
    lps = orientations.apply_orientation(data > 0, geometry.transform)
    return [np.ascontiguousarray(lps[:, :, k].T).astype(np.uint8) for k in range(lps.shape[2])]


def read_mask_case(path: Path) -> list[np.ndarray]:
    """A mask volume read on its own (its own affine gives the axial axis) -> uint8 0/1 (rows, cols) per axial slice."""
    image = _header(path)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{path}: mask volume of shape {shape}; expected (X, Y, Z)")
    geometry = Geometry(path, shape, image.affine, image.header, _orientation(path, image.affine))
    return read_mask_volume(path, geometry)


def _mask_image(masks: Sequence[np.ndarray], geometry: Geometry):
    """The mask volume as a nibabel image: uint8 0/1, the input's spatial shape, affine and header (data type and intent set for a mask)."""
    import nibabel as nib

    header = geometry.header.copy()  # type: ignore[attr-defined]
    header.set_data_dtype(np.uint8)
    header.set_intent("none")
    header.set_slope_inter(1.0, 0.0)
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    return kind(geometry.to_native(masks), geometry.affine, header=header)


def write_mask_volume(masks: Sequence[np.ndarray], geometry: Geometry, out: Path) -> Path:
    """Write ``out`` (masks (H, W) 0/1 per axial slice): uint8 0/1 with the input's spatial shape, affine and header."""
    return _save(_mask_image(masks, geometry), out)


def mask_volume_bytes(masks: Sequence[np.ndarray], geometry: Geometry) -> bytes:
    """The same volume as :func:`write_mask_volume` writes, as the bytes of a ``.nii.gz`` file."""
    return gzip.compress(_mask_image(masks, geometry).to_bytes(), compresslevel=6, mtime=0)


def _save(image, out: Path) -> Path:
    """Save atomically; the temporary file keeps the ending, since nibabel picks gzip from it."""
    import nibabel as nib

    return atomic_write(out, lambda tmp: nib.save(image, str(tmp)), keep_ending=True)


SEQUENCES = ("pre-contrast", "flair", "post-contrast")  # kaggle_3m's channel order, as file name suffixes


def write_slices_volume(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], out_images: Sequence[Path], out_mask: Path,
                        spacing: Sequence[float] | None = None) -> tuple[list[Path], Path]:
    """kaggle_3m slices (rows, cols, 3) uint8 and masks (rows, cols) 0/1, in slice order -> NIfTI files (LPS).

    One path in ``out_images``: one 4D volume (X, Y, Z, 3); three: one 3D volume per sequence, in
    :data:`SEQUENCES` order (the names are the format's: ``NiftiVolumes.sequence_files``). ``spacing``: see
    :func:`slices_geometry`. Returns the image files and the mask file.
    """
    import nibabel as nib

    if len(out_images) not in (1, 3):
        raise DataError(f"{out_mask}: {len(out_images)} image files; expected 1 (4D) or 3 (one per sequence)")
    volume = np.ascontiguousarray(np.stack(images).transpose(2, 1, 0, 3))  # (S, rows, cols, 3) -> (L, P, S, 3)
    geometry = slices_geometry(out_images[0], volume.shape[1], volume.shape[0], volume.shape[2], spacing)

    def image_of(data: np.ndarray):
        image = nib.Nifti1Image(np.ascontiguousarray(data), geometry.affine)
        image.header.set_xyzt_units("mm" if spacing is not None else "unknown")
        return image

    if len(out_images) == 1:
        written = [_save(image_of(volume), Path(out_images[0]))]
    else:
        written = [_save(image_of(volume[..., c]), Path(path)) for c, path in enumerate(out_images)]
    return written, write_mask_volume(masks, geometry, out_mask)
