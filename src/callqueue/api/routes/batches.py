"""Bulk queuing (/api/calls/bulk-queue) and batch progress (/api/batches/{batch_id})."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request, Response, status
from pydantic import BaseModel, Field, ValidationError

from callqueue.api.bodies import decode_json, json_body_doc
from callqueue.api.deps import QueueDep
from callqueue.api.errors import (
    NO_WEBHOOK_SECRET,
    NOT_DURABLE_DOC,
    ApiError,
    ErrorDetail,
    error_doc,
)
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import BatchCounts, batch_counts
from callqueue.models import EnqueueResult, EnqueueState
from callqueue.schemas.calls import MAX_BULK_CALLS, SEED_BULK, BulkEnvelope, BulkQueueRequest
from callqueue.schemas.specs import BulkRow, RowRejection, bulk_specs
from callqueue.schemas.validation import clean_errors

router = APIRouter(tags=["batches"])

BULK_BODY_DOC = json_body_doc(BulkQueueRequest, {"seed": {"value": SEED_BULK}})


class BulkRejection(BaseModel):
    index: int = Field(..., description="Position of the row in `calls`, from 0.")
    errors: list[ErrorDetail] = Field(
        ..., description="What is wrong, with field paths relative to the row."
    )


class BulkQueued(BaseModel):
    batch_id: str = Field(..., description="As given, or made when absent.")
    total: int = Field(..., description="Rows received.")
    queued: int = Field(..., description="Calls newly queued by this request.")
    duplicates: int = Field(
        ..., description="Rows queued before (same id, same request): nothing queued twice."
    )
    rejected_count: int = Field(..., description="Rows refused.")
    call_ids: list[str | None] = Field(
        ..., description="Call id of each row, in input order; null for a refused row."
    )
    rejected: list[BulkRejection] = Field(..., description="The refused rows, by index.")


class BatchView(BaseModel):
    batch_id: str = Field(..., description="The batch's id.")
    total: int = Field(..., description="Calls queued in the batch.")
    done: bool = Field(..., description="Every call of the batch is final (or expired).")
    counts: dict[str, int] = Field(
        ..., description="Calls by status, plus `expired`: finished calls removed by "
        "retention (RETENTION_SECONDS).",
    )  # fmt: skip

    @classmethod
    def of(cls, c: BatchCounts) -> BatchView:
        return cls(batch_id=c.batch_id, total=c.total, done=c.done, counts=c.by_status)


class _Invalid(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _envelope(raw: bytes) -> BulkEnvelope:
    """Runs in a thread (a 16 MB body takes a while to decode)."""
    data = decode_json(raw)  # not orjson: it would turn integers over 64 bits into floats
    try:
        return BulkEnvelope.model_validate(data)
    except ValidationError as exc:
        raise _Invalid(clean_errors(exc.errors(), ("body",))) from None


def _campaigns_named(rows: list[Any]) -> set[str]:
    return {
        r["campaign_id"]
        for r in rows
        if isinstance(r, dict) and isinstance(r.get("campaign_id"), str)
    }


def _refusal(errors: list[dict[str, Any]]) -> ApiError:
    if any(e["loc"] == ["body", "calls"] and e["type"] == "too_long" for e in errors):
        msg = f"at most {MAX_BULK_CALLS} calls per request"
        return ApiError(413, msg, ("body", "calls"), "too_many_calls")
    return ApiError(422, "invalid batch", ("body",), "invalid", details=errors)


def _conflict(row: BulkRow) -> RowRejection:
    msg = f"call id {row.spec.call_id!r} was queued before with a different request"
    if not row.custom_id:
        msg += " (the id is derived from batch_id and the row's position: did rows move?)"
    loc = ["custom_call_id"] if row.custom_id else []
    return RowRejection(row.index, [{"loc": loc, "msg": msg, "type": "conflict"}])


def _answer(
    batch_id: str, total: int, good: list[BulkRow], results: list[EnqueueResult],
    rejected: list[RowRejection],
) -> dict[str, Any]:  # fmt: skip
    """The answer (shaped as BulkQueued), built as plain data: for 10,000 rows, building and
    then validating the pydantic model again cost more than queuing them."""
    call_ids: list[str | None] = [None] * total
    created = duplicates = 0
    for row, result in zip(good, results, strict=True):
        if result.state == EnqueueState.CONFLICT:
            rejected.append(_conflict(row))
            continue
        if result.state == EnqueueState.DNC:
            error = {"loc": ["phone_number"], "msg": "is on the do-not-call list",
                     "type": "do_not_call"}  # fmt: skip
            rejected.append(RowRejection(row.index, [error]))
            continue
        if result.state == EnqueueState.CAMPAIGN_CANCELLED:
            error = {"loc": ["campaign_id"], "msg": "the campaign is cancelled",
                     "type": "campaign_cancelled"}  # fmt: skip
            rejected.append(RowRejection(row.index, [error]))
            continue
        call_ids[row.index] = result.call_id
        created += result.state == EnqueueState.CREATED
        duplicates += result.state == EnqueueState.EXISTS
    rejected.sort(key=lambda r: r.index)
    return {
        "batch_id": batch_id,
        "total": total,
        "queued": created,
        "duplicates": duplicates,
        "rejected_count": len(rejected),
        "call_ids": call_ids,
        "rejected": [{"index": r.index, "errors": r.errors} for r in rejected],
    }


@router.post(
    "/api/calls/bulk-queue",
    status_code=status.HTTP_201_CREATED,
    summary="Queue many calls",
    response_model=BulkQueued,
    openapi_extra=BULK_BODY_DOC,
    responses={
        200: {"model": BulkQueued, "description": "Nothing new queued: every valid row was "
              "queued before (a replay)."},
        413: error_doc(f"Body over 16 MB, or more than {MAX_BULK_CALLS} calls."),
        422: error_doc("The body is not a batch, or no row is valid (paths name each row)."),
        503: NOT_DURABLE_DOC,
    },
)  # fmt: skip
async def bulk_queue(request: Request) -> Response:
    """Queues up to 10,000 calls. Each row is checked on its own: valid rows are queued even
    when others are refused; `call_ids` lists the id of each row in input order (null when
    refused) and `rejected` says what is wrong with each refused row. Posting the same batch
    again queues nothing twice."""
    queue: CallQueue = request.app.state.runtime.queue
    try:
        envelope = await asyncio.to_thread(_envelope, await request.body())
    except _Invalid as exc:
        raise _refusal(exc.errors) from None
    batch_id = envelope.batch_id or uuid.uuid4().hex
    defaults = await request.app.state.campaign_defaults.get(_campaigns_named(envelope.calls))
    # Checking 10,000 rows takes a while: off the event loop.
    good, bad = await asyncio.to_thread(bulk_specs, envelope.calls, batch_id, defaults)
    if not request.app.state.settings.webhook_secret:
        unsigned = [row for row in good if row.spec.webhook_url]
        good = [row for row in good if not row.spec.webhook_url]
        bad = [
            *bad,
            *(
                RowRejection(
                    row.index,
                    [{"loc": ["webhook_url"], "msg": NO_WEBHOOK_SECRET, "type": "webhook_secret"}],
                )
                for row in unsigned
            ),
        ]
    total = len(envelope.calls)
    results = await queue.enqueue_many([row.spec for row in good], batch_id=batch_id)
    answer = _answer(batch_id, total, good, results, list(bad))
    if not answer["queued"] and not answer["duplicates"]:
        errors = [
            {**e, "loc": ["body", "calls", r["index"], *e["loc"]]}
            for r in answer["rejected"]
            for e in r["errors"]
        ]
        raise _refusal(errors)
    code = status.HTTP_201_CREATED if answer["queued"] else status.HTTP_200_OK
    return Response(orjson.dumps(answer), code, media_type="application/json")


@router.get(
    "/api/batches/{batch_id}",
    summary="Batch progress",
    responses={404: error_doc("No batch has this id.")},
)
async def batch_status(
    queue: QueueDep,
    batch_id: Annotated[
        str, Path(description="The batch_id given at bulk-queue.", examples=["campaign-batch-123"])
    ],
) -> BatchView:
    """How many calls of a batch are in each status; calls removed by retention count as
    `expired`."""
    counts = await batch_counts(queue, batch_id)
    if counts is None:
        raise ApiError(404, f"no batch with id {batch_id!r}", ("path", "batch_id"), "not_found")
    return BatchView.of(counts)
