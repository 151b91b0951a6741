"""Durable small-file writes: the temporary-file, fsync, rename, fsync-directory dance."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# The longest file name most file systems take (NAME_MAX), in bytes.
MAX_FILE_NAME_BYTES = 255


def fsync_directory(directory: Path) -> None:
    """Make renames, creations and deletions of entries in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new contents.

    With `durable`, the data and the rename are on disk when this returns. The temporary file
    is `<name>.tmp`, or `<hash of name>.tmp` where that would be longer than a file name may be
    (the metadata of a topic with a 249-character name): either way it ends in `.tmp`, which is
    what recovery removes.
    """
    temporary_name = path.name + ".tmp"
    if len(os.fsencode(temporary_name)) > MAX_FILE_NAME_BYTES:
        temporary_name = hashlib.sha256(os.fsencode(path.name)).hexdigest() + ".tmp"
    temporary = path.with_name(temporary_name)
    with open(temporary, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(temporary, path)
    if durable:
        fsync_directory(path.parent)
