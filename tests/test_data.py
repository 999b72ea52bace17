from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from sklearn.model_selection import train_test_split

from gliomaseg.cli import main
from gliomaseg.core import io as core_io
from gliomaseg.core.errors import DataError
from gliomaseg.core.limits import MAX_IMAGE_SIDE
from gliomaseg.data import files
from gliomaseg.data.dataset import SliceDataset
from gliomaseg.data.prepare import INFO_COLUMNS, prepare, scan_folder
from gliomaseg.data.synth import generate
from gliomaseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, train_transforms

# --- synth -------------------------------------------------------------------------------------

def test_synth_layout(synth_root: Path):
    patients = sorted(p for p in synth_root.iterdir())
    assert len(patients) == 6
    for folder in patients:
        name = folder.name
        assert name.startswith("TCGA_") and len(name.split("_")) == 4 and len(name.split("_")[3]) == 8
        images = sorted(f for f in folder.glob("*.tif") if not f.name.endswith("_mask.tif"))
        numbers = sorted(int(f.stem.rsplit("_", 1)[1]) for f in images)
        assert numbers == list(range(1, len(images) + 1))
        for k in numbers:
            image = tifffile.imread(folder / f"{name}_{k}.tif")
            mask = tifffile.imread(folder / f"{name}_{k}_mask.tif")
            assert image.shape == (256, 256, 3) and image.dtype == np.uint8
            assert mask.shape == (256, 256) and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 255}


def test_synth_has_tumour_runs_and_empty_edges(synth_root: Path):
    info, _ = scan_folder(synth_root)
    assert 0 < info["diagnosis"].sum() < len(info)
    for _, group in info.groupby("patient"):
        flags = group.sort_values("slice")["diagnosis"].tolist()
        assert flags[0] == 0 and flags[-1] == 0  # edge slices carry no tumour
        if any(flags):  # tumour slices are one contiguous run
            first, last = flags.index(1), len(flags) - 1 - flags[::-1].index(1)
            assert all(flags[first : last + 1])


def test_synth_is_deterministic(tmp_path: Path):
    generate(tmp_path / "a", patients=2, slices=4, seed=7)
    generate(tmp_path / "b", patients=2, slices=4, seed=7)
    generate(tmp_path / "c", patients=2, slices=4, seed=8)
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.tif"))
    b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.tif"))
    assert a == b
    for rel in a:
        assert np.array_equal(tifffile.imread(tmp_path / "a" / rel), tifffile.imread(tmp_path / "b" / rel))
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) != sorted(p.name for p in (tmp_path / "a").iterdir())


# --- prepare -----------------------------------------------------------------------------------

def test_info_columns_and_numeric_order(prepared: Path):
    info = pd.read_csv(prepared / "data_info.csv")
    assert list(info.columns) == INFO_COLUMNS
    long_patients = 0
    for patient, group in info.groupby("patient", sort=False):
        numbers = group["slice"].tolist()
        assert numbers == sorted(numbers)
        if 10 in numbers:  # a lexical sort puts "10" before "2"; consecutive small numbers could not tell
            assert numbers.index(2) < numbers.index(10) and numbers.index(9) + 1 == numbers.index(10)
            long_patients += 1
    assert long_patients >= 1
    assert info["patient"].tolist() == sorted(info["patient"].tolist())
    for _, row in info.iterrows():
        mask = tifffile.imread(row["mask_path"])
        assert row["diagnosis"] == int(mask.max() > 0)


def test_patient_split_is_disjoint_and_matches_sklearn(prepared: Path):
    info = pd.read_csv(prepared / "data_info.csv")
    train = pd.read_csv(prepared / "data_train.csv")
    val = pd.read_csv(prepared / "data_val.csv")
    assert not set(train["patient"]) & set(val["patient"])
    assert len(train) + len(val) == len(info)
    groups = sorted(info["patient"].unique())
    expected_train, expected_val = train_test_split(groups, train_size=0.8, random_state=42)
    assert set(train["patient"]) == set(expected_train)
    assert set(val["patient"]) == set(expected_val)


def test_image_split_and_folds(synth_root: Path, tmp_path: Path):
    result = prepare(synth_root, tmp_path, split="image", folds=3, plots=False)
    train = pd.read_csv(tmp_path / "data_train_split_by_img.csv")
    val = pd.read_csv(tmp_path / "data_val_split_by_img.csv")
    assert len(train) + len(val) == len(result.info)
    assert set(train["image_path"]).isdisjoint(val["image_path"])
    assert set(train["patient"]) & set(val["patient"])  # the leakage this split exists to show
    folds = pd.read_csv(tmp_path / "data_folds.csv")
    per_patient = folds.groupby("patient")["fold"].nunique()
    assert (per_patient == 1).all() and set(folds["patient"]) == set(result.info["patient"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    held_out = []
    for fold in range(3):
        fold_train = pd.read_csv(tmp_path / f"data_fold{fold}_train.csv")
        fold_val = pd.read_csv(tmp_path / f"data_fold{fold}_val.csv")
        assert set(fold_train["patient"]).isdisjoint(fold_val["patient"])  # patient-grouped
        assert len(fold_train) + len(fold_val) == len(result.info) and "fold" not in fold_val
        held_out += list(fold_val["image_path"])
    assert sorted(held_out) == sorted(result.info["image_path"])  # every slice validated exactly once


def test_prepare_cli_prints_summary_and_plots(synth_root: Path, tmp_path: Path, capsys):
    assert main(["prepare", "--data-path", str(synth_root), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tumour_slices" in out and "train" in out and "val" in out
    assert (tmp_path / "slices_per_patient.png").stat().st_size > 1000
    assert (tmp_path / "sample_slices.png").stat().st_size > 1000


# --- bad input ---------------------------------------------------------------------------------

@pytest.fixture()
def broken_copy(synth_root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of two patients and the path of one slice in it."""
    root = tmp_path / "data"
    for folder in sorted(synth_root.iterdir())[:2]:
        shutil.copytree(folder, root / folder.name)
    patient = sorted(root.iterdir())[0]
    return root, patient / f"{patient.name}_3.tif"


def _mask_of(image: Path) -> Path:
    return image.with_name(image.stem + "_mask.tif")


BREAKERS = {
    "image has no mask": lambda img: _mask_of(img).unlink(),
    "mask has no image": lambda img: img.unlink(),
    "does not decode": lambda img: img.write_bytes(b"II*\x00 this is not a tif"),
    "expected a slice of 256x256x3": lambda img: tifffile.imwrite(img, np.zeros((128, 128, 3), np.uint8), photometric="rgb"),
    "does not match its image": lambda img: tifffile.imwrite(_mask_of(img), np.zeros((128, 128), np.uint8)),
    "mask is not binary": lambda img: tifffile.imwrite(_mask_of(img), np.full((256, 256), 7, np.uint8)),
    "expected an RGB slice": lambda img: tifffile.imwrite(img, np.zeros((256, 256), np.uint8)),
}


@pytest.mark.parametrize("problem", sorted(BREAKERS))
def test_bad_slice_raises_naming_file_and_writes_nothing(broken_copy, tmp_path: Path, problem: str):
    root, image = broken_copy
    BREAKERS[problem](image)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=problem) as info:
        prepare(root, out, plots=False)
    assert image.stem.removesuffix("_mask") in str(info.value)  # the message names the file
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("problem", sorted(BREAKERS))
def test_skip_bad_lists_skipped_slices(broken_copy, tmp_path: Path, problem: str):
    root, image = broken_copy
    BREAKERS[problem](image)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="skipped"):
        result = prepare(root, out, plots=False, skip_bad=True)
    skipped = pd.read_csv(out / "skipped.csv")
    assert len(skipped) == 1 and problem in skipped["problem"][0]
    info = pd.read_csv(out / "data_info.csv")
    assert not ((info["patient"] == image.parent.name) & (info["slice"] == 3)).any()
    assert len(info) == len(result.info) > 0


def test_empty_and_missing_folder(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable slices"):
        prepare(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    assert main(["prepare", "--data-path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere: data folder does not exist" in capsys.readouterr().err


def test_csv_that_points_nowhere(prepared: Path, tmp_path: Path):
    frame = pd.read_csv(prepared / "data_val.csv")
    frame.loc[1, "image_path"] = str(tmp_path / "gone.tif")
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv.*gone\.tif"):
        SliceDataset(tmp_path / "bad.csv")
    frame.drop(columns=["mask_path"]).to_csv(tmp_path / "nocol.csv", index=False)
    with pytest.raises(DataError, match="missing column"):
        SliceDataset(tmp_path / "nocol.csv")


def test_atomic_write_can_keep_the_ending_for_writers_that_read_it(tmp_path: Path):
    seen = []
    core_io.atomic_write(tmp_path / "case_mask.nii.gz", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")), keep_ending=True)
    core_io.atomic_write(tmp_path / "b.csv", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].startswith(".") and seen[0].endswith(".nii.gz") and not seen[1].endswith(".csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "case_mask.nii.gz"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "x.csv"
    target.write_text("old")

    def explode(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        core_io.atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_atomic_write_leaves_the_umask_alone_and_keeps_usual_permissions(tmp_path: Path, monkeypatch):
    import os
    import threading

    umask = os.umask(0o022)
    os.umask(umask)

    def forbidden(*args):
        raise AssertionError("atomic_write must not read or change the process umask (threads race on it)")

    monkeypatch.setattr(os, "umask", forbidden)
    target = tmp_path / "table.csv"
    errors = []

    def write(k: int) -> None:
        try:
            core_io.write_text(f"version {k}\n", target)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and target.read_text().startswith("version ")
    assert (target.stat().st_mode & 0o777) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_png_and_gif_outputs_are_written_atomically(tmp_path: Path, monkeypatch):
    from gliomaseg.data.overlay import write_gif
    from gliomaseg.evaluation.charts import plot_bars

    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 120, 240)]
    gif = write_gif(frames, tmp_path / "a.gif")
    plot = plot_bars(["a"], [0.5], tmp_path / "bars.png", title="t", ylabel="y")
    before = {p.name: p.read_bytes() for p in (gif, plot)}

    def half_then_fail(path, *args, **kwargs):
        Path(path).write_bytes(b"GIF89a half")
        raise OSError("disk full")

    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", lambda self, path, **kw: half_then_fail(path))
    with pytest.raises(OSError, match="disk full"):
        write_gif(frames[:1], tmp_path / "a.gif")
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, **kw: half_then_fail(path))
    with pytest.raises(OSError, match="disk full"):
        plot_bars(["a"], [0.9], tmp_path / "bars.png", title="t", ylabel="y")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files kept, no half file, no temp file


def test_huge_images_are_refused_before_decoding(tmp_path: Path, monkeypatch):
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((6000, 6000), np.uint8))
    (tmp_path / "bomb.png").write_bytes(png.tobytes())
    assert len(png) < 200_000  # a small file that would decode to 36 MB (108 MB as RGB)

    def no_decode(*args):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(files.cv2, "imdecode", no_decode)
    with pytest.raises(DataError, match=rf"bomb\.png: image of 6000x6000 pixels is larger than the limit of "
                                        rf"{MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}"):
        files.read_image(tmp_path / "bomb.png", lenient=True, allow_grayscale=True)


def test_grayscale_and_16bit_are_refused_unless_allowed(tmp_path: Path):
    import cv2

    cv2.imwrite(str(tmp_path / "gray.png"), np.full((32, 32), 80, np.uint8))
    deep = (np.arange(32 * 32 * 3).reshape(32, 32, 3) % 2000).astype(np.uint16)  # MRI values of 0-2000
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    with pytest.raises(DataError, match=r"gray\.png: .*grayscale.*pre-contrast, FLAIR, post-contrast.*--allow-grayscale"):
        files.read_image(tmp_path / "gray.png", lenient=True)
    with pytest.raises(DataError, match=r"deep\.png: 16-bit image; .*meaningless.*--allow-16bit"):
        files.read_image(tmp_path / "deep.png", lenient=True)
    with pytest.warns(UserWarning, match="replicated"):
        gray = files.read_image(tmp_path / "gray.png", lenient=True, allow_grayscale=True)
    assert gray.shape == (32, 32, 3) and (gray == 80).all()
    with pytest.warns(UserWarning, match="16-bit"):
        raw = files.read_image(tmp_path / "deep.png", lenient=True, allow_16bit=True)
    eight = np.zeros((32, 32, 3), np.uint8)
    scaled, untouched = files.scale_volume([raw, eight])
    assert untouched is eight and scaled.dtype == np.uint8
    assert scaled.max() == 255 and scaled.min() == 0 and scaled.mean() > 100  # a division by 257 gives a mean under 4
    assert np.corrcoef(scaled.ravel().astype(float), deep[..., ::-1].ravel().astype(float))[0, 1] > 0.99


# --- dataset -----------------------------------------------------------------------------------

def test_dataset_shapes_dtypes_and_rgb_order(prepared: Path):
    dataset = SliceDataset(prepared / "data_train.csv")
    frame = pd.read_csv(prepared / "data_train.csv")
    index = int(frame.index[frame["diagnosis"] == 1][0])
    image, mask = dataset[index]
    assert image.shape == (3, 256, 256) and image.dtype == torch.float32
    assert mask.shape == (1, 256, 256) and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    raw = tifffile.imread(frame.loc[index, "image_path"])  # tifffile reads RGB as stored
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    expected = (raw.astype(np.float32) / 255.0 - mean) / std
    assert np.allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-4)
    raw_mask = tifffile.imread(frame.loc[index, "mask_path"])
    assert np.array_equal(mask[0].numpy(), (raw_mask == 255).astype(np.float32))


def test_dataset_cache_decodes_each_file_once(prepared: Path, monkeypatch):
    calls = []
    real = files.read_slice_pair

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr("gliomaseg.data.dataset.read_slice_pair", counting)
    dataset = SliceDataset(prepared / "data_val.csv", cache=True, image_size=64)
    for _ in range(3):
        for i in range(len(dataset)):
            image, mask = dataset[i]
    assert len(calls) == len(dataset)
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    assert all(a.dtype == np.uint8 for pair in dataset._store.values() for a in pair)


def test_dataset_without_cache_rereads(prepared: Path, monkeypatch):
    calls = []
    real = files.read_slice_pair
    monkeypatch.setattr("gliomaseg.data.dataset.read_slice_pair", lambda *a, **k: calls.append(1) or real(*a, **k))
    dataset = SliceDataset(prepared / "data_val.csv")
    dataset[0], dataset[0]
    assert len(calls) == 2


def test_non_ascii_paths(synth_root: Path, tmp_path: Path):
    root = tmp_path / "données_ünï_脑"
    for i, folder in enumerate(sorted(synth_root.iterdir())[:2]):
        shutil.copytree(folder, root / folder.name)
    out = tmp_path / "sortie_é"
    result = prepare(root, out, plots=True, train_size=0.5)
    assert result.info["image_path"].str.contains("données_ünï_脑").all()
    image, mask = SliceDataset(out / "data_train.csv")[0]
    assert image.shape == (3, 256, 256) and mask.shape == (1, 256, 256)


def test_train_augmentations_keep_image_and_mask_aligned(prepared: Path):
    frame = pd.read_csv(prepared / "data_train.csv")
    dataset = SliceDataset(frame[frame["diagnosis"] == 1], transform=train_transforms())
    raw_image, raw_mask = dataset.load(0)
    for _ in range(5):
        image, mask = dataset[0]
        assert image.shape == (3, 256, 256) and mask.shape == (1, 256, 256)
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        assert abs(mask.sum().item() - raw_mask.sum()) <= 0.1 * raw_mask.sum()
        # FLAIR is bright in the tumour: mean FLAIR inside the mask stays above the brain's mean.
        flair = image[1]
        assert flair[mask[0] > 0].mean() > flair[flair > flair.min()].mean()


def test_importing_the_augmentations_makes_no_network_call():
    import os
    import subprocess
    import sys

    # A fresh interpreter whose every name lookup fails loudly: albumentations' PyPI version check would do one.
    code = ("import socket\n"
            "def refuse(*args, **kwargs):\n"
            "    raise SystemExit(f'network lookup of {args[0]!r} at import')\n"
            "socket.getaddrinfo = refuse\n"
            "import gliomaseg.data.transforms\n"
            "print('no lookup')\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "no lookup" in done.stdout, done.stdout + done.stderr
