"""``gliomaseg serve``: a local web viewer for predictions.

- ``limits``: the safety limits and their defaults (host, upload size, image size, ...).
- ``uploads``: uploaded files into a per-request temporary folder (safe names, zip extraction) and
  then into cases (one patient's slices or one volume); NIfTI is read and written by ``gliomaseg.data.nifti``,
  as ``gliomaseg predict`` reads and writes it.
- ``pipeline``: one case through the prediction path and into per-slice contours and per-patient numbers.
- ``app``: the FastAPI application, the in-memory result store, downloads and ``run_server``.
- ``static/``: the page (HTML, JavaScript, CSS), shipped inside the package; nothing is fetched from outside.

Only ``app`` imports FastAPI; nothing here imports torch unless a checkpoint is served.
"""
