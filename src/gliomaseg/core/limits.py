"""The size limits of decoded input, the one place they are set (README "Data"; the viewer and DICOM use them too)."""

from __future__ import annotations

# The size limits of decoded input, the one place they are set (README "Data"; the viewer uses them too).
# The largest slice side read: kaggle_3m slices are 256 px; a 44 KB PNG can claim 6000x6000 (108 MB decoded).
MAX_IMAGE_SIDE = 4096
# The memory budget of one decoded input (a slice, a mask, a whole NIfTI volume as it is held after scaling),
# checked from the header before any pixel is decoded. A 4096x4096 slice takes at most 128 MiB (RGBA, 16-bit).
MAX_DECODED_BYTES = 512 * 1024 * 1024
