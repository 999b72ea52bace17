"""Physical units, honestly: a voxel size in mm only when it is known, and the words "spacing unknown" otherwise.

kaggle_3m's tif slices record no spacing, and ``convert`` writes NIfTI with units "unknown" unless given one,
so a volume in mL or an HD95 in mm is shown only for ``--spacing X Y Z`` or a NIfTI header whose units are a
length. Spacing here is (x, y, z) in mm: column width, row height, slice step (the order of ``--spacing``).
"""

from __future__ import annotations

import math
from typing import Sequence

Spacing = tuple[float, float, float]
UNKNOWN = "spacing unknown"
# NIfTI xyzt space units that are a length, in mm ("unknown" is not one).
LENGTH_MM = {"mm": 1.0, "micron": 1e-3, "meter": 1e3}


def check_spacing(spacing: Sequence[float] | None) -> Spacing | None:
    """``None``, or three finite positive sizes in mm as a tuple; anything else raises ValueError."""
    if spacing is None:
        return None
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"a spacing is three positive sizes in mm (X Y Z), got {list(spacing)}")
    return values  # type: ignore[return-value]


def header_spacing(header) -> Spacing | None:
    """A NIfTI header's first three zooms in mm when its space unit is a length; ``None`` for "unknown" units."""
    unit = header.get_xyzt_units()[0]
    if unit not in LENGTH_MM:
        return None
    zooms = [float(z) * LENGTH_MM[unit] for z in header.get_zooms()[:3]]
    return check_spacing(zooms) if len(zooms) == 3 and all(z > 0 for z in zooms) else None


def spacing_text(spacing: Spacing | None) -> str:
    """``0.94x0.94x5 mm`` or ``spacing unknown``."""
    return UNKNOWN if spacing is None else "x".join(f"{v:g}" for v in spacing) + " mm"


def volume_ml(voxels: int, spacing: Spacing | None) -> float | None:
    """The volume of ``voxels`` voxels in mL (1 mL = 1000 mm^3), ``None`` when the spacing is unknown."""
    return None if spacing is None else round(voxels * spacing[0] * spacing[1] * spacing[2] / 1000.0, 3)


def volume_text(voxels: int, spacing: Spacing | None) -> str:
    """``12.345 mL (81608 voxels)``, or ``81608 voxels (spacing unknown)``."""
    ml = volume_ml(voxels, spacing)
    return f"{voxels} voxels ({UNKNOWN})" if ml is None else f"{ml:g} mL ({voxels} voxels)"
