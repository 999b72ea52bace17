"""The FastAPI application of ``gliomaseg serve``.

Routes:

- ``GET /``: the page; ``GET /static/...``: its script and style (from the package, nothing from outside).
- ``GET /api/config``: the limits and the model, so the page can refuse a file before sending it.
- ``POST /api/segment``: multipart upload (any number of files) -> the result as JSON (contours, numbers).
- ``GET /api/results/{id}/cases/{c}/slices/{s}.png``: a slice as PNG.
- ``GET /api/results/{id}/masks.zip``: every predicted mask as a 0/255 PNG, and ``patients.csv``.
- ``GET /api/results/{id}/cases/{c}/mask.nii.gz``: one case's mask volume, written as ``gliomaseg predict``
  writes it (a volume's: its shape, affine and header; slices': the layout of ``gliomaseg convert``).
- ``GET /api/results/{id}/cases/{c}/slices/{s}/probability.png``: the tumour probability x 255 (grey PNG).
- ``GET /api/results/{id}/report.html``: the ``report.html`` of ``gliomaseg predict`` for this result;
  ``.../cases/{c}/slices.gif``: the case's GIF; ``.../overlays.zip``: every overlay as ``predict`` draws it.
- ``GET /api/model-card``: the model's card (text), when it has one; ``GET /favicon.ico``.

Each upload is unpacked in its own temporary folder, removed when the request ends; results stay in
memory (the last ``max_results``, :mod:`~gliomaseg.serve.store`) so that slices and downloads
(:mod:`~gliomaseg.serve.downloads`) can be fetched. The middleware is :mod:`~gliomaseg.serve.guard`.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import warnings
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from gliomaseg.core.errors import ConfigError, GliomasegError, InputWarning
from gliomaseg.core.io import clean_name
from gliomaseg.data.formats.nifti_volumes import NIFTI
from gliomaseg.data.nifti import mask_volume_bytes, slices_geometry
from gliomaseg.data.overlay import encode_png, gif_bytes
from gliomaseg.serve.downloads import gif_frames, gif_ready, patient_report, zip_masks, zip_overlays
from gliomaseg.serve.guard import BodyLimit, Guard
from gliomaseg.serve.limits import DEFAULT_HOST, DEFAULT_PORT, LOOPBACK_HOSTS, WILDCARD_HOSTS, ServeLimits, UploadError
from gliomaseg.serve.pipeline import CaseResult, SegmentOptions, analyse
from gliomaseg.serve.store import NotFound, ResultStore, StoredResult
from gliomaseg.serve.uploads import ACCEPTED_SUFFIXES, gather, save_uploads

log = logging.getLogger("gliomaseg.serve")
STATIC = Path(str(resources.files(__package__) / "static"))


def _relative_messages(text: str, folder: Path) -> str:
    """Messages name files as the user sent them, never by the server's temporary path."""
    for root in {str(folder), str(folder.resolve())}:
        text = re.sub(re.escape(root) + r"/(?:incoming/|slices/[^/]+/)?", "", text)
    return text


def create_app(
    predictor,
    *,
    options: SegmentOptions | None = None,
    limits: ServeLimits | None = None,
    temp_root: str | Path | None = None,
    model_label: str = "",
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    model_info: dict | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> FastAPI:
    """The viewer app around one predictor (``OnnxPredictor`` or ``TorchPredictor``).

    Args:
        options: threshold, TTA and post-processing, as for ``gliomaseg predict``.
        limits: upload and image limits (:class:`ServeLimits` defaults when None).
        temp_root: where per-request temporary folders are made (the system's temporary folder when None).
        model_label: how the page names the model.
        allowed_hosts: the Host names answered (see :class:`Guard`); None answers any (a server bound to every address).
        model_info: :func:`~gliomaseg.predict.report.model_summary` (name, validation, card) for the page and reports.
        spacing: voxel size (x, y, z in mm) of uploaded slices; ``None``: a volume's header's when in mm, else unknown.
    """
    from gliomaseg.predict.report import model_summary

    model_info = model_info or model_summary(predictor)
    options = options or SegmentOptions()
    limits = limits or ServeLimits()
    store = ResultStore(limits.max_results, limits.max_result_bytes)
    busy = threading.BoundedSemaphore(limits.concurrent_inferences)
    app = FastAPI(title="gliomaseg viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.limits = limits

    @app.exception_handler(GliomasegError)
    async def readable_error(request: Request, exc: GliomasegError):
        status = getattr(exc, "status", 404 if isinstance(exc, NotFound) else 400)
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    icon = _favicon()

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(icon, media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/api/model-card")
    def model_card() -> Response:
        if not model_info.get("card"):
            raise NotFound("this model has no model card here")
        return Response(model_info["card"], media_type="text/plain; charset=utf-8")

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True, "results_kept": len(store)}

    @app.get("/api/config")
    def config() -> dict:
        return {"limits": asdict(limits), "accepted": list(ACCEPTED_SUFFIXES), "model": model_label,
                "image_size": int(predictor.image_size), "threshold": options.threshold if options.threshold is not None else float(predictor.threshold),
                "tta": options.tta, "postprocess": asdict(options.postprocess),
                "model_info": {k: v for k, v in model_info.items() if k != "card"}, "model_card": bool(model_info.get("card"))}

    def process(uploads: list[tuple[str, object]]) -> dict:
        with busy, tempfile.TemporaryDirectory(prefix="gliomaseg-serve-", dir=temp_root) as tmp:
            folder = Path(tmp)
            try:
                saved = save_uploads(uploads, folder, limits)  # type: ignore[arg-type]
                gathered = gather(saved, folder, limits)
                with warnings.catch_warnings(record=True) as caught:  # e.g. too few slices for a per-patient model
                    warnings.simplefilter("always", InputWarning)
                    cases = [analyse(predictor, case, options, spacing) for case in gathered.cases]
            except GliomasegError as exc:
                exc.args = (_relative_messages(str(exc), folder),)
                raise
            for_user = [w for w in caught if issubclass(w.category, InputWarning)]
            for other in (w for w in caught if w not in for_user):  # not the user's concern: back to the log as before
                warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
            notes = [_relative_messages(n, folder) for n in [*gathered.notes, *(str(w.message) for w in for_user)]]
        result = store.add(cases, notes)
        return _result_json(result)

    @app.post("/api/segment")
    async def segment_upload(request: Request) -> JSONResponse:
        form = await request.form(max_files=limits.max_files, max_fields=16)
        try:
            uploads = [(item.filename or "upload", item.file) for _, item in form.multi_items() if isinstance(item, UploadFile)]
            return JSONResponse(await run_in_threadpool(process, uploads))
        finally:
            await form.close()

    def _result_json(result: StoredResult) -> dict:
        base = f"/api/results/{result.id}"
        cases = []
        for c, case in enumerate(result.cases):
            slices = [{**row, "image": f"{base}/cases/{c}/slices/{s}.png"} for s, row in enumerate(case.slices)]
            cases.append({"summary": case.summary, "slices": slices, "nifti": f"{base}/cases/{c}/mask.nii.gz",
                          "gif": f"{base}/cases/{c}/slices.gif" if gif_ready(case) else None})
        return {"id": result.id, "cases": cases, "notes": result.notes, "masks_zip": f"{base}/masks.zip",
                "overlays_zip": f"{base}/overlays.zip", "report": f"{base}/report.html"}

    def _case(result_id: str, c: int) -> CaseResult:
        result = store.get(result_id)
        if not 0 <= c < len(result.cases):
            raise NotFound(f"result {result_id[:40]} has no case {c}")
        return result.cases[c]

    @app.get("/api/results/{result_id}")
    def result_json(result_id: str) -> dict:
        return _result_json(store.get(result_id))

    @app.get("/api/results/{result_id}/cases/{c}/slices/{s}.png")
    def slice_png(result_id: str, c: int, s: int) -> Response:
        case = _case(result_id, c)
        if not 0 <= s < len(case.case.images):
            raise NotFound(f"case {c} has no slice {s}")
        return Response(encode_png(case.case.images[s]), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/results/{result_id}/cases/{c}/slices/{s}/probability.png")
    def probability_png(result_id: str, c: int, s: int) -> Response:
        case = _case(result_id, c)
        if not 0 <= s < len(case.probabilities):
            raise NotFound(f"case {c} has no slice {s}")
        return Response(encode_png(case.probabilities[s]), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/results/{result_id}/cases/{c}/slices.gif")
    def case_gif(result_id: str, c: int) -> Response:
        case = _case(result_id, c)
        if not gif_ready(case):
            raise UploadError(f"{case.case.name}: a GIF needs two or more slices of one size")
        return Response(gif_bytes(gif_frames(case)), media_type="image/gif",
                        headers={"Content-Disposition": f'attachment; filename="{clean_name(case.case.name)}.gif"'})

    @app.get("/api/results/{result_id}/overlays.zip")
    def overlays_zip(result_id: str) -> Response:
        result = store.get(result_id)
        return Response(zip_overlays(result.cases), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="gliomaseg_overlays.zip"'})

    @app.get("/api/results/{result_id}/report.html")
    def report_html(result_id: str) -> Response:
        from gliomaseg.predict.report import render_run_report

        result = store.get(result_id)
        page = render_run_report([patient_report(case) for case in result.cases], model_info, title="gliomaseg viewer report")
        return Response(page, media_type="text/html; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="report.html"',
            "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})

    @app.get("/api/results/{result_id}/masks.zip")
    def masks_zip(result_id: str) -> Response:
        result = store.get(result_id)
        return Response(zip_masks(result.cases), media_type="application/zip",
                         headers={"Content-Disposition": 'attachment; filename="gliomaseg_masks.zip"'})

    @app.get("/api/results/{result_id}/cases/{c}/mask.nii.gz")
    def mask_nifti(result_id: str, c: int) -> Response:
        case = _case(result_id, c)
        if len({m.shape for m in case.masks}) != 1:
            raise UploadError(f"{case.case.name}: slices of different sizes do not form one volume; download the PNG zip instead")
        name = clean_name(case.case.name)
        height, width = case.masks[0].shape
        # slices have no header: the server's --spacing, when given, is their voxel size (else units "unknown")
        geometry = case.case.geometry or slices_geometry(Path(name), height, width, len(case.masks), spacing)
        return Response(mask_volume_bytes(case.masks, geometry), media_type="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{NIFTI.prediction_name(name)}"'})

    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)  # added last: outermost
    return app


def _favicon() -> bytes:
    """A 32 px icon drawn here (a grey brain with a yellow outline), so the static folder holds text files only."""
    import cv2
    import numpy as np

    icon = np.full((32, 32, 3), (17, 20, 24), np.uint8)
    cv2.ellipse(icon, (16, 16), (11, 13), 0, 0, 360, (138, 143, 150), -1, cv2.LINE_AA)
    cv2.ellipse(icon, (19, 13), (5, 4), 30, 0, 360, (255, 215, 0), 2, cv2.LINE_AA)
    return encode_png(icon)


def run_server(
    predictor,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    options: SegmentOptions | None = None,
    limits: ServeLimits | None = None,
    model_label: str = "",
    model_info: dict | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> None:
    """Serve the viewer until interrupted. A host other than loopback is allowed but warned about."""
    import uvicorn

    if host not in LOOPBACK_HOSTS:
        log.warning("binding to %s: the viewer has no login; anyone who can reach this address can upload and see results", host)
    if not 0 < port < 65536:
        raise ConfigError(f"port {port}: must be between 1 and 65535")
    # Bound to every address, the names it is reached by are unknown: any Host is answered (with the warning above).
    allowed = None if host in WILDCARD_HOSTS else (*LOOPBACK_HOSTS, host)
    app = create_app(predictor, options=options, limits=limits, model_label=model_label, allowed_hosts=allowed,
                     model_info=model_info, spacing=spacing)
    shown = f"[{host}]" if ":" in host else host
    print(f"gliomaseg viewer on http://{shown}:{port}/ (model: {model_label or 'given'}); Ctrl+C stops it", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)

