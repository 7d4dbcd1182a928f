"""Writing an output directory (`--out DIR`) atomically: every file or none, never half a file.

The files are written into a fresh temporary directory beside DIR first. A new DIR is then that
directory renamed into place (one atomic rename). An existing DIR that holds only files fmplan
writes (a previous plan.yaml and launch files) is swapped whole: the files kept from it are
hard-linked into the new directory, which replaces it in two renames with Ctrl-C held off between
them, so an interrupted or failed write leaves the previous files as they were. A DIR with other
content is refused unless `force`; then each file is replaced on its own (each atomically, the set
not), and the other content is left alone.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from planner.errors import InputError

EXECUTABLE_SUFFIXES = (".sh", ".sbatch")
"""Files written with mode 0755 (launch scripts); the rest get 0644."""


def write_files(out_dir: Path, files: dict[str, str], *, owned: frozenset[str] | set[str],
                force: bool = False) -> list[Path]:
    """Write `files` (name -> text) into `out_dir` as described in the module docstring; `owned`
    are the names fmplan writes there (any engine's), which an existing DIR may hold. Returns
    the written paths, sorted."""
    out_dir = Path(out_dir)
    others = _other_content(out_dir, set(owned) | set(files))
    if others and not force:
        shown = ", ".join(sorted(others)[:5]) + (" ..." if len(others) > 5 else "")
        raise InputError(f"--out {out_dir} already holds files fmplan did not write ({shown})",
                         hint="choose a new or empty directory, or pass --force to write the "
                              "files beside them")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.fmplan-", dir=out_dir.parent))
    try:
        for name, text in sorted(files.items()):
            _write_file(staging / name, text)
        if not out_dir.exists():
            staging.chmod(0o777 & ~_umask())
            os.rename(staging, out_dir)
        elif not others:
            _swap(out_dir, staging, set(files))
        else:
            for name in sorted(files):
                os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / name for name in sorted(files)]


def _other_content(out_dir: Path, allowed: set[str]) -> list[str]:
    """Entries of an existing `out_dir` that are not regular files with an allowed name."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return []
    if not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory",
                         hint="give a directory path")
    return [entry.name for entry in out_dir.iterdir()
            if entry.name not in allowed or entry.is_symlink() or not entry.is_file()]


def _write_file(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    path.chmod(0o755 if path.name.endswith(EXECUTABLE_SUFFIXES) else 0o644)


def _swap(out_dir: Path, staging: Path, written: set[str]) -> None:
    """Replace `out_dir` by `staging`, keeping (hard links of) the files not rewritten."""
    for entry in out_dir.iterdir():
        if entry.name not in written:
            try:
                os.link(entry, staging / entry.name)
            except OSError:  # a file system without hard links
                shutil.copy2(entry, staging / entry.name)
    staging.chmod(out_dir.stat().st_mode & 0o7777)
    retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.fmplan-old-", dir=out_dir.parent))
    with _sigint_held():
        os.rename(out_dir, retired / out_dir.name)
        os.rename(staging, out_dir)
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Ctrl-C arrives after the block, not inside it (POSIX; elsewhere a no-op)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
