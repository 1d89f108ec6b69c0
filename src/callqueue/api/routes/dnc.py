"""The do-not-call list: numbers never to call. Checked when a call is queued (refused, naming
the number) and again just before each dial (a number added after its call was queued is never
dialed: the call ends `cancelled` with history note `dnc`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from callqueue.api.deps import QueueDep
from callqueue.api.errors import ApiError
from callqueue.schemas.calls import normalize_phone

router = APIRouter(prefix="/api/dnc", tags=["dnc"])
MAX_NUMBERS = 10_000
MAX_CURSOR = 2**64 - 1  # SSCAN cursors are unsigned 64-bit; a larger one was a 500


class DncChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    numbers: list[str] = Field(
        ...,
        min_length=1,
        max_length=MAX_NUMBERS,
        description=f"Phone numbers (E.164 or +/00 international form), at most {MAX_NUMBERS}.",
        examples=[["+919123456789", "+91 91234-56780"]],
    )


class DncChanged(BaseModel):
    changed: int = Field(..., description="Numbers added (or removed) by this request.")
    numbers: list[str] = Field(..., description="The valid numbers, normalised to E.164.")
    rejected: list[dict[str, Any]] = Field(
        ..., description="Numbers that could not be read: `index`, `number`, `error`."
    )


class DncPage(BaseModel):
    numbers: list[str] = Field(..., description="Numbers on the list (this page).")
    next_cursor: int = Field(..., description="Pass as `cursor` for the next page; 0: the end.")
    listed: dict[str, bool] | None = Field(
        None, description="With `number=`: whether each asked number is on the list."
    )


def _normalise(numbers: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    good: list[str] = []
    bad: list[dict[str, Any]] = []
    for i, raw in enumerate(numbers):
        try:
            good.append(normalize_phone(raw))
        except ValueError as exc:
            bad.append({"index": i, "number": raw, "error": str(exc)})
    return good, bad


async def _change(queue: QueueDep, body: DncChange, add: bool) -> DncChanged:
    good, bad = _normalise(body.numbers)
    if not good:
        raise ApiError(422, "no valid phone number", ("body", "numbers"), "invalid",
                       details=[{"loc": ["body", "numbers", b["index"]], "msg": b["error"],
                                 "type": "value_error"} for b in bad])  # fmt: skip
    changed = await (queue.dnc_add(good) if add else queue.dnc_remove(good))
    return DncChanged(changed=changed, numbers=good, rejected=bad)


@router.post("", summary="Add numbers to the do-not-call list")
async def add_numbers(queue: QueueDep, body: DncChange) -> DncChanged:
    """Adds numbers (single or bulk). Calls to them are refused from now on, and queued calls
    to them are cancelled instead of dialed."""
    return await _change(queue, body, add=True)


@router.delete("", summary="Remove numbers from the do-not-call list")
async def remove_numbers(queue: QueueDep, body: DncChange) -> DncChanged:
    """Removes numbers; calls to them can be queued again (cancelled ones stay cancelled)."""
    return await _change(queue, body, add=False)


@router.get("", summary="Read the do-not-call list")
async def list_numbers(
    queue: QueueDep,
    number: Annotated[
        list[str] | None, Query(description="Check these numbers (repeat the parameter).")
    ] = None,
    cursor: Annotated[
        int, Query(ge=0, le=MAX_CURSOR, description="From a previous page's next_cursor.")
    ] = 0,
    count: Annotated[int, Query(ge=1, le=5000, description="About this many per page.")] = 500,
) -> DncPage:
    """Pages through the list, or (with `number=`) says whether given numbers are on it."""
    if number:
        good, bad = _normalise(number)
        if bad:
            raise ApiError(422, bad[0]["error"], ("query", "number", bad[0]["index"]), "invalid")
        listed = dict(zip(good, await queue.dnc_contains(good), strict=True))
        return DncPage(numbers=[n for n, on in listed.items() if on], next_cursor=0,
                       listed=listed)  # fmt: skip
    nxt, numbers = await queue.dnc_page(cursor, count)
    return DncPage(numbers=numbers, next_cursor=nxt)
