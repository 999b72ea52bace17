"""What the viewer's downloads pack: the masks zip, the overlays zip, a case's GIF frames and its report entry."""

from __future__ import annotations

import csv
import io
import zipfile

from gliomaseg.core.io import clean_name
from gliomaseg.core.parallel import thread_map
from gliomaseg.data.formats.slice_files import SLICES
from gliomaseg.data.overlay import encode_png, gif_bytes, label_frame, overlay_contours
from gliomaseg.serve.pipeline import CaseResult


def gif_ready(case: CaseResult) -> bool:
    return len(case.masks) > 1 and len({m.shape for m in case.masks}) == 1


def gif_frames(case: CaseResult) -> list:
    def frame(k: int):
        image, truth, mask = case.case.images[k], case.case.truths[k], case.masks[k]
        return label_frame(overlay_contours(image, prediction=mask, truth=truth, legend=True), f"slice {k + 1}")

    return thread_map(frame, range(len(case.masks)))


def patient_report(case: CaseResult):
    """The :class:`~gliomaseg.predict.report.PatientReport` of a viewer result, as ``predict`` would write it."""
    from gliomaseg.predict.report import PatientReport, key_slice_indices

    s = case.summary
    spacing = tuple(s["voxel_mm"]) if "voxel_mm" in s else None
    keys = [(label, i + 1, encode_png(overlay_contours(case.case.images[i], prediction=case.masks[i], truth=case.case.truths[i], legend=True)))
            for label, i in key_slice_indices(case.masks)]
    return PatientReport(s["patient"], s["slices"], s["slices_with_tumour"], s["tumour_volume_voxels"], spacing,  # type: ignore[arg-type]
                         s.get("slices_with_true_tumour"), s.get("true_volume_voxels"), s.get("dice_3d"),
                         str(s.get("missing_sequences", "") or ""), keys, gif_bytes(gif_frames(case)) if gif_ready(case) else None)


def zip_masks(cases: list[CaseResult]) -> bytes:
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


def zip_overlays(cases: list[CaseResult]) -> bytes:
    """``<k>_<patient>/<slice>_overlay.png`` per slice: every overlay as ``gliomaseg predict`` draws it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for c, case in enumerate(cases):
            folder = f"{c + 1}_{clean_name(case.case.name)}"
            for name, image, truth, mask in zip(case.case.slice_names, case.case.images, case.case.truths, case.masks):
                archive.writestr(f"{folder}/{SLICES.overlay_name(clean_name(name.replace(' ', '_')))}",
                                 encode_png(overlay_contours(image, prediction=mask, truth=truth, legend=True)))
    return buffer.getvalue()
