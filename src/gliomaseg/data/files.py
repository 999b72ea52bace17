"""Reading slices and masks with validation, and atomic writes.

Every reader raises :class:`DataError` naming the file and the problem, so a bad slice
never surfaces as an OpenCV or numpy traceback.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gliomaseg.core.errors import DataError
from gliomaseg.core.limits import MAX_DECODED_BYTES, MAX_IMAGE_SIDE

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
SLICE_SIZE = (256, 256)
# 16-bit slices, when allowed, are scaled per volume from these percentiles to 0..255.
DEEP_PERCENTILES = (0.5, 99.5)
# Bytes a decoded pixel may take: OpenCV returns up to 4 channels of 16 bits (IMREAD_UNCHANGED).
_PIXEL_BYTES = 8
_HEADER_LOCK = threading.Lock()


def _check_dimensions(path: Path, raw: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> None:
    """Refuse an image whose header claims a side over ``max_side`` (:data:`MAX_IMAGE_SIDE`) or more decoded
    bytes than :data:`MAX_DECODED_BYTES`, before decoding its pixels.

    Pillow reads only the header here. A file whose header Pillow cannot read is refused as not an image:
    every slice format gliomaseg accepts (:data:`IMAGE_SUFFIXES`) has a header Pillow reads, and letting
    OpenCV decode an unchecked file would give up the guard (its own limit is 2^30 pixels).
    """
    from PIL import Image

    try:
        # the limit below is ours; the lock because catch_warnings swaps process-wide state (slices are read on threads)
        with _HEADER_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as header:
                width, height = header.size
    except Image.DecompressionBombError as exc:  # over twice Pillow's own pixel limit: the side check refuses it
        found = re.search(r"(\d+) pixels", str(exc))
        raise DataError(f"{path}: image of {found.group(1) if found else 'too many'} pixels is larger than the limit of "
                        f"{max_side}x{max_side}") from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...) for a bad header
        raise DataError(f"{path}: file does not decode as an image (corrupt, truncated or unsupported format: "
                        f"{type(exc).__name__})") from None
    if width > max_side or height > max_side:
        raise DataError(f"{path}: image of {width}x{height} pixels is larger than the limit of {max_side}x{max_side}")
    decoded = width * height * _PIXEL_BYTES
    if decoded > MAX_DECODED_BYTES:
        raise DataError(f"{path}: image of {width}x{height} pixels may decode to {decoded / 2**20:.0f} MiB, more than "
                        f"the memory budget of {MAX_DECODED_BYTES / 2**20:.0f} MiB")


def _decode(path: Path, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    # np.fromfile + imdecode instead of cv2.imread: works for any Unicode path on every platform.
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if raw.size == 0:
        raise DataError(f"{path}: file is empty")
    _check_dimensions(path, raw, max_side)
    try:
        array = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        array = None
    if array is None:
        raise DataError(f"{path}: file does not decode as an image (corrupt, truncated or unsupported format)")
    if max(array.shape[:2]) > max_side:  # a header that lied about its size
        raise DataError(f"{path}: image of {array.shape[1]}x{array.shape[0]} pixels is larger than the limit of {max_side}x{max_side}")
    return array


def read_image(path: str | Path, *, lenient: bool = False, allow_grayscale: bool = False, allow_16bit: bool = False,
               max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Read an MRI slice as RGB, shape (H, W, 3): uint8, or uint16 when ``allow_16bit`` and the file is 16-bit.

    The model was trained on 8-bit RGB slices whose channels are pre-contrast, FLAIR and post-contrast.
    A grayscale slice holds one sequence only, and 16-bit data holds raw scanner values, so both are
    refused by default with an error that says why. ``allow_grayscale`` copies a grayscale slice into the
    three channels; ``allow_16bit`` returns the 16-bit values for :func:`scale_volume` to map a whole
    patient to 0..255 (each with a warning naming the file). ``lenient`` (inference) drops an alpha
    channel with a warning; strict reading (datasets) refuses it. ``max_side`` (at most :data:`MAX_IMAGE_SIDE`)
    refuses a larger image from its header.
    """
    path = Path(path)
    array = _decode(path, max_side)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
        if lenient:
            warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.dtype == np.uint16:
        if not allow_16bit:
            hint = (" or pass --allow-16bit to scale each patient's 16-bit slices together (percentiles "
                    f"{DEEP_PERCENTILES[0]}-{DEEP_PERCENTILES[1]} to 0..255)") if lenient else ""
            raise DataError(f"{path}: 16-bit image; the model was trained on 8-bit slices and raw scanner values give a "
                            f"meaningless mask. Convert it to 8 bits{hint}")
        warnings.warn(f"{path}: 16-bit image, scaled per patient to 8 bits", stacklevel=2)
    elif array.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {array.dtype}; expected 8-bit RGB")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        if not allow_grayscale:
            hint = "; pass --allow-grayscale to copy it into the three channels anyway" if lenient else ""
            raise DataError(f"{path}: expected an RGB slice of shape (H, W, 3), found a grayscale slice of shape {array.shape}; "
                            "the model expects 3 channels (pre-contrast, FLAIR, post-contrast) and one sequence copied "
                            f"three times gives a meaningless mask{hint}")
        warnings.warn(f"{path}: grayscale slice replicated to 3 channels", stacklevel=2)
        array = np.repeat(array.reshape(array.shape[0], array.shape[1], 1), 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"{path}: expected an RGB slice of shape (H, W, 3), found shape {array.shape}")
    return np.ascontiguousarray(array)


def scale_volume(images: list[np.ndarray]) -> list[np.ndarray]:
    """Map the 16-bit slices of one volume to uint8 together; 8-bit slices pass unchanged.

    The :data:`DEEP_PERCENTILES` of all 16-bit pixels of the volume become 0 and 255, so MRI values of
    0-2000 fill the 8-bit range instead of turning nearly black (as a plain division by 257 would).
    """
    deep = [im for im in images if im.dtype != np.uint8]
    if not deep:
        return images
    values = np.concatenate([im.reshape(-1) for im in deep]).astype(np.float32)
    low, high = np.percentile(values, DEEP_PERCENTILES)
    span = max(float(high - low), 1.0)
    return [im if im.dtype == np.uint8 else np.clip((im.astype(np.float32) - low) / span * 255.0, 0, 255).round().astype(np.uint8)
            for im in images]


def read_mask(path: str | Path, *, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Read a mask as uint8 of 0/1, shape (H, W). The file must hold only 0 and 255 (or 0 and 1).

    Its header is checked against ``max_side`` and :data:`MAX_DECODED_BYTES` before decoding, as for images.
    """
    path = Path(path)
    array = _decode(path, max_side)
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


REQUIRED_COLUMNS = ("patient", "image_path", "mask_path")
NUMERIC_COLUMNS = ("slice", "diagnosis", "fold")  # read back as numbers (empty cells: NaN); every other column stays text


def read_slices_csv(csv_path: str | Path, *, require_mask: bool = True, check_paths: bool = True) -> pd.DataFrame:
    """Read a CSV written by ``prepare`` and resolve its paths.

    Relative paths are taken relative to the CSV's folder. Raises :class:`DataError` naming the
    CSV when it is missing, lacks columns, is empty or points at files that do not exist.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file does not exist")
    try:
        # Every cell as the text it holds: no NaN for an empty cell, and a patient named NA stays "NA".
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot be read ({exc.strerror or type(exc).__name__})") from exc
    required = REQUIRED_COLUMNS if require_mask else ("patient", "image_path")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {', '.join(required)}")
    if frame.empty:
        raise DataError(f"{csv_path}: CSV has no rows")
    for column in required:
        empty = [i for i, v in enumerate(frame[column]) if not v.strip()]
        if empty:
            more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
            raise DataError(f"{csv_path}: row {empty[0] + 2} has an empty {column}{more}")
    for column in NUMERIC_COLUMNS:
        if column in frame.columns:
            numbers = pd.to_numeric(frame[column].where(frame[column].str.strip() != ""), errors="coerce")
            bad = [i for i, (text, n) in enumerate(zip(frame[column], numbers)) if text.strip() and n != n]
            if bad:
                raise DataError(f"{csv_path}: row {bad[0] + 2}: {column} {frame[column].iloc[bad[0]]!r} is not a number")
            frame[column] = numbers
    base = csv_path.resolve().parent
    path_columns = [c for c in ("image_path", "mask_path") if c in frame.columns]
    for column in path_columns:
        frame[column] = [p if not p or Path(p).is_absolute() else str(base / p) for p in frame[column]]
    if check_paths:
        for column in path_columns if require_mask else ["image_path"]:
            absent = [p for p in frame[column] if not Path(p).is_file()]
            if absent:
                more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
                raise DataError(f"{csv_path}: {column} points to a file that does not exist: {absent[0]}{more}")
    return frame
