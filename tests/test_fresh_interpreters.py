"""The helper behind the import-order checks: forked snippets behave as ``python -c`` does, and start fresh."""

from __future__ import annotations

import json
import os
import signal
import time

import fresh_interpreters
import pytest
from fresh_interpreters import run_fresh

SNIPPETS = {
    "prints": "import sys\nprint('out')\nprint('err', file=sys.stderr)",
    "raises": "def f():\n    raise ValueError('boom')\nf()",
    "exits": "import sys\nsys.exit(3)",
    "exits with a message": "raise SystemExit('bye')",
    "fresh": (
        "import sys\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('pykeen', 'pykeen_momok')], 'not fresh'\n"
        "assert __name__ == '__main__' and sys.modules['__main__'].__dict__ is globals()\n"
        "import json\n"
        "json.marked = True\n"
        "print(sys.path[0] == '')"
    ),
    "unmarked": "import json\nprint(hasattr(json, 'marked'))",
    # what PyKEEN's "could not load" check reads: a library's logged warning, and writes to the descriptors
    "logs": (
        "import logging, os\n"
        "logging.getLogger('class_resolver.base').warning('could not load %s', 'x')\n"
        "os.write(1, b'A\\n')\nos.write(2, b'B\\n')"
    ),
    "exits cleanly": "import atexit\natexit.register(print, 'bye')",
}


def _check(results):
    assert list(results) == list(SNIPPETS)
    assert (results["prints"].returncode, results["prints"].stdout, results["prints"].stderr) == (0, "out\n", "err\n")
    assert results["raises"].returncode == 1
    assert "Traceback" in results["raises"].stderr and "in f" in results["raises"].stderr
    assert results["raises"].stderr.rstrip().endswith("ValueError: boom")
    assert results["exits"].returncode == 3
    assert (results["exits with a message"].returncode, results["exits with a message"].stderr) == (1, "bye\n")
    assert (results["fresh"].returncode, results["fresh"].stdout) == (0, "True\n"), results["fresh"].stderr
    assert results["unmarked"].stdout == "False\n"  # what one snippet changes, the next does not see
    assert (results["logs"].stdout, results["logs"].stderr) == ("A\n", "could not load x\nB\n")
    assert results["exits cleanly"].stdout == "bye\n"  # the interpreter's own exit ran


@pytest.fixture(scope="module")
def forked():
    return run_fresh(SNIPPETS)


def test_forked_snippets_behave_as_python_c(forked):
    _check(forked)


def test_the_plain_fallback_behaves_the_same():
    _check(fresh_interpreters._run_plain(SNIPPETS, workers=2, timeout=120))


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork: run_fresh starts plain interpreters")


@needs_fork
def test_the_server_preloaded_torch_but_neither_package():
    [result] = run_fresh(
        {"modules": "import sys\nprint('torch' in sys.modules, 'sklearn' in sys.modules, 'pykeen' in sys.modules)"}
    ).values()
    assert result.stdout == "True True False\n", result.stderr


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "plain"])
def test_a_snippet_over_its_time_is_killed(forked: bool):
    snippets = {"slow": "import time\ntime.sleep(60)", "quick": "print(1)"}
    if forked:
        if not hasattr(os, "fork"):
            pytest.skip("no os.fork")
        results = run_fresh(snippets, timeout=2, preload=())
    else:
        results = fresh_interpreters._run_plain(snippets, workers=2, timeout=2)
    assert results["slow"].returncode == -9 and results["quick"].stdout == "1\n"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed and waiting for its reaper, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@needs_fork
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_what_a_snippet_over_its_time_started_is_killed_with_it(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    slow = (
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "time.sleep(120)"
    )
    results = run_fresh({"slow": slow}, timeout=3, preload=())
    assert results["slow"].returncode == -9
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while _running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(grandchild), "the snippet's own child outlived it"


@needs_fork
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_stopping_the_server_stops_its_snippets_and_their_children(tmp_path):
    """What run_fresh does when its own time is up or the tests are interrupted."""
    pid_file = tmp_path / "pids"
    slow = (
        "import os, pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(120)"
    )
    jobs, results = tmp_path / "jobs.json", tmp_path / "results.json"
    jobs.write_text(json.dumps({"workers": 1, "timeout": 300, "preload": [], "snippets": {"slow": slow}}))
    server = fresh_interpreters._start(jobs, results)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or len(pid_file.read_text().split()) < 2:
        assert time.monotonic() < deadline and server.poll() is None, server.communicate()
        time.sleep(0.05)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    fresh_interpreters._stop(server)
    assert server.returncode == 128 + signal.SIGTERM  # its handler ran (not the SIGKILL after it)
    deadline = time.monotonic() + 10
    while any(map(_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, pids)), "a snippet or its child outlived the server"


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_are_refused(workers: int):
    with pytest.raises(ValueError, match="workers must be at least 1"):
        run_fresh({"never": "print(1)"}, workers=workers)


@needs_fork
def test_a_preload_that_imports_pykeen_stops_the_server(monkeypatch, tmp_path):
    tmp_path.joinpath("imports_pykeen.py").write_text("import pykeen\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"imported \['pykeen'"):
        run_fresh({"never": "print(1)"}, preload=("imports_pykeen",))
