"""An in-memory file system for the simulated disks: no real file is touched.

Storage reaches files three ways: `SegmentFiles` for segment logs (the simulator passes
`odradek.sim.disk.SimFiles`), `pathlib` methods on paths derived from the log directory, and a
few `os`/`open`/`shutil` calls (atomic small-file writes, the cleaner's swap files, snapshot
listing). The simulator gives the broker a `SimPath` log directory, so every derived path is a
`SimPath` whose methods act on a `MemoryFileSystem`; and for the length of a run,
`patched_storage` points the storage and broker modules' `os`, `open` and `shutil` names at
stand-ins that send a `SimPath` (or a simulated descriptor) to the memory file system and
anything else to the real module.

Files are inodes (a bytearray): a descriptor keeps its inode across a rename or unlink, as on
POSIX. Every write is durable at once; the lazy power-loss model for segment bytes lives in
`SimFiles`, above this layer.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import stat
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

# Simulated descriptors are numbered from here, far above any real one.
_FIRST_FD = 1 << 24


@dataclass(eq=False, slots=True)
class Inode:
    data: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Descriptor:
    inode: Inode
    position: int
    append: bool
    path: str


class MemoryFileSystem:
    """Directories and files by absolute path; files are inodes shared with descriptors."""

    def __init__(self) -> None:
        self.directories: set[str] = {"/"}
        self.files: dict[str, Inode] = {}
        self.descriptors: dict[int, _Descriptor] = {}
        self._next_fd = _FIRST_FD
        self.operations = 0

    # -- paths -------------------------------------------------------------------------------

    @staticmethod
    def _parent(path: str) -> str:
        # PurePosixPath(path).parent for the normalized absolute paths SimPath gives.
        parent = path.rpartition("/")[0]
        return parent or "/"

    def _missing(self, path: str) -> OSError:
        return FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.directories

    def is_dir(self, path: str) -> bool:
        return path in self.directories

    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> None:
        if path in self.directories:
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            return
        parent = self._parent(path)
        if parent not in self.directories:
            if not parents:
                raise self._missing(parent)
            self.mkdir(parent, parents=True, exist_ok=True)
        self.directories.add(path)

    def listdir(self, path: str) -> list[str]:
        if path not in self.directories:
            raise self._missing(path)
        prefix = path.rstrip("/") + "/"
        names = [
            entry[len(prefix) :]
            for entry in (*self.files, *self.directories)
            if entry.startswith(prefix) and "/" not in entry[len(prefix) :] and entry != path
        ]
        return sorted(names)

    def unlink(self, path: str) -> None:
        if self.files.pop(path, None) is None:
            raise self._missing(path)

    def rmtree(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for name in [name for name in self.files if name.startswith(prefix)]:
            del self.files[name]
        for name in [name for name in self.directories if name.startswith(prefix)]:
            self.directories.discard(name)
        self.directories.discard(path)

    def replace(self, source: str, destination: str) -> None:
        inode = self.files.pop(source, None)
        if inode is None:
            raise self._missing(source)
        if self._parent(destination) not in self.directories:
            self.files[source] = inode
            raise self._missing(destination)
        self.files[destination] = inode

    def read(self, path: str) -> bytes:
        inode = self.files.get(path)
        if inode is None:
            raise self._missing(path)
        return bytes(inode.data)

    def write(self, path: str, data: bytes) -> None:
        if self._parent(path) not in self.directories:
            raise self._missing(path)
        inode = self.files.get(path)
        if inode is None:
            self.files[path] = Inode(bytearray(data))
        else:
            inode.data[:] = data

    def size(self, path: str) -> int:
        inode = self.files.get(path)
        if inode is None:
            raise self._missing(path)
        return len(inode.data)

    # -- descriptors -------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        self.operations += 1
        if path in self.directories:
            inode = Inode()  # a directory descriptor: only fsync and close are used on it
        else:
            inode_or_none = self.files.get(path)
            if inode_or_none is None:
                if not flags & os.O_CREAT:
                    raise self._missing(path)
                if self._parent(path) not in self.directories:
                    raise self._missing(path)
                inode_or_none = self.files[path] = Inode()
            elif flags & os.O_CREAT and flags & os.O_EXCL:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            inode = inode_or_none
            if flags & os.O_TRUNC:
                del inode.data[:]
        fd = self._next_fd
        self._next_fd += 1
        self.descriptors[fd] = _Descriptor(inode, 0, bool(flags & os.O_APPEND), path)
        return fd

    def descriptor(self, fd: int) -> _Descriptor:
        try:
            return self.descriptors[fd]
        except KeyError:
            raise OSError(errno.EBADF, "Bad file descriptor") from None

    def close(self, fd: int) -> None:
        if self.descriptors.pop(fd, None) is None:
            raise OSError(errno.EBADF, "Bad file descriptor")

    def fd_write(self, fd: int, data: Any) -> int:
        descriptor = self.descriptor(fd)
        data = memoryview(data).cast("B")
        inode = descriptor.inode
        if descriptor.append:
            descriptor.position = len(inode.data)
        position = descriptor.position
        if position > len(inode.data):
            inode.data += bytes(position - len(inode.data))
        inode.data[position : position + len(data)] = data
        descriptor.position = position + len(data)
        return len(data)

    def fd_read(self, fd: int, length: int) -> bytes:
        descriptor = self.descriptor(fd)
        data = bytes(descriptor.inode.data[descriptor.position : descriptor.position + length])
        descriptor.position += len(data)
        return data

    def fd_truncate(self, fd: int, length: int) -> None:
        data = self.descriptor(fd).inode.data
        if length < len(data):
            del data[length:]
        else:
            data += bytes(length - len(data))


# The file system the running simulation's paths refer to.
_current: list[MemoryFileSystem] = []


def current() -> MemoryFileSystem:
    if not _current:
        raise RuntimeError("no simulated file system is active")
    return _current[-1]


class SimPath(PurePosixPath):
    """A path in the simulated file system, with the `pathlib.Path` methods storage uses."""

    def exists(self) -> bool:
        return current().exists(str(self))

    def is_dir(self) -> bool:
        return current().is_dir(str(self))

    def is_file(self) -> bool:
        return str(self) in current().files

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        current().mkdir(str(self), parents=parents, exist_ok=exist_ok)

    def iterdir(self) -> Iterator[SimPath]:
        for name in current().listdir(str(self)):
            yield self / name

    def read_bytes(self) -> bytes:
        return current().read(str(self))

    def read_text(self, encoding: str | None = None, errors: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def write_bytes(self, data: bytes) -> int:
        current().write(str(self), bytes(data))
        return len(data)

    def write_text(
        self, data: str, encoding: str | None = None, errors: str | None = None, newline: Any = None
    ) -> int:
        return self.write_bytes(data.encode(encoding or "utf-8", errors or "strict"))

    def touch(self, mode: int = 0o666, exist_ok: bool = True) -> None:
        fs = current()
        if fs.exists(str(self)):
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, "File exists", str(self))
            return
        fs.write(str(self), b"")

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            current().unlink(str(self))
        except FileNotFoundError:
            if not missing_ok:
                raise

    def replace(self, target: Any) -> SimPath:
        current().replace(str(self), str(target))
        return SimPath(target)

    def rename(self, target: Any) -> SimPath:
        return self.replace(target)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        fs = current()
        if fs.is_dir(str(self)):
            return os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 0, 0, 0, fs.size(str(self)), 0, 0, 0))


def _is_simulated(path: Any) -> bool:
    return isinstance(path, SimPath)


class _SimulatedOs(types.ModuleType):
    """`os` for storage modules: simulated paths and descriptors go to the memory file system."""

    def __init__(self) -> None:
        super().__init__("os")

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if _is_simulated(path):
            return current().open(str(path), flags)
        return os.open(path, flags, mode, **kwargs)

    def close(self, fd: int) -> None:
        if fd >= _FIRST_FD:
            current().close(fd)
        else:
            os.close(fd)

    def fsync(self, fd: int) -> None:
        if fd >= _FIRST_FD:
            current().descriptor(fd)
        else:
            os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self.fsync(fd)

    def write(self, fd: int, data: Any) -> int:
        if fd >= _FIRST_FD:
            return current().fd_write(fd, data)
        return os.write(fd, data)

    def read(self, fd: int, length: int) -> bytes:
        if fd >= _FIRST_FD:
            return current().fd_read(fd, length)
        return os.read(fd, length)

    def ftruncate(self, fd: int, length: int) -> None:
        if fd >= _FIRST_FD:
            current().fd_truncate(fd, length)
        else:
            os.ftruncate(fd, length)

    def replace(self, source: Any, destination: Any) -> None:
        if _is_simulated(source):
            current().replace(str(source), str(destination))
        else:
            os.replace(source, destination)

    def rename(self, source: Any, destination: Any) -> None:
        self.replace(source, destination)

    def listdir(self, path: Any = ".") -> list[str]:
        if _is_simulated(path):
            return current().listdir(str(path))
        return os.listdir(path)

    def unlink(self, path: Any) -> None:
        if _is_simulated(path):
            current().unlink(str(path))
        else:
            os.unlink(path)

    def remove(self, path: Any) -> None:
        self.unlink(path)


class _SimulatedShutil(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("shutil")

    def __getattr__(self, name: str) -> Any:
        return getattr(shutil, name)

    def rmtree(self, path: Any, ignore_errors: bool = False, **kwargs: Any) -> None:
        if _is_simulated(path):
            current().rmtree(str(path))
        else:
            shutil.rmtree(path, ignore_errors=ignore_errors, **kwargs)


class _SimulatedFile:
    """What `open(simulated_path, "wb"/"rb")` returns."""

    def __init__(self, fs: MemoryFileSystem, fd: int, text: bool) -> None:
        self._fs = fs
        self._fd = fd
        self._text = text

    def write(self, data: Any) -> int:
        if self._text:
            data = data.encode()
        return self._fs.fd_write(self._fd, data)

    def read(self, length: int = -1) -> Any:
        descriptor = self._fs.descriptor(self._fd)
        if length < 0:
            length = len(descriptor.inode.data) - descriptor.position
        data = self._fs.fd_read(self._fd, length)
        return data.decode() if self._text else data

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fs.close(self._fd)

    def __enter__(self) -> _SimulatedFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _simulated_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    if not _is_simulated(file):
        return builtins.open(file, mode, *args, **kwargs)
    flags = {
        "r": os.O_RDONLY,
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    }[mode.replace("b", "").replace("+", "")[:1]]
    fs = current()
    return _SimulatedFile(fs, fs.open(str(file), flags), "b" not in mode)


_SIMULATED_OS = _SimulatedOs()
_SIMULATED_SHUTIL = _SimulatedShutil()
# The packages whose file access the simulation redirects.
_PATCHED_PACKAGES = ("odradek.storage", "odradek.broker", "odradek.sim.disk")


@contextlib.contextmanager
def patched_storage(fs: MemoryFileSystem) -> Iterator[None]:
    """Make `fs` the simulated file system and redirect storage's `os`, `open`, `shutil`."""
    replaced: list[tuple[types.ModuleType, str, Any]] = []
    added: list[tuple[types.ModuleType, str]] = []
    for name in sorted(sys.modules):
        if not name.startswith(_PATCHED_PACKAGES):
            continue
        module = sys.modules[name]
        if getattr(module, "os", None) is os:
            replaced.append((module, "os", os))
            module.os = _SIMULATED_OS  # type: ignore[attr-defined]
        if getattr(module, "shutil", None) is shutil:
            replaced.append((module, "shutil", shutil))
            module.shutil = _SIMULATED_SHUTIL  # type: ignore[attr-defined]
        if "open" not in vars(module):
            added.append((module, "open"))
            module.open = _simulated_open  # type: ignore[attr-defined]
    _current.append(fs)
    try:
        yield
    finally:
        _current.pop()
        for module, attribute, real in replaced:
            setattr(module, attribute, real)
        for module, attribute in added:
            delattr(module, attribute)
