"""Screenshot of the viewer page: serve a model on loopback, upload files with headless Chromium, save a PNG.

    python scripts/viewer_screenshot.py --checkpoint RUN/best.ckpt --out docs/images/viewer.png \
        --files ../shared/data/kaggle_3m/PATIENT/PATIENT_12.tif ../shared/data/kaggle_3m/PATIENT/PATIENT_12_mask.tif

Needs Debian's chromium (or --chromium PATH) and the playwright package; no browser download.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_helpers import live_server  # noqa: E402

from gliomaseg.inference.backend import open_predictor  # noqa: E402
from gliomaseg.serve.app import create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--files", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--slice", type=int, default=None, help="1-based slice to show (default: the one with most tumour)")
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    parser.add_argument("--errors", action="store_true", help="show the error view (false positives / negatives)")
    parser.add_argument("--side-by-side", action="store_true", help="show the raw slice beside the overlay")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    predictor = open_predictor(args.checkpoint, args.model)
    label = (args.checkpoint or args.model or Path("shipped model")).name
    from gliomaseg.predict.report import model_summary

    info = model_summary(predictor, shipped=args.checkpoint is None and args.model is None)
    with live_server(create_app(predictor, model_label=label, model_info=info)) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1080, "height": 800})
        page.goto(base)
        page.set_input_files("#files", [str(f) for f in args.files])
        page.click("#run")
        page.wait_for_selector('#view[data-ready="1"]', timeout=300000)
        if args.slice:
            page.locator("#slice").fill(str(args.slice))
            page.wait_for_selector(f'#view[data-ready="1"][data-slice="{args.slice}"]')
        for flag, box in ((args.errors, "#errors"), (args.side_by_side, "#side-by-side")):
            if flag:
                page.check(box)
                page.wait_for_selector('#view[data-ready="1"]')
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
