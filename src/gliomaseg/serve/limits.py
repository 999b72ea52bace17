"""Defaults and safety limits of ``gliomaseg serve``, each defined once here, and the errors a request gets.

The image side and the decoded bytes are not set here: they derive from :mod:`gliomaseg.core.limits`, the one
place the readers' limits are set (a server may lower them, never raise them)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gliomaseg.core.errors import DataError
from gliomaseg.core.limits import MAX_DECODED_BYTES, MAX_IMAGE_SIDE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # bound to every address: the Host names it is reached by are not known


@dataclass(frozen=True)
class ServeLimits:
    """What one request may send; anything beyond gets an HTTP 4xx with a readable message.

    Attributes:
        max_upload_bytes: the whole request body (all files together), in bytes.
        max_files: files in one upload, counting the members of a zip.
        max_unpacked_bytes: bytes a zip may unpack to (guards against zip bombs).
        max_image_side: the largest height or width of a slice or of a volume's slice, in pixels (at most
            :data:`gliomaseg.core.limits.MAX_IMAGE_SIDE`, the limit of every reader, its default).
        max_decoded_bytes: what one request's images, masks and volumes may decode to, all together, checked
            from each file's header before its pixels are read (:data:`gliomaseg.core.limits.MAX_DECODED_BYTES`).
        max_slices: slices in one request (all patients and volumes together).
        max_results: finished results kept in memory for viewing and download; the oldest goes first.
        max_result_bytes: bytes of the results kept in memory (slices and masks); the oldest go first past it.
        concurrent_inferences: requests that run the model at once; others wait their turn.
    """

    max_upload_bytes: int = 64 * 1024 * 1024
    max_files: int = 1000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_image_side: int = MAX_IMAGE_SIDE
    max_decoded_bytes: int = MAX_DECODED_BYTES
    max_slices: int = 1000
    max_results: int = 16
    max_result_bytes: int = 2 * MAX_DECODED_BYTES
    concurrent_inferences: int = 1

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"serve limit {name} must be a positive integer, got {value!r}")
        if self.max_image_side > MAX_IMAGE_SIDE:
            raise DataError(f"serve limit max_image_side {self.max_image_side} is over the readers' limit of {MAX_IMAGE_SIDE}")


    def overridden(self, *, max_upload_mb: float | None = None, max_image_side: int | None = None) -> ServeLimits:
        """These limits with ``serve --max-upload-mb`` (MiB) and ``--max-image-side`` where given."""
        limits = self
        if max_upload_mb is not None:
            limits = replace(limits, max_upload_bytes=int(max_upload_mb * 1024 * 1024))
        if max_image_side is not None:
            limits = replace(limits, max_image_side=max_image_side)
        return limits


class UploadError(DataError):
    """A request the viewer cannot use; ``status`` is the HTTP status it answers with."""

    status = 400


class UploadTooLarge(UploadError):
    """Past one of the :class:`ServeLimits`."""

    status = 413
