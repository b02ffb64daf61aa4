"""Reading the files of a folder that is not trusted, for a Baileys import.

The folder may be changed while it is read, by a client still running or by
someone else: each file is opened without following a symbolic link and
without blocking (a FIFO put in a file's place would block a plain open
forever), checked again on the open descriptor, and never read past the size
limit. A file that is not BufferJSON is diagnosed by position, never by its
content (it holds private keys).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Final

from ..errors import DecodeError, InvalidInputError
from ..store.codec import decode_value


def _check_size(folder: Path, name: str, size: int, limit: int) -> None:
    if size > limit:
        raise InvalidInputError(
            f"{name} in {folder} is {size:,} bytes, over the store's max_value_size of "
            f"{limit:,}: it is not a Baileys file (or open the store with a higher "
            "max_value_size); nothing was read"
        )


_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _read_regular(folder: Path, name: str, limit: int) -> bytes:
    """The bytes of regular file ``folder/name``, read only if it is at most ``limit`` bytes.

    The listing was checked, but a file may be swapped after it: the file is
    opened without following a link and without blocking (a FIFO put in its
    place would block a plain open forever), then checked again on the open
    descriptor, and never more than ``limit`` bytes are read.
    """

    def swapped(what: str) -> InvalidInputError:
        return InvalidInputError(
            f"{name} in {folder} {what} after the folder was listed: stop the client using "
            "the folder, then import again"
        )

    try:
        fd = os.open(folder / name, _OPEN_FLAGS)
    except FileNotFoundError:
        raise swapped("vanished") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise swapped("was replaced by a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise swapped("was replaced by something that is not a regular file")
        _check_size(folder, name, info.st_size, limit)
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    _check_size(folder, name, len(data), limit)  # it grew while it was read
    return data


def _decode_file(folder: Path, name: str, data: bytes) -> Any:
    try:
        return decode_value(data, what=name)
    except DecodeError:
        raise InvalidInputError(
            f"{name} in {folder} {_diagnose(data)}; fix or delete that file and import again "
            "(Baileys itself reads an unreadable file as absent)"
        ) from None


def _diagnose(data: bytes) -> str:
    """Why ``data`` is not BufferJSON, for a message: a position, never content."""
    if not data.strip():
        return "is empty (a write cut short by a crash?)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"is not UTF-8 text (invalid byte at offset {exc.start})"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg is a fixed phrase such as "Expecting value"; it never quotes the text.
        return f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    except RecursionError:
        return "is nested too deeply to decode"
    except ValueError:  # Python's int-to-str limit: a number of thousands of digits
        return (
            f"holds a number of more than {sys.get_int_max_str_digits():,} digits, "
            "which no Baileys file holds"
        )
    return "holds a malformed Buffer (data is neither valid base64 nor a list of bytes 0..255)"
