"""callqueue.csv_import without a server: the column mapping, and rows checked as the API would."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from callqueue.csv_import import (
    ColumnMapping,
    CsvImportError,
    CsvRows,
    GoodRow,
    RejectedRow,
    count_rows,
    format_errors,
    import_call_id,
    row_request,
)
from callqueue.models import Priority
from callqueue.schemas.specs import body_hash


def rows_of(text: str | bytes, mapping: ColumnMapping | None = None) -> list[Any]:
    data = text.encode() if isinstance(text, str) else text
    rows = CsvRows(io.BytesIO(data), "camp-1", mapping, "calls.csv")
    try:
        return list(rows)
    finally:
        rows.close()


def good(row: Any) -> GoodRow:
    assert isinstance(row, GoodRow), row
    return row


def bad(row: Any) -> RejectedRow:
    assert isinstance(row, RejectedRow), row
    return row


def test_good_rows_become_calls_of_the_campaign() -> None:
    when = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    rows = rows_of(
        "phone_number,name,email,priority,max_retries,timezone,scheduled_at\n"
        f"+91 91234-56789,John Doe,john@example.com,High,2,Asia/Kolkata,{when.isoformat()}\n"
        "00919123456780,Jane,,,,,\n"
    )
    first, second = good(rows[0]), good(rows[1])
    assert first.line == 2 and second.line == 3
    spec = first.spec
    assert spec.phone_number == "+919123456789"  # E.164, as the API normalises it
    assert spec.campaign_id == "camp-1"
    assert spec.priority == Priority.HIGH
    assert spec.max_retries == 2
    assert spec.time_zones == ("Asia/Kolkata",)
    assert spec.scheduled_at_ms == int(when.timestamp()) * 1000
    assert spec.batch_id == "import-camp-1"
    assert spec.config["variables"] == {"name": "John Doe", "email": "john@example.com"}
    # Empty cells are absent values: no email variable, default priority and retries.
    spec2 = second.spec
    assert spec2.phone_number == "+919123456780"
    assert spec2.config["variables"] == {"name": "Jane"}
    assert spec2.priority == Priority.NORMAL and spec2.max_retries is None
    assert spec2.scheduled_at_ms is None


def test_derived_call_id_depends_on_campaign_and_number_only() -> None:
    rows = rows_of("phone,name\n+919123456789,A\n+91 9123456789,B\n+919123456780,A\n")
    a, b, c = (good(r).spec for r in rows)
    expected = "imp-" + hashlib.sha256(b"camp-1\n+919123456789").hexdigest()[:24]
    assert a.call_id == b.call_id == import_call_id("camp-1", "+919123456789") == expected
    assert c.call_id != a.call_id
    assert import_call_id("camp-2", "+919123456789") != a.call_id
    assert a.body_hash != b.body_hash  # other variables: the queue sees a differing duplicate


def test_the_row_hash_is_the_single_call_apis() -> None:
    """A row and the same call posted to /api/calls/queue are the same request."""
    [row] = rows_of("phone,name\n+919123456789,A\n")
    from callqueue.schemas.calls import QueueCallRequest
    from callqueue.schemas.specs import canonical

    request = QueueCallRequest.model_validate(
        {"phone_number": "+919123456789", "campaign_id": "camp-1",
         "call_config": {"variables": {"name": "A"}}}
    )  # fmt: skip
    assert good(row).spec.body_hash == body_hash(canonical(request))


def test_bad_rows_name_their_columns() -> None:
    rows = rows_of(
        "Mobile,Priority,TimeZone,max_retries,name\n"
        "12345,urgent,,,a\n"
        "+919123456789,bogus,,,b\n"
        "+919123456789,,Mars/Olympus,,c\n"
        "+919123456789,,,lots,d\n"
        ",,,,e\n"
        "+919123456789,,,11,f\n"
    )
    assert [r.line for r in rows] == [2, 3, 4, 5, 6, 7]
    phone, priority, zone, retries, missing, too_many = (bad(r) for r in rows)
    assert [e["loc"] for e in phone.errors] == [["Mobile"]]
    assert "international number" in phone.errors[0]["msg"]
    assert priority.errors == [
        {"loc": ["Priority"], "msg": "Input should be 'urgent', 'high', 'normal' or 'low'",
         "type": "enum"}
    ]  # fmt: skip
    assert zone.errors[0]["loc"] == ["TimeZone"] and "IANA" in zone.errors[0]["msg"]
    assert retries.errors[0]["loc"] == ["max_retries"]
    assert retries.errors[0]["type"] == "int_type"
    assert missing.errors == [{"loc": ["Mobile"], "msg": "Field required", "type": "missing"}]
    assert too_many.errors[0]["type"] == "less_than_equal"
    assert phone.cells == ("12345", "urgent", "", "", "a")
    assert phone.as_dict()["name"] == "a"
    assert phone.kind == "invalid"
    assert format_errors(zone.errors).startswith("TimeZone: ")


def test_id_column_and_its_errors() -> None:
    rows = rows_of("custom_call_id,phone\nmine-1,+919123456789\nbad id,+919123456789\n,+9198\n")
    assert good(rows[0]).spec.call_id == "mine-1" and good(rows[0]).custom_id
    assert bad(rows[1]).errors[0]["loc"] == ["custom_call_id"]
    # An empty id cell: the id is derived; the bad phone is what is wrong with that row.
    assert [e["loc"] for e in bad(rows[2]).errors] == [["phone"]]
    # A plain `id` column is a variable unless named as the id column.
    [row] = rows_of("id,phone\n42,+919123456789\n")
    assert good(row).spec.config["variables"] == {"id": "42"}
    assert good(row).spec.call_id.startswith("imp-")
    [row] = rows_of("id,phone\n42,+919123456789\n", ColumnMapping(id_column="id"))
    assert good(row).spec.call_id == "42" and "variables" not in good(row).spec.config


@pytest.mark.parametrize(
    "header", ["phone_number", "Phone", "NUMBER", "mobile", "Phone Number", " phone-number "]
)
def test_header_variants_of_the_phone_column(header: str) -> None:
    [row] = rows_of(f"{header},name\n+919123456789,A\n")
    assert good(row).spec.phone_number == "+919123456789"
    assert good(row).spec.config["variables"] == {"name": "A"}


def test_explicit_phone_column_and_renamed_variables() -> None:
    text = "Contact,Full Name,City,Notes\n+919123456789,John,Pune,x\n"
    mapping = ColumnMapping.of(phone_column="contact", var=["Full Name=name", "City"])
    [row] = rows_of(text, mapping)
    assert good(row).spec.config["variables"] == {"name": "John", "City": "Pune"}
    # With every column as well: the listed ones renamed, the others by their header.
    mapping = ColumnMapping.of(phone_column="Contact", var=["Full Name=name"],
                               all_columns_as_variables=True)  # fmt: skip
    [row] = rows_of(text, mapping)
    assert good(row).spec.config["variables"] == {"name": "John", "City": "Pune", "Notes": "x"}
    mapping = ColumnMapping.of(phone_column="Contact", all_columns_as_variables=False)
    [row] = rows_of(text, mapping)
    assert "variables" not in good(row).spec.config


def test_variables_are_strings_as_read_and_cells_are_trimmed() -> None:
    [row] = rows_of('phone,age,score,flag\n +919123456789 , 42 ,"3.50",true\n')
    assert good(row).spec.config["variables"] == {"age": "42", "score": "3.50", "flag": "true"}


def test_default_priority_for_rows_without_one() -> None:
    mapping = ColumnMapping(default_priority=Priority.LOW)
    rows = rows_of("phone,priority\n+919123456789,\n+919123456780,urgent\n", mapping)
    assert [good(r).spec.priority for r in rows] == [Priority.LOW, Priority.URGENT]
    [row] = rows_of("phone\n+919123456789\n", mapping)
    assert good(row).spec.priority == Priority.LOW


def test_row_request_is_the_api_body() -> None:
    rows = CsvRows(io.BytesIO(b"phone,priority,max_retries,x\n"), "c")
    body = row_request(rows.columns, "c", ["+919123456789", "HIGH", "3", ""])
    assert body == {"campaign_id": "c", "phone_number": "+919123456789", "priority": "high",
                    "max_retries": 3}  # fmt: skip


def test_blank_lines_ragged_rows_quotes_and_line_numbers() -> None:
    text = (
        "phone,name\r\n"
        "\r\n"
        '+919123456789,"two\nlines"\r\n'
        ",\r\n"
        "+919123456780\r\n"  # fewer cells: the missing ones are empty
        "+919123456781,a,,\r\n"  # empty extra cells are ignored
        "+919123456782,a,surplus\r\n"
        "+919123456783,b\r\n"
    )
    data = text.encode()
    rows = CsvRows(io.BytesIO(data), "camp-1")
    checked = list(rows)
    assert [r.line for r in checked] == [3, 6, 7, 8, 9]
    assert good(checked[0]).spec.config["variables"] == {"name": "two\nlines"}
    assert "variables" not in good(checked[1]).spec.config
    assert bad(checked[3]).errors[0]["type"] == "too_many_cells"
    assert rows.records.blank_lines == 2
    assert count_rows(io.BytesIO(data)) == 5


def test_semicolons_and_a_bom() -> None:
    [row] = rows_of("\ufeffphone;name\n+919123456789;Ana\n".encode())
    assert good(row).spec.config["variables"] == {"name": "Ana"}


def test_missing_phone_column() -> None:
    with pytest.raises(CsvImportError, match=r"calls\.csv: no phone number column") as exc:
        rows_of("name,email\nJohn,j@example.com\n")
    assert "'name', 'email'" in str(exc.value) and exc.value.option == "phone_column"
    with pytest.raises(CsvImportError, match=r"no column 'tel' \(phone_column\)") as exc:
        rows_of("phone\n+919123456789\n", ColumnMapping(phone_column="tel"))
    with pytest.raises(CsvImportError, match=r"no column 'nope' \(var\)") as exc:
        rows_of("phone\n+919123456789\n", ColumnMapping.of(var=["nope=x"]))
    assert exc.value.option == "var"


@pytest.mark.parametrize("data", [b"", b"\n\n\r\n", b"\xef\xbb\xbf"])
def test_empty_file(data: bytes) -> None:
    with pytest.raises(CsvImportError, match=r"calls\.csv is empty"):
        rows_of(data)


def test_not_utf8() -> None:
    data = "phone,name\n+919123456789,José\n+919123456780,Zoë\n".encode("latin-1")
    with pytest.raises(CsvImportError, match=r"calls\.csv: line 2 is not UTF-8 \(byte 0xe9\)"):
        rows_of(data)
    with pytest.raises(CsvImportError, match="line 2 is not UTF-8"):
        count_rows(io.BytesIO(data), source="calls.csv")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("phone,name\n".encode("utf-16"), "UTF-16"),
        (b"PK\x03\x04\x14\x00\x06\x00", "zip archive"),
        (b"phone\n+919123456789\x00\x01\x02\n", "NUL"),
    ],
)
def test_not_csv(data: bytes, problem: str) -> None:
    with pytest.raises(CsvImportError, match=problem) as exc:
        rows_of(data)
    assert "calls.csv" in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_the_binary_file_is_left_open(tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    path.write_bytes(b"phone\n+919123456789\n")
    with path.open("rb") as binary:
        assert count_rows(binary) == 1
        assert binary.tell() == 0
        rows = CsvRows(binary, "c")
        assert len(list(rows)) == 1
        rows.close()
        assert not binary.closed
    with path.open("rb") as binary:
        with pytest.raises(CsvImportError):
            CsvRows(binary, "c", ColumnMapping(phone_column="nope"))
        assert not binary.closed


def test_bad_var_option_and_campaign_id() -> None:
    with pytest.raises(CsvImportError, match="COL or COL=NAME"):
        ColumnMapping.variable("=x")
    assert ColumnMapping.variable("Full Name = name") == ("Full Name", "name")
    with pytest.raises(CsvImportError, match="campaign id") as exc:
        CsvRows(io.BytesIO(b"phone\n"), "x" * 129)
    assert exc.value.option == "campaign"
