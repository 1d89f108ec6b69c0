"""Redis clients from a URL: standalone or cluster, plain or TLS, async or sync.

URL schemes: ``redis://``, ``rediss://`` (TLS), ``unix://``, and ``redis+cluster://`` /
``rediss+cluster://`` (same as ``cluster=True``). Every client gets a connect timeout, a socket
timeout, periodic health checks and a short exponential-backoff retry on connection errors and
timeouts.

Retries are at-least-once: a command whose reply was lost (timeout) may run twice, so scripts
that change state must be safe to repeat.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
import redis.retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from callqueue.engine.lean import LeanPool
from callqueue.engine.packing import CONNECTION_CLASSES

__all__ = [
    "AsyncClient", "SyncClient", "connect", "connect_sync", "describe", "ping", "server_version",
]  # fmt: skip

AsyncClient = redis.asyncio.Redis | redis.asyncio.RedisCluster
SyncClient = redis.Redis | redis.cluster.RedisCluster

#: Default seconds to wait for a reply. Blocking commands must block for less than this.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
#: A connection idle for longer than this is PINGed before use.
HEALTH_CHECK_INTERVAL = 30
RETRIES = 3

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = {"redis", "rediss", "unix"}


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=1.0, base=0.05)


def _prepare(
    url: str,
    cluster: bool | None,
    tls_ca: str | None,
    decode_responses: bool,
    socket_timeout: float | None,
) -> tuple[str, bool, dict[str, Any]]:
    """Normalised URL, whether it is a cluster, and the client options."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or (scheme not in _SCHEMES and scheme not in _CLUSTER_SCHEMES):
        raise ValueError(
            f"unsupported Redis URL {describe(url)!r}: use redis://, rediss://, unix://, "
            "redis+cluster:// or rediss+cluster://"
        )
    if scheme in _CLUSTER_SCHEMES:
        if cluster is False:
            raise ValueError(f"{describe(url)!r} is a cluster URL but cluster=False was given")
        scheme, cluster = _CLUSTER_SCHEMES[scheme], True
    is_cluster = bool(cluster)
    if is_cluster and scheme == "unix":
        raise ValueError("Redis Cluster cannot be reached over a unix:// socket")
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    if tls_ca is not None:
        if scheme != "rediss":
            raise ValueError(f"tls_ca was given but {describe(url)!r} is not a rediss:// URL")
        options["ssl_ca_certs"] = tls_ca
        options["ssl_cert_reqs"] = "required"
    return f"{scheme}://{rest}", is_cluster, options


def connect(
    url: str,
    *,
    cluster: bool | None = None,
    tls_ca: str | None = None,
    decode_responses: bool = False,
    socket_timeout: float | None = SOCKET_TIMEOUT,
) -> AsyncClient:
    """An asyncio client for ``url`` (connections are made lazily, on first use).

    ``cluster`` None means: decided by the scheme (``redis+cluster://``/``rediss+cluster://``).
    ``tls_ca`` is a PEM file used to verify the server of a ``rediss://`` URL.
    ``socket_timeout`` bounds every reply wait: blocking commands (BLMOVE, XREADGROUP BLOCK)
    must block for less, or use a client with a longer (or None) timeout.
    """
    url, is_cluster, options = _prepare(url, cluster, tls_ca, decode_responses, socket_timeout)
    retry = redis.asyncio.retry.Retry(_backoff(), RETRIES, (ConnectionError, TimeoutError))
    scheme = url.partition("://")[0]
    if is_cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(
            url, retry=retry, connection_class=CONNECTION_CLASSES[scheme], **options
        )
    pool = LeanPool.from_url(url, retry=retry, **options)
    # from_url lets the URL's scheme pick the connection class (unix, TLS); keep that choice's
    # transport but pack commands with hiredis.
    pool.connection_class = CONNECTION_CLASSES[scheme]
    return redis.asyncio.Redis.from_pool(pool)


def connect_sync(
    url: str,
    *,
    cluster: bool | None = None,
    tls_ca: str | None = None,
    decode_responses: bool = False,
    socket_timeout: float | None = SOCKET_TIMEOUT,
) -> SyncClient:
    """The synchronous twin of :func:`connect`, for tools and scripts."""
    url, is_cluster, options = _prepare(url, cluster, tls_ca, decode_responses, socket_timeout)
    retry = redis.retry.Retry(_backoff(), RETRIES, (ConnectionError, TimeoutError))
    if is_cluster:
        return redis.cluster.RedisCluster.from_url(url, retry=retry, **options)
    return redis.Redis.from_url(url, retry=retry, **options)


def describe(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() == "password" for k, _ in pairs):
                masked = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
                query = urlencode(masked, safe="*")
        text = f"{parts.scheme}://{netloc}{parts.path}"
        if query:
            text += f"?{query}"
        if parts.fragment:
            text += f"#{parts.fragment}"
        return text
    except ValueError:
        return "<unparseable Redis URL>"


async def ping(client: AsyncClient) -> None:
    """Raises unless the server answers."""
    await client.ping()


async def server_version(client: AsyncClient) -> str:
    """``valkey 9.1.2`` / ``redis 7.2.4``; empty when INFO is not allowed (managed Redis)."""
    try:
        info: dict[str, Any] = await client.info("server")
    except Exception:
        return ""
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    if "redis_version" in info:
        return f"redis {info['redis_version']}"
    return ""
