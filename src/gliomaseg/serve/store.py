"""The viewer's results in memory: the last few, within a byte budget, each under an unguessable id."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from gliomaseg.core.errors import GliomasegError
from gliomaseg.serve.pipeline import CaseResult


@dataclass
class StoredResult:
    id: str
    cases: list[CaseResult]
    notes: list[str]


class ResultStore:
    """The last ``size`` results within ``max_bytes`` (their slices and masks), oldest evicted first; thread-safe.

    The newest result is always kept, even alone over ``max_bytes`` (the request's own budget bounds it).
    """

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(cases: list[CaseResult]) -> int:
        """What a result holds: slices, masks, truths, probability maps and a volume's source (a DICOM series' datasets)."""
        arrays = sum(a.nbytes for case in cases for a in (*case.case.images, *case.masks, *case.probabilities,
                                                          *(t for t in case.case.truths if t is not None)))
        return arrays + sum(case.case.geometry.nbytes for case in cases if case.case.geometry is not None)

    def add(self, cases: list[CaseResult], notes: list[str]) -> StoredResult:
        result = StoredResult(secrets.token_urlsafe(16), cases, notes)
        with self._lock:
            self._items[result.id] = result
            self._bytes[result.id] = self.nbytes(cases)
            while len(self._items) > 1 and (len(self._items) > self.size
                                            or (self.max_bytes is not None and sum(self._bytes.values()) > self.max_bytes)):
                old, _ = self._items.popitem(last=False)
                del self._bytes[old]
        return result

    @property
    def bytes_kept(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def get(self, result_id: str) -> StoredResult:
        with self._lock:
            result = self._items.get(result_id)
        if result is None:
            raise NotFound(f"result {result_id[:40]} not found: it expired (only the last {self.size} results, and "
                            f"{self.max_bytes / 2**20 if self.max_bytes else 0:g} MiB of them, are kept) "
                            "or the server restarted; upload the files again")
        return result

    def __len__(self) -> int:
        return len(self._items)


class NotFound(GliomasegError):
    """A result, case or slice that is not (or no longer) here: the app answers 404."""
