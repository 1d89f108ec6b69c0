"""The Lua calling-window code (engine/lua/_window.lua) gives the same answers as windows.py.

The file is loaded into the session's server as a small function library of its own, and fed
zone entries from ``zone_offset_entry`` computed at each case's instant, as the engine does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from callqueue.engine.connection import connect
from callqueue.windows import HORIZON_MS, NO_TRANSITION_MS, CallingWindow, zone_offset_entry
from window_cases import ZONES, any_window

LIBRARY = "cqwindowtest"  # the engine's libraries are callqueue_<hash>, its functions cq<hash>_*
NEXT, OFFSET, PARSE = (f"{LIBRARY}_{name}" for name in ("next", "offset", "parse"))

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
#: 2000-01-01 .. 2037-12-31
T_MIN, T_MAX = 946_684_800_000, 2_145_830_400_000


def library_code() -> str:
    source = resources.files("callqueue.engine").joinpath("lua", "_window.lua").read_text()
    return f"""#!lua name={LIBRARY}
{source}
redis.register_function('{NEXT}', function(keys, args)
  local entries = {{}}
  for i = 3, #args do entries[#entries + 1] = args[i] end
  return window_next_open(window_parse(args[1]), entries, tonumber(args[2]))
end)
redis.register_function('{OFFSET}', function(keys, args)
  return zone_offset_at(args[1], tonumber(args[2]))
end)
redis.register_function('{PARSE}', function(keys, args)
  local w = window_parse(args[1])
  return {{w.mask, w.s, w.e}}
end)
"""


@pytest.fixture
async def lua(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url)
    try:
        await client.function_load(library_code(), replace=True)
        yield client
    finally:
        await client.aclose()


def ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def python_next(w: CallingWindow, zones: list[str], t: int) -> int:
    result = w.next_open(zones, EPOCH + timedelta(milliseconds=t))
    return -1 if result is None else ms(result)


async def lua_next(client: Any, w: CallingWindow, zones: list[str], t: int) -> int:
    entries = [zone_offset_entry(zone, t) for zone in zones]
    return int(await client.fcall(NEXT, 0, w.encode(), t, *entries))


# -- hand-picked cases --------------------------------------------------------------------

NY, LA, LONDON = "America/New_York", "America/Los_Angeles", "Europe/London"
LH, KOLKATA = "Australia/Lord_Howe", "Asia/Kolkata"

CASES = [
    # (window, zones, at, expected answer)
    ("trai", [KOLKATA], utc(2024, 6, 3, 3, 0), utc(2024, 6, 3, 3, 30)),
    ("trai", [KOLKATA], utc(2024, 6, 3, 15, 29, 59), utc(2024, 6, 3, 15, 29, 59)),
    ("trai", [KOLKATA], utc(2024, 6, 3, 15, 30), utc(2024, 6, 4, 3, 30)),
    ("mon-sat 09:00-21:00", ["UTC"], utc(2024, 6, 8, 21, 0), utc(2024, 6, 10, 9, 0)),
    ("fri-mon 22:00-02:00", ["UTC"], utc(2024, 6, 8, 1, 59), utc(2024, 6, 8, 1, 59)),
    ("fri-mon 22:00-02:00", ["UTC"], utc(2024, 6, 8, 2, 0), utc(2024, 6, 8, 22, 0)),
    ("fri-mon 22:00-02:00", ["UTC"], utc(2024, 6, 11, 3, 0), utc(2024, 6, 14, 22, 0)),
    ("sat 22:00-00:00", ["UTC"], utc(2024, 6, 9, 0, 0), utc(2024, 6, 15, 22, 0)),
    ("sat 09:00-24:00", ["UTC"], utc(2024, 6, 9, 0, 0), utc(2024, 6, 15, 9, 0)),
    ("tcpa", [NY, LA], utc(2024, 1, 10, 13, 0), utc(2024, 1, 10, 16, 0)),
    ("tcpa", [NY, LA], utc(2024, 1, 11, 2, 0), utc(2024, 1, 11, 16, 0)),
    ("tcpa", [NY, LA], utc(2024, 7, 10, 13, 0), utc(2024, 7, 10, 15, 0)),
    ("daily 09:00-15:00", ["Etc/GMT-6", "Etc/GMT+6"], utc(2024, 1, 10), None),
    ("daily 09:00-15:00", ["Asia/Tokyo", "America/Chicago"], utc(2024, 1, 10), None),
    # New York, 2024-03-10 02:00 EST -> 03:00 EDT at 07:00 UTC
    ("tcpa", [NY], utc(2024, 3, 10, 2, 0), utc(2024, 3, 10, 12, 0)),
    ("tcpa", [NY], utc(2024, 3, 9, 3, 0), utc(2024, 3, 9, 13, 0)),
    ("daily 02:30-04:00", [NY], utc(2024, 3, 10, 6, 0), utc(2024, 3, 10, 7, 0)),
    ("daily 02:30-04:00", [NY], utc(2024, 3, 10, 7, 0), utc(2024, 3, 10, 7, 0)),
    ("daily 02:30-04:00", [NY], utc(2024, 3, 10, 8, 0), utc(2024, 3, 11, 6, 30)),
    ("sun 02:00-02:59", [NY], utc(2024, 3, 10, 6, 0), utc(2024, 3, 17, 6, 0)),
    ("sun 01:00-02:30", [NY], utc(2024, 3, 10, 7, 0), utc(2024, 3, 17, 5, 0)),
    ("sat 22:00-02:30", [NY], utc(2024, 3, 10, 6, 59), utc(2024, 3, 10, 6, 59)),
    ("sat 22:00-02:30", [NY], utc(2024, 3, 10, 7, 0), utc(2024, 3, 17, 2, 0)),
    # New York, 2024-11-03 02:00 EDT -> 01:00 EST at 06:00 UTC
    ("tcpa", [NY], utc(2024, 11, 3, 1, 0), utc(2024, 11, 3, 13, 0)),
    ("daily 01:30-01:45", [NY], utc(2024, 11, 3, 5, 0), utc(2024, 11, 3, 5, 30)),
    ("daily 01:30-01:45", [NY], utc(2024, 11, 3, 5, 50), utc(2024, 11, 3, 6, 30)),
    ("daily 01:00-01:20", [NY], utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 6, 0)),
    ("daily 01:00-01:20", [NY], utc(2024, 11, 3, 6, 20), utc(2024, 11, 4, 6, 0)),
    # London, 2024-03-31 01:00 GMT -> 02:00 BST and 2024-10-27 02:00 BST -> 01:00 GMT
    ("sun 01:30-03:00", [LONDON], utc(2024, 3, 31, 0, 0), utc(2024, 3, 31, 1, 0)),
    ("daily 01:00-02:00", [LONDON], utc(2024, 10, 26, 23, 0), utc(2024, 10, 27, 0, 0)),
    ("daily 01:00-02:00", [LONDON], utc(2024, 10, 27, 1, 30), utc(2024, 10, 27, 1, 30)),
    ("daily 01:00-02:00", [LONDON], utc(2024, 10, 27, 2, 0), utc(2024, 10, 28, 1, 0)),
    # Lord Howe, 30-minute changes
    ("daily 02:00-03:00", [LH], utc(2024, 10, 5, 15), utc(2024, 10, 5, 15, 30)),
    ("daily 01:45-01:50", [LH], utc(2024, 4, 6, 14, 50), utc(2024, 4, 6, 15, 15)),
    ("daily 09:00-21:00", [KOLKATA, LH], utc(2024, 1, 10), utc(2024, 1, 10, 3, 30)),
    # Changes at local midnight: Santiago 2024-09-08 00:00 -> 01:00 (04:00 UTC), Havana
    # 2024-03-10 00:00 -> 01:00 (05:00 UTC)
    ("sat 20:00-24:00", ["America/Santiago"], utc(2024, 9, 8, 3, 59), utc(2024, 9, 8, 3, 59)),
    ("sat 20:00-00:30", ["America/Santiago"], utc(2024, 9, 8, 4, 0), utc(2024, 9, 14, 23, 0)),
    ("sun 00:00-02:00", ["America/Santiago"], utc(2024, 9, 8, 3, 0), utc(2024, 9, 8, 4, 0)),
    ("sun 00:00-02:00", ["America/Havana"], utc(2024, 3, 10, 4, 0), utc(2024, 3, 10, 5, 0)),
]


@pytest.mark.parametrize(("text", "zones", "at", "expected"), CASES)
async def test_hand_picked_cases(
    lua: Any, text: str, zones: list[str], at: datetime, expected: datetime | None
) -> None:
    w = CallingWindow.parse(text)
    assert w.next_open(zones, at) == expected
    want = -1 if expected is None else ms(expected)
    assert await lua_next(lua, w, zones, ms(at)) == want


async def test_parse_offsets_and_errors(lua: Any) -> None:
    assert await lua.fcall(PARSE, 0, "63|540|1260") == [63, 540 * 60_000, 1260 * 60_000]
    entry = zone_offset_entry(NY, ms(utc(2024, 1, 15)))
    change = ms(utc(2024, 3, 10, 7))
    assert await lua.fcall(OFFSET, 0, entry, change - 1) == -300
    assert await lua.fcall(OFFSET, 0, entry, change) == -240
    for bad in ("", "0|540|600", "128|540|600", "1|540|540", "1|1440|60", "1|0|1441", "x|1|2"):
        with pytest.raises(ResponseError, match="CQ_BAD_WINDOW"):
            await lua.fcall(PARSE, 0, bad)
    with pytest.raises(ResponseError, match="CQ_BAD_WINDOW no zone entries"):
        await lua.fcall(NEXT, 0, "127|480|1260", 0)
    with pytest.raises(ResponseError, match="CQ_BAD_WINDOW zone offset entry"):
        await lua.fcall(NEXT, 0, "127|480|1260", 0, "-300|oops|-240")


# -- random cases -------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[CallingWindow, list[str], int]:
    """A window, 1-3 zones and an instant: anywhere, or near one of the zones' changes."""
    zones = draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True))
    t = draw(st.integers(T_MIN, T_MAX))
    if draw(st.booleans()):
        tr = int(zone_offset_entry(draw(st.sampled_from(zones)), t).split("|")[1])
        if tr != NO_TRANSITION_MS:
            near = st.integers(-120, 120).map(lambda m: m * 60_000)
            t = tr + draw(st.one_of(st.integers(-2 * DAY_MS, DAY_MS), near))
    return draw(any_window()), zones, t


def one_change_in_horizon(zones: list[str], t: int) -> bool:
    """Whether every zone changes offset at most once in the 8 days after t (+1 day of slack):
    an entry knows only one change, which is the engine's contract (entries refreshed daily)."""
    end = t + HORIZON_MS + DAY_MS
    for zone in zones:
        tr = int(zone_offset_entry(zone, t).split("|")[1])
        if tr <= end and int(zone_offset_entry(zone, tr).split("|")[1]) <= end:
            return False
    return True


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
async def test_lua_agrees_with_python(lua: Any, case: tuple[CallingWindow, list[str], int]) -> None:
    w, zones, t = case
    assume(one_change_in_horizon(zones, t))
    expected = python_next(w, zones, t)
    assert await lua_next(lua, w, zones, t) == expected
    assert (expected == t) == w.is_open(zones, EPOCH + timedelta(milliseconds=t))
