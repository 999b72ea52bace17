"""``gliomaseg serve``: a local web viewer for predictions.

- ``limits``: the safety limits and their defaults (host, upload size, image size, ...).
- ``uploads``: uploaded files into a per-request temporary folder (safe names, zip extraction) and
  then into cases (one patient's slices or one volume); NIfTI is read and written by ``gliomaseg.data.nifti``,
  as ``gliomaseg predict`` reads and writes it.
- ``pipeline``: one case through the prediction path and into per-slice contours and per-patient numbers.
- ``guard``: the ASGI middleware: security headers, the Host and Origin checks, the request body limit.
- ``store``: the results kept in memory (the last ``max_results``, within ``max_result_bytes``).
- ``downloads``: what the downloads pack: the masks and overlays zips, a case's GIF frames and report entry.
- ``app``: the FastAPI application (its routes) and ``run_server``.
- ``static/``: the page (HTML, JavaScript, CSS), shipped inside the package; nothing is fetched from outside.

Only ``app`` and ``guard`` import FastAPI; nothing here imports torch unless a checkpoint is served.
"""
