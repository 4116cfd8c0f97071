"""Run code snippets in fresh interpreters, many at once, without paying for torch's import each time.

A snippet runs in a process forked from a server: a new Python interpreter that imported only third-party
libraries (:data:`PRELOAD`: torch, scikit-learn, pandas, ...) and checked that none of them imported
``pykeen`` or ``pykeen_momok``. For the import-order checks (which package's module comes first, whether
every module of ours imports alone) such a process is as fresh as ``python -c``: neither package has been
imported, nothing of theirs is registered anywhere; only the seconds that importing torch and scikit-learn
take are spent once instead of once per snippet. A check that is about those libraries themselves (say, that
``import pykeen_momok`` loads no torch) needs a plain ``python -c`` and does not belong here.

Run as a script this module is the server: ``python fresh_interpreters.py JOBS.json RESULTS.json``. Where
``os.fork`` does not exist (Windows) :func:`run_fresh` starts one ``python -c`` per snippet instead.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NoReturn

#: What the server imports before it forks (what ``pykeen.models`` pulls in, heaviest first); one that is
#: not installed is skipped.
PRELOAD: tuple[str, ...] = (
    "torch",
    "sklearn.preprocessing",
    "scipy.stats",
    "scipy.sparse",
    "pandas",
    "numpy",
    "PIL.Image",
    "narwhals",
    "class_resolver",
    "docdata",
    "more_click",
    "pystow",
    "requests",
    "rich",
    "tabulate",
    "torch_max_mem",
    "torch_ppr",
    "tqdm.auto",
    "yaml",
)

#: The packages the snippets are about: the server refuses to start if a preloaded library imported them.
KEPT_OUT = ("pykeen", "pykeen_momok")


def run_fresh(
    snippets: Mapping[str, str], *, workers: int = 2, timeout: float = 300.0, preload: tuple[str, ...] = PRELOAD
) -> dict[str, subprocess.CompletedProcess]:
    """Run each snippet in its own fresh interpreter, ``workers`` at a time.

    :param snippets: a name for each snippet, and its source.
    :param workers: how many snippets run at once (at least 1).
    :param timeout: seconds one snippet may take; one that takes longer is killed (return code -9), with
        every process it started (on POSIX; the plain fallback kills the snippet's interpreter only).
    :param preload: the modules the server imports before it forks.
    :return: for each name, what ``subprocess.run(..., capture_output=True, text=True)`` would have returned
        for ``python -c SOURCE`` (``args`` is the name).
    :raises ValueError: if ``workers`` is below 1.
    :raises RuntimeError: if the server fails (a preloaded library imported ``pykeen``, say).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if not hasattr(os, "fork"):
        return _run_plain(snippets, workers=workers, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="fresh-interpreters-") as folder:
        jobs, results = pathlib.Path(folder, "jobs.json"), pathlib.Path(folder, "results.json")
        jobs.write_text(
            json.dumps({"workers": workers, "timeout": timeout, "preload": preload, "snippets": dict(snippets)})
        )
        server = _start(jobs, results)
        try:
            _, stderr = server.communicate(timeout=timeout * math.ceil(len(snippets) / workers) + 300)
        except BaseException:  # its time is up, or the tests were interrupted
            _stop(server)
            raise
        if server.returncode != 0 or not results.is_file():
            raise RuntimeError(f"the fresh-interpreter server failed ({server.returncode}):\n{stderr[-3000:]}")
        found = json.loads(results.read_text())
    return {name: subprocess.CompletedProcess(name, *found[name]) for name in snippets}


def _start(jobs: pathlib.Path, results: pathlib.Path) -> subprocess.Popen:
    # a session of its own: no terminal signal meant for the tests reaches it; each snippet gets a process
    # group of its own in that session (a kill must reach what the snippet started)
    return subprocess.Popen(
        [sys.executable, __file__, str(jobs), str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _stop(server: subprocess.Popen) -> None:
    """End the server and every snippet still running: SIGTERM makes it kill their groups, then it is killed."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def _run_plain(snippets: Mapping[str, str], *, workers: int, timeout: float) -> dict[str, subprocess.CompletedProcess]:
    def run(item: tuple[str, str]) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run([sys.executable, "-c", item[1]], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as late:  # killed, as the server kills a snippet over its time
            out, err = (
                x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (late.stdout, late.stderr)
            )
            return subprocess.CompletedProcess(item[0], -9, out, err)
        return subprocess.CompletedProcess(item[0], result.returncode, result.stdout, result.stderr)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {result.args: result for result in pool.map(run, snippets.items())}


# the server ------------------------------------------------------------------------------------------------


def _preload(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    leaked = sorted(module for module in sys.modules if module.split(".")[0] in KEPT_OUT)
    if leaked:
        raise SystemExit(f"preloading {names} imported {leaked}: the snippets would not start fresh")


def _child(source: str, out: str, err: str) -> NoReturn:
    """Run in the forked process: never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server's handler and mask are not the snippet's
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        _own_group(0)
        for fd, path in ((1, out), (2, err)):
            opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - closed when the process ends
        sys.argv = ["-c"]
        main = types.ModuleType("__main__")  # the snippet's own, as python -c has it
        sys.modules["__main__"] = main
        try:
            exec(compile(source, "<string>", "exec"), main.__dict__)
            code = 0
        except SystemExit as stop:  # as python -c: None is 0, an int is the code, anything else is printed
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException as error:  # as python -c reports it: through sys.excepthook, without this frame
            sys.excepthook(type(error), error, error.__traceback__.tb_next)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    # the interpreter's own exit (atexit handlers, finalizers, flushed streams), as after python -c; nothing
    # above this frame catches SystemExit, and the server's loop is never resumed in this process
    raise SystemExit(code)


def _own_group(pid: int) -> None:
    """Put a snippet (0: this process) into a process group of its own, so that a kill reaches its children.

    Both the server and the snippet call this (whichever runs first wins; the other's call is then a no-op
    or finds the snippet gone), so the group exists before the server could ever signal it.
    """
    try:
        os.setpgid(pid, 0)
    except (PermissionError, ProcessLookupError):  # the snippet already did it, or has already exited
        pass


def _serve(jobs_path: str, results_path: str) -> None:
    jobs = json.loads(pathlib.Path(jobs_path).read_text())
    folder = pathlib.Path(results_path).parent
    queue, running, done = list(jobs["snippets"].items()), {}, {}
    _preload(jobs["preload"])

    def stop(signum: int, frame: object) -> None:  # run_fresh is stopping us: the snippets' groups go first
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    sys.stdout.flush()
    sys.stderr.flush()
    while queue or running:
        while queue and len(running) < jobs["workers"]:
            name, source = queue.pop(0)
            out, err = (str(folder / f"{len(done) + len(running)}.{stream}") for stream in ("out", "err"))
            # a SIGTERM waits until the new snippet is in `running`, where the handler finds it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            pid = os.fork()
            if pid == 0:
                _child(source, out, err)
            _own_group(pid)
            running[pid] = (name, out, err, time.monotonic())
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for pid, (_, _, _, started) in running.items():
                if time.monotonic() - started > jobs["timeout"]:
                    with contextlib.suppress(ProcessLookupError):  # the group's last process just ended
                        os.killpg(pid, signal.SIGKILL)  # the snippet and what it started
            time.sleep(0.02)
            continue
        if pid not in running:  # not one of the snippets (a process a preloaded library started)
            continue
        name, out, err, _ = running.pop(pid)
        done[name] = (
            os.waitstatus_to_exitcode(status),
            pathlib.Path(out).read_text(errors="replace"),
            pathlib.Path(err).read_text(errors="replace"),
        )
    pathlib.Path(results_path).write_text(json.dumps(done))


if __name__ == "__main__":
    sys.path[0] = ""  # as python -c has it: the working directory, not this file's folder
    _serve(*sys.argv[1:])
