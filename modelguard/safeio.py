"""Reading untrusted files: regular files only, sizes checked on the open descriptor.

    with open_regular(Path("model.sig"), max_size=MAX_SIGNATURE_BYTES) as handle:
        data = read_all(handle, max_size=MAX_SIGNATURE_BYTES)

Every place that reads a file an attacker may have written (models, signatures,
co-signatures, policies, keys, data, containers) goes through here, so that a FIFO does
not hang the reader, ``/dev/zero`` or a growing file does not exhaust memory, and a size
is trusted only after ``fstat`` on the descriptor that is then read (never re-opened by
path). The file is opened with ``O_NONBLOCK`` so that opening a FIFO returns at once; the
type check refuses it before any read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from modelguard.errors import BadInputError, UnsafeModelError

MAX_SIGNATURE_BYTES = 16 * 1024 * 1024
MAX_POLICY_BYTES = 1024 * 1024
MAX_KEY_BYTES = 64 * 1024


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def open_regular(
    path: Path | str,
    *,
    max_size: int | None = None,
    what: str = "file",
    dir_fd: int | None = None,
    follow_symlinks: bool = True,
    shown: str | None = None,
) -> BinaryIO:
    """Open ``path`` for reading; refuse anything but a regular file no larger than ``max_size``.

    ``dir_fd``: open ``path`` relative to that directory descriptor; ``follow_symlinks=False``:
    refuse a symbolic link as the last component (``O_NOFOLLOW``); ``shown``: the name used in
    messages. Raises :class:`BadInputError` (exit 2) naming the file and the reason.
    """
    name = shown or str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BadInputError(f"no such {what}", path=name) from None
    except IsADirectoryError:
        raise BadInputError(f"{what} is a directory", path=name) from None
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise UnsafeModelError(f"{what} is a symbolic link", path=name) from None
        try:  # a socket cannot be opened at all (ENXIO): name what it is
            mode = os.stat(name).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise BadInputError(f"{what} is {_kind(mode)}, not a regular file", path=name) from None
        raise BadInputError(f"cannot open {what}: {error.strerror}", path=name) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadInputError(f"{what} is {_kind(info.st_mode)}, not a regular file", path=name)
        if max_size is not None and info.st_size > max_size:
            raise BadInputError(
                f"{what} is {info.st_size} bytes, more than the {max_size} allowed", path=name
            )
        # Back to blocking reads for a regular file (O_NONBLOCK has no effect on them anyway).
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_all(handle: BinaryIO, *, max_size: int | None = None, what: str = "file") -> bytes:
    """Read the whole open file, refusing more than ``max_size`` bytes even if it grows."""
    limit = max_size if max_size is not None else os.fstat(handle.fileno()).st_size
    data = handle.read(limit + 1)
    if len(data) > limit:
        name = getattr(handle, "name", "?")
        raise BadInputError(f"{what} grew past {limit} bytes while being read", path=str(name))
    return data


def read_regular(path: Path | str, *, max_size: int, what: str = "file") -> bytes:
    """Open, type- and size-check, and read a small untrusted file in one step."""
    with open_regular(path, max_size=max_size, what=what) as handle:
        return read_all(handle, max_size=max_size, what=what)
