"""Reading slices and masks with validation, and atomic writes.

Every reader raises :class:`DataError` naming the file and the problem, so a bad slice
never surfaces as an OpenCV or numpy traceback.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from gliomaseg.errors import DataError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
SLICE_SIZE = (256, 256)


def _decode(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    # np.fromfile + imdecode instead of cv2.imread: works for any Unicode path on every platform.
    raw = np.fromfile(str(path), dtype=np.uint8)
    if raw.size == 0:
        raise DataError(f"{path}: file is empty")
    array = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: file does not decode as an image (corrupt, truncated or unsupported format)")
    return array


def read_image(path: str | Path, *, lenient: bool = False) -> np.ndarray:
    """Read an MRI slice as uint8 RGB, shape (H, W, 3).

    Strict mode (``lenient=False``, used for datasets) requires 3 channels of uint8.
    Lenient mode (inference) replicates a grayscale slice to 3 channels, drops alpha and
    scales 16-bit data to 8 bits, each with a warning naming the file.
    """
    path = Path(path)
    array = _decode(path)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
        if lenient:
            warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.dtype != np.uint8:
        if not lenient:
            raise DataError(f"{path}: expected 8-bit pixels, found {array.dtype}")
        if array.dtype == np.uint16:
            warnings.warn(f"{path}: 16-bit image scaled to 8 bits", stacklevel=2)
            array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
        else:
            raise DataError(f"{path}: unsupported pixel type {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        if not lenient:
            raise DataError(f"{path}: expected an RGB slice of shape (H, W, 3), found shape {array.shape}")
        warnings.warn(f"{path}: grayscale slice replicated to 3 channels", stacklevel=2)
        array = np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"{path}: expected an RGB slice of shape (H, W, 3), found shape {array.shape}")
    return np.ascontiguousarray(array)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as uint8 of 0/1, shape (H, W). The file must hold only 0 and 255 (or 0 and 1)."""
    path = Path(path)
    array = _decode(path)
    if array.ndim == 3:
        if array.shape[2] >= 3 and np.array_equal(array[:, :, 0], array[:, :, 1]) and np.array_equal(
            array[:, :, 0], array[:, :, 2]
        ):
            array = array[:, :, 0]
        elif array.shape[2] == 1:
            array = array[:, :, 0]
        else:
            raise DataError(f"{path}: a mask must have one channel, found shape {array.shape}")
    values = np.unique(array)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in values[:8])
        raise DataError(f"{path}: mask is not binary: expected only 0 and 255, found values {shown}")
    return (array > 0).astype(np.uint8)


def read_slice_pair(
    image_path: str | Path, mask_path: str | Path, expected_size: tuple[int, int] | None = SLICE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate an image (H, W, 3) uint8 RGB and its mask (H, W) uint8 0/1."""
    image = read_image(image_path)
    mask = read_mask(mask_path)
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        raise DataError(
            f"{image_path}: expected a slice of {expected_size[0]}x{expected_size[1]}x3, found {image.shape}"
        )
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"{mask_path}: mask shape {mask.shape} does not match its image {image_path} of shape {image.shape[:2]}"
        )
    return image, mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path`` and rename it into place.

    A crash mid-write leaves the previous file (or none) instead of half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically (temp file, then rename)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


REQUIRED_COLUMNS = ("patient", "image_path", "mask_path")


def read_slices_csv(csv_path: str | Path, *, require_mask: bool = True, check_paths: bool = True) -> pd.DataFrame:
    """Read a CSV written by ``prepare`` and resolve its paths.

    Relative paths are taken relative to the CSV's folder. Raises :class:`DataError` naming the
    CSV when it is missing, lacks columns, is empty or points at files that do not exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file does not exist")
    try:
        frame = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from exc
    required = REQUIRED_COLUMNS if require_mask else ("patient", "image_path")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
    if frame.empty:
        raise DataError(f"{csv_path}: CSV has no rows")
    base = csv_path.resolve().parent
    path_columns = [c for c in ("image_path", "mask_path") if c in frame.columns]
    for column in path_columns:
        frame[column] = [str(p if Path(p).is_absolute() else base / p) for p in frame[column].astype(str)]
    if check_paths:
        for column in path_columns if require_mask else ["image_path"]:
            absent = [p for p in frame[column] if not Path(p).is_file()]
            if absent:
                more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
                raise DataError(f"{csv_path}: {column} points to a file that does not exist: {absent[0]}{more}")
    frame["patient"] = frame["patient"].astype(str)
    return frame
