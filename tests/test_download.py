"""Verified downloads into the cache (against a real HTTP server on 127.0.0.1) and safe archive extraction."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import os
import pathlib
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from pykeen_momok.datasets.download import (
    BASE_URL_ENV,
    DEADLINE_ENV,
    ChecksumError,
    Downloader,
    DownloadError,
    ManualDownloadRequired,
    RemoteFile,
    UnsafeArchiveError,
    checksum_table,
    file_digests,
    git_blob_sha1,
    safe_extract,
    verify_local_file,
)

from conftest import SHARED_DATA, shared_dataset_dir


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves one folder and records every request path (on the server instance)."""

    def log_message(self, format, *args):  # noqa: A002 -- keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        self.server.requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def serve(directory: pathlib.Path):
    """Serve ``directory`` on 127.0.0.1 (random port) in a thread; yield (base url, request log)."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _spec_for(path: pathlib.Path, name: str, **kwargs) -> RemoteFile:
    digests = file_digests(path)
    return RemoteFile(name=name, sha256=digests["sha256"], size=digests["size"], **kwargs)


def _cache_leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture()
def mirror(tmp_path):
    """A small mirror ``<root>/toy/<files>`` with known content, served over HTTP."""
    root = tmp_path / "mirror"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "train.txt").write_bytes(b"a r b .\nb r c .\n" * 50)
    (root / "toy" / "notes.txt").write_bytes(b"hello\n")
    with serve(root) as (url, requests):
        yield root, url, requests


def _toy_specs(root: pathlib.Path) -> list[RemoteFile]:
    return [
        _spec_for(root / "toy" / "train.txt", "train.txt", url="http://127.0.0.1:9/never-used/train.txt"),
        _spec_for(root / "toy" / "notes.txt", "notes.txt"),
    ]


def test_git_blob_id_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_first_use_downloads_and_verifies_then_hits_the_cache(mirror, tmp_path):
    root, url, requests = mirror
    cache = tmp_path / "cache"
    downloader = Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False)
    assert not downloader.is_cached("train.txt")
    paths = downloader.ensure_all()
    assert sorted(requests) == ["/toy/notes.txt", "/toy/train.txt"]
    assert paths["train.txt"] == cache / "toy" / "train.txt"
    assert paths["train.txt"].read_bytes() == (root / "toy" / "train.txt").read_bytes()
    assert _cache_leftovers(cache / "toy") == ["notes.txt", "train.txt"]  # no temporary files left

    # second use (a new downloader, as a new process would make): no request reaches the server
    again = Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False, verify="full")
    assert again.ensure_all() == paths
    assert len(requests) == 2


def test_truncated_download_is_rejected_and_not_cached(mirror, tmp_path):
    root, url, requests = mirror
    spec = _spec_for(root / "toy" / "train.txt", "train.txt")
    # the server now has a truncated copy
    data = (root / "toy" / "train.txt").read_bytes()
    (root / "toy" / "train.txt").write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    downloader = Downloader("toy", [spec], base_url=url, cache_root=cache, progress=False)
    with pytest.raises(ChecksumError) as info:
        downloader.ensure("train.txt")
    message = str(info.value)
    assert f"{url}/toy/train.txt" in message
    assert f"expected {len(data)} bytes" in message and f"got {len(data) // 2} bytes" in message
    assert _cache_leftovers(cache / "toy") == []
    assert not downloader.is_cached("train.txt")


def test_corrupted_download_of_the_right_size_is_rejected_by_hash(mirror, tmp_path):
    root, url, _ = mirror
    spec = _spec_for(root / "toy" / "train.txt", "train.txt")
    data = bytearray((root / "toy" / "train.txt").read_bytes())
    data[10] ^= 0x01
    (root / "toy" / "train.txt").write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        Downloader("toy", [spec], base_url=url, cache_root=cache, progress=False).ensure("train.txt")
    message = str(info.value)
    assert "sha256 mismatch" in message and spec.sha256 in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message
    assert _cache_leftovers(cache / "toy") == []


def test_git_blob_checksum_is_verified(mirror, tmp_path):
    root, url, _ = mirror
    good = RemoteFile(name="notes.txt", git_blob=git_blob_sha1(b"hello\n"), size=6)
    bad = RemoteFile(name="notes.txt", git_blob="0" * 40, size=6)
    assert Downloader("toy", [good], base_url=url, cache_root=tmp_path / "a", progress=False).ensure("notes.txt")
    with pytest.raises(ChecksumError, match="git blob id mismatch"):
        Downloader("toy", [bad], base_url=url, cache_root=tmp_path / "b", progress=False).ensure("notes.txt")
    assert _cache_leftovers(tmp_path / "b" / "toy") == []


def test_crlf_source_is_normalised_before_verification(tmp_path):
    lf = b"/m/1\tr\t/m/2\n/m/2\tr\t/m/3\n" * 40000  # > 1 MiB: CRLF pairs straddle read chunks
    root = tmp_path / "mirror"
    (root / "fb").mkdir(parents=True)
    (root / "fb" / "train.tsv").write_bytes(lf.replace(b"\n", b"\r\n"))
    spec = RemoteFile(name="train.tsv", sha256=hashlib.sha256(lf).hexdigest(), size=len(lf), normalize_newlines=True)
    with serve(root) as (url, _):
        path = Downloader("fb", [spec], base_url=url, cache_root=tmp_path / "cache", progress=False).ensure("train.tsv")
    assert path.read_bytes() == lf


def test_cached_file_damaged_later_is_reported(mirror, tmp_path):
    root, url, requests = mirror
    cache = tmp_path / "cache"
    downloader = Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False)
    path = downloader.ensure("train.txt")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ChecksumError, match="Delete .*train.txt"):
        downloader.ensure("train.txt")
    # same size, different content: only the full check sees it
    data = bytearray((root / "toy" / "train.txt").read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    assert downloader.ensure("train.txt") == path  # cheap size check passes
    full = Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False, verify="full")
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        full.ensure("train.txt")
    assert len(requests) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_download_says_what_to_fetch_from_where_and_where_to_put_it(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    spec = RemoteFile(name="train.txt", sha256="ab" * 32, size=10)
    downloader = Downloader("toy", [spec], base_url=url, cache_root=tmp_path, progress=False, timeout=5)
    with pytest.raises(DownloadError) as info:
        downloader.ensure("train.txt")
    message = str(info.value)
    assert f"{url}/toy/train.txt" in message
    assert str(tmp_path / "toy" / "train.txt") in message
    assert "sha256 " + "ab" * 32 in message
    assert _cache_leftovers(tmp_path / "toy") == []


def test_http_404_is_a_download_error(mirror, tmp_path):
    _, url, _ = mirror
    spec = RemoteFile(name="missing.txt", size=3)
    with pytest.raises(DownloadError, match="404"):
        Downloader("toy", [spec], base_url=url, cache_root=tmp_path, progress=False).ensure("missing.txt")


def test_manual_file_raises_instructions_without_network(tmp_path):
    spec = RemoteFile(
        name="embeddings/DB15K/img_features.pth",
        url="https://drive.google.com/file/d/XYZ/view",
        manual=True,
        description="the authors' DB15K image features",
    )
    with pytest.raises(ManualDownloadRequired) as info:
        Downloader("db15k", [spec], cache_root=tmp_path, progress=False).ensure(spec.name)
    message = str(info.value)
    assert "https://drive.google.com/file/d/XYZ/view" in message
    assert str(tmp_path / "db15k" / "embeddings" / "DB15K" / "img_features.pth") in message


def test_base_url_from_environment(mirror, tmp_path, monkeypatch):
    root, url, requests = mirror
    monkeypatch.setenv(BASE_URL_ENV, url)
    downloader = Downloader("toy", _toy_specs(root), cache_root=tmp_path, progress=False)
    assert downloader.url_for("notes.txt") == f"{url}/toy/notes.txt"
    downloader.ensure("notes.txt")
    assert requests == ["/toy/notes.txt"]


def test_default_cache_is_pykeens_pystow_folder():
    downloader = Downloader("some-dataset", [])
    home = pathlib.Path(os.environ["PYKEEN_HOME"]).resolve()
    assert downloader.folder.resolve() == home / "datasets" / "some-dataset"


def test_shared_files_download_verified_by_their_published_checksums(tmp_path):
    """The published CHECKSUMS.txt describes the shared files; a download through HTTP matches it."""
    shared_dataset_dir("MKG-Y")
    table = checksum_table((SHARED_DATA / "CHECKSUMS.txt").read_text())
    specs = []
    for name in ("relation2id.txt", "valid.txt"):
        blob, sha256, size = table[f"MKG-Y/{name}"]
        specs.append(RemoteFile(name=name, sha256=sha256, size=size, git_blob=blob))
    with serve(SHARED_DATA) as (url, requests):
        downloader = Downloader("mkgy", specs, base_url=url, mirror_folder="MKG-Y", cache_root=tmp_path, progress=False)
        paths = downloader.ensure_all()
    assert sorted(requests) == ["/MKG-Y/relation2id.txt", "/MKG-Y/valid.txt"]
    assert paths["valid.txt"].read_bytes() == (SHARED_DATA / "MKG-Y" / "valid.txt").read_bytes()


# -- stalled mirrors, interrupted and concurrent downloads ----------------------------------------


class _TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``server.payload``, one byte every ``server.delay`` seconds.

    With ``server.trickle_headers`` the status line and headers trickle too. Every socket read on the client
    side returns within the delay, so a per-read timeout never fires.
    """

    def log_message(self, format, *args):  # noqa: A002 -- keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        server = self.server
        server.requests.append(self.path)
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(server.payload)}\r\n\r\n".encode()
        if not server.trickle_headers:
            self.wfile.write(head)
            head = b""
        try:
            for index in range(len(head) + len(server.payload)):
                if server.stop.is_set():
                    return
                byte = (head + server.payload)[index : index + 1]
                self.wfile.write(byte)
                self.wfile.flush()
                server.stop.wait(server.delay)
        except OSError:  # the client went away
            pass


@contextlib.contextmanager
def trickle(payload: bytes, delay: float, trickle_headers: bool = False):
    """A server on 127.0.0.1 that sends ``payload`` slowly; yield (base url, request log)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrickleHandler)
    server.daemon_threads = True
    server.payload, server.delay, server.trickle_headers = payload, delay, trickle_headers
    server.requests, server.stop = [], threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _payload_spec(payload: bytes, name: str = "train.txt") -> RemoteFile:
    return RemoteFile(name=name, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))


@pytest.mark.parametrize("trickle_headers", [False, True], ids=["body", "headers"])
def test_a_trickling_mirror_hits_the_overall_deadline(tmp_path, trickle_headers):
    """Issue 12: one byte every 50 ms keeps every read under the 60 s timeout; the deadline ends it."""
    payload = b"a r b .\n" * 250
    cache = tmp_path / "cache"
    with trickle(payload, delay=0.05, trickle_headers=trickle_headers) as (url, _):
        downloader = Downloader(
            "toy", [_payload_spec(payload)], base_url=url, cache_root=cache, progress=False, deadline=1.0
        )
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"did not finish within 1 s") as info:
            downloader.ensure("train.txt")
        elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed
    assert f"{url}/toy/train.txt" in str(info.value)
    assert _cache_leftovers(cache / "toy") == []  # no .part file


def test_a_stalled_download_is_abandoned(tmp_path):
    payload = b"x" * 5000
    cache = tmp_path / "cache"
    with trickle(payload, delay=0.05) as (url, _):
        downloader = Downloader(
            "toy", [_payload_spec(payload)], base_url=url, cache_root=cache, progress=False, stall_timeout=1.0
        )
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"stalled: less than 1024 bytes arrived in 1 s"):
            downloader.ensure("train.txt")
    assert time.monotonic() - start < 10
    assert _cache_leftovers(cache / "toy") == []


def test_deadline_from_the_environment(monkeypatch):
    monkeypatch.setenv(DEADLINE_ENV, "12.5")
    assert Downloader("toy", []).deadline == 12.5
    assert Downloader("toy", [], deadline=3).deadline == 3
    with pytest.raises(ValueError, match="positive"):
        Downloader("toy", [], stall_timeout=0)


_KILLED_DOWNLOAD = """
import sys
from pykeen_momok.datasets.download import Downloader, RemoteFile
url, cache, sha256, size = sys.argv[1:]
spec = RemoteFile(name="train.txt", sha256=sha256, size=int(size))
Downloader("toy", [spec], base_url=url, cache_root=cache, progress=False).ensure("train.txt")
"""


def test_a_download_killed_midway_leaves_nothing_the_next_one_keeps(mirror, tmp_path):
    """Issue 12: a killed process leaves its .part file; the next download of the file removes it."""
    root, good_url, _ = mirror
    payload = (root / "toy" / "train.txt").read_bytes()
    spec = _payload_spec(payload)
    cache = tmp_path / "cache"
    with trickle(payload, delay=0.05) as (slow_url, _):
        process = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DOWNLOAD, slow_url, str(cache), spec.sha256, str(spec.size)],
            env=dict(os.environ),
        )
        try:
            deadline = time.monotonic() + 60
            while not [p for p in _cache_leftovers(cache / "toy") if p.endswith(".part")]:
                assert process.poll() is None, "the download ended before it could be killed"
                assert time.monotonic() < deadline, "no .part file appeared"
                time.sleep(0.05)
            time.sleep(0.3)  # some bytes written
        finally:
            process.kill()
            process.wait()
    assert [p for p in _cache_leftovers(cache / "toy") if p.endswith(".part")]  # what the kill left
    path = Downloader("toy", [spec], base_url=good_url, cache_root=cache, progress=False).ensure("train.txt")
    assert path.read_bytes() == payload
    assert _cache_leftovers(cache / "toy") == ["train.txt"]


def test_an_interrupted_download_removes_its_part_file(tmp_path, monkeypatch):
    """Ctrl-C (or any exception) in the middle of a download: the .part file goes with it."""
    from pykeen_momok.datasets import download

    payload = b"x" * 5000
    cache = tmp_path / "cache"

    def interrupt(self, received):
        raise KeyboardInterrupt

    monkeypatch.setattr(download._Watchdog, "progress", interrupt)
    with trickle(payload, delay=0.001) as (url, _), pytest.raises(KeyboardInterrupt):
        Downloader("toy", [_payload_spec(payload)], base_url=url, cache_root=cache, progress=False).ensure("train.txt")
    assert _cache_leftovers(cache / "toy") == []


def test_concurrent_downloads_of_one_file_fetch_it_once(tmp_path):
    payload = b"a r b .\n" * 100
    spec = _payload_spec(payload)
    cache = tmp_path / "cache"
    with trickle(payload, delay=0.001) as (url, requests):

        def fetch(_):
            return Downloader("toy", [spec], base_url=url, cache_root=cache, progress=False).ensure("train.txt")

        with ThreadPoolExecutor(max_workers=2) as pool:
            paths = list(pool.map(fetch, range(2)))
    assert paths[0] == paths[1] and paths[0].read_bytes() == payload
    assert requests == ["/toy/train.txt"]  # the second waited for the first, then used its file
    assert _cache_leftovers(cache / "toy") == ["train.txt"]


def test_verify_none_skips_the_check_of_a_cached_file(mirror, tmp_path):
    root, url, _ = mirror
    cache = tmp_path / "cache"
    Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False).ensure("notes.txt")
    (cache / "toy" / "notes.txt").write_bytes(b"changed on purpose\n")
    with pytest.raises(ChecksumError):
        Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False).ensure("notes.txt")
    unchecked = Downloader("toy", _toy_specs(root), base_url=url, cache_root=cache, progress=False, verify="none")
    assert unchecked.ensure("notes.txt").read_bytes() == b"changed on purpose\n"
    with pytest.raises(ValueError, match="verify must be one of"):
        Downloader("toy", [], verify="sha256")


def test_verify_local_file_accepts_the_crlf_copy_of_a_crlf_published_file(tmp_path):
    lf = b"a\tr\tb\nb\tr\tc\n"
    spec = RemoteFile(name="train.tsv", sha256=hashlib.sha256(lf).hexdigest(), size=len(lf), normalize_newlines=True)
    path = tmp_path / "train.tsv"
    for content in (lf, lf.replace(b"\n", b"\r\n")):
        path.write_bytes(content)
        verify_local_file(path, spec)
    path.write_bytes(lf.replace(b"c", b"d").replace(b"\n", b"\r\n"))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        verify_local_file(path, spec)
    strict = RemoteFile(name="train.tsv", sha256=spec.sha256, size=spec.size)
    path.write_bytes(lf.replace(b"\n", b"\r\n"))
    with pytest.raises(ChecksumError, match="expected 12 bytes but got 14 bytes"):
        verify_local_file(path, strict)


# -- safe extraction ------------------------------------------------------------------------------


def _zip(path: pathlib.Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symbolic link
            zf.writestr(info, target)
    return path


def _tar(path: pathlib.Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> pathlib.Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
            else:
                tf.addfile(info)
    return path


def test_safe_extract_zip_and_tar(tmp_path):
    archive = _zip(tmp_path / "ok.zip", {"embeddings/DB15K/img_features.pth": b"x", "README": b"r"})
    out = safe_extract(archive, tmp_path / "zip-out")
    assert sorted(p.relative_to(tmp_path / "zip-out").as_posix() for p in out) == [
        "README",
        "embeddings/DB15K/img_features.pth",
    ]
    info = tarfile.TarInfo("embeddings/MKG-W/text_features.pth")
    archive = _tar(tmp_path / "ok.tar.gz", [info], {info.name: b"abc"})
    (path,) = safe_extract(archive, tmp_path / "tar-out")
    assert path.read_bytes() == b"abc"


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/tmp/absolute-escape.txt", "C:/escape.txt"])
def test_zip_member_escaping_the_target_is_refused(tmp_path, name):
    archive = _zip(tmp_path / "evil.zip", {"fine.txt": b"ok", name: b"evil"})
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, target)
    assert list(target.rglob("*")) == []  # checked before anything is written
    assert not (tmp_path / "escape.txt").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    archive = _zip(tmp_path / "link.zip", {"fine.txt": b"ok"}, symlinks={"link": "/etc"})
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_escaping_the_target_are_refused(tmp_path, kind):
    link = tarfile.TarInfo("innocent")
    link.type = kind
    link.linkname = "../../outside" if kind == tarfile.LNKTYPE else "/etc/passwd"
    follow = tarfile.TarInfo("innocent/payload")
    archive = _tar(tmp_path / "links.tar.gz", [link, follow], {"innocent/payload": b"x"})
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, target)
    assert list(target.rglob("*")) == []


def test_tar_dotdot_member_is_refused(tmp_path):
    info = tarfile.TarInfo("../../escape.txt")
    archive = _tar(tmp_path / "dotdot.tar.gz", [info], {info.name: b"evil"})
    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_extraction_through_an_existing_symlink_is_refused(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    archive = _zip(tmp_path / "through.zip", {"sub/file.txt": b"evil"})
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []
