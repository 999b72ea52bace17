"""Missing sequences (a channel that is a copy of FLAIR): detection, the columns and warnings that report it,
and the training augmentation that imitates it."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gliomaseg.core.errors import InputWarning
from gliomaseg.data.sequences import COPY_TOLERANCE, describe, missing_sequences
from gliomaseg.data.transforms import ChannelIntensity, MissingSequence, train_transforms


def brain_slice(seed: int, size: int = 64) -> np.ndarray:
    """A head-like slice: three different sequences inside a disc, black air outside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    image = np.zeros((size, size, 3), np.uint8)
    for channel, base in enumerate((70, 120, 90)):
        image[..., channel][inside] = rng.integers(base - 30, base + 30, inside.sum())
    return image


def with_copy(image: np.ndarray, channels: tuple[int, ...], noise: int = 0) -> np.ndarray:
    out = image.copy()
    for channel in channels:
        copy = image[..., 1].astype(np.int16) + (np.random.default_rng(channel).integers(-noise, noise + 1, image.shape[:2]) if noise else 0)
        out[..., channel] = np.where(image[..., 1] > 0, np.clip(copy, 1, 255), 0).astype(np.uint8)
    return out


@pytest.mark.parametrize("channels, expected", [
    ((), ()), ((0,), ("pre-contrast",)), ((2,), ("post-contrast",)), ((0, 2), ("pre-contrast", "post-contrast")),
])
def test_missing_sequences_found_both_ways(channels, expected):
    images = [with_copy(brain_slice(seed), channels) for seed in range(4)]
    assert missing_sequences(images) == expected
    assert missing_sequences(images[:1]) == expected  # a single slice too
    # lossy re-encoding (+-1) still reads as a copy; real sequences are 8 or more apart on kaggle_3m
    assert missing_sequences([with_copy(brain_slice(9), channels, noise=1)]) == expected
    assert describe(expected) == "+".join(expected)


def test_an_empty_slice_says_nothing():
    assert missing_sequences([np.zeros((64, 64, 3), np.uint8)]) == ()
    assert COPY_TOLERANCE < 8


def test_predict_reports_missing_sequences(bright_predictor, tmp_path: Path):
    from gliomaseg.predict.files import predict

    root = tmp_path / "in"
    for patient, channels in (("P_full", ()), ("P_nopost", (2,))):
        (root / patient).mkdir(parents=True)
        for k in range(1, 4):
            cv2.imwrite(str(root / patient / f"{patient}_{k}.tif"), with_copy(brain_slice(k), channels)[..., ::-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict(bright_predictor, root, tmp_path / "out", gifs=False, overlays=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert len(messages) == 1 and messages[0].startswith("P_nopost: post-contrast is missing")
    patients = pd.read_csv(tmp_path / "out" / "patients.csv", keep_default_na=False).set_index("patient")
    assert patients.loc["P_nopost", "missing_sequences"] == "post-contrast"
    assert patients.loc["P_full", "missing_sequences"] == ""
    slices = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert set(slices.loc[slices["patient"] == "P_nopost", "missing_sequences"]) == {"post-contrast"}
    assert set(slices.loc[slices["patient"] == "P_full", "missing_sequences"]) == {""}
    assert result.patients.set_index("patient").loc["P_nopost", "missing_sequences"] == "post-contrast"


def test_prepare_reports_missing_sequences(synth_root: Path, tmp_path: Path):
    import shutil

    from gliomaseg.data.prepare import prepare

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    patient = sorted(p for p in root.iterdir() if p.is_dir())[0]
    for path in patient.glob("*.tif"):
        if not path.stem.endswith("_mask"):
            image = cv2.imread(str(path))  # BGR: channel 0 here is post-contrast, 1 is FLAIR
            image[..., 0] = image[..., 1]
            cv2.imwrite(str(path), image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prepare(root, tmp_path / "prepared", plots=False)
    assert [str(w.message).split(":")[0] for w in caught if issubclass(w.category, InputWarning)] == [patient.name]
    info = pd.read_csv(tmp_path / "prepared" / "data_info.csv", keep_default_na=False)
    assert set(info.loc[info["patient"] == patient.name, "missing_sequences"]) == {"post-contrast"}
    assert set(info.loc[info["patient"] != patient.name, "missing_sequences"]) == {""}
    assert result.summary.set_index("split").loc["all", "missing_sequence_patients"] == 1


def test_missing_sequence_augmentation_copies_flair_exactly():
    image = brain_slice(1)
    seen = set()
    transform = MissingSequence(p=1.0)
    for seed in range(30):
        transform.set_random_seed(seed)
        out = transform(image=image)["image"]
        copied = tuple(c for c in (0, 2) if np.array_equal(out[..., c], image[..., 1]))
        assert copied and missing_sequences([out]) == tuple(("pre-contrast", "FLAIR", "post-contrast")[c] for c in copied)
        assert np.array_equal(out[..., 1], image[..., 1])
        seen.add(copied)
    assert seen == {(0,), (2,), (0, 2)}


def test_intensity_augmentation_changes_brain_only():
    image = brain_slice(2)
    transform = ChannelIntensity(p=1.0)
    transform.set_random_seed(0)
    out = transform(image=image)["image"]
    air = image.max(axis=-1) <= 10
    assert np.array_equal(out[air], image[air])
    assert np.abs(out[~air].astype(int) - image[~air]).mean() > 1
    assert out[~air].min() >= 1  # the brain never turns into background


def test_train_transforms_default_is_the_case_studys():
    names = [type(t).__name__ for t in train_transforms().transforms]
    assert "MissingSequence" not in names and "ChannelIntensity" not in names
    augmented = train_transforms(missing_sequence_p=0.2, intensity_p=0.3, scale=(0.7, 1.4))
    names = [type(t).__name__ for t in augmented.transforms]
    # intensity first, then the copy, so that a copied channel equals FLAIR exactly
    assert names.index("ChannelIntensity") < names.index("MissingSequence") < names.index("HorizontalFlip")
    affine = next(t for t in augmented.transforms if type(t).__name__ == "Affine")
    assert tuple(affine.scale["x"]) == (0.7, 1.4)


@pytest.mark.parametrize("option", [{"missing_sequence_p": 1.5}, {"intensity_augment_p": -0.1}, {"scale_min": 1.2, "scale_max": 1.1}])
def test_augmentation_options_are_checked(option):
    from gliomaseg.core.errors import ConfigError
    from gliomaseg.training.config import TrainConfig

    with pytest.raises(ConfigError):
        TrainConfig(out="run", data="data", **option).validate()


def test_the_sequence_check_sums_what_numpy_sums():
    from gliomaseg.data.intensity import brain_mask
    from gliomaseg.data.sequences import SequenceCheck

    image = with_copy(brain_slice(5, size=96), (2,), noise=3)[::-1, ::2]  # a strided view, as a flipped volume gives
    check = SequenceCheck().add(image)
    brain = brain_mask(image)
    flair = image[..., 1][brain].astype(np.int64)
    for channel in (0, 2):
        assert check.difference[channel] == np.abs(image[..., channel][brain].astype(np.int64) - flair).sum()
    assert check.pixels == brain.sum() and check.difference[1] == 0
