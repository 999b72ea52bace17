"""The one segmentation path: standardize the patient if the model asks, resize to the model, predict (with optional TTA), resize back, threshold, post-process.

``predict``, ``evaluate``, ``report`` and the viewer call :func:`segment`; nothing else resizes,
thresholds or post-processes predictions. Torch-free: it runs any
:class:`~gliomaseg.inference.backend.Predictor` (PyTorch checkpoint or ONNX Runtime).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gliomaseg.core.defaults import DEFAULT_BATCH_SIZE
from gliomaseg.data.intensity import DEFAULT_INTENSITY, standardize_patient
from gliomaseg.data.resize import resize_pair, resize_probabilities
from gliomaseg.inference.postprocess import PostProcess, process_patient
from gliomaseg.inference.tta import tta_probabilities


def _check_images(images: Sequence[np.ndarray]) -> None:
    for index, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {index}: expected uint8 RGB of shape (H, W, 3), found {image.dtype} {image.shape}")


def predict_probabilities(
    predictor, images: Sequence[np.ndarray], batch_size: int = DEFAULT_BATCH_SIZE, tta: str = "none"
) -> list[np.ndarray]:
    """Tumour probabilities at each image's own size.

    Args:
        predictor: has ``image_size`` (S) and ``probabilities((N, S, S, 3) uint8) -> (N, S, S) float32``;
            when its ``info.intensity`` is ``patient``, the images are first standardized together.
        images: one patient's uint8 RGB arrays (H, W, 3), any H and W (they may differ between images).
        batch_size: images per call of the predictor.
        tta: ``none``, ``flip`` or ``d4`` (see :mod:`gliomaseg.inference.tta`).

    Returns:
        One float32 (H, W) array per image: each image is resized to S x S (area interpolation),
        predicted, and its probabilities are resized back to (H, W) (linear interpolation).
    """
    _check_images(images)
    info = getattr(predictor, "info", None)
    if getattr(info, "intensity", DEFAULT_INTENSITY) == "patient":
        images = standardize_patient(images)
    size = predictor.image_size
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        probs = tta_probabilities(predictor.probabilities, np.stack([resize_pair(im, None, size, resize_mask=False)[0] for im in chunk]), tta)
        for image, prob in zip(chunk, probs):
            out.append(resize_probabilities(prob, image.shape[:2]).astype(np.float32, copy=False))
    return out


def masks_from_probabilities(
    probabilities: Sequence[np.ndarray], threshold: float, postprocess: PostProcess | None = None
) -> list[np.ndarray]:
    """Threshold (``p > threshold``) and post-process one patient's probabilities, in slice order.

    Returns uint8 0/1 masks of the probabilities' shapes. The 3D step of ``postprocess``
    (largest component) treats the list as one volume, so pass all of a patient's slices.
    """
    masks = [(p > threshold).astype(np.uint8) for p in probabilities]
    return process_patient(masks, postprocess) if postprocess is not None and postprocess.active else masks


def segment(
    predictor,
    images: Sequence[np.ndarray],
    threshold: float | None = None,
    tta: str = "none",
    postprocess: PostProcess | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Segment the slices of one patient.

    Args:
        predictor: a :class:`~gliomaseg.inference.backend.Predictor` (``TorchPredictor`` or ``OnnxPredictor``).
        images: the patient's slices in slice order, uint8 RGB arrays of shape (H, W, 3), any H, W.
        threshold: tumour where probability > threshold; ``None`` takes the model's own (``predictor.threshold``).
        tta: ``none``, ``flip`` or ``d4``.
        postprocess: steps to run after thresholding (``None``: none); its 3D step sees the slices as one volume.
        batch_size: slices per predictor call.

    Returns:
        ``(probabilities, masks)``: per image, float32 (H, W) probabilities in [0, 1] and the
        uint8 (H, W) mask of 0/1, both at the image's own size.
    """
    threshold = predictor.threshold if threshold is None else threshold
    probabilities = predict_probabilities(predictor, images, batch_size, tta)
    return probabilities, masks_from_probabilities(probabilities, threshold, postprocess)
