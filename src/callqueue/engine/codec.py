"""Turns engine records into Redis values and back. Field names are short on purpose: they are
stored once per call, and a queue holds millions of calls."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from callqueue.models import (
    Attempt,
    CallRecord,
    CallSpec,
    CallStatus,
    HistoryEntry,
    Outcome,
    Priority,
)


def encode_spec(spec: CallSpec) -> bytes:
    data: dict[str, Any] = {"to": spec.phone_number}
    if spec.max_retries is not None:
        data["mr"] = spec.max_retries
    if spec.campaign_id is not None:
        data["cp"] = spec.campaign_id
    if spec.config:
        data["cfg"] = spec.config
    if spec.scheduled_at_ms is not None:
        data["sa"] = spec.scheduled_at_ms
    if spec.batch_id is not None:
        data["b"] = spec.batch_id
    return orjson.dumps(data)  # time zones live in the call's own field `tz` (claim reads it)


def decode_spec(
    call_id: str, raw: bytes | str, priority: Priority, body_hash: str = ""
) -> CallSpec:
    data = orjson.loads(raw)
    return CallSpec(
        call_id=call_id,
        phone_number=data["to"],
        campaign_id=data.get("cp"),
        config=data.get("cfg") or {},
        priority=priority,
        max_retries=int(data["mr"]) if data.get("mr") is not None else None,
        scheduled_at_ms=data.get("sa"),
        batch_id=data.get("b"),
        body_hash=body_hash,
    )


def text(value: Any) -> str:
    """A reply value as text (replies come as bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(value: bytes | str | None) -> str | None:
    return None if value is None else text(value)


def _int(value: bytes | str | None) -> int | None:
    text = _text(value)
    return int(float(text)) if text not in (None, "") else None


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def decode_attempt(raw: dict[str, Any]) -> Attempt:
    outcome = raw.get("o")
    return Attempt(
        number=int(raw["n"]),
        started_ms=int(raw["s"]),
        carrier_call_id=raw.get("cid"),
        outcome=Outcome(outcome) if outcome else None,
        hangup_cause=raw.get("hc"),
        answered_ms=_int(str(raw["an"])) if raw.get("an") is not None else None,
        ended_ms=_int(str(raw["e"])) if raw.get("e") is not None else None,
        duration_s=_float(raw.get("d")),
        bill_duration_s=_float(raw.get("bd")),
    )


def _json_list(raw: bytes | str | None) -> list[Any]:
    if not raw:
        return []
    value = orjson.loads(raw)
    return value if isinstance(value, list) else []  # Lua's cjson writes {} for empty


def _history(raw: bytes | str | None) -> list[HistoryEntry]:
    entries = []
    for line in (_text(raw) or "").splitlines():
        at, status, note = line.split("|", 2)
        entries.append(HistoryEntry(at_ms=int(at), status=CallStatus(status), note=note))
    return entries


def decode_record(call_id: str, fields: dict[bytes, bytes]) -> CallRecord:
    f = {k.decode(): v for k, v in fields.items()}
    # The priority is the high part of the ready score (enqueue.lua stores no field for it).
    priority = Priority.from_rank(int(float(f["q"])) >> 40)
    spec = decode_spec(call_id, f["s"], priority, _text(f.get("h")) or "")
    zones, hook = _text(f.get("tz")), _text(f.get("wh"))
    if zones or hook:
        spec = replace(spec, time_zones=tuple(zones.split(",")) if zones else (), webhook_url=hook)
    outcome = _text(f.get("oc"))
    attempts = [decode_attempt(a) for a in _json_list(f.get("atts"))]
    if f.get("as") is not None:  # the attempt under way
        attempts.append(
            Attempt(
                number=int(f.get("a") or 0),
                started_ms=int(f["as"]),
                carrier_call_id=_text(f.get("cid")),
                answered_ms=_int(f.get("an")),
            )
        )
    return CallRecord(
        spec=spec,
        status=CallStatus(_text(f["st"]) or ""),
        attempts=attempts,
        history=_history(f.get("hist")),
        created_ms=_int(f.get("cr")) or 0,
        updated_ms=_int(f.get("up")) or _int(f.get("cr")) or 0,
        next_attempt_ms=_int(f.get("due")),
        outcome=Outcome(outcome) if outcome else None,
        cancel_requested=_text(f.get("cx")) == "1",
    )


@dataclass(frozen=True, slots=True)
class Counters:
    """The queue's running totals (the ``stats`` hash), by meaning rather than field name."""

    enqueued: int
    dialed: int
    released: int  # dials handed back unused (carrier refused, or never sent)
    lapsed_leases: int
    final_by_status: dict[CallStatus, int]
    outcomes: dict[Outcome, int]
    talk_time_s: float  # summed over completed attempts
    talked: int  # completed attempts with a duration


def decode_counters(raw: dict[Any, Any]) -> Counters:
    stats = {_text(k) or "": _text(v) or "" for k, v in raw.items()}

    def count(name: str) -> int:
        return _int(stats.get(name)) or 0

    return Counters(
        enqueued=count("enqueued"),
        dialed=count("dialed"),
        released=count("released"),
        lapsed_leases=count("lapsed_leases"),
        final_by_status={s: count(f"final:{s.value}") for s in CallStatus if s.is_terminal},
        outcomes={o: count(f"o:{o.value}") for o in Outcome},
        talk_time_s=count("dur_ms") / 1000,
        talked=count("dur_n"),
    )
