"""Whole reads and writes on the raw pipes between supervisor, server and child."""
from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking file descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_to_end(fd: int) -> bytes:
    """Read a blocking file descriptor until end of file."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)
