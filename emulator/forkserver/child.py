"""What a forked child does before it runs its module, and how it ends.

Between the fork and running the module, a child does what
``Popen(start_new_session=True, preexec_fn=...)`` and a fresh interpreter would
have done: drop the server's pipes and signal handlers, start its own session
(so its pid is its process group id), ask for SIGKILL when the server dies, take
stdin from /dev/null and append stdout and stderr to its log, and take the
environment, working directory and ``sys.argv`` from the request. Then it runs the
module as ``__main__`` (``runpy``, as ``python -m`` does) and leaves with
``os._exit``: a child never returns into the server's loop.
"""
from __future__ import annotations

import atexit
import gc
import io
import os
import runpy
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from emulator.forkserver.pipes import write_all
from emulator.supervisor import _die_with_parent, redirect_stdio

if TYPE_CHECKING:
    from emulator.forkserver.server import _Server


def child_main(request: dict[str, Any], server_pid: int, sync_w: int,
               server: _Server) -> NoReturn:
    """Set the child up, report ``ok`` (or the error) on ``sync_w``, run the module.

    Never returns: whatever happens, the child ends in ``os._exit``.
    """
    code = 127  # set-up failed
    try:
        try:
            _set_up_child(request, server_pid, server)
        except BaseException as exc:
            write_all(sync_w, f"{type(exc).__name__}: {exc}".encode())
            traceback.print_exc()  # to the log if it was opened, else the server's
        else:
            write_all(sync_w, b"ok")
            os.close(sync_w)  # the server answers the supervisor only now
            code = _run_module(request["module"])
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _set_up_child(request: dict[str, Any], server_pid: int, server: _Server) -> None:
    """What Popen(start_new_session=True, preexec_fn=...) and the interpreter would do."""
    server.close_fds()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()  # our own session and process group: killpg(pid) reaches us
    _die_with_parent(server_pid)
    env = request["env"]
    _redirect_stdio(request["log"], unbuffered=bool(env.get("PYTHONUNBUFFERED")))
    os.environ.clear()
    os.environ.update(env)
    _extend_sys_path(env.get("PYTHONPATH", ""))
    if request.get("cwd"):
        os.chdir(request["cwd"])
    sys.argv = [request["module"], *request["args"]]
    gc.enable()  # the server disabled it; frozen objects stay out of collections


def _redirect_stdio(log_path: str, unbuffered: bool) -> None:
    redirect_stdio(log_path)
    encoding = sys.stdout.encoding if sys.stdout is not None else "utf-8"
    sys.stdin = sys.__stdin__ = open(0, encoding=encoding, closefd=False)
    sys.stdout = sys.__stdout__ = _text_stream(1, encoding, "strict", unbuffered, False)
    sys.stderr = sys.__stderr__ = _text_stream(2, encoding, "backslashreplace", unbuffered,
                                               True)


def _text_stream(fd: int, encoding: str, errors: str, unbuffered: bool,
                 line_buffering: bool) -> io.TextIOWrapper:
    """A text stream on ``fd`` built the way the interpreter builds sys.stdout (-u aware)."""
    raw = io.FileIO(fd, "w", closefd=False)
    binary = raw if unbuffered else io.BufferedWriter(raw)
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors,  # type: ignore[arg-type]
                            line_buffering=line_buffering, write_through=unbuffered)


def _extend_sys_path(python_path: str) -> None:
    """PYTHONPATH entries the server did not start with go after sys.path[0]."""
    new = [p for p in python_path.split(os.pathsep) if p and p not in sys.path]
    sys.path[1:1] = new


def _run_module(module: str) -> int:
    """Run ``module`` as ``__main__``; the exit code as the interpreter would give it."""
    interrupted = False
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted, code = True, 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what interpreter shutdown runs; os._exit() would skip it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # like the interpreter, die of SIGINT itself (exit code -2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1
