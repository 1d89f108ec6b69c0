"""/api/campaigns: settings, lifecycle and progress of campaigns."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from callqueue import csv_import
from callqueue.api.deps import QueueDep
from callqueue.api.errors import (
    NO_WEBHOOK_SECRET,
    ApiError,
    ErrorDetail,
    error_doc,
    not_durable_msg,
)
from callqueue.api.limits import IMPORT_MAX_BODY, capped_receive
from callqueue.engine.campaigns import CampaignEngine, CampaignNotFound, CampaignStateConflict
from callqueue.engine.durability import NotDurable
from callqueue.engine.queue import CallQueue
from callqueue.engine.reads import campaign_page, campaign_states
from callqueue.models import Priority
from callqueue.schemas.campaigns import CampaignSettings, CampaignView, NewCampaign

router = APIRouter(prefix="/api/campaigns", tags=["campaigns"])

CampaignId = Annotated[
    str, Path(description="The campaign's id (its calls' campaign_id).", examples=["campaign-123"])
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_doc("No campaign has this id.")}
#: Far past any real list, and small enough that Redis can count past it (its ranks are signed
#: 64-bit: a larger offset was a 500).
MAX_OFFSET = 1_000_000_000


class CampaignList(BaseModel):
    total: int = Field(..., description="Campaigns in all.")
    campaigns: list[CampaignView] = Field(..., description="This page, newest first.")


class CancelledView(BaseModel):
    campaign_id: str = Field(..., description="Its id.")
    status: str = Field(..., description="cancelled.")
    cancelled_calls: int = Field(..., description="Calls ended by this request (not dialed).")


async def _view(queue: CallQueue, campaign_id: str) -> CampaignView:
    (state,) = await campaign_states(queue, [campaign_id])
    if state is None:
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found")  # fmt: skip
    return CampaignView.of(state)


def _check_webhook(request: Request, body: CampaignSettings) -> None:
    if body.webhook_url and not request.app.state.settings.webhook_secret:
        raise ApiError(422, NO_WEBHOOK_SECRET, ("body", "webhook_url"), "webhook_secret")


def _forget_defaults(request: Request, campaign_id: str) -> None:
    request.app.state.campaign_defaults.forget(campaign_id)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a campaign",
    responses={409: error_doc("A campaign with this id exists (change it with PATCH).")},
)
async def create_campaign(request: Request, queue: QueueDep, body: NewCampaign) -> CampaignView:
    """Creates a campaign with its settings. Calls naming a campaign_id not created here
    create theirs with default settings (the seed's usage)."""
    _check_webhook(request, body)
    if await CampaignEngine(queue).exists(body.campaign_id):
        raise ApiError(409, f"campaign {body.campaign_id!r} exists; change it with PATCH",
                       ("body", "campaign_id"), "conflict")  # fmt: skip
    sent = body.model_fields_set - {"campaign_id"}
    stored = body.stored(sent, queue.options.retry)
    await CampaignEngine(queue).configure(body.campaign_id, stored)
    _forget_defaults(request, body.campaign_id)
    return await _view(queue, body.campaign_id)


@router.get("", summary="List campaigns")
async def list_campaigns(
    queue: QueueDep,
    offset: Annotated[
        int, Query(ge=0, le=MAX_OFFSET, description=f"Campaigns to skip (0 to {MAX_OFFSET:,}).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
) -> CampaignList:
    """Every campaign with its status and progress, newest first."""
    total, ids = await campaign_page(queue, offset, limit)
    states = await campaign_states(queue, ids)
    return CampaignList(total=total, campaigns=[CampaignView.of(s) for s in states if s])


@router.get("/{campaign_id}", summary="A campaign's settings and progress", responses=NOT_FOUND)
async def get_campaign(queue: QueueDep, campaign_id: CampaignId) -> CampaignView:
    """Counts by status, attempts, connect rate, outcomes, average duration, live calls,
    achieved dial rate and expected finish time."""
    return await _view(queue, campaign_id)


@router.patch("/{campaign_id}", summary="Change a campaign's settings", responses=NOT_FOUND)
async def patch_campaign(
    request: Request, queue: QueueDep, campaign_id: CampaignId, body: CampaignSettings
) -> CampaignView:
    """Changes the fields sent (null clears one); limits apply to the next dial. A new
    `calling_window` or `calling_window_timezone` also applies to the calls the old window
    held back: those it lets through now are queued again at their place in line, the others
    wait for its next opening (a retry never earlier than its own delay); calls scheduled for
    their own `scheduled_at` keep it. A very large campaign's last ones may follow a moment
    after the answer (the workers finish them)."""
    _check_webhook(request, body)
    if not await CampaignEngine(queue).exists(campaign_id):
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found")  # fmt: skip
    stored = body.stored(body.model_fields_set, queue.options.retry)
    await CampaignEngine(queue).configure(campaign_id, stored)
    _forget_defaults(request, campaign_id)
    return await _view(queue, campaign_id)


async def _lifecycle(queue: CallQueue, campaign_id: str, op: str) -> CampaignView:
    engine = CampaignEngine(queue)
    try:
        await (engine.pause if op == "pause" else engine.resume)(campaign_id)
    except CampaignNotFound:
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found") from None  # fmt: skip
    except CampaignStateConflict as exc:
        raise ApiError(409, f"{exc}; its calls not yet dialed were ended and new calls naming "
                       "it are refused (queue them under a new campaign)",
                       ("path", "campaign_id"), "conflict") from None  # fmt: skip
    return await _view(queue, campaign_id)


LIFECYCLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: error_doc("The campaign is cancelled: nothing changed."),
}


@router.post("/{campaign_id}/pause", summary="Pause a campaign", responses=LIFECYCLE_RESPONSES)
async def pause_campaign(queue: QueueDep, campaign_id: CampaignId) -> CampaignView:
    """No new dials of this campaign from now on; live calls finish. Its calls stay queued.
    Pausing a paused campaign changes nothing; a completed one is paused too (calls that name
    it later wait for its resume); a cancelled one answers 409."""
    return await _lifecycle(queue, campaign_id, "pause")


@router.post("/{campaign_id}/resume", summary="Resume a campaign", responses=LIFECYCLE_RESPONSES)
async def resume_campaign(queue: QueueDep, campaign_id: CampaignId) -> CampaignView:
    """Dialing continues where it stopped, in the same order. Resuming an active or completed
    campaign changes nothing; a cancelled one answers 409."""
    return await _lifecycle(queue, campaign_id, "resume")


@router.post("/{campaign_id}/cancel", summary="Cancel a campaign", responses=NOT_FOUND)
async def cancel_campaign(queue: QueueDep, campaign_id: CampaignId) -> CancelledView:
    """Ends every call of the campaign not yet dialed (live calls finish); later calls naming
    it are refused."""
    try:
        done = await CampaignEngine(queue).cancel(campaign_id)
    except CampaignNotFound:
        raise ApiError(404, f"no campaign with id {campaign_id!r}", ("path", "campaign_id"),
                       "not_found") from None  # fmt: skip
    return CancelledView(campaign_id=campaign_id, status="cancelled", cancelled_calls=done)


# -- POST /api/campaigns/{campaign_id}/calls: a call list as CSV ---------------------------------

#: Largest CSV accepted (the app's body-size middleware must allow at least this much here).
MAX_IMPORT_BYTES = IMPORT_MAX_BODY  # the body-size middleware lets this path carry that much
#: Rejected rows listed in the answer (the counts are always complete).
MAX_LISTED_REJECTIONS = 10_000
CSV_TYPES = ("text/csv", "application/csv")
SPOOL_BYTES = 1024 * 1024  # a text/csv body over this goes to a temporary file
SEED_CSV = (
    "phone_number,name,email,priority\n"
    "+919123456789,John Doe,john@example.com,high\n"
    "+91 91234-56780,Jane Roe,jane@example.com,\n"
)
IMPORT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The call list, UTF-8 CSV with a header line: as a multipart form with "
        "the file in the field `file`, or as the body itself (`text/csv`).",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "The CSV file."},
                    },
                },
            },
            "text/csv": {"schema": {"type": "string"}, "example": SEED_CSV},
        },
    }
}  # fmt: skip


class ImportRejection(BaseModel):
    line: int = Field(..., description="Line of the row in the file (the header is line 1).")
    kind: str = Field(
        ..., description="invalid, dnc (number on the do-not-call list), conflict (its call id "
        "was queued before with other values) or campaign_cancelled.",
    )  # fmt: skip
    errors: list[ErrorDetail] = Field(
        ..., description="What is wrong; `loc` names the CSV column when the value came from "
        "one (else the call field, e.g. [\"call_config\", \"variables\"]).",
    )  # fmt: skip


class ImportAnswer(BaseModel):
    campaign_id: str = Field(..., description="The campaign.")
    batch_id: str = Field(
        ..., description="The batch every imported call of the campaign joins "
        "(GET /api/batches/{batch_id} for progress).",
    )  # fmt: skip
    rows: int = Field(..., description="Data rows read (blank lines aside).")
    queued: int = Field(..., description="Calls newly queued by this request.")
    duplicates: int = Field(
        ..., description="Rows whose call existed already (an earlier import, or the same "
        "number earlier in the campaign): nothing queued twice.",
    )  # fmt: skip
    duplicates_differing: int = Field(
        ..., description="Of the duplicates, rows whose number is in the campaign already "
        "with other values: the earlier call stands.",
    )  # fmt: skip
    rejected_count: int = Field(..., description="Rows refused.")
    rejected_by_kind: dict[str, int] = Field(..., description="Refused rows by kind.")
    blank_lines: int = Field(..., description="Empty lines skipped.")
    rejected: list[ImportRejection] = Field(
        ..., description=f"The refused rows in file order (the first {MAX_LISTED_REJECTIONS})."
    )
    rejected_truncated: bool = Field(
        ..., description=f"More than {MAX_LISTED_REJECTIONS} rows were refused: the list "
        "stops there (the counts do not).",
    )  # fmt: skip


async def _spool_body(request: Request) -> Any:
    """A text/csv body in a temporary file (memory up to SPOOL_BYTES), capped."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by caller
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMPORT_BYTES:
                raise ApiError(413, f"the CSV is larger than {MAX_IMPORT_BYTES} bytes",
                               ("body",), "too_large")  # fmt: skip
            if size > SPOOL_BYTES:
                await asyncio.to_thread(spool.write, chunk)
            else:
                spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _csv_charset_ok(content_type: str) -> bool:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower().replace("_", "-") in ("utf-8", "utf8")
    return True


@router.post(
    "/{campaign_id}/calls",
    status_code=status.HTTP_201_CREATED,
    summary="Import calls from a CSV file",
    response_model=ImportAnswer,
    openapi_extra=IMPORT_BODY_DOC,
    responses={
        200: {"model": ImportAnswer, "description": "Nothing new queued: every row was queued "
              "before (a replay), or refused."},
        413: error_doc(f"The CSV is larger than {MAX_IMPORT_BYTES} bytes."),
        422: error_doc("The file cannot be imported at all (not UTF-8 CSV, empty, no phone "
                       "column, a mapped column missing): nothing was queued."),
    },
)  # fmt: skip
async def import_calls(
    request: Request,
    queue: QueueDep,
    campaign_id: CampaignId,
    phone_column: Annotated[
        str | None,
        Query(description="Column of the phone numbers. Default: the first of phone_number, "
              "phone, number, mobile (any case; spaces and hyphens read as _)."),
    ] = None,
    id_column: Annotated[
        str | None,
        Query(description="Column of the call ids (custom_call_id). Default: custom_call_id or "
              "call_id when present. A row without one gets an id derived from the campaign "
              "and its E.164 number, so the same number twice in a campaign is one call."),
    ] = None,
    var: Annotated[
        list[str] | None,
        Query(description="`COL` or `COL=NAME` (repeat it): the column becomes "
              "call_config.variables[NAME]. Given: only these columns, unless "
              "all_columns_as_variables=true."),
    ] = None,
    all_columns_as_variables: Annotated[
        bool | None,
        Query(description="Every column not mapped to a call field becomes a variable named "
              "by its header. Default: true unless `var` is given."),
    ] = None,
    priority: Annotated[
        Priority | None,
        Query(description="Priority of rows without one (no priority column, or an empty "
              "cell). Default: normal."),
    ] = None,
    batch_size: Annotated[
        int, Query(ge=1, le=10_000, description="Rows validated and queued at a time.")
    ] = 1000,
) -> Response:  # fmt: skip
    """Queues the calls of a CSV call list into the campaign. Each row is checked on its own
    with the rules of `POST /api/calls/queue` (phone numbers normalised to E.164, `timezone`,
    `priority`, `scheduled_at` and `max_retries` columns read as those fields, the other
    columns passed as `call_config.variables`, as strings); valid rows are queued even when
    others are refused, and each refused row is listed with its line and errors. Empty cells
    are absent values; blank lines are skipped; the campaign's default call_config applies.

    Posting the same file again queues nothing twice (200). A campaign not created before is
    created with default settings, as when calls name it. Send the file as multipart
    (`file` field) or as a `text/csv` body, UTF-8 (a BOM is fine), at most 50 MB."""

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    content_type = request.headers.get("content-type", "")
    form: Any = None
    loc: tuple[str, ...] = ("body",)
    if kind == "multipart/form-data":
        too_large = ApiError(413, f"the CSV is larger than {MAX_IMPORT_BYTES} bytes", ("body",),
                             "too_large")  # fmt: skip
        capped = Request(
            request.scope, capped_receive(request.receive, MAX_IMPORT_BYTES, lambda: too_large)
        )
        try:
            form = await capped.form(max_files=1, max_fields=10)
        except StarletteHTTPException as exc:  # the multipart parser's 400
            if exc.status_code != 400:  # a stalled (408) or too large (413) body
                raise
            raise ApiError(400, f"the multipart form is not readable: {exc.detail}", ("body",),
                           "invalid_body") from None  # fmt: skip
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            await form.close()
            raise ApiError(422, "the form needs the CSV file in a field named 'file'",
                           ("body", "file"), "missing")  # fmt: skip
        binary, name, loc = upload.file, upload.filename or "the uploaded file", ("body", "file")
    elif kind in CSV_TYPES:
        if not _csv_charset_ok(content_type):
            raise ApiError(422, "the CSV must be UTF-8 (charset=utf-8)", ("body",),
                           "content_type")  # fmt: skip
        binary, name, loc = await _spool_body(request), "the CSV body", ("body",)
    else:
        raise ApiError(422, "send the CSV as multipart/form-data (field 'file') or as text/csv",
                       ("body",), "content_type")  # fmt: skip
    try:
        mapping = csv_import.ColumnMapping.of(phone_column, id_column, var,
                                           all_columns_as_variables, priority)  # fmt: skip
        defaults = await request.app.state.campaign_defaults.get([campaign_id])
        result = await csv_import.import_csv(
            queue, binary, campaign_id, mapping, name=name, batch_size=batch_size,
            defaults=defaults, keep_rejected=MAX_LISTED_REJECTIONS,
        )  # fmt: skip
    except csv_import.CsvImportError as exc:
        where = loc
        if exc.option == "campaign":
            where = ("path", "campaign_id")
        elif exc.option is not None and exc.option != "batch_size":
            where = ("query", exc.option)
        raise ApiError(422, str(exc), where, "invalid_csv") from None
    except NotDurable as exc:  # row ids come from the file: posting it again replays them
        msg = not_durable_msg(exc, "post the same file again")
        raise ApiError(503, msg, (), "not_durable", {"Retry-After": "1"}) from None
    finally:
        if form is not None:
            await form.close()
        else:
            binary.close()
    answer = {
        "campaign_id": campaign_id,
        "batch_id": result.batch_id,
        "rows": result.rows,
        "queued": result.queued,
        "duplicates": result.duplicates,
        "duplicates_differing": result.duplicates_differing,
        "rejected_count": result.rejected,
        "rejected_by_kind": result.rejected_by_kind,
        "blank_lines": result.blank_lines,
        "rejected": [
            {"line": r.line, "kind": r.kind, "errors": r.errors} for r in result.rejected_rows
        ],
        "rejected_truncated": result.rejected_truncated,
    }
    code = status.HTTP_201_CREATED if result.queued else status.HTTP_200_OK
    return Response(orjson.dumps(answer), code, media_type="application/json")
