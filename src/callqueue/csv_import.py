"""Importing a campaign's call list from a CSV file, row by row: one bad row fails only itself.

Each data row becomes a body shaped like the API's ``QueueCallRequest`` (``campaign_id`` is the
campaign given) and is validated by that model, so every rule of ``POST /api/calls/queue``
applies (phone numbers normalised to E.164, time zones checked, ...). Valid rows are queued in
chunks with ``CallQueue.enqueue_many``; the others are reported with their line number and the
API's error shape, ``loc`` naming the CSV column at fault.

Columns (matched exactly, else case-insensitively with spaces and hyphens read as ``_``):

- the phone number: ``phone_column``, else the first of ``phone_number``, ``phone``,
  ``number``, ``mobile``;
- the call id: ``id_column``, else ``custom_call_id`` or ``call_id`` if present. A generic
  ``id`` column is used only when named (it is usually a contact id, and call ids are global
  to the queue, not per campaign);
- ``timezone`` (or ``time_zone``), ``priority``, ``scheduled_at``, ``max_retries``: the call's
  fields of the same name;
- ``call_config.variables``: every other column by default, or the columns listed in
  ``variables`` (``COL`` or ``COL=NAME`` to rename). Values are strings as read (CSV has no
  types).

Cells are stripped of surrounding whitespace; an empty cell is an absent value. Lines that are
empty (or only delimiters) are skipped. The delimiter is ``,``; a header with no comma but a
``;`` or a tab uses that instead.

Call ids: a row's id is its id cell when there is one; otherwise it is derived from the campaign
and the E.164 number (``imp-`` + 24 hex digits of SHA-256). Re-running an interrupted or
repeated import therefore queues each valid row once, even when rows moved; and **the same
number twice in one campaign is one call**: a later row with that number is counted as a
duplicate (``duplicates_differing`` counts those whose other values differ), not as an error.

The file is streamed: it is read twice (a first pass checks its encoding and structure and
counts its rows, so a file that is not UTF-8 CSV changes nothing), and rows are validated and
queued ``batch_size`` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from callqueue.engine.queue import CallQueue
from callqueue.models import CallSpec, EnqueueResult, EnqueueState, Priority
from callqueue.schemas.calls import QueueCallRequest
from callqueue.schemas.campaign_defaults import CampaignDefaults
from callqueue.schemas.specs import Defaults, to_spec
from callqueue.schemas.validation import clean_errors

PHONE_HEADERS = ("phone_number", "phone", "number", "mobile")
ID_HEADERS = ("custom_call_id", "call_id")
#: Call fields taken from a column of the same name (or one of these).
FIELD_HEADERS: dict[str, tuple[str, ...]] = {
    "timezone": ("timezone", "time_zone"),
    "priority": ("priority",),
    "scheduled_at": ("scheduled_at",),
    "max_retries": ("max_retries",),
}
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000
#: Rejected rows an ImportResult keeps by default (counts are always complete).
KEEP_REJECTED = 10_000
MAX_CAMPAIGN_ID = 128
REJECT_KINDS = ("invalid", "dnc", "conflict", "campaign_cancelled")
DERIVED_ID_PREFIX = "imp-"

ProgressCallback = Callable[[int, int | None], None]  # (rows done, rows in all if known)
Source = str | os.PathLike[str] | IO[bytes]

_INT = re.compile(r"[+-]?[0-9]+")
_BAD_TEXT = re.compile("[\x00\udc80-\udcff]")  # NUL, or a byte that is not UTF-8 (escaped)
_SIGNATURES = (
    (b"\xff\xfe", "is UTF-16 text, not UTF-8: save it as CSV UTF-8"),
    (b"\xfe\xff", "is UTF-16 text, not UTF-8: save it as CSV UTF-8"),
    (b"PK\x03\x04", "is a zip archive (an Excel .xlsx workbook?), not CSV: export it as CSV"),
    (b"\xd0\xcf\x11\xe0", "is an Excel .xls workbook, not CSV: export it as CSV"),
)


class CsvImportError(ValueError):
    """The file cannot be imported at all (nothing was queued from it): not UTF-8 CSV, empty,
    no phone column, a mapping naming a column the header lacks. ``option`` names the mapping
    option at fault (``phone_column``, ``id_column``, ``var``, ...), ``campaign`` for the
    campaign id, None for the file itself."""

    def __init__(self, msg: str, option: str | None = None) -> None:
        super().__init__(msg)
        self.option = option


# -- the mapping -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which CSV column feeds which field of the call. None: found by header name."""

    phone_column: str | None = None
    id_column: str | None = None
    timezone_column: str | None = None
    priority_column: str | None = None
    scheduled_at_column: str | None = None
    max_retries_column: str | None = None
    #: (column, variable name) pairs; None: see ``all_columns_as_variables``.
    variables: tuple[tuple[str, str], ...] | None = None
    #: Every column not mapped to a call field becomes a variable (named by its header; the
    #: ``variables`` pairs rename). None: yes, unless ``variables`` is given.
    all_columns_as_variables: bool | None = None
    #: Priority of rows without one (no priority column, or an empty cell).
    default_priority: Priority | None = None

    @staticmethod
    def variable(spec: str) -> tuple[str, str]:
        """``"COL"`` or ``"COL=NAME"`` -> (column, variable name)."""
        column, sep, name = spec.partition("=")
        column, name = column.strip(), name.strip()
        if not column or (sep and not name):
            raise CsvImportError(f"--var {spec!r}: expected COL or COL=NAME", "var")
        return column, name or column

    @classmethod
    def of(
        cls,
        phone_column: str | None = None,
        id_column: str | None = None,
        var: Sequence[str] | None = None,
        all_columns_as_variables: bool | None = None,
        priority: Priority | None = None,
    ) -> ColumnMapping:
        """The mapping from the CLI options / HTTP query parameters of the same names."""
        return cls(
            phone_column=phone_column or None,
            id_column=id_column or None,
            variables=tuple(cls.variable(v) for v in var) if var else None,
            all_columns_as_variables=all_columns_as_variables,
            default_priority=priority,
        )


def _key(name: str) -> str:
    return re.sub(r"[\s-]+", "_", name.strip().lower())


@dataclass(frozen=True, slots=True)
class Columns:
    """A mapping resolved against a header: column positions."""

    header: tuple[str, ...]
    phone: int
    call_id: int | None
    fields: dict[str, int]  # call field (timezone, priority, ...) -> column
    variables: tuple[tuple[int, str], ...]  # (column, variable name)

    def loc(self, model_loc: Sequence[str | int]) -> list[str | int]:
        """A model field path -> the CSV column it came from, if it came from one."""
        if not model_loc:
            return []
        head = model_loc[0]
        index: int | None = None
        if head == "phone_number":
            index = self.phone
        elif head == "custom_call_id":
            index = self.call_id
        elif isinstance(head, str) and head in self.fields:
            index = self.fields[head]
        elif head == "call_config" and len(model_loc) > 2 and model_loc[1] == "variables":
            index = next((i for i, n in self.variables if n == model_loc[2]), None)
        return [self.header[index]] if index is not None else list(model_loc)


def resolve_columns(header: Sequence[str], mapping: ColumnMapping, source: str) -> Columns:
    """Positions of the mapped columns in ``header``; CsvImportError naming what is missing."""
    names = [h.strip() for h in header]
    listing = ", ".join(repr(n) for n in names if n) or "(none)"

    def find(name: str, option: str) -> int:
        exact = [i for i, n in enumerate(names) if n == name]
        found = exact or [i for i, n in enumerate(names) if n and _key(n) == _key(name)]
        if not found:
            raise CsvImportError(
                f"{source}: no column {name!r} ({option}) in the header; its columns: {listing}",
                option,
            )
        if len(found) > 1:
            raise CsvImportError(
                f"{source}: column {name!r} ({option}) appears {len(found)} times in the header",
                option,
            )
        return found[0]

    def detect(candidates: Sequence[str], option: str) -> int | None:
        keys = [_key(n) for n in names]
        for wanted in candidates:
            if wanted in keys:
                return find(names[keys.index(wanted)], option)
        return None

    if mapping.phone_column:
        phone: int | None = find(mapping.phone_column, "phone_column")
    else:
        phone = detect(PHONE_HEADERS, "phone_column")
    if phone is None:
        raise CsvImportError(
            f"{source}: no phone number column: none of {', '.join(PHONE_HEADERS)} "
            f"(any case) in the header; its columns: {listing}. Name it with "
            "--phone-column / phone_column",
            "phone_column",
        )
    if mapping.id_column:
        call_id: int | None = find(mapping.id_column, "id_column")
    else:
        call_id = detect(ID_HEADERS, "id_column")
    given = {
        "timezone": mapping.timezone_column,
        "priority": mapping.priority_column,
        "scheduled_at": mapping.scheduled_at_column,
        "max_retries": mapping.max_retries_column,
    }
    fields: dict[str, int] = {}
    for name, column in given.items():
        index = find(column, f"{name}_column") if column else detect(FIELD_HEADERS[name], name)
        if index is not None:
            fields[name] = index
    mapped = [phone, *([call_id] if call_id is not None else []), *fields.values()]
    if len(set(mapped)) < len(mapped):
        raise CsvImportError(f"{source}: one column is mapped to two call fields", "id_column")

    renamed = {find(col, "var"): name for col, name in mapping.variables or ()}
    everything = mapping.all_columns_as_variables
    if everything is None:
        everything = mapping.variables is None
    variables: list[tuple[int, str]] = []
    for index, name in enumerate(names):
        if index in renamed:
            variables.append((index, renamed[index]))
        elif everything and name and index not in mapped:
            variables.append((index, name))
    seen: set[str] = set()
    for _, name in variables:
        if name in seen:
            raise CsvImportError(f"{source}: two columns would be variable {name!r}", "var")
        seen.add(name)
    return Columns(tuple(names), phone, call_id, fields, tuple(variables))


# -- rows --------------------------------------------------------------------------------------


def import_call_id(campaign_id: str, e164: str) -> str:
    """The id of an imported row without an id cell: the same for the same campaign and
    number, wherever the row is in the file."""
    digest = hashlib.sha256(f"{campaign_id}\n{e164}".encode()).hexdigest()
    return DERIVED_ID_PREFIX + digest[:24]


def import_batch_id(campaign_id: str) -> str:
    """The batch the imported calls of a campaign join (GET /api/batches/{batch_id})."""
    return f"import-{campaign_id}"


def row_request(
    columns: Columns,
    campaign_id: str,
    cells: Sequence[str],
    default_priority: Priority | None = None,
) -> dict[str, Any]:
    """The QueueCallRequest body of one row (not validated yet): empty cells left out."""

    def cell(index: int | None) -> str:
        return cells[index].strip() if index is not None and index < len(cells) else ""

    body: dict[str, Any] = {"campaign_id": campaign_id}
    if phone := cell(columns.phone):
        body["phone_number"] = phone
    if call_id := cell(columns.call_id):
        body["custom_call_id"] = call_id
    for name, index in columns.fields.items():
        if value := cell(index):
            if name == "priority":
                body[name] = value.lower()
            elif name == "max_retries" and _INT.fullmatch(value):
                body[name] = int(value)
            else:
                body[name] = value
    if "priority" not in body and default_priority is not None:
        body["priority"] = default_priority.value
    variables = {name: value for index, name in columns.variables if (value := cell(index))}
    if variables:
        body["call_config"] = {"variables": variables}
    return body


@dataclass(frozen=True, slots=True)
class GoodRow:
    """A valid row, ready to queue."""

    line: int
    cells: tuple[str, ...]
    spec: CallSpec
    custom_id: bool  # the call id came from the id column (not derived)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that was not queued. ``kind``: invalid, dnc, conflict or campaign_cancelled."""

    line: int  # where the row starts in the file, the header being line 1
    cells: tuple[str, ...]  # as read
    errors: list[dict[str, Any]]  # {"loc", "msg", "type"}; loc names the column if it can
    kind: str = "invalid"
    header: tuple[str, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, str]:
        """The row as column -> cell (cells beyond the header are left out)."""
        return {name: cell for name, cell in zip(self.header, self.cells, strict=False) if name}


def format_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """``[{"loc": ["phone"], "msg": "..."}]`` -> ``"phone: ..."`` (``; ``-separated)."""
    parts = []
    for error in errors:
        loc = ".".join(str(p) for p in error.get("loc") or ())
        parts.append(f"{loc}: {error['msg']}" if loc else str(error["msg"]))
    return "; ".join(parts)


def check_row(
    columns: Columns,
    campaign_id: str,
    line: int,
    cells: Sequence[str],
    default_priority: Priority | None = None,
    batch_id: str | None = None,
    defaults: Defaults | None = None,
) -> GoodRow | RejectedRow:
    """Validates one row as the single-call API would, and builds its engine spec."""
    raw = tuple(cells)
    extra = [c for c in raw[len(columns.header) :] if c.strip()]
    if extra:
        msg = f"has {len(raw)} cells; the header has {len(columns.header)}"
        error = {"loc": [], "msg": msg, "type": "too_many_cells"}
        return RejectedRow(line, raw, [error], header=columns.header)
    body = row_request(columns, campaign_id, raw, default_priority)
    try:
        request = QueueCallRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{**e, "loc": columns.loc(e["loc"])} for e in clean_errors(exc.errors())]
        return RejectedRow(line, raw, errors, header=columns.header)
    custom = request.custom_call_id is not None
    call_id = request.custom_call_id or import_call_id(campaign_id, request.phone_number)
    spec = to_spec(request, call_id, batch_id or import_batch_id(campaign_id), defaults)
    return GoodRow(line, raw, spec, custom)


# -- reading the file ------------------------------------------------------------------------


def _delimiter(first_line: str) -> str:
    if "," not in first_line:
        for candidate in (";", "\t"):
            if candidate in first_line:
                return candidate
    return ","


class CsvRecords:
    """The records of a UTF-8 CSV file, as (line, cells), the header read at once.

    Raises CsvImportError naming the file and the line for what makes it unreadable. The
    binary file stays open (its owner closes it)."""

    def __init__(self, binary: IO[bytes], source: str) -> None:
        self.source = source
        if binary.seekable():
            start = binary.tell()
            head = binary.read(4096)
            binary.seek(start)
            for signature, problem in _SIGNATURES:
                if head.startswith(signature):
                    raise CsvImportError(f"{source} {problem}")
        # Bytes that are not UTF-8 become escapes, found record by record (exact line).
        self._text = io.TextIOWrapper(
            binary, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        self.blank_lines = 0
        try:  # a wrapper left attached would close the binary file when collected
            first = self._text.readline()
            lines = itertools.chain([first], self._text)
            self._reader = csv.reader(lines, delimiter=_delimiter(first))
            header = self._next()
            if header is None:
                msg = f"{source} is empty: expected a header line, then one line per call"
                raise CsvImportError(msg)
        except BaseException:
            self.close()
            raise
        self.header_line, cells = header
        self.header = tuple(c.strip() for c in cells)

    def _next(self) -> tuple[int, list[str]] | None:
        """The next record that is not blank, or None at the end."""
        while True:
            line = self._reader.line_num + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return None
            except csv.Error as exc:
                msg = f"{self.source}: not readable as CSV at line {line}: {exc}"
                raise CsvImportError(msg) from None
            if not any(c.strip() for c in cells):
                self.blank_lines += 1
                continue
            bad = _BAD_TEXT.search("\x1f".join(cells))
            if bad is not None:
                if bad.group() == "\x00":
                    problem = "contains a NUL character: a binary file, not CSV text"
                else:
                    byte = ord(bad.group()) - 0xDC00
                    problem = f"is not UTF-8 (byte 0x{byte:02x}): save the file as CSV UTF-8"
                raise CsvImportError(f"{self.source}: line {line} {problem}")
            return line, cells

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        while (record := self._next()) is not None:
            yield record

    def close(self) -> None:
        """Lets go of the binary file without closing it."""
        with contextlib.suppress(ValueError):  # already detached
            self._text.detach()


class CsvRows:
    """The data rows of a call list, each checked (GoodRow or RejectedRow), read as needed."""

    def __init__(
        self,
        binary: IO[bytes],
        campaign_id: str,
        mapping: ColumnMapping | None = None,
        source: str = "the file",
        defaults: Defaults | None = None,
    ) -> None:
        check_campaign_id(campaign_id)
        self.campaign_id = campaign_id
        self.mapping = mapping or ColumnMapping()
        self.batch_id = import_batch_id(campaign_id)
        self.defaults = defaults
        self.records = CsvRecords(binary, source)
        try:
            self.columns = resolve_columns(self.records.header, self.mapping, source)
        except CsvImportError:
            self.records.close()
            raise
        self._iter = iter(self.records)

    @property
    def header(self) -> tuple[str, ...]:
        return self.records.header

    def check(self, line: int, cells: Sequence[str]) -> GoodRow | RejectedRow:
        return check_row(self.columns, self.campaign_id, line, cells,
                         self.mapping.default_priority, self.batch_id, self.defaults)  # fmt: skip

    def __iter__(self) -> Iterator[GoodRow | RejectedRow]:
        for line, cells in self._iter:
            yield self.check(line, cells)

    def take(self, count: int) -> list[GoodRow | RejectedRow]:
        """The next ``count`` rows (fewer at the end of the file)."""
        return [self.check(line, cells) for line, cells in itertools.islice(self._iter, count)]

    def close(self) -> None:
        self.records.close()


def check_campaign_id(campaign_id: str) -> None:
    if not campaign_id or len(campaign_id) > MAX_CAMPAIGN_ID:
        raise CsvImportError(f"campaign id must be 1 to {MAX_CAMPAIGN_ID} characters", "campaign")


def count_rows(
    binary: IO[bytes], mapping: ColumnMapping | None = None, source: str = "the file"
) -> int:
    """Reads the whole file once: checks it is UTF-8 CSV with the mapped columns, and counts
    its data rows (blank lines aside). Seeks back to where it started."""
    start = binary.tell()
    try:
        records = CsvRecords(binary, source)
        try:
            resolve_columns(records.header, mapping or ColumnMapping(), source)
            count = sum(1 for _ in records)
        finally:
            records.close()
    finally:
        binary.seek(start)
    return count


# -- importing -------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import did. ``rows`` = ``queued`` + ``duplicates`` + ``rejected``."""

    source: str
    campaign_id: str
    batch_id: str
    header: tuple[str, ...] = ()
    rows: int = 0
    queued: int = 0
    #: Rows whose call existed already: queued by an earlier run, or the same number earlier
    #: in this campaign (nothing queued twice).
    duplicates: int = 0
    #: Of ``duplicates``, those whose number was imported into the campaign with other values
    #: (its variables, priority, ... differ): the earlier call stands, this row was not queued.
    duplicates_differing: int = 0
    rejected_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_KINDS, 0))
    blank_lines: int = 0
    #: The first ``keep_rejected`` rejected rows, in file order.
    rejected_rows: list[RejectedRow] = field(default_factory=list)
    rejected_truncated: bool = False

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_kind.values())


def _outcome_error(row: GoodRow, result: EnqueueResult, columns: Columns) -> RejectedRow | None:
    """The rejection of a valid row that the queue refused, mirroring bulk-queue's answer."""
    phone = [columns.header[columns.phone]]
    if result.state == EnqueueState.DNC:
        error = {"loc": phone, "msg": "is on the do-not-call list", "type": "do_not_call"}
        kind = "dnc"
    elif result.state == EnqueueState.CAMPAIGN_CANCELLED:
        error = {"loc": ["campaign_id"], "msg": "the campaign is cancelled",
                 "type": "campaign_cancelled"}  # fmt: skip
        kind = "campaign_cancelled"
    elif result.state == EnqueueState.CONFLICT and row.custom_id:
        assert columns.call_id is not None
        msg = f"call id {row.spec.call_id!r} was queued before with a different request"
        error = {"loc": [columns.header[columns.call_id]], "msg": msg, "type": "conflict"}
        kind = "conflict"
    else:
        return None
    return RejectedRow(row.line, row.cells, [error], kind, columns.header)


def _open(source: Source) -> tuple[IO[bytes], str, bool]:
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            return path.open("rb"), str(path), True
        except OSError as exc:
            raise CsvImportError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    return source, str(getattr(source, "name", "") or "the file"), False


async def import_csv(
    queue: CallQueue,
    source: Source,
    campaign_id: str,
    mapping: ColumnMapping | None = None,
    *,
    name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    defaults: Defaults | None = None,
    progress: ProgressCallback | None = None,
    on_rejected: Callable[[RejectedRow], None] | None = None,
    keep_rejected: int | None = KEEP_REJECTED,
    precheck: bool = True,
) -> ImportResult:
    """Queues the rows of a CSV call list into ``campaign_id``; see the module's docstring.

    ``source``: a path, or a binary file (read from where it is; not closed). ``name``: the
    file's name in messages. ``defaults``: the campaign's default call_config (read from the
    queue when None). ``progress(done, total)`` is called after each chunk (``total`` None
    when not counted). ``on_rejected`` sees every rejected row; the result keeps the first
    ``keep_rejected`` (None: all). ``precheck``: read the file once first (needs a seekable
    file) so that an unreadable file queues nothing and the total is known.

    Raises CsvImportError (a ValueError) when the file cannot be imported at all.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise CsvImportError(f"batch size must be 1 to {MAX_BATCH_SIZE}", "batch_size")
    check_campaign_id(campaign_id)
    mapping = mapping or ColumnMapping()
    binary, opened_name, owned = _open(source)
    label = name or opened_name
    try:
        total: int | None = None
        if precheck and binary.seekable():
            total = await asyncio.to_thread(count_rows, binary, mapping, label)
        if defaults is None:
            defaults = await CampaignDefaults(queue).get([campaign_id])
        rows = await asyncio.to_thread(CsvRows, binary, campaign_id, mapping, label, defaults)
        try:
            result = ImportResult(label, campaign_id, rows.batch_id, rows.header)

            def reject(row: RejectedRow) -> None:
                result.rejected_by_kind[row.kind] += 1
                if keep_rejected is None or len(result.rejected_rows) < keep_rejected:
                    result.rejected_rows.append(row)
                else:
                    result.rejected_truncated = True
                if on_rejected is not None:
                    on_rejected(row)

            if progress is not None:
                progress(0, total)
            while chunk := await asyncio.to_thread(rows.take, batch_size):
                good = [row for row in chunk if isinstance(row, GoodRow)]
                results = await queue.enqueue_many(
                    [row.spec for row in good], batch_id=rows.batch_id, batch_size=batch_size
                )
                assert len(results) == len(good)
                outcomes = iter(results)  # one per good row, in order
                for row in chunk:  # in file order
                    result.rows += 1
                    if isinstance(row, RejectedRow):
                        reject(row)
                        continue
                    done = next(outcomes)
                    refused = _outcome_error(row, done, rows.columns)
                    if refused is not None:
                        reject(refused)
                    elif done.state == EnqueueState.CREATED:
                        result.queued += 1
                    else:  # exists, or the number's derived id holds another request
                        result.duplicates += 1
                        result.duplicates_differing += done.state == EnqueueState.CONFLICT
                if progress is not None:
                    progress(result.rows, total)
            result.blank_lines = rows.records.blank_lines
            return result
        finally:
            rows.close()
    finally:
        if owned:
            binary.close()
