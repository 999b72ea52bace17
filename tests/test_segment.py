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


def test_normalize_is_the_formula_in_nchw_and_refuses_what_is_not_uint8_rgb():
    from gliomaseg.modeling.spec import normalize, pixel_normalization

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    scaled_mean, scaled_std = pixel_normalization(mean, std)
    want = (images.transpose(0, 3, 1, 2).astype(np.float32) - scaled_mean) / scaled_std
    out = normalize(images, mean, std)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (3, 3, 40, 40)
    np.testing.assert_array_equal(out, want)  # the same float32 arithmetic, bit for bit
    np.testing.assert_array_equal(normalize(images[:, ::-1, ::2], mean, std), want[:, :, ::-1, ::2])
    for bad in (images.astype(np.float32), images[..., :1]):
        with pytest.raises(ValueError, match="uint8"):
            normalize(bad, mean, std)


def test_thread_map_keeps_order_settles_before_raising_and_runs_serially_on_one_cpu(monkeypatch):
    import threading
    import time

    from gliomaseg.core import parallel

    monkeypatch.setattr(parallel, "available_cpus", lambda: 2)
    monkeypatch.setattr(parallel, "_executor", None)  # a pool of 2 for this test
    seen: set[str] = set()

    def square(x: int) -> int:
        seen.add(threading.current_thread().name)
        time.sleep(0.002)
        return x * x

    assert parallel.thread_map(square, range(50)) == [x * x for x in range(50)]
    assert len(seen) == 2 and threading.current_thread().name not in seen  # both pool threads did the work

    finished: list[int] = []

    def slow_then_fail(x: int) -> int:
        time.sleep(0.05 if x == 0 else 0.0)
        if x in (3, 5):
            raise KeyError(f"item {x}")
        finished.append(x)
        return x

    with pytest.raises(KeyError, match="item 3"):  # the first failing item in input order
        parallel.thread_map(slow_then_fail, range(200))
    count = len(finished)
    time.sleep(0.1)
    assert 0 in finished and len(finished) == count < 200  # the running call finished before the raise; the rest never ran
    monkeypatch.setattr(parallel, "available_cpus", lambda: 1)
    seen.clear()
    assert parallel.thread_map(square, [3, 4]) == [9, 16] and seen == {threading.current_thread().name}
