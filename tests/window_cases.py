"""Shared by the window tests of both sides (Python and Lua): time zones with awkward rules
(half-hour DST, no DST, odd offsets) and random windows."""

from __future__ import annotations

from hypothesis import strategies as st

from callqueue.windows import CallingWindow

ZONES = (
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Europe/Berlin",
    "Europe/Dublin",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "America/Santiago",
    "America/Havana",
    "America/St_Johns",
    "America/Sao_Paulo",
    "Asia/Beirut",
    "Asia/Tehran",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "Pacific/Kiritimati",
    "Etc/GMT+6",
)


@st.composite
def any_window(draw: st.DrawFn) -> CallingWindow:
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    marks = st.sampled_from([0, 60, 90, 120, 150, 180, 210, 480, 540, 1260, 1320, 1380, 1410])
    start = draw(st.one_of(st.integers(0, 1439), marks))
    end = draw(st.one_of(st.integers(0, 1440), marks, st.just(1440)).filter(lambda e: e != start))
    return CallingWindow(days, start, end)
