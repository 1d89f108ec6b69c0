"""The embedded valkey-server: lifecycle, persistence, sharing, cluster, TLS, failures."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

import callqueue.embedded as embedded
from callqueue.embedded import (
    MALLOC_TCACHE_COUNT,
    EmbeddedServer,
    EmbeddedServerError,
    TlsFiles,
    ensure_local_server,
    server_binary,
    server_env,
)
from callqueue.engine.connection import connect, connect_sync, describe
from callqueue.engine.lean import LeanPool
from callqueue.testing.cluster import EmbeddedCluster
from callqueue.testing.tls import make_self_signed_tls


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.01)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # an exited child of a dead parent stays a zombie until someone reaps it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def sync_client(server: EmbeddedServer) -> redis.Redis:
    client = connect_sync(server.url, decode_responses=True)
    assert isinstance(client, redis.Redis)
    return client


# --------------------------------------------------------------------------------------------
# One server
# --------------------------------------------------------------------------------------------


def test_binary_is_the_bundled_valkey() -> None:
    binary = server_binary()
    assert binary.name == "valkey-server"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "Valkey server" in out.stdout


def test_server_env_enlarges_malloc_cache_unless_tuned() -> None:
    ours = f"glibc.malloc.tcache_count={MALLOC_TCACHE_COUNT}"
    assert server_env({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": ours}
    tuned = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert server_env(tuned)["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{ours}"
    own = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=10"}
    assert server_env(own) == own  # the caller's own choice stands


def test_start_ping_stop(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path)
    assert server.pid is None
    server.start()
    pid = server.pid
    assert pid is not None
    assert server.url == f"redis://127.0.0.1:{server.port}"
    client = sync_client(server)
    try:
        assert client.ping() is True
        config = client.config_get("*")
        assert config["maxmemory-policy"] == "noeviction"
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["save"] == ""
        assert config["bind"] == "127.0.0.1"
        assert config["protected-mode"] == "yes"
        assert Path(config["dir"]) == tmp_path.resolve()
        environ = Path(f"/proc/{pid}/environ")
        if environ.exists():  # Linux: glibc's malloc cache is enlarged for the server
            entries = environ.read_bytes().split(b"\0")
            assert f"GLIBC_TUNABLES={server_env({})['GLIBC_TUNABLES']}".encode() in entries
    finally:
        client.close()
    assert (tmp_path / "server.log").exists()
    server.stop()
    assert server.pid is None
    assert process_gone(pid)
    assert port_refuses(server.port)
    assert tmp_path.exists()  # a directory given by the caller is kept


def test_context_manager_and_temp_dir_removed(tmp_path: Path) -> None:
    with EmbeddedServer(appendonly=False) as server:
        data_dir = server.data_dir
        assert data_dir.is_dir()
        client = sync_client(server)
        assert client.config_get("appendonly")["appendonly"] == "no"
        client.close()
    assert server.pid is None
    assert not data_dir.exists()


def test_data_survives_stop_and_restart(tmp_path: Path, unique_name: str) -> None:
    server = EmbeddedServer(tmp_path)
    server.start()
    port = server.port
    client = sync_client(server)
    client.set(f"{unique_name}:k", "v1")
    client.rpush(f"{unique_name}:list", "a", "b")
    client.close()

    server.stop()
    server.restart()
    assert server.port == port
    client = sync_client(server)
    assert client.get(f"{unique_name}:k") == "v1"
    client.close()
    server.stop()

    # A new server object on the same directory reads the same AOF.
    with EmbeddedServer(tmp_path) as again:
        client = sync_client(again)
        assert client.lrange(f"{unique_name}:list", 0, -1) == ["a", "b"]
        client.close()


def test_data_survives_kill(tmp_path: Path, unique_name: str) -> None:
    server = EmbeddedServer(tmp_path)
    server.start()
    try:
        client = sync_client(server)
        key = f"{unique_name}:crash"
        client.set(key, "kept")
        client.close()
        aof_dir = tmp_path / "appendonlydir"

        def in_aof() -> bool:
            return any(key.encode() in f.read_bytes() for f in aof_dir.glob("*.aof"))

        # The server writes the AOF before it replies; what is written survives a SIGKILL of
        # the process (appendfsync everysec only matters for an OS crash).
        wait_until(in_aof, what="the key to reach the AOF file")
        pid = server.pid
        assert pid is not None
        server.kill()
        assert server.pid is None
        assert process_gone(pid)

        server.restart()
        assert server.pid not in (None, pid)
        client = sync_client(server)
        assert client.get(key) == "kept"
        client.close()
    finally:
        server.stop()


def test_restart_while_running_keeps_port(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path) as server:
        port, pid = server.port, server.pid
        server.restart()
        assert server.port == port
        assert server.pid != pid
        client = sync_client(server)
        assert client.ping()
        client.close()


def test_port_in_use_raises_with_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedServer(tmp_path, port=port)
        with pytest.raises(EmbeddedServerError, match="already in use") as info:
            server.start()
        assert str(port) in str(info.value)
        assert "Address already in use" in info.value.log_tail
        assert server.pid is None
        server.stop()


def test_picked_port_race_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_free_port = embedded._free_port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(embedded, "_free_port", lambda: next(ports, None) or real_free_port())
        with EmbeddedServer(tmp_path) as server:
            assert server.port != taken
            client = sync_client(server)
            assert client.ping()
            client.close()


def test_bad_option_raises_with_server_output(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path, extra={"no-such-option": "1"})
    with pytest.raises(EmbeddedServerError, match="exited with code") as info:
        server.start()
    assert "no-such-option" in info.value.log_tail


def test_unix_socket_url(tmp_path: Path, unique_name: str) -> None:
    sock = tmp_path / "s.sock"
    with EmbeddedServer(tmp_path, extra={"unixsocket": str(sock), "unixsocketperm": "700"}):
        client = connect_sync(f"unix://{sock}", decode_responses=True)
        assert client.set(unique_name, "1")
        assert client.get(unique_name) == "1"
        client.close()


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_server_does_not_outlive_its_python_process(tmp_path: Path, ending: str) -> None:
    code = (
        "import os, sys, signal; from pathlib import Path;"
        "from callqueue.embedded import EmbeddedServer;"
        "s = EmbeddedServer(Path(sys.argv[1])).start(); print(s.pid, flush=True);"
        "sys.stdin.readline();"
        "os.kill(os.getpid(), signal.SIGKILL) if sys.argv[2] == 'sigkill' else sys.exit(0)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), ending],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    server_pid = int(proc.stdout.readline())
    assert not process_gone(server_pid)
    proc.stdin.write("\n")
    proc.stdin.close()
    proc.wait(30)
    proc.stdout.close()
    wait_until(lambda: process_gone(server_pid), what=f"server pid {server_pid} to exit")


# --------------------------------------------------------------------------------------------
# The shared session server
# --------------------------------------------------------------------------------------------


async def test_session_server_with_async_client(redis_url: str, unique_name: str) -> None:
    client = connect(redis_url, decode_responses=True)
    assert isinstance(client, redis.asyncio.Redis)
    try:
        await client.set(f"{unique_name}:a", "1")
        assert await client.incr(f"{unique_name}:a") == 2
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------------
# ensure_local_server
# --------------------------------------------------------------------------------------------


@pytest.fixture
def local_servers() -> Iterator[list[EmbeddedServer]]:
    owned: list[EmbeddedServer] = []
    yield owned
    for server in owned:
        server.stop()


def test_ensure_local_server_starts_once_and_reuses(
    tmp_path: Path, unique_name: str, local_servers: list[EmbeddedServer]
) -> None:
    url, server = ensure_local_server(tmp_path)
    assert server is not None
    local_servers.append(server)
    state = json.loads((tmp_path / "server.json").read_text())
    assert state["pid"] == server.pid
    assert state["port"] == server.port
    assert state["url"] == url == server.local_url
    assert url == f"unix://{tmp_path.resolve() / 'valkey.sock'}"  # the fast local way in

    url2, owner2 = ensure_local_server(tmp_path)
    assert (url2, owner2) == (url, None)

    # Another process (e.g. `callqueue worker` next to `callqueue api`) shares it too.
    code = (
        "import sys; from pathlib import Path; from callqueue.embedded import ensure_local_server;"
        "url, owner = ensure_local_server(Path(sys.argv[1])); print(url, owner is None)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=30,
    )
    assert out.stdout.split() == [url, "True"]

    client = sync_client(server)
    client.set(f"{unique_name}:persisted", "yes")
    client.close()
    old_state = (tmp_path / "server.json").read_text()
    old_pid = server.pid
    server.stop()
    assert not (tmp_path / "server.json").exists()

    # A stale server.json (the recorded process is dead) is replaced by a fresh server that
    # reloads the data from the AOF in the same directory.
    (tmp_path / "server.json").write_text(old_state)
    assert old_pid is not None and process_gone(old_pid)
    url3, server3 = ensure_local_server(tmp_path)
    assert server3 is not None
    local_servers.append(server3)
    assert server3.pid != old_pid
    assert json.loads((tmp_path / "server.json").read_text())["pid"] == server3.pid
    client = sync_client(server3)
    assert client.get(f"{unique_name}:persisted") == "yes"
    client.close()
    assert url3 == server3.local_url


def test_ensure_local_server_replaces_record_of_crashed_or_foreign_process(
    tmp_path: Path, local_servers: list[EmbeddedServer]
) -> None:
    # A crash (kill) leaves server.json behind, naming a dead pid.
    _, server = ensure_local_server(tmp_path)
    assert server is not None
    local_servers.append(server)
    server.kill()
    assert (tmp_path / "server.json").exists()
    url2, server2 = ensure_local_server(tmp_path)
    assert server2 is not None
    local_servers.append(server2)
    server2.stop()

    # A recorded pid that is alive but not a server (pid reused) is not trusted either.
    (tmp_path / "server.json").write_text(
        json.dumps({"pid": os.getpid(), "port": server2.port, "url": url2})
    )
    _, server3 = ensure_local_server(tmp_path)
    assert server3 is not None
    local_servers.append(server3)

    # Garbage in server.json is treated as no record.
    server3.stop()
    (tmp_path / "server.json").write_text("{not json")
    _, server4 = ensure_local_server(tmp_path)
    assert server4 is not None
    local_servers.append(server4)


def test_ensure_local_server_concurrent_callers_share_one(
    tmp_path: Path, local_servers: list[EmbeddedServer]
) -> None:
    results: list[tuple[str, EmbeddedServer | None]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_local_server(tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    owners = [owner for _, owner in results if owner is not None]
    local_servers.extend(owners)
    assert len(owners) == 1
    assert {url for url, _ in results} == {owners[0].local_url}


# --------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------


def test_cluster_is_formed(redis_cluster: EmbeddedCluster) -> None:
    assert len(redis_cluster.nodes) == 3
    assert redis_cluster.url == redis_cluster.urls[0]
    assert len(set(redis_cluster.urls)) == 3
    for node in redis_cluster.nodes:
        client = sync_client(node)
        try:
            info = client.cluster("INFO")
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_known_nodes"]) == 3
            assert int(info["cluster_slots_assigned"]) == 16384
            assert int(info["cluster_size"]) == 3  # three masters, each serving slots
        finally:
            client.close()


async def test_cluster_client_spreads_keys_and_runs_scripts(
    redis_cluster: EmbeddedCluster, unique_name: str
) -> None:
    client = connect(redis_cluster.url, cluster=True, decode_responses=True)
    assert isinstance(client, redis.asyncio.RedisCluster)
    try:
        keys = [f"{unique_name}:{i}" for i in range(30)]
        for i, key in enumerate(keys):
            await client.set(key, str(i))
        for i, key in enumerate(keys):
            assert await client.get(key) == str(i)
        nodes = [client.get_node_from_key(key) for key in keys]
        ports = {node.port for node in nodes if node is not None}
        assert ports == {node.port for node in redis_cluster.nodes}

        tag = f"{{q{unique_name}}}"
        script = (
            "redis.call('RPUSH', KEYS[1], ARGV[1]); "
            "return redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')"
        )
        moved = await client.eval(script, 2, f"{tag}:ready", f"{tag}:active", "call-1")
        assert moved == "call-1"
        assert await client.lrange(f"{tag}:active", 0, -1) == ["call-1"]

        # Without a shared hash tag the client refuses the script (before sending it).
        a = f"{unique_name}:ready"
        b = next(k for k in keys if client.keyslot(k) != client.keyslot(a))
        with pytest.raises(RedisClusterException, match="same key slot"):
            await client.eval(script, 2, a, b, "x")
    finally:
        await client.aclose()


async def test_cluster_url_scheme(redis_cluster: EmbeddedCluster, unique_name: str) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    client = connect(url, decode_responses=True)
    assert isinstance(client, redis.asyncio.RedisCluster)
    try:
        await client.set(unique_name, "x")
        assert await client.get(unique_name) == "x"
    finally:
        await client.aclose()
    sync = connect_sync(url)
    try:
        assert sync.get(unique_name) == b"x"
    finally:
        sync.close()


@pytest.mark.slow
def test_cluster_restart_keeps_slots(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path, masters=1)
    try:
        cluster.start()
        first = cluster.nodes[0]
        client = sync_client(first)
        client.set("k", "v")
        client.close()
        cluster.stop()
        cluster.start()  # nodes.conf is reused, slots are not assigned twice
        client = sync_client(cluster.nodes[0])
        assert client.get("k") == "v"
        client.close()
    finally:
        cluster.stop()
    with pytest.raises(EmbeddedServerError, match=r"nodes\.conf"):
        EmbeddedCluster(tmp_path, masters=1).start()


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_self_signed_tls(tmp_path_factory.mktemp("tls"))


def test_make_self_signed_tls(tls_files: TlsFiles) -> None:
    for path in (tls_files.ca, tls_files.cert, tls_files.key):
        assert path.is_file()
    assert tls_files.key.stat().st_mode & 0o077 == 0
    text = subprocess.run(
        ["openssl", "x509", "-in", tls_files.cert, "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in text
    assert "DNS:localhost" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", tls_files.ca, tls_files.cert],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


@pytest.fixture
def tls_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[EmbeddedServer]:
    """A TLS server: the bundled binary if it can, else a TLS-capable one found on PATH."""
    candidates: list[Path | None] = [None]
    candidates += [Path(p) for p in map(shutil.which, ("valkey-server", "redis-server")) if p]
    reasons = []
    for i, binary in enumerate(candidates):
        server = EmbeddedServer(tmp_path / f"tls{i}", tls=tls_files, binary=binary)
        try:
            server.start()
        except EmbeddedServerError as exc:
            server.stop()
            if "without TLS support" not in str(exc):
                raise
            reasons.append(str(exc).splitlines()[0])
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    pytest.skip("no TLS-capable server binary: " + "; ".join(reasons))


def test_bundled_binary_tls_support_is_reported_clearly(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    server = EmbeddedServer(tmp_path, tls=tls_files)
    try:
        server.start()
    except EmbeddedServerError as exc:
        assert "without TLS support" in str(exc)
        assert server.pid is None
    else:
        assert server.url.startswith("rediss://127.0.0.1:")
    finally:
        server.stop()


async def test_tls_round_trip(tls_server: EmbeddedServer, tls_files: TlsFiles) -> None:
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}"
    client = connect(tls_server.url, tls_ca=str(tls_files.ca))
    try:
        assert await client.ping() is True
        # The engine's multiplexed path runs over the same TLS connection set-up.
        assert isinstance(client, redis.asyncio.Redis)  # a single server's URL
        lean = client.connection_pool
        assert isinstance(lean, LeanPool)
        replies = await asyncio.gather(*(lean.execute("INCR", "tls:n") for _ in range(100)))
        assert replies == list(range(1, 101))
    finally:
        await client.aclose()

    # Plain text on the TLS port fails; so does TLS without trusting our CA. (Clients without
    # connect()'s retries: each retry of the plain one waits ~1 s for the server to hang up.)
    def no_retry(ssl: bool) -> redis.asyncio.Redis:
        return redis.asyncio.Redis(
            host="127.0.0.1",
            port=tls_server.port,
            ssl=ssl,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=5,
            socket_connect_timeout=5,
        )

    for client in (no_retry(ssl=False), no_retry(ssl=True)):
        try:
            with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
                await asyncio.wait_for(client.ping(), 10)
        finally:
            await client.aclose()


# --------------------------------------------------------------------------------------------
# connection.py rules (no server needed)
# --------------------------------------------------------------------------------------------


def test_connect_url_rules() -> None:
    assert isinstance(connect("redis+cluster://127.0.0.1:1"), redis.asyncio.RedisCluster)
    assert isinstance(connect("redis://127.0.0.1:1"), redis.asyncio.Redis)
    with pytest.raises(ValueError, match="cluster=False"):
        connect("rediss+cluster://127.0.0.1:1", cluster=False)
    with pytest.raises(ValueError, match="unix"):
        connect("unix:///tmp/x.sock", cluster=True)
    with pytest.raises(ValueError, match="rediss"):
        connect("redis://127.0.0.1:1", tls_ca="/tmp/ca.pem")
    with pytest.raises(ValueError, match="unsupported"):
        connect("http://127.0.0.1:1")


def test_describe_masks_passwords() -> None:
    assert describe("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert describe("rediss://user:s3cret@h:6380") == "rediss://user:***@h:6380"
    assert describe("redis+cluster://u:p@h:7000") == "redis+cluster://u:***@h:7000"
    assert describe("unix:///run/r.sock?db=1&password=s3cret") == (
        "unix:///run/r.sock?db=1&password=***"
    )
    assert describe("redis://h:6379") == "redis://h:6379"
    assert "s3cret" not in describe("redis://:s3cret@[::1")
