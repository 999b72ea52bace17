"""What machine this is, and a small per-machine cache of measured choices.

Measured choices (the training precision of :mod:`gliomaseg.modeling.precision`, the ONNX Runtime settings of
:mod:`gliomaseg.inference.onnx_backend`) are only valid on the machine that measured them, so each is stored
under a key that names the machine: CPU model, a digest of its instruction-set flags, the number of CPUs
this process may use, plus whatever the caller adds (torch version, model, image size...).

The cache lives in ``$GLIOMASEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/gliomaseg``, else
``~/.cache/gliomaseg``: one JSON file per kind of choice. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

CACHE_ENV = "GLIOMASEG_CACHE_DIR"


def cache_dir() -> Path:
    """``$GLIOMASEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/gliomaseg``, else ``~/.cache/gliomaseg`` (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gliomaseg"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def cpu_identity() -> dict[str, str]:
    """``{"cpu": model name, "flags": digest of the instruction-set flags}`` (from /proc/cpuinfo on Linux)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name == "model name" and not model:
                model = value.strip()
            elif name in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
            if model and flags:
                break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {"cpu": model, "flags": hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else "unknown"}


def cpu_has(flag: str) -> bool:
    """Whether /proc/cpuinfo lists ``flag`` (e.g. ``avx512_vnni``, ``amx_tile``); False where unknown."""
    try:
        return any(line.startswith("flags") and flag in line.split() for line in Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return False


def machine_key(**extra: Any) -> dict[str, Any]:
    """The machine (CPU model, flags digest, usable CPUs) plus ``extra``: the key a measured choice is stored under."""
    return {**cpu_identity(), "cpus": available_cpus(), **{k: extra[k] for k in sorted(extra)}}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_file(kind: str) -> Path:
    return cache_dir() / f"{kind}.json"


def _read_all(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            raise ValueError("not a JSON object")
        return entries
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: unreadable cache ({exc}); measuring again", stacklevel=3)
        return {}


def cached(kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """The value stored for ``key`` in the ``kind`` cache, or None."""
    entry = _read_all(cache_file(kind)).get(_digest(key))
    if isinstance(entry, dict) and entry.get("key") == json.loads(json.dumps(key, default=str)) and isinstance(entry.get("value"), dict):
        return entry["value"]
    return None


def store(kind: str, key: dict[str, Any], value: dict[str, Any]) -> Path | None:
    """Add ``value`` under ``key`` to the ``kind`` cache (atomically); a cache that cannot be written only warns."""
    from gliomaseg.core.io import write_text

    path = cache_file(kind)
    entries = _read_all(path)
    entries[_digest(key)] = {"key": key, "value": value, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        return write_text(json.dumps(entries, indent=1, default=str), path)
    except OSError as exc:
        warnings.warn(f"{path}: cannot write the cache ({exc}); the choice will be measured again next time", stacklevel=2)
        return None


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)
