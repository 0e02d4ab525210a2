"""Workloads on real libraries: zlib, json, ast over the standard library's own sources,
hashlib over files on disk, sqlite3, a local HTTP server with latency, subprocesses and
numpy (where installed).

Each builder makes what its items need inside the program's private temporary directory
(files, a database) or the program itself (a server thread) and removes it afterwards;
the parent removes the directory too, in case a program is killed. Item functions are
module level, so process workers import them by reference; they return small values, so
shipping results back stays cheap.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import hashlib
import http.server
import importlib.util
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
import zlib
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from benchmarks.stability_base import KIB, Built, Context, Entry

HTTP_DELAY = 0.005  # seconds the local server waits before answering


def _size(context: Context, full: int) -> int:
    """Quick runs use a quarter of the items."""
    return max(5, full // 4) if context.quick else full


# --- item functions (module level: process workers import them) ---------------------------


def compress(buf: bytes) -> int:
    return len(zlib.compress(buf))


def json_round_trip(record: Dict[str, Any]) -> int:
    return len(json.loads(json.dumps(record)))


def parse_source(source: str) -> int:
    return len(ast.parse(source).body)


def hash_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def query(item: Tuple[str, int, int]) -> Tuple[int, float]:
    path, low, high = item
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        sql = "SELECT count(*), sum(v), max(length(s)) FROM t WHERE k BETWEEN ? AND ?"
        count, total, _ = db.execute(sql, (low, high)).fetchone()
    return count, round(total, 3)


# No proxy: the environment may name one, and the server is on this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> int:
    with _OPENER.open(url, timeout=30) as response:
        return len(response.read())


def run_command(argv: Tuple[str, ...]) -> int:
    return subprocess.run(list(argv), check=True).returncode


def matmul(a: Any) -> float:
    return float(f"{float((a @ a).sum()):.6g}")  # BLAS may sum in another order


def elementwise(a: Any) -> float:
    import numpy

    return float(f"{float((numpy.sin(a) * numpy.cos(a) + numpy.sqrt(a)).sum()):.6g}")


# --- builders -------------------------------------------------------------------------------


def _text(rng: random.Random, size: int) -> bytes:
    """Compressible text: words drawn from a small vocabulary."""
    vocabulary = ["".join(rng.choices("etaoinshrdlucmfw", k=rng.randint(2, 9))) for _ in range(800)]
    words: List[str] = []
    length = 0
    while length < size:
        words.append(rng.choice(vocabulary))
        length += len(words[-1]) + 1
    return " ".join(words).encode()[:size]


@contextlib.contextmanager
def _zlib(context: Context) -> Iterator[Built]:
    base = _text(random.Random(context.seed), 256 * KIB)
    yield compress, [f"{i:08d}".encode() + base[8:] for i in range(_size(context, 48))]


@contextlib.contextmanager
def _json(context: Context) -> Iterator[Built]:
    rng = random.Random(context.seed)
    records = [
        {
            f"field{k}": {"id": rng.randrange(10**6), "tags": ["a", "b"], "score": rng.random()}
            for k in range(60)
        }
        for _ in range(_size(context, 2000))
    ]
    yield json_round_trip, records


@contextlib.contextmanager
def _ast(context: Context) -> Iterator[Built]:
    paths = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    sources = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if 2_000 <= len(text) <= 60_000:  # skip stubs and the few huge modules
            sources.append(text)
    yield parse_source, sources[: _size(context, 160)]


def _private_dir(context: Context, name: str) -> str:
    path = os.path.join(context.tmp, name)
    os.makedirs(path, mode=0o700)
    return path


@contextlib.contextmanager
def _files(context: Context) -> Iterator[Built]:
    folder = _private_dir(context, "files")
    rng = random.Random(context.seed)
    paths = []
    for i in range(_size(context, 2000)):
        paths.append(os.path.join(folder, f"{i:05d}.bin"))
        with open(paths[-1], "wb") as f:
            f.write(rng.randbytes(rng.randint(1 * KIB, 16 * KIB)))
    try:
        yield hash_file, paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _sqlite(context: Context) -> Iterator[Built]:
    folder = _private_dir(context, "db")
    path = os.path.join(folder, "t.sqlite")
    rng = random.Random(context.seed)
    rows = 50_000
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v REAL, s TEXT)")
        db.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            ((k, rng.random(), "x" * rng.randint(1, 40)) for k in range(rows)),
        )
        db.commit()
    starts = [rng.randrange(rows - 2000) for _ in range(_size(context, 400))]
    try:
        yield query, [(path, s, s + 2000) for s in starts]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 2 KiB after HTTP_DELAY: a service with latency."""

    body = b"x" * (2 * KIB)

    def do_GET(self) -> None:
        time.sleep(HTTP_DELAY)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the program's output


class _Server(http.server.ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops the connections of more than 5 threads
    # at once, and each dropped SYN costs a 1 s retry: a real service listens with more.
    request_queue_size = 256
    daemon_threads = True


@contextlib.contextmanager
def _http(context: Context) -> Iterator[Built]:
    server = _Server(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield fetch, [f"http://127.0.0.1:{port}/{i}" for i in range(_size(context, 200))]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def _python_runs(context: Context) -> Iterator[Built]:
    yield run_command, [(sys.executable, "-c", "pass")] * _size(context, 40)


@contextlib.contextmanager
def _true_runs(context: Context) -> Iterator[Built]:
    yield run_command, [(shutil.which("true") or "true",)] * _size(context, 300)


@contextlib.contextmanager
def _numpy(size: int, full: int, fn: Callable[[Any], float], context: Context) -> Iterator[Built]:
    import numpy

    rng = numpy.random.default_rng(context.seed)
    yield fn, [rng.random(size) for _ in range(_size(context, full))]


@contextlib.contextmanager
def _matrices(context: Context) -> Iterator[Built]:
    import numpy

    rng = numpy.random.default_rng(context.seed)
    yield matmul, [rng.random((200, 200)) for _ in range(_size(context, 150))]


def _numpy_missing() -> Optional[str]:
    # Found, not imported: every program looks its workload up in the whole registry, and
    # importing numpy there loaded it, and with it thread plans' BLAS caps (threadpoolctl's
    # first use, about 5 ms), into programs whose workloads never use it: their first
    # calls read up to 2x (STABILITY.md's notes; the rest of the cause is not known).
    if importlib.util.find_spec("numpy") is None:
        return "numpy is not installed here"
    return None


def entries() -> List[Entry]:
    """The real-library suite, in report order; numpy rows carry a skip reason without it."""
    no_numpy = _numpy_missing()
    no_true = None if shutil.which("true") else "no `true` command on PATH"
    return [
        Entry("zlib_256k", "real", "zlib.compress of 48 text buffers of 256 KiB", _zlib),
        Entry("json_dicts", "real", "json dumps+loads of 2,000 dicts of 60 fields", _json),
        Entry("ast_stdlib", "real", "ast.parse of 160 standard-library sources", _ast),
        Entry("sha256_files", "real", "sha256 of 2,000 files of 1-16 KiB on disk", _files),
        Entry("sqlite_ranges", "real", "400 sqlite3 range queries, a connection each", _sqlite),
        Entry("http_local", "real", "200 GETs from a local server that waits 5 ms", _http),
        Entry("subprocess_python", "real", "40 runs of `python -c pass`", _python_runs),
        Entry("subprocess_true", "real", "300 runs of `true`", _true_runs, skip=no_true),
        Entry("numpy_matmul", "real", "150 products of 200x200", _matrices, skip=no_numpy),
        Entry(
            "numpy_elementwise",
            "real",
            "sin(a)*cos(a)+sqrt(a), summed, over 60 arrays of 200,000 floats",
            partial(_numpy, 200_000, 60, elementwise),
            skip=no_numpy,
        ),
    ]
