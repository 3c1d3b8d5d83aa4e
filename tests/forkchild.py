"""A tiny program for the fork-server tests, run as ``python -m tests.forkchild``.

``exit CODE``: print a line to stdout and one to stderr, then exit with CODE.
``raise``: die of an uncaught exception (exit code 1, traceback in the log).
``serve DATA_DIR MODE``: write ``DATA_DIR/ready`` (JSON: pid, process group,
session, parent, argv, the ``FORKCHILD_MARK`` variable), then idle until a signal
ends it. MODE ``graceful`` exits 0 on SIGTERM, ``ignore_term`` ignores SIGTERM,
``default`` dies of it.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def serve(data_dir: Path, mode: str) -> None:
    """Become ready, then wait for signals."""
    if mode == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif mode == "graceful":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("serving", flush=True)
    info = {"pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
            "ppid": os.getppid(), "argv": sys.argv[1:], "name": __name__,
            "mark": os.environ.get("FORKCHILD_MARK"), "home": os.environ.get("HOME")}
    tmp = data_dir / "ready.tmp"
    tmp.write_text(json.dumps(info))
    tmp.replace(data_dir / "ready")
    while True:
        signal.pause()


def main(argv: list[str]) -> None:
    """Dispatch on the first argument."""
    if argv[0] == "exit":
        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.exit(int(argv[1]))
    if argv[0] == "raise":
        raise RuntimeError("boom from forkchild")
    serve(Path(argv[1]), argv[2])


if __name__ == "__main__":
    main(sys.argv[1:])
