"""Several HPO workers on one Optuna study: a real local PostgreSQL server, and SQLite on one machine.

Each test follows the README's "Hyperparameter search on several workers" steps: ``optuna create-study`` once,
then two ``pykeen experiments optimize`` processes on the same config (``configs/hpo/momok_synthetic.json`` with its
storage, study name and trial count set, and 1 epoch on a small ``SyntheticMMKG``), started together. The study must
then hold every trial of both workers, each finished, none lost or run twice, with distinct sampled parameters.

Which worker ran which trial is read from the workers' own output (Optuna logs ``Trial N finished with value`` for
every trial a process completes). The PostgreSQL server runs as an unprivileged user when the tests run as root
(``initdb`` refuses root), in a temporary folder, on a free port of 127.0.0.1; it gets SIGINT (fast shutdown)
when the process that started it dies, so a killed test run leaves no postmaster behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import optuna
import pytest

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "hpo" / "momok_synthetic.json"
#: the demo config made fast: 1 epoch on a 64-entity graph, and 4 metrics instead of PyKEEN's 31 (each trial
#: stores every metric for 3 sides x 3 rank types as a user attribute, one storage transaction each)
FAST_PIPELINE = dict(
    training_kwargs=dict(num_epochs=1, batch_size=256),
    dataset_kwargs=dict(num_colours=8, num_shapes=8, num_relations=4, triples_per_entity=4, seed=3),
    evaluator_kwargs=dict(
        filtered=True,
        metrics=["mrr", "hits@k", "hits@k", "hits@k"],
        metrics_kwargs=[None, dict(k=1), dict(k=3), dict(k=10)],
        add_defaults=False,
    ),
)
#: trials per worker (different, so that the total tells whose trials are missing)
TRIALS_PER_WORKER = (2, 3)
#: the longest a worker may take before the test kills it and fails
WORKER_DEADLINE_S = 300
#: Optuna's log line for each trial a process completes
FINISHED = re.compile(r"Trial (\d+) finished with value")
#: prefix of the PostgreSQL server folders under the temporary directory
SERVER_PREFIX = "momok-pg-"


# the two workers -------------------------------------------------------------------------------------------


def _setpriv() -> str | None:
    """util-linux's ``setpriv``, used to drop root and to set the parent-death signal of a child process."""
    return shutil.which("setpriv")


def _dies_with_us(command: Sequence[str], signal_name: str) -> list[str]:
    """``command`` made to receive ``signal_name`` when this process dies (where ``setpriv`` exists)."""
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", signal_name, "--", *command] if setpriv else list(command)


def _worker_config(tmp_path: pathlib.Path, storage: str, study_name: str, n_trials: int, worker: int) -> pathlib.Path:
    """The demo config with the shared storage, the study name, this worker's trial count and the fast settings."""
    config = json.loads(CONFIG.read_text())
    config["optuna"].update(storage=storage, study_name=study_name, n_trials=n_trials, load_if_exists=True)
    config["pipeline"].update(FAST_PIPELINE)
    path = tmp_path / f"worker{worker}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _create_study(storage: str, study_name: str) -> None:
    """The README's first step: ``optuna create-study`` (so that no two workers create the tables at once)."""
    optuna_cli = pathlib.Path(sys.executable).parent / "optuna"
    command = [str(optuna_cli), "create-study", "--storage", storage, "--study-name", study_name]
    result = subprocess.run(
        [*command, "--direction", "maximize", "--skip-if-exists"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"optuna create-study failed:\n{result.stdout}\n{result.stderr}"


def _run_workers(tmp_path: pathlib.Path, storage: str, study_name: str) -> list[set[int]]:
    """Start one ``pykeen experiments optimize`` per entry of TRIALS_PER_WORKER at once; the trials each finished.

    A worker that fails or outlives WORKER_DEADLINE_S fails the test with the tail of its output.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    workers = []
    for worker, n_trials in enumerate(TRIALS_PER_WORKER):
        config = _worker_config(tmp_path, storage, study_name, n_trials, worker)
        log = (tmp_path / f"worker{worker}.log").open("w")
        command = [sys.executable, "-m", "pykeen", "experiments", "optimize", str(config)]
        command += ["-d", str(tmp_path / f"worker{worker}")]
        process = subprocess.Popen(
            _dies_with_us(command, "KILL"), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
        )
        workers.append((process, log))
    deadline = time.monotonic() + WORKER_DEADLINE_S
    failures = []
    try:
        for worker, (process, _log) in enumerate(workers):
            try:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failures.append(f"worker {worker} still running after {WORKER_DEADLINE_S} s")
            else:
                if process.returncode != 0:
                    failures.append(f"worker {worker} exited with status {process.returncode}")
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    outputs = [(tmp_path / f"worker{worker}.log").read_text() for worker in range(len(workers))]
    assert not failures, "\n".join(
        f"{failure}; its output ends:\n{_tail(output)}" for failure, output in zip(failures, outputs, strict=False)
    )
    return [{int(number) for number in FINISHED.findall(output)} for output in outputs]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _check_study(storage: str, study_name: str, finished_by_worker: list[set[int]]) -> None:
    """Every trial of both workers is in the study, finished, once; the sampled parameters differ."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states = {trial.number: trial.state.name for trial in trials}
    assert all(state == "COMPLETE" for state in states.values()), states
    assert len(trials) == sum(TRIALS_PER_WORKER), states
    numbers = [trial.number for trial in trials]
    assert sorted(numbers) == list(range(len(trials))), f"trial numbers not unique or with gaps: {numbers}"
    # each worker finished the trials it was asked for, and no trial was finished by both
    assert [len(finished) for finished in finished_by_worker] == list(TRIALS_PER_WORKER), finished_by_worker
    assert set.union(*finished_by_worker) == set(numbers), finished_by_worker
    assert not set.intersection(*finished_by_worker), f"trials run by both workers: {finished_by_worker}"
    # an unseeded sampler per process: no two trials (of one worker or of both) were given the same parameters
    parameters = [tuple(sorted(trial.params.items())) for trial in trials]
    assert len(set(parameters)) == len(parameters), parameters
    assert {name.split(".")[0] for name in study.best_params} >= {"model", "loss", "optimizer"}
    for trial in trials:
        assert math.isfinite(trial.value) and 0.0 < trial.value <= 1.0, (trial.number, trial.value)
        assert isinstance(trial.user_attrs.get("random_seed"), int), trial.user_attrs.keys()
    assert study.user_attrs["model"] == "momok" and study.direction.name == "MAXIMIZE"


# a local PostgreSQL server ---------------------------------------------------------------------------------


def _postgres_bin_dir() -> pathlib.Path | None:
    """The folder with ``initdb`` and ``postgres``: from PATH, else Debian's newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which("initdb")
    candidates = [pathlib.Path(found).resolve().parent] if found else []

    def version(folder: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", pathlib.Path(folder).parent.name))

    candidates += [pathlib.Path(folder) for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_abandoned_server_folders() -> None:
    """Remove the server folders of test runs that were killed before their finalizer ran (their owner is gone)."""
    for folder in pathlib.Path(tempfile.gettempdir()).glob(f"{SERVER_PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):
            if not _alive(int((folder / "owner.pid").read_text())):
                shutil.rmtree(folder)


class LocalPostgres:
    """A throw-away PostgreSQL server: its own data folder, a unix socket folder and a free port on 127.0.0.1.

    :param bin_dir: the folder of ``initdb`` and ``postgres``
    :param folder: an empty folder for the data, the socket and the log (removed by :meth:`stop`)
    """

    user = "momok"

    def __init__(self, bin_dir: pathlib.Path, folder: pathlib.Path) -> None:
        self.bin_dir = bin_dir
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.run_as: list[str] = []
        self.sockets = folder / "sockets"
        self.sockets.mkdir(mode=0o700)
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: run them as Debian's postgres user, else as nobody
            account = next((pwd.getpwnam(name) for name in ("postgres", "nobody") if _has_user(name)), None)
            if account is None or _setpriv() is None:
                pytest.skip("running as root, and no 'postgres'/'nobody' user or no setpriv to run PostgreSQL as")
            self.run_as = ["--reuid", str(account.pw_uid), "--regid", str(account.pw_gid), "--clear-groups"]
            for owned in (folder, self.sockets):
                os.chown(owned, account.pw_uid, account.pw_gid)
        self.log = folder / "postgres.log"

    def _command(self, *command: str) -> list[str]:
        """``command`` as the server's user, dying with this process."""
        if not self.run_as:
            return _dies_with_us(command, "INT")
        return [_setpriv(), *self.run_as, "--pdeathsig", "INT", "--", *command]

    def start(self, attempts: int = 3) -> None:
        """``initdb`` then ``postgres``; retried on another port if the port was taken meanwhile."""
        data = self.folder / "data"
        initdb = subprocess.run(
            self._command(str(self.bin_dir / "initdb"), "-D", str(data), "-U", self.user, "-A", "trust", "--no-sync"),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.folder,  # the server's user may not enter the test's working folder (a root-owned clone)
        )
        if initdb.returncode != 0:
            pytest.skip(f"initdb could not create a PostgreSQL cluster:\n{initdb.stdout}\n{initdb.stderr}")
        for _ in range(attempts):
            self.port = _free_port()
            # fsync off: a throw-away cluster; a few connections suffice
            options = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=20"]
            command = [str(self.bin_dir / "postgres"), "-D", str(data), "-k", str(self.sockets), "-h", "127.0.0.1"]
            with self.log.open("a") as log:
                self.process = subprocess.Popen(
                    self._command(*command, "-p", str(self.port), *options),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.folder,
                )
            if self._wait_ready(timeout_s=60):
                return
            self.stop_server()
        pytest.skip(f"PostgreSQL did not start; its log ends:\n{_tail(self.log.read_text())}")

    def _wait_ready(self, timeout_s: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with psycopg.connect(**self._connection("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.2)
        return False

    def _connection(self, database: str) -> dict:
        return dict(host="127.0.0.1", port=self.port, user=self.user, dbname=database)

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        with psycopg.connect(**self._connection("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop_server(self) -> None:
        """Fast shutdown (SIGINT: ends open sessions), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    """A started server; stopped and its folder removed afterwards, whatever happened."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver (pip install -e '.[hpo]') is not installed")
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin)")
    _remove_abandoned_server_folders()
    folder = pathlib.Path(tempfile.mkdtemp(prefix=SERVER_PREFIX))
    (folder / "owner.pid").write_text(str(os.getpid()))
    server = None
    try:
        server = LocalPostgres(bin_dir, folder)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop_server()
        shutil.rmtree(folder, ignore_errors=True)


# the tests -------------------------------------------------------------------------------------------------


def test_two_workers_share_one_postgresql_study(postgres: LocalPostgres, tmp_path: pathlib.Path) -> None:
    storage = postgres.create_database("optuna_momok")
    _create_study(storage, "momok_synthetic_pg")
    finished_by_worker = _run_workers(tmp_path, storage, "momok_synthetic_pg")
    _check_study(storage, "momok_synthetic_pg", finished_by_worker)


def test_two_workers_share_one_sqlite_study(tmp_path: pathlib.Path) -> None:
    # timeout: how long a writer waits for the other's lock before "database is locked"
    storage = f"sqlite:///{tmp_path / 'study.db'}?timeout=60"
    _create_study(storage, "momok_synthetic_sqlite")
    finished_by_worker = _run_workers(tmp_path, storage, "momok_synthetic_sqlite")
    _check_study(storage, "momok_synthetic_sqlite", finished_by_worker)
