"""Atomic file and directory writes: readers never see a half-written result.

A file is written to a temporary sibling (same directory, hence same filesystem), flushed and
fsynced, then renamed onto its final name with ``os.replace``, which is atomic on POSIX and Windows.
On any exception the temporary is removed and whatever was under the final name before is untouched.

A crash that kills the process outright (SIGKILL, power loss) can leave a hidden temporary behind,
named ``.<final name>.<random>.tmp``; it is never mistaken for a result.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import PathLike

_TEMP_SUFFIX = ".tmp"


def _temp_sibling(final: Path, tag: str = "") -> Path:
    """A fresh hidden name next to ``final`` (not created here)."""
    return final.with_name(f".{final.name}.{tag}{secrets.token_hex(6)}{_TEMP_SUFFIX}")


def _fsync_directory(directory: Path) -> None:
    """Makes a rename inside ``directory`` durable. POSIX only: Windows cannot open directories."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(final: Path) -> tuple[Path, int]:
    """Creates an empty temporary sibling of ``final``; returns its path and an open descriptor.

    ``os.open`` with mode 0o666 lets the process umask decide the permissions, so the finished file
    gets the same permissions as one written with plain ``open`` (``tempfile.mkstemp`` would force 0o600).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = _temp_sibling(final)
        try:
            return temp, os.open(temp, flags, 0o666)
        except FileExistsError:  # a 48-bit random clash; just draw again
            continue


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", *, encoding: str = "utf-8") -> Iterator[IO]:
    """Context manager yielding a file object whose content appears under ``path`` only on success.

    Args:
        path: final file name; its directory must exist.
        mode: "wb" (bytes) or "w" (text, written with ``encoding`` and "\\n" line endings).

    Example::

        with atomic_write("out/scene.ply") as f:
            f.write(header)
            f.write(body)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    final = Path(path)
    temp, fd = _create_exclusive(final)
    try:
        if mode == "wb":
            file = os.fdopen(fd, "wb")
        else:
            file = os.fdopen(fd, "w", encoding=encoding, newline="\n")
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, final)
    except BaseException:
        # BaseException too: a KeyboardInterrupt mid-write must not leave a temporary behind.
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(final.parent)


def _fsync_tree(root: Path) -> None:
    """fsyncs every regular file under ``root`` (files written by code that did not fsync them)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            file_path = Path(dirpath) / name
            if file_path.is_symlink() or not file_path.is_file():
                continue
            fd = os.open(file_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_directory(Path(dirpath))


@contextlib.contextmanager
def atomic_directory(final_dir: PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Context manager yielding an empty temporary directory that becomes ``final_dir`` on success.

    Build the whole output folder inside the yielded path. On success every file in it is fsynced and
    the directory is renamed to ``final_dir``. On any exception the temporary directory is deleted, no
    folder appears under ``final_dir`` and an earlier folder there is left as it was.

    Args:
        final_dir: the folder to create; its parent must exist.
        replace: if False (default), an existing ``final_dir`` is an error (raised before any work is
            done, and again at the end if one appeared meanwhile). If True, an existing ``final_dir``
            is replaced on success: it is renamed aside, the new folder renamed in, then the old one
            deleted. POSIX has no portable atomic swap of two directories, so between those two renames
            there is a moment (microseconds) where ``final_dir`` does not exist; if the second rename
            fails the old folder is put back.
    """
    final = Path(final_dir)
    if not replace and final.exists():
        raise FileExistsError(f"atomic_directory: {final} already exists (pass replace=True to replace it)")
    temp = _temp_sibling(final)
    temp.mkdir()
    try:
        yield temp
        _fsync_tree(temp)
        if not final.exists():
            # os.rename (not os.replace): on POSIX it fails if final_dir appeared meanwhile and is
            # non-empty, on Windows if it exists at all; we never merge into a folder we did not build.
            os.rename(temp, final)
        elif not replace:
            raise FileExistsError(f"atomic_directory: {final} appeared while it was being built")
        else:
            old = _temp_sibling(final, tag="old.")
            os.rename(final, old)
            try:
                os.rename(temp, final)
            except BaseException:
                os.rename(old, final)
                raise
            # The new folder is in place: failing to delete the old one must not report the run as
            # failed, so it is removed best-effort (a leftover is a hidden ".<name>.old.*.tmp" folder).
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_directory(final.parent)
