"""/api/status-webhooks: how delivery of status webhooks goes, and the ones given up."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from callqueue.api.deps import QueueDep
from callqueue.api.errors import ApiError, error_doc
from callqueue.engine.outbox import HookOutbox
from callqueue.engine.queue import CallQueue
from callqueue.status_webhooks import Event

router = APIRouter(prefix="/api/status-webhooks", tags=["webhooks"])


class FailedDelivery(BaseModel):
    delivery_id: str = Field(..., description="As sent in X-Callqueue-Delivery.")
    event: str = Field(..., description="call.<status> or campaign.completed.")
    subject: str = Field(..., description="The call id or campaign id.")
    campaign_id: str | None = Field(None, description="The call's campaign.")
    url: str = Field(..., description="Where it was sent.")
    attempts: int = Field(..., description="Deliveries tried.")
    last_error: str = Field(..., description="What the last one met.")


class DeliveriesView(BaseModel):
    outbox: int = Field(..., description="Events waiting for their first delivery.")
    retrying: int = Field(..., description="Deliveries that failed and wait for another try.")
    delivered_total: int = Field(..., description="Deliveries a receiver took (2xx), ever.")
    failed_total: int = Field(..., description="Deliveries given up and listed below (kept: "
                              "the latest 10,000).")  # fmt: skip
    failed: list[FailedDelivery] = Field(..., description="The latest ones given up.")


def _failed(raw: Any) -> FailedDelivery:
    d = orjson.loads(raw)
    return FailedDelivery(
        delivery_id=d["delivery_id"], event=f"{d['kind']}.{d['status']}", subject=d["subject"],
        campaign_id=d["campaign_id"] or None, url=d["url"], attempts=d["attempts"],
        last_error=d["last_error"],
    )  # fmt: skip


@router.get("", summary="Status webhook deliveries")
async def deliveries(
    queue: QueueDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Failed ones to list.")] = 100,
) -> DeliveriesView:
    """How many events wait, how many deliveries are being tried again, and the deliveries
    that kept failing (WEBHOOK_MAX_ATTEMPTS tries) and were given up, latest first."""
    found = await HookOutbox(queue).summary(limit)
    return DeliveriesView(
        outbox=found.outbox, retrying=found.retrying, delivered_total=found.delivered_total,
        failed_total=found.failed_total, failed=[_failed(r) for r in found.failed],
    )  # fmt: skip


async def _retry(queue: CallQueue, delivery_id: str) -> bool:
    outbox = HookOutbox(queue)
    member = await outbox.failed(delivery_id)
    if member is None:
        return False
    return await outbox.again(delivery_id, Event.from_member(member).member(0, ""))


@router.post(
    "/{delivery_id}/retry",
    summary="Try a failed delivery again",
    responses={404: error_doc("No failed delivery has this id.")},
)
async def retry_delivery(
    queue: QueueDep,
    delivery_id: Annotated[str, Path(description="As listed (X-Callqueue-Delivery).")],
) -> dict[str, str]:
    """Puts a delivery that was given up back in line, due now, with its tries counted anew."""
    if not await _retry(queue, delivery_id):
        raise ApiError(404, f"no failed delivery {delivery_id!r}", ("path", "delivery_id"),
                       "not_found")  # fmt: skip
    return {"delivery_id": delivery_id, "status": "retrying"}
