"""Only the engine talks to Redis: every command of the product goes through an engine method.

Read from the source (no import needed): outside ``engine/`` (and the embedded server's
launcher and the test helpers in ``testing/``), no code calls a method of a queue's Redis
client (``<x>.client.<method>``, closing it aside), runs a script (``._scripts``), builds a
pipeline, or imports redis-py beyond its exception classes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "callqueue"
OWNERS = ("engine/", "embedded.py", "testing/")
ALLOWED_CLIENT_METHODS = {"aclose"}  # lifecycle, not a command


def product_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if not str(p.relative_to(SRC)).startswith(OWNERS))


def _redis_beyond_exceptions(module: str) -> bool:
    return module.split(".")[0] == "redis" and module != "redis.exceptions"


def violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            inner = node.value
            if (
                isinstance(inner, ast.Attribute)
                and inner.attr == "client"
                and node.attr not in ALLOWED_CLIENT_METHODS
            ):
                found.append(f"line {node.lineno}: .client.{node.attr}")
            if node.attr == "_scripts":
                found.append(f"line {node.lineno}: ._scripts")
            if node.attr == "pipeline":
                found.append(f"line {node.lineno}: .pipeline")
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if _redis_beyond_exceptions(alias.name)
            ]
        elif isinstance(node, ast.ImportFrom) and _redis_beyond_exceptions(node.module or ""):
            found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def test_the_check_catches_each_kind_of_leak() -> None:
    leaks = """
import redis.asyncio
from redis.asyncio import Redis
async def f(queue):
    await queue.client.hget("k", "f")
    await queue._scripts.claim(queue.client, [], [])
    pipe = queue.client.pipeline()
    await queue.client.aclose()
"""
    assert len(violations(leaks)) == 6
    assert violations("from redis.exceptions import ResponseError\nawait rt.client.aclose()") == []


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_outside_the_engine_talks_to_redis(path: Path) -> None:
    assert violations(path.read_text()) == [], f"{path.relative_to(SRC)} talks to Redis itself"
