"""Every /api path the README and env.example point readers to is a route the app serves."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "env.example")
# A path as prose writes it: ends before a space, quote, backtick or bracket.
MENTION = re.compile(r"/api/[A-Za-z0-9_{}./*<>-]*")


def mentioned(name: str) -> list[str]:
    found = MENTION.findall((ROOT / name).read_text())
    return sorted({m if m.endswith("/...") else m.rstrip(".,:;") for m in found})


def matches(path: str, template: str) -> bool:
    """Whether ``path`` (as documented: `{id}` and `...`/`*` tails allowed) names ``template``
    (an OpenAPI path) or, for a tail, a route under it."""
    segment = r"(?:\{[^/]+\}|[^/{}]+)"
    pattern = "".join(segment if part.startswith("{") else re.escape(part)
                      for part in re.split(r"(\{[^/]+\})", template))  # fmt: skip
    if path.endswith(("/...", "/*")):
        prefix = path.rsplit("/", 1)[0] + "/"
        return template.startswith(prefix)
    return re.fullmatch(pattern, path) is not None


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_documented_paths_are_served(client: httpx.AsyncClient, document: str) -> None:
    templates = list((await client.get("/openapi.json")).json()["paths"])
    paths = mentioned(document)
    assert paths, f"no /api path found in {document}"
    unknown = [p for p in paths if not any(matches(p, t) for t in templates)]
    assert not unknown, f"{document} names paths the app does not serve: {unknown}"


def test_the_matcher_tells_a_wrong_path() -> None:
    assert matches("/api/calls/call-456/status", "/api/calls/{call_id}/status")
    assert matches("/api/calls/{call_id}", "/api/calls/{call_id}")
    assert matches("/api/webhooks/...", "/api/webhooks/plivo/{kind}")
    assert not matches("/api/webhooks/deliveries", "/api/webhooks/plivo/{kind}")
    assert not matches("/api/webhooks/deliveries", "/api/status-webhooks")
