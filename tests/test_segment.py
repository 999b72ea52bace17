from __future__ import annotations

import numpy as np
import pytest

from gliomaseg.inference.postprocess import PostProcess
from gliomaseg.inference.segment import segment


def _image(h: int, w: int, square: tuple[slice, slice]) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[square] = 255
    return image


def test_segment_resizes_to_the_model_and_back(bright_predictor):
    predictor = bright_predictor
    images = [_image(64, 96, (slice(16, 48), slice(24, 72))), _image(40, 40, (slice(0, 0), slice(0, 0)))]
    probabilities, masks = segment(predictor, images)
    assert all(shape[1:] == (32, 32, 3) for shape in predictor.seen)
    assert [p.shape for p in probabilities] == [(64, 96), (40, 40)]
    assert all(p.dtype == np.float32 for p in probabilities)
    assert all(m.dtype == np.uint8 for m in masks)
    assert masks[0][32, 48] == 1 and masks[0][2, 2] == 0 and masks[0].sum() == pytest.approx(32 * 48, rel=0.1)
    assert masks[1].sum() == 0
    np.testing.assert_array_equal(masks[0], (probabilities[0] > 0.5).astype(np.uint8))


def test_segment_threshold_tta_and_postprocess(bright_predictor):
    predictor = bright_predictor
    image = _image(32, 32, (slice(8, 24), slice(8, 24)))
    image[2:4, 2:4, 0] = 100  # a faint 2x2 speck: above threshold 0.3, below 0.5
    _, (default,) = segment(predictor, [image])
    _, (low,) = segment(predictor, [image], threshold=0.3)
    assert default[2, 2] == 0 and low[2, 2] == 1
    _, (cleaned,) = segment(predictor, [image], threshold=0.3, postprocess=PostProcess(min_size=10))
    assert cleaned[2, 2] == 0 and cleaned[16, 16] == 1
    _, (flipped,) = segment(predictor, [image], tta="flip")
    np.testing.assert_array_equal(flipped, default)  # a symmetric answer survives the flips unchanged
    assert len(predictor.seen) == 4 + 2  # flip TTA runs 3 passes


def test_segment_refuses_non_rgb_uint8(bright_predictor):
    with pytest.raises(ValueError, match=r"image 0: expected uint8 RGB"):
        segment(bright_predictor, [np.zeros((32, 32), np.uint8)])
