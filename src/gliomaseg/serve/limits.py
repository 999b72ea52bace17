"""Defaults and safety limits of ``gliomaseg serve``, each defined once here, and the errors a request gets."""

from __future__ import annotations

from dataclasses import dataclass

from gliomaseg.errors import DataError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may send; anything beyond gets an HTTP 4xx with a readable message.

    Attributes:
        max_upload_bytes: the whole request body (all files together), in bytes.
        max_files: files in one upload, counting the members of a zip.
        max_unpacked_bytes: bytes a zip may unpack to (guards against zip bombs).
        max_image_side: the largest height or width of a slice or of a volume's slice, in pixels.
        max_slices: slices in one request (all patients and volumes together).
        max_results: finished results kept in memory for viewing and download; the oldest goes first.
        concurrent_inferences: requests that run the model at once; others wait their turn.
    """

    max_upload_bytes: int = 64 * 1024 * 1024
    max_files: int = 1000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_image_side: int = 1024
    max_slices: int = 1000
    max_results: int = 16
    concurrent_inferences: int = 1


class UploadError(DataError):
    """A request the viewer cannot use; ``status`` is the HTTP status it answers with."""

    status = 400


class UploadTooLarge(UploadError):
    """Past one of the :class:`ServeLimits`."""

    status = 413
