"""Helpers for tests that start processes: last-resort clean-up and /proc reading."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path


def kill_groups(pgids: Iterable[int | None]) -> None:
    """Last-resort cleanup: SIGKILL each process group we created, by its id."""
    for pgid in pgids:
        if pgid is None:
            continue
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def proc_state(pid: int) -> str:
    """The one-letter state from /proc/<pid>/stat (R, S, T, Z, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
