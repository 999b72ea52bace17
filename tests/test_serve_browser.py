"""End to end in a real browser: `gliomaseg serve` in a subprocess, driven by headless Chromium through Playwright.

Needs Debian's `chromium` (apt-get install chromium) and the `playwright` Python package; Playwright's own
browser download is not used (`executable_path` points at the system's Chromium). `.ci/run` installs both;
elsewhere the test skips with a message saying so, except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_helpers import free_port, request

from gliomaseg.cli import main
from gliomaseg.data.files import read_image


def _chromium() -> str:
    path = os.environ.get("GLIOMASEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the playwright package is not installed (pip install playwright)"
    if path is None:
        problem = "no Chromium found (Debian: apt-get install chromium; or set GLIOMASEG_CHROMIUM to a Chromium binary)"
    if problem:
        message = f"browser test needs a browser: {problem}; `bash .ci/run` installs both"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path  # type: ignore[return-value]


@pytest.fixture(scope="module")
def served(onnx_model: Path, tmp_path_factory):
    """`gliomaseg serve --model model.onnx` on a free loopback port, as a user would start it."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "gliomaseg", "serve", "--model", str(onnx_model), "--port", str(port)],
                                   stdout=handle, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                # ours has loaded its model and is binding (the line comes just before), so a health answer
                # from here on is ours or, if another process took the port, followed by ours exiting below
                if "gliomaseg viewer on" in log.read_text() and request(base + "/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gliomaseg serve did not start:\n{log.read_text()}")
            time.sleep(0.2)
        # Another test process may have taken the port between free_port() and the bind: then this server exits
        # ("address already in use") while the other one answers. Fail loudly rather than test someone else's.
        time.sleep(1.0)
        if process.poll() is not None:
            raise RuntimeError(f"gliomaseg serve exited after another server answered on port {port}:\n{log.read_text()}")
        yield base
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def _viewer_page(executable: str, served: str):
    """A headless Chromium page (downloads allowed, 1200x900) opened on the viewer; the browser closes after."""
    from playwright.sync_api import sync_playwright  # imported here: the tests skip where Playwright is missing

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1200, "height": 900})
            page.set_default_timeout(30000)
            page.goto(served)
            yield page
        finally:
            browser.close()


def _slices(patient: Path) -> list[Path]:
    return sorted((p for p in patient.glob("*.tif") if not p.stem.endswith("_mask")), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def _canvas(page) -> str:
    """The canvas as drawn, once it is ready (a PNG data URL)."""
    page.wait_for_selector('#view[data-ready="1"]')
    return page.evaluate("document.getElementById('view').toDataURL()")


def test_browser_upload_view_and_download(served: str, onnx_model: Path, synth_root: Path, tmp_path: Path):
    executable = _chromium()
    import nibabel as nib

    patient = sorted(synth_root.iterdir())[0]
    slices = _slices(patient)
    assert main(["predict", "--model", str(onnx_model), "--input", str(patient), "--out", str(tmp_path / "pred")]) == 0
    expected = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (tmp_path / "pred" / patient.name).glob("*_pred.png")}
    one = max(slices, key=lambda p: int((expected[f"{p.stem}_pred.png"] > 0).sum()))  # a slice with predicted tumour
    assert expected[f"{one.stem}_pred.png"].any(), "the test model predicts no tumour anywhere: nothing to compare"

    # The patient's slices as one uint8 RGB RAS volume (X=W, Y=H, Z): reoriented to LPS, slice k is shown as V[::-1, ::-1, k].T.
    images = [read_image(p) for p in slices]
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    volume_path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([im.swapaxes(0, 1)[::-1, ::-1] for im in images], axis=2), affine), volume_path)
    bad = tmp_path / "not_a_scan.png"
    bad.write_bytes(b"plain text, not an image")

    with _viewer_page(executable, served) as page:
        assert page.title() == "gliomaseg viewer"

        # One slice with its mask: overlay drawn, numbers shown, downloaded mask equals predict's.
        page.set_input_files("#files", [str(one), str(one.with_name(f"{one.stem}_mask.tif"))])
        page.click("#run")
        with_outline = _canvas(page)
        page.uncheck("#show-prediction")
        page.uncheck("#show-truth")
        assert _canvas(page) != with_outline  # the outlines were drawn over the slice
        page.check("#show-prediction")
        page.check("#show-truth")
        assert "Dice (3D, whole patient)" in page.inner_text("#summary")
        page.screenshot(path=str(tmp_path / "slice.png"))
        with page.expect_download() as download:
            page.click("#download-zip")
        with zipfile.ZipFile(download.value.path()) as archive:
            got = cv2.imdecode(np.frombuffer(archive.read(f"{patient.name}/{one.stem}_pred.png"), np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, expected[f"{one.stem}_pred.png"])

        # A volume: the slider and the arrow keys move through slices; the .nii.gz equals predict's masks.
        page.set_input_files("#files", str(volume_path))
        page.click("#run")
        page.wait_for_selector(f'#slice[max="{len(slices)}"]')
        page.wait_for_selector('#view[data-ready="1"]')
        page.locator("#slice").fill("2")
        page.wait_for_selector('#view[data-ready="1"][data-slice="2"]')
        page.locator("#view").click()
        page.keyboard.press("ArrowRight")
        page.wait_for_selector('#view[data-ready="1"][data-slice="3"]')
        assert page.locator("#slice").input_value() == "3"
        page.locator("#opacity").fill("0")
        transparent = _canvas(page)
        page.uncheck("#show-prediction")
        assert _canvas(page) == transparent  # opacity 0 hides the outline
        page.check("#show-prediction")
        page.locator("#opacity").fill("100")
        assert (_canvas(page) != transparent) == bool(expected[f"{slices[2].stem}_pred.png"].any())
        with page.expect_download() as download:
            page.click("#download-nifti")
        mask = nib.Nifti1Image.from_bytes(gzip.decompress(Path(download.value.path()).read_bytes()))
        assert mask.shape == (256, 256, len(slices)) and np.allclose(mask.affine, affine)
        data = np.asarray(mask.dataobj)
        for k, path in enumerate(slices):
            assert np.array_equal(data[::-1, ::-1, k].T * 255, expected[f"{path.stem}_pred.png"]), path.name

        # A bad file: the server's message on the page, and the older result no longer shown beside it.
        page.set_input_files("#files", str(bad))
        page.click("#run")
        page.wait_for_selector("#error:not([hidden])")
        assert "not_a_scan.png" in page.inner_text("#error") and "does not decode" in page.inner_text("#error")
        assert page.locator("#viewer").is_hidden()
    health = json.loads(request(served + "/api/health")[2])
    assert health["ok"] and health["results_kept"] == 2


def _pixel(page, x: int, y: int) -> list[int]:
    """The RGBA of the view canvas at (x, y) in CSS pixels, once drawn."""
    page.wait_for_selector('#view[data-ready="1"]')
    return page.evaluate("([x, y]) => { const c = document.getElementById('view'); const r = window.devicePixelRatio || 1;"
                         " return Array.from(c.getContext('2d').getImageData(Math.round(x * r), Math.round(y * r), 1, 1).data); }", [x, y])


def test_browser_reading_tools(served: str, synth_root: Path, tmp_path: Path):
    """Sequence, window/level, zoom, side by side, the error view, the probability map, the report and GIF downloads."""
    executable = _chromium()
    patient = sorted(synth_root.iterdir())[0]
    slices = _slices(patient)
    files = [str(p) for p in slices] + [str(p.with_name(f"{p.stem}_mask.tif")) for p in slices]
    with _viewer_page(executable, served) as page:
        assert "Research use only, not for diagnosis" in page.inner_text("header")
        assert page.locator('link[rel="icon"]').count() == 1 and request(served + "/favicon.ico")[0] == 200
        page.set_input_files("#files", files)
        page.click("#run")
        page.wait_for_selector('#view[data-ready="1"]')
        assert page.locator("#view").get_attribute("data-sequence") == "1"  # FLAIR by default
        centre = _pixel(page, 256, 256)
        assert centre[0] == centre[1] == centre[2]  # grey: one sequence
        flair = _canvas(page)
        page.select_option("#sequence", "0")
        page.wait_for_selector('#view[data-ready="1"][data-sequence="0"]')
        assert _canvas(page) != flair
        page.select_option("#sequence", "rgb")
        page.wait_for_selector('#view[data-ready="1"][data-sequence="rgb"]')
        page.select_option("#sequence", "1")
        page.wait_for_selector('#view[data-ready="1"][data-sequence="1"]')

        # window/level: a preset, then a drag on the image
        page.select_option("#preset", "full")
        page.wait_for_selector('#view[data-ready="1"][data-window="255/128"]')
        full = _canvas(page)
        box = page.locator("#view").bounding_box()
        page.mouse.move(box["x"] + 200, box["y"] + 200)
        page.mouse.down()
        page.mouse.move(box["x"] + 100, box["y"] + 240, steps=4)
        page.mouse.up()
        page.wait_for_selector('#view[data-ready="1"]:not([data-window="255/128"])')
        assert page.locator("#preset").input_value() == "custom" and _canvas(page) != full
        width, level = map(int, page.locator("#view").get_attribute("data-window").split("/"))
        assert width < 255 and level < 128

        # zoom and reset
        page.click("#zoom-in")
        page.wait_for_selector('#view[data-ready="1"][data-zoom="1.25"]')
        assert page.inner_text("#zoom-label") == "125%"
        page.click("#zoom-reset")
        page.wait_for_selector('#view[data-ready="1"][data-zoom="1"]')

        # side by side: the raw slice appears beside the overlay
        page.check("#side-by-side")
        page.wait_for_selector("#raw:not([hidden])")
        page.uncheck("#side-by-side")

        # the error view colours false positives and false negatives apart, when truth is present
        assert page.locator(".truth-legend").is_visible() and page.locator("#errors-label").is_visible()
        page.uncheck("#show-prediction")
        page.uncheck("#show-truth")
        page.locator("#opacity").fill("100")
        count = ("() => { const c = document.getElementById('view'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                 " let fp = 0, fn = 0; for (let i = 0; i < d.length; i += 4) {"
                 " if (d[i] === 255 && d[i + 1] === 159 && d[i + 2] === 26) fp++; if (d[i] === 39 && d[i + 1] === 196 && d[i + 2] === 255) fn++; }"
                 " return [fp, fn]; }")
        page.wait_for_selector('#view[data-ready="1"]')
        assert page.evaluate(count) == [0, 0]
        page.check("#errors")
        page.wait_for_selector(".error-legend:not([hidden])")
        page.wait_for_selector('#view[data-ready="1"]')
        shown = json.loads(request(served + page.evaluate("() => document.getElementById('download-report').getAttribute('href')").rsplit("/", 1)[0])[2])
        slice_row = shown["cases"][0]["slices"][int(page.locator("#slice").input_value()) - 1]
        fp, fn = page.evaluate(count)
        assert slice_row["dice"] < 1 and fp + fn > 0  # this slice's errors are drawn, in their two colours
        page.uncheck("#errors")
        page.check("#probability")
        page.wait_for_selector(".prob-legend:not([hidden])")
        page.uncheck("#probability")

        # the report: the same numbers as the summary, self-contained
        with page.expect_download() as download:
            page.click("#download-report")
        report = Path(download.value.path()).read_text()
        assert patient.name in report and "Research use only" in report and "http" not in report
        dice = page.inner_text("#summary").split("Dice (3D, whole patient)")[1].split()[0]
        assert f"<td>{dice}</td>" in report
        with page.expect_download() as download:
            page.click("#download-gif")
        assert Path(download.value.path()).read_bytes()[:6] == b"GIF89a"
        page.screenshot(path=str(tmp_path / "reading.png"))

        # a mask alone: says so, in one line, and the result is not left on screen
        page.set_input_files("#files", files[-1])
        page.click("#run")
        page.wait_for_selector("#error:not([hidden])")
        assert "this is a mask; give the image it belongs to" in page.inner_text("#error")
        assert "slices/" not in page.inner_text("#error") and page.locator("#viewer").is_hidden()
