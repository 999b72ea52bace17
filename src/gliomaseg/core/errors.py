"""Errors that the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations


class GliomasegError(Exception):
    """Base class: a problem the user can fix, with a message that names the file and the problem."""


class DataError(GliomasegError, ValueError):
    """A slice, mask, folder or CSV that cannot be used."""


class CheckpointError(GliomasegError):
    """A file that is not a gliomaseg checkpoint, or one that does not fit the model."""


class ConfigError(GliomasegError, ValueError):
    """An unknown architecture, encoder, loss, option or a malformed experiment file."""


class TrainingDivergedError(GliomasegError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class InputWarning(UserWarning):
    """Input that can be used but may give a worse mask (e.g. too few slices for per-patient statistics)."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters), also for an exception with no message.

    For wrapping a library's exception into a one-line :class:`GliomasegError` message.
    """
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
