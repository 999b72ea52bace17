"""The size limits of decoded input, the one place they are set (README "Data").

Every reader holds them (slice files, NIfTI, DICOM); the viewer's :class:`gliomaseg.serve.limits.ServeLimits`
takes them as its defaults and refuses a larger ``max_image_side``, so there is one value of each.
"""

from __future__ import annotations

# The largest slice side read: kaggle_3m slices are 256 px; a 44 KB PNG can claim 6000x6000 (108 MB decoded).
MAX_IMAGE_SIDE = 4096
# The memory budget of one decoded input (a slice, a mask, a whole NIfTI volume as it is held after scaling),
# checked from the header before any pixel is decoded. A 4096x4096 slice takes at most 128 MiB (RGBA, 16-bit).
MAX_DECODED_BYTES = 512 * 1024 * 1024
