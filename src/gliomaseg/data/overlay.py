"""Pictures of a slice and its masks: contour overlays, labelled frames, PNG bytes and GIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from gliomaseg.core.defaults import GIF_FPS
from gliomaseg.core.io import atomic_write
from gliomaseg.core.parallel import thread_map
from gliomaseg.data.sequences import FLAIR_CHANNEL  # kaggle_3m's RGB is pre-contrast, FLAIR, post-contrast

# On a grey FLAIR slice (where the tumour is bright), yellow and red stay apart from the image and from each other;
# green, on the RGB composite whose green channel is FLAIR, melted into the tumour.
PREDICTION_COLOUR = (255, 215, 0)  # RGB yellow
TRUTH_COLOUR = (230, 30, 30)  # RGB red


def overlay_contours(
    image: np.ndarray, prediction: np.ndarray | None = None, truth: np.ndarray | None = None, legend: bool = False,
    background: str = "flair",
) -> np.ndarray:
    """Draw contours on a slice: prediction in yellow, ground truth in red, 2 px wide (on 256 px).

    Args:
        image: (H, W, 3) uint8 RGB (pre-contrast, FLAIR, post-contrast).
        prediction, truth: (H, W) masks, nonzero = tumour; either may be None.
        background: ``flair`` (the FLAIR channel in grey, how a reader looks at it) or ``composite`` (the RGB as stored).
    Returns:
        (H, W, 3) uint8 RGB with contours (and a small legend when asked).
    """
    if background == "flair":
        canvas = np.ascontiguousarray(np.repeat(image[..., FLAIR_CHANNEL : FLAIR_CHANNEL + 1], 3, axis=2))
    else:
        canvas = np.ascontiguousarray(image.copy())
    thickness = max(2, round(2 * min(image.shape[:2]) / 256))
    for mask, colour in ((truth, TRUTH_COLOUR), (prediction, PREDICTION_COLOUR)):
        if mask is None:
            continue
        contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, colour, thickness)
    if legend:
        entries = [("prediction", PREDICTION_COLOUR)] + ([("truth", TRUTH_COLOUR)] if truth is not None else [])
        scale = max(0.3, min(image.shape[:2]) / 700)
        for i, (label, colour) in enumerate(entries):
            y = int(12 + i * 30 * scale * 1.3)
            cv2.rectangle(canvas, (4, y - 7), (12, y + 1), colour, -1)
            cv2.putText(canvas, label, (16, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def label_frame(frame: np.ndarray, text: str) -> np.ndarray:
    """A copy of an RGB frame with ``text`` (e.g. ``slice 12``) in its lower left corner, white on a dark band."""
    canvas = np.ascontiguousarray(frame.copy())
    scale = max(0.35, min(frame.shape[:2]) / 600)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = frame.shape[0] - 4
    canvas[max(0, y - h - base - 2):, : w + 8] //= 3
    cv2.putText(canvas, text, (4, y - base + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB (H, W, 3) or grayscale (H, W) uint8 array."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", array)  # OpenCV's default: zlib's fastest level with its RLE strategy
    if not ok:
        raise ValueError(f"could not encode an array of shape {array.shape} as PNG")
    return encoded.tobytes()


def write_gif(frames: Iterable[np.ndarray], path: str | Path, fps: float = GIF_FPS) -> Path:
    """Write (H, W, 3) RGB uint8 frames as an endlessly looping GIF at ``fps`` frames per second, atomically.

    Each frame gets its own 256-colour palette by Pillow's fast octree quantizer, without dithering: on a
    20-slice patient 0.08 s instead of 2.5 s for median cut (imageio's default), at a mean error of 2.3 instead
    of 1.5 grey levels (of 255). Pillow's palette optimization is off: on an 88-slice patient it halved the
    save time (0.15 to 0.08 s) for a file 4% larger.
    """
    images = _gif_images(frames, str(path))
    return atomic_write(path, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                         duration=round(1000.0 / fps), loop=0, optimize=False))


def _gif_images(frames: Iterable[np.ndarray], name: str) -> list:
    from PIL import Image

    frames = [np.asarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"{name}: no frames to write")
    # on the slice threads: Pillow releases the GIL while it quantizes (88 frames 0.13 -> 0.08 s on 2 cores)
    return thread_map(lambda f: Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                                                             dither=Image.Dither.NONE), frames)


def gif_bytes(frames: Iterable[np.ndarray], fps: float = GIF_FPS, name: str = "GIF") -> bytes:
    """The bytes of the GIF that :func:`write_gif` writes (for the viewer's download)."""
    import io

    images = _gif_images(frames, name)
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=0,
                   optimize=False)
    return buffer.getvalue()
