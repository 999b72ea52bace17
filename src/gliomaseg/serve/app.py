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
memory (the last ``max_results``) so that slices and downloads can be fetched.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
import tempfile
import threading
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
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
from gliomaseg.data.formats.slice_files import SLICES
from gliomaseg.data.nifti import mask_volume_bytes, slices_geometry
from gliomaseg.data.overlay import encode_png, gif_bytes, label_frame, overlay_contours
from gliomaseg.serve.limits import DEFAULT_HOST, DEFAULT_PORT, LOOPBACK_HOSTS, WILDCARD_HOSTS, ServeLimits, UploadError, UploadTooLarge
from gliomaseg.serve.pipeline import CaseResult, SegmentOptions, analyse
from gliomaseg.serve.uploads import ACCEPTED_SUFFIXES, gather, save_uploads

log = logging.getLogger("gliomaseg.serve")
STATIC = Path(str(resources.files(__package__) / "static"))
# Multipart framing (boundaries, part headers) on top of the files themselves.
_FORM_OVERHEAD = 1 << 20
_DRAIN_FACTOR = 4
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass
class StoredResult:
    id: str
    cases: list[CaseResult]
    notes: list[str]


class ResultStore:
    """The last ``size`` results within ``max_bytes`` (their slices and masks), oldest evicted first; thread-safe.

    The newest result is always kept, even alone over ``max_bytes`` (the request's own budget bounds it).
    """

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(cases: list[CaseResult]) -> int:
        return sum(a.nbytes for case in cases for a in (*case.case.images, *case.masks, *(t for t in case.case.truths if t is not None)))

    def add(self, cases: list[CaseResult], notes: list[str]) -> StoredResult:
        result = StoredResult(secrets.token_urlsafe(16), cases, notes)
        with self._lock:
            self._items[result.id] = result
            self._bytes[result.id] = self.nbytes(cases)
            while len(self._items) > 1 and (len(self._items) > self.size
                                            or (self.max_bytes is not None and sum(self._bytes.values()) > self.max_bytes)):
                old, _ = self._items.popitem(last=False)
                del self._bytes[old]
        return result

    @property
    def bytes_kept(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def get(self, result_id: str) -> StoredResult:
        with self._lock:
            result = self._items.get(result_id)
        if result is None:
            raise _NotFound(f"result {result_id[:40]} not found: it expired (only the last {self.size} results, and "
                            f"{self.max_bytes / 2**20 if self.max_bytes else 0:g} MiB of them, are kept) "
                            "or the server restarted; upload the files again")
        return result

    def __len__(self) -> int:
        return len(self._items)


class _NotFound(GliomasegError):
    pass


class Guard:
    """ASGI middleware, outermost: the security headers on every answer (413s and 500s too), the Host check and the
    cross-origin check, and a readable 500 instead of an exception that escaped.

    Host: only the names the server was started for (loopback names, and ``--host``) are served, so a page that
    rebinds its own DNS name to 127.0.0.1 gets nothing back. Origin: a state-changing request (not GET, HEAD or
    OPTIONS) is refused unless it carries no ``Origin`` or one equal to the server's own (``http://`` + Host): a
    multipart POST from another site needs no CORS preflight, so without this any page the user visits could
    upload to the viewer. ``Origin: null`` (sandboxed frames, files) is refused too.
    """

    def __init__(self, app, allowed_hosts: Sequence[str] | None):
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.strip("[]").lower() for h in allowed_hosts}

    @staticmethod
    def _hostname(host: str) -> str:
        host = host.strip().lower()
        if host.startswith("["):  # [::1]:8000
            return host[1:].split("]", 1)[0]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    async def _refuse(self, scope, receive, send, status: int, message: str) -> None:
        response = JSONResponse({"error": message}, status_code=status, headers=_SECURITY_HEADERS)
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if self.allowed is not None and self._hostname(host) not in self.allowed:
            log.warning("refused a request for host %r", host[:100])
            return await self._refuse(scope, receive, send, 421, f"host {host[:100]!r} is not served here; open the viewer "
                                      "at the address it printed when it started")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None and origin.lower() != f"http://{host}".lower():
            log.warning("refused a %s from origin %r", scope["method"], origin[:100])
            return await self._refuse(scope, receive, send, 403, f"requests from another site ({origin[:100]}) are refused; "
                                      "use the viewer's own page")
        started = False

        async def with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), *((k.lower().encode(), v.encode())
                                                   for k, v in _SECURITY_HEADERS.items() if k.lower().encode() not in present)]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception as exc:  # ExceptionGroup from a task group included: answer, never a bare 500 or a reset
            too_large = _find(exc, UploadTooLarge)
            if too_large is None:
                log.exception("unexpected error on %s", scope.get("path"))
            if not started:
                status, message = ((413, str(too_large)) if too_large is not None else
                                   (500, f"internal error ({type(exc).__name__}); the server log has the details"))
                await self._refuse(scope, receive, send, status, message)


def _find(exc: BaseException, kind: type) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` inside it (exception groups, causes)."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return _find(exc.__cause__, kind) if exc.__cause__ is not None else None


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, by its Content-Length or as it streams in.

    The rest of an oversized body is read and dropped (up to ``_DRAIN_FACTOR`` times the limit) before the
    answer, so that a client still sending sees the 413 and its message instead of a reset connection.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit + _FORM_OVERHEAD
        self.message = f"upload larger than the limit of {limit / (1 << 20):g} MiB"

    async def _drain(self, receive, received: int) -> None:
        while received <= self.limit * _DRAIN_FACTOR:
            event = await receive()
            if event["type"] != "http.request":
                return
            received += len(event.get("body", b""))
            if not event.get("more_body", False):
                return

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._drain(receive, 0)
            response = JSONResponse({"error": self.message}, status_code=413, headers={"Connection": "close", **_SECURITY_HEADERS})
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    if event.get("more_body", False):
                        await self._drain(receive, received)
                    raise UploadTooLarge(self.message)
            return event

        return await self.app(scope, counted, send)


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
        status = getattr(exc, "status", 404 if isinstance(exc, _NotFound) else 400)
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
            raise _NotFound("this model has no model card here")
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
                          "gif": f"{base}/cases/{c}/slices.gif" if _gif_ready(case) else None})
        return {"id": result.id, "cases": cases, "notes": result.notes, "masks_zip": f"{base}/masks.zip",
                "overlays_zip": f"{base}/overlays.zip", "report": f"{base}/report.html"}

    def _case(result_id: str, c: int) -> CaseResult:
        result = store.get(result_id)
        if not 0 <= c < len(result.cases):
            raise _NotFound(f"result {result_id[:40]} has no case {c}")
        return result.cases[c]

    @app.get("/api/results/{result_id}")
    def result_json(result_id: str) -> dict:
        return _result_json(store.get(result_id))

    @app.get("/api/results/{result_id}/cases/{c}/slices/{s}.png")
    def slice_png(result_id: str, c: int, s: int) -> Response:
        case = _case(result_id, c)
        if not 0 <= s < len(case.case.images):
            raise _NotFound(f"case {c} has no slice {s}")
        return Response(encode_png(case.case.images[s]), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/results/{result_id}/cases/{c}/slices/{s}/probability.png")
    def probability_png(result_id: str, c: int, s: int) -> Response:
        case = _case(result_id, c)
        if not 0 <= s < len(case.probabilities):
            raise _NotFound(f"case {c} has no slice {s}")
        return Response(encode_png(case.probabilities[s]), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/results/{result_id}/cases/{c}/slices.gif")
    def case_gif(result_id: str, c: int) -> Response:
        case = _case(result_id, c)
        if not _gif_ready(case):
            raise UploadError(f"{case.case.name}: a GIF needs two or more slices of one size")
        return Response(gif_bytes(_frames(case)), media_type="image/gif",
                        headers={"Content-Disposition": f'attachment; filename="{clean_name(case.case.name)}.gif"'})

    @app.get("/api/results/{result_id}/overlays.zip")
    def overlays_zip(result_id: str) -> Response:
        result = store.get(result_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for c, case in enumerate(result.cases):
                folder = f"{c + 1}_{clean_name(case.case.name)}"
                for name, image, truth, mask in zip(case.case.slice_names, case.case.images, case.case.truths, case.masks):
                    archive.writestr(f"{folder}/{SLICES.overlay_name(clean_name(name.replace(' ', '_')))}",
                                     encode_png(overlay_contours(image, prediction=mask, truth=truth, legend=True)))
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="gliomaseg_overlays.zip"'})

    @app.get("/api/results/{result_id}/report.html")
    def report_html(result_id: str) -> Response:
        from gliomaseg.predict.report import render_run_report

        result = store.get(result_id)
        page = render_run_report([_patient_report(case) for case in result.cases], model_info, title="gliomaseg viewer report")
        return Response(page, media_type="text/html; charset=utf-8", headers={
            "Content-Disposition": 'attachment; filename="report.html"',
            "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})

    @app.get("/api/results/{result_id}/masks.zip")
    def masks_zip(result_id: str) -> Response:
        result = store.get(result_id)
        return Response(_zip_masks(result.cases), media_type="application/zip",
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


def _gif_ready(case: CaseResult) -> bool:
    return len(case.masks) > 1 and len({m.shape for m in case.masks}) == 1


def _frames(case: CaseResult) -> list:
    return [label_frame(overlay_contours(image, prediction=mask, truth=truth, legend=True), f"slice {k + 1}")
            for k, (image, truth, mask) in enumerate(zip(case.case.images, case.case.truths, case.masks))]


def _patient_report(case: CaseResult):
    """The :class:`~gliomaseg.predict.report.PatientReport` of a viewer result, as ``predict`` would write it."""
    from gliomaseg.predict.report import PatientReport, key_slice_indices

    s = case.summary
    spacing = tuple(s["voxel_mm"]) if "voxel_mm" in s else None
    keys = [(label, i + 1, encode_png(overlay_contours(case.case.images[i], prediction=case.masks[i], truth=case.case.truths[i], legend=True)))
            for label, i in key_slice_indices(case.masks)]
    return PatientReport(s["patient"], s["slices"], s["slices_with_tumour"], s["tumour_volume_voxels"], spacing,  # type: ignore[arg-type]
                         s.get("slices_with_true_tumour"), s.get("true_volume_voxels"), s.get("dice_3d"),
                         str(s.get("missing_sequences", "") or ""), keys, gif_bytes(_frames(case)) if _gif_ready(case) else None)


def _zip_masks(cases: list[CaseResult]) -> bytes:
    """``<patient>/<slice>_pred.png`` (0/255, the naming of ``gliomaseg predict``) per slice, and ``patients.csv``."""
    buffer = io.BytesIO()
    used: set[str] = set()
    rows = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for case in cases:
            folder = clean_name(case.case.name)
            k = 2
            while folder in used:
                folder, k = f"{clean_name(case.case.name)}-{k}", k + 1
            used.add(folder)
            for name, mask in zip(case.case.slice_names, case.masks):
                stem = clean_name(name if case.case.kind == "slices" else f"{folder}_{name.replace(' ', '_')}")
                archive.writestr(f"{folder}/{SLICES.prediction_name(stem)}", SLICES.encode_mask(mask))
            rows.append({"folder": folder, **{k: v for k, v in case.summary.items() if not isinstance(v, list)}})
        text = io.StringIO()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows(rows)
        archive.writestr("patients.csv", text.getvalue())
    return buffer.getvalue()


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

