"""Download files into PyKEEN's pystow cache, verified by checksum, and extract archives safely.

Every remote file is described by a :class:`RemoteFile`: where it lives, what it must hash to
(``sha256`` and/or git ``blob`` id) and how big it is. :class:`Downloader` fetches it with
:mod:`urllib` into a temporary file *in the destination folder*, verifies it, and only then renames
it into place (:func:`~pykeen_momok.features.atomic_write`). A truncated or corrupted download
raises :class:`ChecksumError` naming the URL and the expected and actual values, and leaves nothing
in the cache. A file already in the cache is used without any network call; on use it is checked
cheaply (size) or, with ``verify="full"``, re-hashed.

A download has an overall time limit (``deadline``, default one hour per file) and is abandoned when
less than 1 KiB arrives in ``stall_timeout`` seconds (default two minutes): a mirror that trickles a
byte every few seconds never times out a single read, so neither would end it otherwise. Concurrent
processes fetching the same file wait for each other (a file lock per file), and a ``.part`` file
left by a killed process is deleted by the next download of that file.

Why not ``pystow.utils.download(url, path, hexdigests=..., clean_on_failure=True)``, which PyKEEN's
``UnpackedRemoteDataset`` uses (pystow 0.10): it writes straight to ``path`` and checks the digests only
afterwards, outside its ``clean_on_failure`` block, so a corrupted file stays in the cache, and a killed
process leaves a part of the file under its real name; its urllib backend (``urlretrieve``) has no timeout,
deadline or stall detection; it knows ``hashlib`` names only (no git blob ids, no sizes), cannot check
content after a CRLF -> LF conversion, takes no lock, and its error names neither the expected checksums
nor where to put a file fetched by hand. What pystow does do for us: the cache folder
(:func:`dataset_cache_folder`, PyKEEN's ``pystow`` module, honouring ``PYKEEN_HOME``).

Where the files come from is overridable, so that tests and air-gapped mirrors work:

- ``base_url=`` (constructor argument of :class:`Downloader` and of every benchmark class), or
- the environment variable :data:`BASE_URL_ENV` (``PYKEEN_MOMOK_BASE_URL``),

both naming the root of a mirror laid out like the shared benchmark folder: ``<base>/<dataset
folder>/<file name>``.

:func:`safe_extract` unpacks ``.zip`` and ``.tar(.gz|.bz2|.xz)`` archives and refuses members with
absolute paths, ``..`` components, links, or anything else that would land outside the target (Python's
``zipfile`` silently rewrites such names; ``tarfile``'s ``data`` filter lets links inside the target through
and refuses member by member, after earlier members were written).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import http.client
import logging
import os
import pathlib
import shutil
import socket
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..features import atomic_write

__all__ = [
    "BASE_URL_ENV",
    "VERIFY_ENV",
    "DEADLINE_ENV",
    "VERIFY_CHOICES",
    "RemoteFile",
    "Downloader",
    "DownloadError",
    "ChecksumError",
    "UnsafeArchiveError",
    "ManualDownloadRequired",
    "file_digests",
    "git_blob_sha1",
    "verify_file",
    "verify_local_file",
    "file_lock",
    "safe_extract",
    "dataset_cache_folder",
    "checksum_table",
]

logger = logging.getLogger(__name__)

#: Environment variable naming the root URL of a mirror (``<root>/<dataset folder>/<file>``).
BASE_URL_ENV = "PYKEEN_MOMOK_BASE_URL"
#: Environment variable choosing how cached files are checked on use: ``size``, ``full`` or ``none``.
VERIFY_ENV = "PYKEEN_MOMOK_VERIFY"
#: ``"full"``: hash the content; ``"size"``: compare the size only; ``"none"``: no check (a copy changed on purpose).
VERIFY_CHOICES = ("full", "size", "none")
#: Environment variable giving the overall time limit of one file's download, in seconds.
DEADLINE_ENV = "PYKEEN_MOMOK_DOWNLOAD_DEADLINE"

_CHUNK = 1 << 20
#: a download that receives fewer bytes than this within ``stall_timeout`` seconds is abandoned
_STALL_BYTES = 1024
_USER_AGENT = "pykeen-momok (+https://github.com/pykeen/pykeen)"


class DownloadError(RuntimeError):
    """A file could not be fetched; the message says which file to fetch from where and where to put it."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded or cached file does not match its expected size / hash."""


class ManualDownloadRequired(DownloadError):
    """A file that cannot be fetched automatically (e.g. from Google Drive); the message says how to get it."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the extraction folder (or is a link / device)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset and how to fetch and verify it.

    :param name: the path of the file inside the dataset's folder (cache or ``directory=``), with ``/``
    :param url: the public URL it is downloaded from by default
    :param sha256: expected SHA-256 hex digest of the (normalised) content, if known
    :param size: expected size in bytes of the (normalised) content, if known
    :param git_blob: expected git blob id (``sha1(b"blob <size>\\0" + content)``), if known
    :param normalize_newlines: convert CRLF to LF after download, before verification (for text files
        published with Windows line ends; the checksums then describe the LF bytes)
    :param manual: the file cannot be downloaded by a script (e.g. Google Drive); a missing file raises
        :class:`ManualDownloadRequired` with instructions instead of trying the network
    :param description: a human description used in error messages
    """

    name: str
    url: str | None = None
    sha256: str | None = None
    size: int | None = None
    git_blob: str | None = None
    normalize_newlines: bool = False
    manual: bool = False
    description: str | None = None

    @property
    def has_checksum(self) -> bool:
        """Whether the content can be verified by a hash."""
        return bool(self.sha256 or self.git_blob)

    def expected_str(self) -> str:
        """Describe what the file must match, for messages."""
        parts = [f"sha256 {self.sha256}"] if self.sha256 else []
        parts += [f"git blob {self.git_blob}"] if self.git_blob else []
        parts += [f"{self.size} bytes"] if self.size is not None else []
        return ", ".join(parts) if parts else "no checksum known"


# pystow lacks: git blob ids (KVC16K's only checksums), which hashlib cannot name
def _git_blob_hash(size: int):
    return hashlib.sha1(b"blob %d\0" % size)  # noqa: S324 -- git's id, not security


def git_blob_sha1(data: bytes) -> str:
    """Return the git blob id of ``data`` (what ``git hash-object`` prints)."""
    digest = _git_blob_hash(len(data))
    digest.update(data)
    return digest.hexdigest()


def file_digests(path: str | os.PathLike) -> dict[str, object]:
    """Return ``size``, ``sha256`` and ``git_blob`` of a file, reading it once in chunks."""
    path = pathlib.Path(path)
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), _git_blob_hash(size)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            sha256.update(chunk)
            blob.update(chunk)
    return {"size": size, "sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def verify_file(path: str | os.PathLike, spec: RemoteFile, *, full: bool = True, source: str | None = None) -> None:
    """Check a file against ``spec``; raise :class:`ChecksumError` naming ``source``, expected and actual.

    :param full: hash the content; otherwise only the size is compared (cheap check of a cached file)
    :param source: where the bytes came from (URL or path) for the message; defaults to ``path``
    """
    path = pathlib.Path(path)
    hashed = full and spec.has_checksum
    _compare(spec, source or str(path), file_digests(path) if hashed else {"size": path.stat().st_size})


def verify_local_file(path: str | os.PathLike, spec: RemoteFile, *, full: bool = True) -> None:
    """Check a local copy (e.g. in a benchmark's ``directory=``) against ``spec``, as :func:`verify_file`.

    A file published with CRLF line ends (``spec.normalize_newlines``) is compared with CRLF turned into LF,
    as after a download: its original CRLF copy and an LF copy are both the published file.
    """
    path = pathlib.Path(path)
    try:
        verify_file(path, spec, full=full)
    except ChecksumError:
        if not spec.normalize_newlines or b"\r\n" not in (data := path.read_bytes()):
            raise
        data = data.replace(b"\r\n", b"\n")
        digests = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "git_blob": git_blob_sha1(data)}
        _compare(spec, f"{path} (with its CRLF line ends turned into LF)", digests if full else {"size": len(data)})


def _compare(spec: RemoteFile, source: str, digests: Mapping[str, object]) -> None:
    """Raise :class:`ChecksumError` where ``digests`` (``size``, and ``sha256``/``git_blob`` if hashed) differ."""
    size = digests["size"]
    if spec.size is not None and size != spec.size:
        raise ChecksumError(
            f"{spec.name} from {source}: expected {spec.size} bytes but got {size} bytes "
            f"(truncated or wrong file; expected {spec.expected_str()})"
        )
    for key, what, expected in (("sha256", "sha256", spec.sha256), ("git_blob", "git blob id", spec.git_blob)):
        if expected and key in digests and digests[key] != expected.lower():
            raise ChecksumError(
                f"{spec.name} from {source}: {what} mismatch, expected {expected} but got {digests[key]} "
                f"({size} bytes; expected {spec.expected_str()})"
            )


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created as needed), across processes; log when waiting for another.

    The operating system releases the lock of a killed process, so a kill never leaves it held.

    :param what: what the holder does, for the log message (e.g. ``"downloading train.txt"``)
    """
    from filelock import FileLock, Timeout

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=1)
    except Timeout:
        logger.info("waiting for another process %s (lock %s)", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def dataset_cache_folder(key: str, cache_root: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the cache folder of a dataset: ``cache_root/key`` or PyKEEN's ``pystow`` module ``pykeen/datasets/key``.

    The pystow location honours ``PYKEEN_HOME`` / ``PYSTOW_HOME`` like PyKEEN's own datasets.
    """
    if cache_root is not None:
        folder = pathlib.Path(cache_root).expanduser().resolve() / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    import pystow

    return pystow.module("pykeen", "datasets", key).base


class Downloader:
    """Fetch a dataset's files into one cache folder, verified, with a progress bar.

    :param key: the cache sub-folder name (PyKEEN uses the lower-cased class name)
    :param files: the dataset's files
    :param base_url: root of a mirror; a file is then fetched from ``<base_url>/<mirror_folder>/<name>``
        instead of its public URL. Defaults to the environment variable :data:`BASE_URL_ENV`.
    :param mirror_folder: the dataset's folder name in a mirror (e.g. ``"MKG-Y"``); defaults to ``key``
    :param cache_root: a folder to use instead of PyKEEN's pystow cache (files go to ``cache_root/key``)
    :param verify: how a cached file is checked on use: ``"size"`` (cheap, default), ``"full"`` (hash) or
        ``"none"``; defaults to the environment variable :data:`VERIFY_ENV`. Downloads are always hashed.
    :param timeout: socket timeout in seconds for each request
    :param deadline: the most seconds one file's download may take, from connecting to the last byte; default:
        the environment variable :data:`DEADLINE_ENV`, else 3600
    :param stall_timeout: a download that receives less than 1 KiB in this many seconds is abandoned
    :param progress: show a tqdm progress bar while downloading
    """

    def __init__(
        self,
        key: str,
        files: Iterable[RemoteFile],
        *,
        base_url: str | None = None,
        mirror_folder: str | None = None,
        cache_root: str | os.PathLike | None = None,
        verify: str | None = None,
        timeout: float = 60.0,
        deadline: float | None = None,
        stall_timeout: float = 120.0,
        progress: bool = True,
    ) -> None:
        self.key = key
        self.files: dict[str, RemoteFile] = {f.name: f for f in files}
        self.base_url = base_url if base_url is not None else (os.environ.get(BASE_URL_ENV) or None)
        self.mirror_folder = mirror_folder or key
        self.cache_root = cache_root
        verify = verify or os.environ.get(VERIFY_ENV) or "size"
        if verify not in VERIFY_CHOICES:
            raise ValueError(f"verify must be one of {VERIFY_CHOICES}, not {verify!r}")
        self.verify = verify
        self.timeout = timeout
        if deadline is None:
            deadline = float(os.environ.get(DEADLINE_ENV) or 3600.0)
        if deadline <= 0 or stall_timeout <= 0:
            raise ValueError(f"deadline and stall_timeout must be positive, got {deadline} and {stall_timeout}")
        self.deadline = deadline
        self.stall_timeout = stall_timeout
        self.progress = progress

    @property
    def folder(self) -> pathlib.Path:
        """The cache folder (created on access)."""
        return dataset_cache_folder(self.key, self.cache_root)

    def spec(self, name: str | RemoteFile) -> RemoteFile:
        """Look up a file description by name."""
        if isinstance(name, RemoteFile):
            return name
        try:
            return self.files[name]
        except KeyError:
            raise KeyError(f"{self.key} has no file {name!r}; known: {sorted(self.files)}") from None

    def url_for(self, name: str | RemoteFile) -> str:
        """The URL a file is fetched from (the mirror's when ``base_url`` is set)."""
        spec = self.spec(name)
        if self.base_url:
            parts = [self.mirror_folder, *spec.name.split("/")]
            return self.base_url.rstrip("/") + "/" + "/".join(urllib.parse.quote(p) for p in parts)
        if not spec.url:
            raise ManualDownloadRequired(self._manual_message(spec, reason="it has no public URL"))
        return spec.url

    def path(self, name: str | RemoteFile) -> pathlib.Path:
        """Where a file lives in the cache (it may not exist yet)."""
        return self.folder.joinpath(*self.spec(name).name.split("/"))

    def is_cached(self, name: str | RemoteFile) -> bool:
        """Whether the file is in the cache (and passes the cheap size check)."""
        spec = self.spec(name)
        path = self.path(spec)
        if not path.is_file():
            return False
        try:
            verify_file(path, spec, full=False)
        except ChecksumError:
            return False
        return True

    def ensure(self, name: str | RemoteFile, *, force: bool = False) -> pathlib.Path:
        """Return the cached path of a file, downloading and verifying it first if needed."""
        spec = self.spec(name)
        path = self.path(spec)
        if path.is_file() and not force:
            return self._cached(spec, path)
        if spec.manual and not self.base_url:
            raise ManualDownloadRequired(self._manual_message(spec, reason="it cannot be downloaded by a script"))
        url = self.url_for(spec)
        # pystow lacks: a lock; one process at a time per file: a second one waits, then finds the file in place
        with file_lock(self._lock_path(spec), f"downloading {self.key}/{spec.name}"):
            if path.is_file() and not force:
                return self._cached(spec, path)
            # the .part files of killed downloads of this file (no live one: we hold its lock)
            for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.part*"):
                logger.info("removing %s, left by an interrupted download", leftover)
                leftover.unlink(missing_ok=True)
            self._download(url, spec, path)
        return path

    def ensure_all(self, names: Iterable[str] | None = None) -> dict[str, pathlib.Path]:
        """Ensure several files (default: all non-manual ones); return name -> path."""
        if names is None:
            names = [n for n, s in self.files.items() if not s.manual]
        return {name: self.ensure(name) for name in names}

    # -- internals ---------------------------------------------------------------------------------

    def _cached(self, spec: RemoteFile, path: pathlib.Path) -> pathlib.Path:
        if self.verify != "none":
            try:
                verify_file(path, spec, full=self.verify == "full", source=f"the cache ({path})")
            except ChecksumError as error:
                where = f" from {self.url_for(spec)}" if self.base_url or spec.url else ""
                raise ChecksumError(f"{error}. Delete {path} to download it again{where}") from None
        logger.debug("using cached %s", path)
        return path

    def _lock_path(self, spec: RemoteFile) -> pathlib.Path:
        # beside the dataset's folder, so that the folder holds the dataset's files only
        folder = self.folder
        return folder.parent / ".momok-locks" / folder.name / (urllib.parse.quote(spec.name, safe="") + ".lock")

    def _manual_message(self, spec: RemoteFile, *, reason: str, url: str | None = None) -> str:
        what = spec.description or spec.name
        url = url or spec.url
        msg = f"{what} is not available ({reason}). "
        msg += f"Download it by hand from {url} " if url else "Obtain it by hand "
        msg += f"and put it at {self.path(spec)}"
        if spec.has_checksum or spec.size is not None:
            msg += f" (expected {spec.expected_str()})"
        msg += f", or pass the benchmark's directory= argument a folder that holds it as {spec.name}."
        return msg

    def _download(self, url: str, spec: RemoteFile, path: pathlib.Path) -> None:
        # pystow lacks: verifying before the file is in place (its digest check runs after clean_on_failure's block)
        with atomic_write(path, suffix=".part") as tmp:
            with tmp.open("wb") as out:
                self._fetch(url, spec, out)
            if spec.normalize_newlines:  # pystow lacks: checksums of the LF content (text files, a few MB: in memory)
                tmp.write_bytes(tmp.read_bytes().replace(b"\r\n", b"\n"))
            if not spec.has_checksum:
                logger.warning("%s: no checksum known for %s, using it unverified", self.key, url)
            verify_file(tmp, spec, full=True, source=url)
        logger.info("downloaded %s to %s", url, path)

    def _fetch(self, url: str, spec: RemoteFile, out) -> None:
        """Stream ``url`` into ``out`` with a progress bar, within the deadline and without stalling."""
        with _Watchdog(self.deadline, self.stall_timeout) as watchdog:
            try:
                received, length = self._stream(url, spec, out, watchdog)
            except DownloadError as error:
                if watchdog.reason is None:
                    raise
                raise DownloadError(f"could not download {url}: {watchdog.reason}") from error
        if watchdog.reason is not None:  # the watchdog shut the socket: what arrived looks like a short file
            raise DownloadError(f"could not download {url}: {watchdog.reason}")
        if length is not None and received != length:
            raise DownloadError(f"could not download {url}: the connection ended after {received} of {length} bytes")

    def _stream(self, url: str, spec: RemoteFile, out, watchdog: _Watchdog) -> tuple[int, int | None]:
        """Copy the response into ``out``; return the bytes received and the announced length."""
        from tqdm.auto import tqdm

        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        opener = urllib.request.build_opener(_WatchedHTTPHandler(watchdog), _WatchedHTTPSHandler(watchdog))
        try:
            response = opener.open(request, timeout=self.timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = watchdog.reason or getattr(error, "reason", error)
            raise DownloadError(
                f"could not download {url}: {reason}. "
                + self._manual_message(spec, reason="the download failed", url=url)
            ) from error
        with response:
            # pystow lacks: telling a confirmation page from the file
            if spec.manual and response.headers.get("Content-Type", "").startswith("text/html"):
                # e.g. Google Drive's "cannot scan this file for viruses" confirmation page
                raise ManualDownloadRequired(self._manual_message(spec, reason=f"{url} answered with an HTML page"))
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            # read1 returns what one receive brings, so that the watchdog sees progress as it happens
            read = getattr(response, "read1", response.read)
            received = 0
            with tqdm(
                total=length if length is not None else spec.size,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"{self.key}/{spec.name}",
                disable=not self.progress,
                leave=False,
            ) as bar:
                while True:
                    try:
                        chunk = read(_CHUNK)
                    except (OSError, ValueError, http.client.HTTPException) as error:
                        raise DownloadError(f"could not download {url}: connection broke ({error})") from error
                    if not chunk:
                        return received, length
                    out.write(chunk)
                    received += len(chunk)
                    watchdog.progress(received)
                    bar.update(len(chunk))


# pystow lacks: any time limit (its urllib backend, urlretrieve, has no timeout; a trickling server never ends it)
class _Watchdog:
    """Shuts a download's sockets down when it passes its deadline or stalls.

    A socket timeout bounds each receive only: a server sending a byte every few seconds keeps a download
    alive for ever. This thread checks the elapsed time and the progress, and on a breach shuts down every
    socket the download opened; the blocked receive then returns and :attr:`reason` says why.
    """

    def __init__(self, deadline: float, stall_timeout: float, poll: float = 0.1) -> None:
        self.deadline = deadline
        self.stall_timeout = stall_timeout
        self.poll = poll
        self.reason: str | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._received = 0
        self._thread = threading.Thread(target=self._watch, name="pykeen-momok-download-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def progress(self, received: int) -> None:
        """Record the number of bytes received so far."""
        self._received = received

    def create_connection(self, *args: object, **kwargs: object) -> socket.socket:
        """:func:`socket.create_connection`, remembering the socket to shut it down on a breach."""
        sock = socket.create_connection(*args, **kwargs)  # type: ignore[arg-type]
        with self._lock:
            self._sockets.append(sock)
            breached = self.reason is not None
        if breached:
            _shutdown(sock)
        return sock

    def connection_class(
        self, http_class: type[http.client.HTTPConnection]
    ) -> Callable[..., http.client.HTTPConnection]:
        """Wrap an ``http.client`` connection class so that its sockets are watched."""

        def connection(*args: object, **kwargs: object) -> http.client.HTTPConnection:
            conn = http_class(*args, **kwargs)  # type: ignore[arg-type]
            # http.client opens every socket (also the one under TLS, and a proxy tunnel) through this attribute
            conn._create_connection = self.create_connection  # type: ignore[attr-defined]
            return conn

        return connection

    def _watch(self) -> None:
        mark_bytes, mark_time = 0, self._start
        while not self._done.wait(self.poll):
            now = time.monotonic()
            if now - self._start > self.deadline:
                self._breach(f"it did not finish within {self.deadline:g} s (deadline=, or {DEADLINE_ENV})")
                return
            if self._received - mark_bytes >= _STALL_BYTES:
                mark_bytes, mark_time = self._received, now
            elif now - mark_time > self.stall_timeout:
                self._breach(f"it stalled: less than {_STALL_BYTES} bytes arrived in {self.stall_timeout:g} s")
                return

    def _breach(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _Watched:
    """Makes an urllib HTTP(S) handler open its sockets through a :class:`_Watchdog`."""

    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self._watchdog = watchdog

    def do_open(self, http_class, req, **http_conn_args):  # noqa: D102
        return super().do_open(self._watchdog.connection_class(http_class), req, **http_conn_args)  # type: ignore[misc]


class _WatchedHTTPHandler(_Watched, urllib.request.HTTPHandler):
    """urllib's HTTP handler with the sockets of a :class:`_Watchdog`."""


class _WatchedHTTPSHandler(_Watched, urllib.request.HTTPSHandler):
    """urllib's HTTPS handler with the sockets of a :class:`_Watchdog`."""


# -- safe archive extraction ---------------------------------------------------------------------


def _check_member_name(name: str, target: pathlib.Path) -> pathlib.Path:
    """Return the resolved destination of an archive member or raise :class:`UnsafeArchiveError`."""
    if not name or "\0" in name:
        raise UnsafeArchiveError(f"archive member with an invalid name {name!r}")
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to extract it")
    parts = [p for p in normalized.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'; refusing to extract outside {target}")
    destination = target.joinpath(*parts).resolve() if parts else target
    if destination != target and target not in destination.parents:
        raise UnsafeArchiveError(f"archive member {name!r} would be written outside {target}")
    return destination


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """``"file"``, ``"dir"``, or what else a zip member is."""
    mode = (info.external_attr >> 16) & 0xFFFF  # unix mode, when the archive was made on unix
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if info.is_dir():
        return "dir"
    return "not a regular file" if stat.S_IFMT(mode) and not stat.S_ISREG(mode) else "file"


def _tar_kind(info: tarfile.TarInfo) -> str:
    """``"file"``, ``"dir"``, or what else a tar member is."""
    if info.issym() or info.islnk():
        return f"a {'symbolic' if info.issym() else 'hard'} link (to {info.linkname!r})"
    return "file" if info.isfile() else "dir" if info.isdir() else "not a regular file or folder"


def safe_extract(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    *,
    members: Sequence[str] | None = None,
) -> list[pathlib.Path]:
    """Extract a zip or tar archive into ``target`` refusing anything that could escape it.

    Every member is checked *before* anything is written: absolute paths, ``..`` components, symbolic
    and hard links, device files and FIFOs raise :class:`UnsafeArchiveError` and nothing is extracted.
    Each file is written atomically (:func:`~pykeen_momok.features.atomic_write`): a killed extraction leaves
    no part of a file under its name.

    :param archive: the archive file (kind detected from its content)
    :param target: the folder to extract into (created if needed)
    :param members: extract only these member names (all when ``None``)
    :returns: the paths of the extracted regular files
    """
    archive, target = pathlib.Path(archive), pathlib.Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    with contextlib.ExitStack() as stack:
        if zipfile.is_zipfile(archive):
            zip_file = stack.enter_context(zipfile.ZipFile(archive))
            entries = [(i.filename, _zip_kind(i), functools.partial(zip_file.open, i)) for i in zip_file.infolist()]
        elif tarfile.is_tarfile(archive):
            tar_file = stack.enter_context(tarfile.open(archive))
            entries = [(m.name, _tar_kind(m), functools.partial(tar_file.extractfile, m)) for m in tar_file]
        else:
            raise ValueError(f"{archive} is neither a zip nor a tar archive")
        plan = []
        for name, kind, open_member in entries:
            if members is not None and name not in members:
                continue
            destination = _check_member_name(name, target)
            if kind not in ("file", "dir"):
                raise UnsafeArchiveError(f"archive member {name!r} is {kind}; refusing to extract")
            plan.append((destination, kind, open_member))
        written: list[pathlib.Path] = []
        for destination, kind, open_member in plan:
            if kind == "dir":
                destination.mkdir(parents=True, exist_ok=True)
                continue
            with atomic_write(destination) as tmp, open_member() as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            written.append(destination)
    return written


def checksum_table(lines: str) -> Mapping[str, tuple[str, str | None, int]]:
    """Parse a ``CHECKSUMS.txt``-style table (``git-blob sha256 bytes path`` per line, ``#`` comments).

    A ``-`` in the sha256 column: not known (the file is verified by its git blob id and size).

    :returns: path -> (git blob id, sha256 or None, size)
    """
    table = {}
    for line in lines.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        blob, sha256, size, path = line.split(None, 3)
        table[path] = (blob, None if sha256 == "-" else sha256, int(size))
    return table
