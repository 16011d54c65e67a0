"""Process mechanics shared by one run's worker processes (fedcore.parallel) and the pool of several runs
(fedcore.executors): children that leave Ctrl-C to the main process and die with it, SIGTERM handled as an
interruption, a dead worker said in one line, and the check that a script may start worker processes at all.

Worker processes are spawned: each starts by importing the main script again, so a script that trains at
module level, outside ``if __name__ == "__main__":``, would train again in every child. Such a call trains
in the main process instead, with one warning saying how to use all cores.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from multiprocessing import resource_tracker
from pathlib import Path


class WorkerDied(RuntimeError):
    """A worker process ended without replying: killed, or out of memory."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread inside ``sigterm_as_interrupt``: the same clean-up as Ctrl-C."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises Terminated in the main thread, so that pools close as on Ctrl-C (the command
    line's way; elsewhere SIGTERM ends the process at once, and the children follow: see ``child_started``)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore Ctrl-C from their first instruction on (a Ctrl-C while one imports torch
    would print its traceback): they inherit SIGINT ignored (Python keeps an inherited SIG_IGN; set from the
    main thread only) and blocked (from any thread). Ctrl-C is the main process's, which stops them; one
    meanwhile reaches it when the block ends. The resource tracker is started first: starting it unblocks SIGINT
    (multiprocessing.resource_tracker), which would leave the first child interruptible."""
    resource_tracker.ensure_running()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        yield
    finally:
        if old_handler is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGINT, old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def child_started() -> None:
    """In a spawned worker process: ignore Ctrl-C (inherited ignored and blocked, see ``children_ignore_ctrl_c``;
    unblocked now that it is ignored), and exit as soon as the parent is gone (even killed with SIGKILL, even
    before this ran) rather than train for nobody."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns once the parent's end of the spawn pipe is closed: it exited or was killed
        os._exit(1)

    threading.Thread(target=watch, name="fedcore-parent-watch", daemon=True).start()


def _is_main_test(test: ast.expr) -> bool:
    """Whether ``test`` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = (test.left, test.comparators[0])
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


@cache
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...]:
    """First and last lines of each ``if __name__ == "__main__":`` body in the script at ``path``."""
    tree = ast.parse(Path(path).read_bytes(), filename=path)
    return tuple((node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno)
                 for node in ast.walk(tree) if isinstance(node, ast.If) and _is_main_test(node.test))


def unguarded_call() -> tuple[str, int] | None:
    """(script, line) where the main script's module-level code, outside ``if __name__ == "__main__":``, led
    to this call; None where spawned children will not run that code again (a guarded call, an interactive
    session, ``python -c``, a package's ``__main__``) or where the script cannot be read."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if main is None or path is None or (name is not None and (name == "__main__" or name.endswith(".__main__"))):
        return None  # multiprocessing's spawn re-runs neither (see multiprocessing.spawn._fixup_main_from_name)
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:
        return None
    try:
        guarded = _guarded_lines(frame.f_code.co_filename)
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    return None if any(first <= line <= last for first, last in guarded) else (frame.f_code.co_filename, line)


_WARNED: dict = {}  # warnings' registry: the warning below once per calling line


def can_spawn() -> bool:
    """Whether worker processes may start here: False, with one warning naming the script's line, when the call
    comes from its module-level code outside ``if __name__ == "__main__":`` (each child would run it again)."""
    where = unguarded_call()
    if where is None:
        return True
    warnings.warn_explicit(
        "fedcore trains in this process only: this line of the script runs outside 'if __name__ == \"__main__\":', "
        "and worker processes, which start by importing the script, would run it again. Put the calls that "
        "train under that guard to use all cores.",
        UserWarning, filename=where[0], lineno=where[1], registry=_WARNED)
    return False
