"""`callqueue import FILE.csv --campaign ID` as a process, against the session's server."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

from e2e_support import clean_env, read_batch, read_snapshot

from callqueue.csv_import import import_call_id
from callqueue.engine.connection import connect
from callqueue.engine.queue import CallQueue
from callqueue.models import CallRecord

CSV = (
    "Phone,name,priority\n"
    "+91 91234-56789,John,high\n"  # line 2
    "12345,Bad Number,\n"  # line 3
    "+919123456780,Jane,\n"  # line 4
    "+919123456781,Bad Priority,soon\n"  # line 5
    "+919123456782,Ravi,low\n"  # line 6
)


def run_import(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callqueue.cli", "import", *args], env=env, cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def read_record(redis_url: str, queue_name: str, call_id: str) -> CallRecord | None:
    async def go() -> CallRecord | None:
        client = connect(redis_url)
        try:
            return await CallQueue(client, queue_name).get(call_id)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_import_with_bad_rows_then_again(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=unique_name, LOG_LEVEL="WARNING")
    path = tmp_path / "contacts.csv"
    path.write_text(CSV)
    report = tmp_path / "contacts.rejected.csv"

    done = run_import([str(path), "--campaign", "spring"], env, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "import of" in output and "queued" in output and "rejected rows written to" in output
    assert "line 3: Phone: " in output and "line 5: priority: " in output
    snap = read_snapshot(redis_url, unique_name)
    assert snap.enqueued == 3 and snap.queued == 3
    record = read_record(redis_url, unique_name, import_call_id("spring", "+919123456789"))
    assert record is not None
    assert record.spec.campaign_id == "spring"
    assert record.spec.config["variables"] == {"name": "John"}
    assert record.spec.priority == "high"

    with report.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Phone", "name", "priority", "line", "errors"]
    assert [r[:4] for r in rows[1:]] == [
        ["12345", "Bad Number", "", "3"],
        ["+919123456781", "Bad Priority", "soon", "5"],
    ]
    assert rows[1][4].startswith("Phone: must be an international number")
    assert rows[2][4] == "priority: Input should be 'urgent', 'high', 'normal' or 'low'"

    # Again, rows moved: nothing queued twice; the same rows are rejected.
    lines = CSV.splitlines()
    path.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    again = run_import([str(path), "--campaign", "spring"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert read_snapshot(redis_url, unique_name).enqueued == 3
    with report.open(newline="") as f:
        moved_rows = [(r[0], r[3]) for r in list(csv.reader(f))[1:]]
    assert moved_rows == [("+919123456781", "3"), ("12345", "5")]  # at their new lines
    summary = again.stdout
    assert "duplicates (queued before)" in summary

    # The bad rows fixed, alone: exit 0, and no report is left.
    path.write_text("phone,name\n+919123456783,Fixed\n+919123456789,John\n")
    fixed = run_import([str(path), "--campaign", "spring", "--priority", "URGENT"], env, tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert not report.exists()
    snap = read_snapshot(redis_url, unique_name)
    assert snap.enqueued == 4 and snap.queued_by_priority["urgent"] == 1
    batch = read_batch(redis_url, unique_name, "import-spring")
    assert batch is not None and batch.total == 4


def test_mapping_options(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=unique_name, LOG_LEVEL="WARNING")
    path = tmp_path / "list.csv"
    path.write_text("ref,tel,Full Name,city\nr-1,+919123456789,Ann,Pune\n")
    args = [str(path), "--campaign", "c", "--phone-column", "tel", "--id-column", "ref",
            "--var", "Full Name=name", "--batch-size", "1"]  # fmt: skip
    done = run_import(args, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    record = read_record(redis_url, unique_name, "r-1")
    assert record is not None and record.spec.config["variables"] == {"name": "Ann"}


def test_files_that_cannot_be_imported(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=unique_name, LOG_LEVEL="WARNING")
    no_phone = tmp_path / "no_phone.csv"
    no_phone.write_text("name\nJohn\n")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("phone,name\n+919123456789,A\n+919123456780,Jos\xe9\n".encode("latin-1"))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    for path, problem in (
        (no_phone, "no phone number column"),
        (latin, "line 3 is not UTF-8"),
        (empty, "is empty"),
    ):
        done = run_import([str(path), "--campaign", "c"], env, tmp_path)
        assert done.returncode == 2, done.stdout + done.stderr
        assert path.name in done.stderr and problem in done.stderr, done.stderr
        assert not (tmp_path / f"{path.stem}.rejected.csv").exists()
    missing = run_import([str(tmp_path / "nope.csv"), "--campaign", "c"], env, tmp_path)
    assert missing.returncode == 2
    no_campaign = run_import([str(latin)], env, tmp_path)
    assert no_campaign.returncode == 2 and "--campaign" in no_campaign.stderr
    bad_var = run_import([str(latin), "--campaign", "c", "--var", "=x"], env, tmp_path)
    assert bad_var.returncode == 2 and "COL=NAME" in bad_var.stderr
    assert read_snapshot(redis_url, unique_name).enqueued == 0


def test_dnc_from_a_file(redis_url: str, unique_name: str, tmp_path: Path) -> None:
    env = clean_env(REDIS_URL=redis_url, QUEUE_NAME=unique_name, LOG_LEVEL="WARNING")
    numbers = tmp_path / "dnc.csv"
    numbers.write_text(
        "number,reason\n+91 91234-56789,asked\n# a comment\n\n+919123456780,x\nnope,y\n"
    )

    def dnc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "callqueue.cli", "dnc", *args], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = dnc(str(numbers))
    assert added.returncode == 1, added.stdout + added.stderr  # one unreadable number
    assert "2 of 2 numbers added" in added.stdout and "line 6: nope" in added.stderr

    async def listed() -> list[bool]:
        client = connect(redis_url)
        try:
            return await CallQueue(client, unique_name).dnc_contains(
                ["+919123456789", "+919123456780"]
            )
        finally:
            await client.aclose()

    assert asyncio.run(listed()) == [True, True]
    numbers.write_text("+919123456780\n")
    removed = dnc(str(numbers), "--remove")
    assert removed.returncode == 0 and "1 of 1 numbers taken off" in removed.stdout
    assert asyncio.run(listed()) == [True, False]
