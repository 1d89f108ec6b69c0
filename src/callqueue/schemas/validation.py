"""Validation errors in the API's shape, for every reader of requests (the API, the CSV import)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

#: The path of a field at fault: ``["body", "call_config", "max_duration"]``.
Loc = Sequence[str | int]


def clean_errors(errors: Iterable[Any], prefix: Loc = ()) -> list[dict[str, Any]]:
    """Pydantic/FastAPI error dicts -> ``{"loc", "msg", "type"}``, without the input values."""
    out = []
    for err in errors:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")  # pydantic's wrapper
        ctx = err.get("ctx") or {}
        if err.get("type") == "json_invalid" and "error" in ctx:
            msg = f"{msg}: {ctx['error']}"
        out.append({"loc": [*prefix, *err.get("loc", ())], "msg": msg, "type": err.get("type")})
    return out
