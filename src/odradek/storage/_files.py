"""Durable small-file writes: the temporary-file, fsync, rename, fsync-directory dance."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make renames, creations and deletions of entries in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new contents.

    With `durable`, the data and the rename are on disk when this returns.
    """
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(temporary, path)
    if durable:
        fsync_directory(path.parent)
