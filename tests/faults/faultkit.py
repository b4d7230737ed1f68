"""Real faults for the write path, shared by tests/faults and bench/faults.py.

- ``FaultProxy``: a loopback TCP proxy in front of a database server (PostgreSQL, MariaDB) that
  passes traffic through, refuses new connections, cuts the open ones, or blackholes (accepts and
  never answers, stops forwarding), switchable while the client runs.
- ``SqliteLock``: a second process holding an SQLite write lock (``BEGIN IMMEDIATE`` / ``EXCLUSIVE``).
- ``Child``: a Python process running ``fault_child.py`` (recording, bursting, exiting...), talked to
  by lines on stdin / stdout, killable with SIGKILL.
- ``rss_bytes`` / ``peak_rss_bytes``: a process's memory from /proc (Linux).

Standalone on purpose (no pytest, no relative imports): bench/faults.py imports it by path.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
CHILD = HERE / "fault_child.py"

PASS, REFUSE, BLACKHOLE = "pass", "refuse", "blackhole"


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (linger 0), as a dropped route or a killed server would look."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pipe:
    """One client connection and, once the proxy passes traffic, its upstream connection."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.dead = False

    def kill(self) -> None:
        self.dead = True
        for s in (self.client, self.upstream):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the pump thread's select
                except OSError:
                    pass


class FaultProxy:
    """``FaultProxy(5432)``: listens on 127.0.0.1 (an ephemeral port), forwards to 127.0.0.1:5432.

    Modes, switched at any time: ``pass_through()``; ``refuse()`` (new connections are reset at
    once, the open ones keep working); ``blackhole()`` (new connections are accepted and never
    answered, open ones stop forwarding in both directions: what a dead route or a hung server
    looks like; traffic resumes when passing again); ``cut()`` resets every open connection;
    ``outage()`` is refuse + cut. ``via(url)`` rewrites a SQLAlchemy URL to go through the proxy.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = PASS
        self.accepted = 0
        self._pipes: set[_Pipe] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}", daemon=True).start()

    # -- switches ----------------------------------------------------------------------------

    def pass_through(self) -> None:
        self.mode = PASS

    def refuse(self) -> None:
        self.mode = REFUSE

    def blackhole(self) -> None:
        self.mode = BLACKHOLE

    def cut(self) -> int:
        """Reset every open connection; returns how many there were."""
        with self._lock:
            pipes = list(self._pipes)
        for p in pipes:
            p.kill()
        return len(pipes)

    def outage(self) -> None:
        self.refuse()
        self.cut()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pipes)

    def via(self, url: str) -> str:
        return sa.engine.make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop (a plain close would not)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- machinery ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == REFUSE:
                _reset(client)
                continue
            pipe = _Pipe(client)
            with self._lock:
                self._pipes.add(pipe)
            threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: _Pipe) -> None:
        try:
            while not pipe.dead and not self._closed:
                if self.mode == BLACKHOLE:  # read nothing, answer nothing, forward nothing
                    time.sleep(0.02)
                    continue
                if pipe.upstream is None:
                    pipe.upstream = socket.create_connection(self.upstream, timeout=5)
                    pipe.upstream.settimeout(None)
                readable, _, _ = select.select([pipe.client, pipe.upstream], [], [], 0.05)
                for src in readable:
                    if self.mode == BLACKHOLE or pipe.dead:
                        break
                    data = src.recv(65536)
                    if not data:
                        return
                    (pipe.upstream if src is pipe.client else pipe.client).sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._pipes.discard(pipe)
            _reset(pipe.client)
            if pipe.upstream is not None:
                _reset(pipe.upstream)


class SqliteLock:
    """Another process holding the write lock of an SQLite file until ``release()`` (or ``seconds``)."""

    CODE = """
import select, sqlite3, sys
path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
conn = sqlite3.connect(path, timeout=30, isolation_level=None)
conn.execute("BEGIN " + mode)
print("locked", flush=True)
select.select([sys.stdin], [], [], seconds)  # until the parent closes stdin, or time is up
conn.execute("COMMIT")
"""

    def __init__(self, path: str | Path, seconds: float = 30.0, mode: str = "IMMEDIATE") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(path), mode, str(seconds)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "locked":
            self.proc.kill()
            raise RuntimeError(f"the lock holder did not take the lock: {line!r}")
        self.taken_at = time.monotonic()

    def release(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> SqliteLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Child:
    """``fault_child.py <command> <json args>`` in a fresh interpreter, spoken to by lines.

    The child prints JSON lines on stdout (``{"event": ...}``) and reads a line from stdin when it
    waits for the parent (e.g. "go" after the parent broke the database).
    """

    def __init__(self, command: str, cwd: str | Path | None = None, env: dict | None = None, **args) -> None:
        full_env = {**os.environ, **(env or {})}
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(CHILD), command, json.dumps(args)], cwd=cwd, env=full_env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def expect(self, event: str, timeout: float = 30) -> dict:
        """Read stdout lines until ``{"event": event, ...}``; earlier events are kept in ``events``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"child sent no {event!r} within {timeout}s; stderr:\n{self.stderr[-3000:]}") from None
            if line is None:
                self._lines.put(None)
                self.proc.wait(5)
                time.sleep(0.05)  # (let the stderr reader catch up)
                raise RuntimeError(f"child exited ({self.proc.returncode}) before {event!r}; stderr:\n{self.stderr[-3000:]}")
            msg = json.loads(line)
            self.events.append(msg)
            if msg.get("event") == event:
                return msg

    def rest(self, timeout: float = 10) -> list[dict]:
        """Every event still to come until the child's stdout ends (after it exited or was killed)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)
                break
            try:
                self.events.append(json.loads(line))
            except ValueError:  # a line cut short by SIGKILL
                pass
        return self.events

    def say(self, line: str = "go") -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_exit(self, timeout: float) -> float | None:
        """Seconds from now until the child exited, or None if it was still running after ``timeout``."""
        t0 = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - t0

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.kill9()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def rss_bytes(pid: int | str = "self") -> int:
    return _proc_status_kb(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int | str = "self") -> int:
    return _proc_status_kb(pid, "VmHWM") * 1024


def _proc_status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def sqlite_path(url: str) -> str:
    return sa.engine.make_url(url).database


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_reachable(url: str) -> str | None:
    """None when ``url`` answers, else why not (one line)."""
    try:
        engine = sa.create_engine(url, connect_args=_connect_timeout(url, 3))
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
        return f"{url} not reachable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def _connect_timeout(url: str, seconds: int) -> dict:
    backend = sa.engine.make_url(url).get_backend_name()
    return {"connect_timeout": seconds} if backend in ("postgresql", "mysql", "mariadb") else {}


def admin_engine(url: str) -> sa.Engine:
    """An AUTOCOMMIT engine on the server of ``url`` (for CREATE / DROP DATABASE)."""
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args=_connect_timeout(url, 5))


def create_database(url: str, name: str) -> str:
    """Create PostgreSQL database ``name`` on the server of ``url`` (dropping a leftover); returns its URL."""
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        engine.dispose()
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    """Drop PostgreSQL database ``name``, even with sessions still open on it."""
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        engine.dispose()


def trace_rows(url: str, prefix: str) -> list[tuple]:
    """(trace_id, started_at) of the stored traces whose id starts with ``prefix``, oldest first."""
    engine = sa.create_engine(url, connect_args=_connect_timeout(url, 5))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT trace_id, started_at FROM llmtrace_traces WHERE trace_id LIKE :p ORDER BY started_at, trace_id"),
                {"p": prefix + "%"})]
    finally:
        engine.dispose()


def count_by_trace(url: str, table: str, prefix: str) -> dict[str, int]:
    """Rows of ``table`` per trace id starting with ``prefix``."""
    engine = sa.create_engine(url, connect_args=_connect_timeout(url, 5))
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text(
                f"SELECT trace_id, COUNT(*) FROM {table} WHERE trace_id LIKE :p GROUP BY trace_id"), {"p": prefix + "%"}).all())
    finally:
        engine.dispose()


def record_through_outage(proxy: FaultProxy, record, prefix: str, *, before_s: float, outage_s: float,
                          after_s: float, pace_s: float = 0.01) -> list[str]:
    """Call ``record(trace_id)`` every ``pace_s`` for ``before_s``, through an outage of ``outage_s``
    (new connections refused, open ones cut), and for ``after_s`` once the server is back.
    Returns the ids recorded, in order."""
    ids: list[str] = []
    t0 = time.monotonic()
    down_at, up_at, end_at = before_s, before_s + outage_s, before_s + outage_s + after_s
    state = "up"
    while True:
        now = time.monotonic() - t0
        if now >= end_at:
            break
        if state == "up" and now >= down_at:
            proxy.outage()
            state = "down"
        elif state == "down" and now >= up_at:
            proxy.pass_through()
            state = "back"
        tid = f"{prefix}{len(ids):06d}"
        record(tid)
        ids.append(tid)
        time.sleep(pace_s)
    if state == "down":
        proxy.pass_through()
    return ids
