"""A quiet terminal: warnings as one plain sentence, and third-party noise (Lightning's tips, deprecations) left out.

Only the CLI calls :func:`quiet_terminal`; the library itself never changes global warning or logging state.
"""

from __future__ import annotations

import logging
import sys
import warnings

# Messages of other packages that tell a gliomaseg user nothing they can act on.
_NOISE = (
    r".*[Dd]eprecat.*",
    r"Checkpoint directory .* exists and is not empty.*",
    r"The '.*dataloader' does not have many workers.*",
    r".*`isinstance\(treespec, LeafSpec\)`.*",
)
_TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg) and "litlogger" not in str(record.msg)


def plain_warning(command: str):
    """A ``warnings.showwarning`` that prints ``gliomaseg COMMAND: warning: <first line of the message>``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        print(f"gliomaseg {command}: warning: {text}", file=file or sys.stderr)

    return show


def quiet_terminal(command: str) -> None:
    """Show gliomaseg's warnings once each as a plain sentence, hide deprecation noise and Lightning's tips."""
    warnings.showwarning = plain_warning(command)
    warnings.simplefilter("default", UserWarning)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for message in _NOISE:
        warnings.filterwarnings("ignore", message=message)
    for name in _TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())
