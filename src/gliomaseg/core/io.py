"""Atomic writes, the rerun rule (:func:`run_folder`) and the name rule of every output file and folder.

The name rule, one for the package: a name that arrives from outside (a patient in a CSV, a DICOM case, a run in
an experiment, an uploaded file) becomes one path component inside an output folder, never a path out of it.
Refuse in the CLI, rename in the viewer: :func:`check_name` refuses a bad name with an error naming its source
(the user can fix the input), :func:`clean_name` rewrites it into a safe one (an upload cannot be asked to).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from gliomaseg.core.errors import ConfigError, DataError, GliomasegError


def atomic_write(path: str | Path, write: Callable[[Path], None], *, keep_ending: bool = False) -> Path:
    """Call ``write(tmp)`` on a fresh temporary file next to ``path`` and rename it into place.

    A crash or an error mid-write leaves the previous file (or none) instead of half a file, and the
    temporary file is removed on error. The temporary file is created with mode 0o666, so the process
    umask gives it the usual permissions without the umask being read or changed (no race with threads).
    ``keep_ending``: the temporary name ends like ``path`` (``.nii.gz``), for writers that pick the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        token = secrets.token_hex(6)
        tmp = path.with_name(f".{token}.tmp.{path.name}" if keep_ending else f".{path.name}.{token}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


RUN_PREFIX = ".gliomaseg-run-"  # a run in progress writes here, inside its output folder
# The checkpoints of a training run folder: the epoch picked on validation, the latest epoch (what --resume
# continues), and the model of a run without validation (--val-csv none: its last epoch, no pick).
BEST_CHECKPOINT, LAST_CHECKPOINT, FINAL_CHECKPOINT = "best.ckpt", "last.ckpt", "final.ckpt"


@contextlib.contextmanager
def run_folder(out: str | Path, command: str) -> Iterator[Path]:
    """The rule for every command that writes a folder of outputs (README "Reruns"): yields a fresh hidden folder
    inside ``out`` to write the run into; when the block ends without error, the files of this command's
    previous run in ``out`` (listed in ``out/.gliomaseg-<command>.json``) are removed, the new files moved into
    place and listed there.

    So a folder holds one run's files, never a mix: a rerun with fewer folds, patients or skipped files leaves no
    old file behind, a run that fails or is killed (even ``kill -9``) while it writes leaves the previous run as it
    was (its hidden folder is removed by the next run), and files in ``out`` that no gliomaseg run wrote are never
    touched. The last step, moving the new files in, is a series of renames: a run killed during it leaves a
    manifest marked ``"complete": false`` that lists both runs' files, and the next run removes every one it does
    not write itself (so a file of the user's own under a name this run writes, which a finished run would have
    replaced, is removed by the next run too). Two runs at once into one folder: the second is refused
    (:class:`ConfigError`), since each would remove the other's hidden folder as a killed run's.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _only_run_in(out):
        for stale in out.glob(f"{RUN_PREFIX}*"):  # a run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=out))
        try:
            yield work
            manifest = out / f".gliomaseg-{command}.json"
            new = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
            old: list[str] = []
            if manifest.is_file():
                try:
                    old = [str(f) for f in json.loads(manifest.read_text(encoding="utf-8")).get("files", [])]
                except (ValueError, AttributeError):
                    old = []
            # The swap below is many renames, not one: listed first, both runs' files are the next run's to remove
            # should this one be killed half way through it.
            write_text(json.dumps({"command": command, "files": sorted(set(old) | set(new)), "complete": False}, indent=1),
                       manifest)
            root, writing = out.resolve(), set(new)
            for rel in old:
                target = (out / rel)
                if rel in writing or not target.resolve().is_relative_to(root) or target.is_symlink():
                    continue
                if target.is_file():
                    target.unlink()
                for folder in target.parents:  # folders the old run made that are empty now (or that a killed swap made)
                    if folder.resolve() == root or not folder.is_dir() or any(folder.iterdir()):
                        break
                    folder.rmdir()
            for rel in new:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(work / rel, out / rel)
            write_text(json.dumps({"command": command, "files": new}, indent=1), manifest)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _only_run_in(out: Path) -> Iterator[None]:
    """One run at a time writes into ``out``: a second would take the first's hidden folder for a killed run's and
    remove it, and their swaps would mix. The lock is on the folder itself (no lock file to list or leave behind),
    released when the run ends or its process dies; where ``fcntl`` is missing (Windows) there is none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    handle = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out}: another gliomaseg run is writing into this folder; wait for it to finish or give "
                              "another output folder") from None
        yield
    finally:
        os.close(handle)


def moved(path: Path, work: Path, out: Path) -> Path:
    """Where ``path``, written under a :func:`run_folder` ``work`` folder, lies once the run is in ``out``."""
    return Path(out) / Path(path).relative_to(work)


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically (temp file, then rename)."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write bytes (an encoded PNG, for instance) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def check_name(name: str, what: str, source: str | Path, error: type[GliomasegError] = DataError) -> str:
    """``name`` when it can be used as one file or folder name inside an output folder (the CLI's half of the name rule).

    Refuses (with ``error``, naming ``source``) an empty name, an absolute path, a name
    with a path separator, ``.`` / ``..`` or a leading dot, or a control character: such a name
    would write outside the output folder or hide its files.
    """
    text = str(name)
    bad = (
        not text.strip() or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text
        or Path(text).is_absolute() or any(ord(c) < 32 for c in text) or (len(text) > 1 and text[1] == ":")
    )
    if bad:
        raise error(f"{source}: {what} {text!r} cannot name a file inside the output folder "
                        "(absolute path, path separator, '..', leading dot or control character)")
    return text


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120  # characters of a name made by clean_name


def clean_name(name: str, fallback: str = "upload") -> str:
    """``name`` rewritten into one path component of ``A-Z a-z 0-9 . _ -`` (the viewer's half of the name rule): no
    folders (only the last component is kept), no leading dot, at most :data:`MAX_NAME` characters (the ending kept),
    ``fallback`` for a name left empty."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).lstrip(".").strip()
    if base in ("", ".", ".."):
        base = fallback
    if len(base) > MAX_NAME:
        suffix = "".join(Path(base).suffixes[-2:])[-20:]
        base = base[: MAX_NAME - len(suffix)] + suffix
    return base


def natural_key(text: str | Path) -> list:
    """Sort key that orders numbers by value: ``p_2`` before ``p_10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]
