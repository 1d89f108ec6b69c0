"""Calling windows: call people only at lawful local hours.

A :class:`CallingWindow` is a set of weekdays and a span of local hours, e.g. Monday–Saturday
09:00–21:00, judged on the *callee's* wall clock. A callee may map to several IANA zones (a
number prefix can span zones); a call may then be placed only while the window is open in all
of them. Presets: ``tcpa`` (every day 08:00–21:00, US TCPA) and ``trai`` (every day 09:00–21:00,
India TRAI).

Semantics (shared, exactly, by the Lua twin in ``engine/lua/_window.lua``):

* **Wall clock.** A zone is open at an instant when its local clock at that instant (zoneinfo's
  UTC→local conversion, which is never ambiguous) shows a listed weekday and a time in
  ``[start, end)``: the start minute is open, the end minute is closed. For a window that
  crosses midnight (``start > end``, e.g. 22:00–02:00) the weekday is the day the opening
  *starts*: ``fri 22:00-02:00`` is open Friday 22:00 to Saturday 02:00.
* **DST gaps.** A local time the clock skips never happens. When the clock jumps forward *into*
  the window (a 02:30 start in a 02:00→03:00 gap), the window opens at the jump itself (the
  clock shows 03:00, inside the window); a window that lies wholly in the gap does not open
  that day. An end in a gap closes the window at the jump. (zoneinfo's ``fold=0`` reading of
  a gap time, "02:30 with the old offset", would open it at 03:30 new time, half an hour
  later than the wall clock allows; it is deliberately not used for gaps.)
* **DST overlaps.** A start in a repeated hour opens at its first occurrence (zoneinfo's
  ``fold=0``). When the clock is set back to before the start, the window closes and opens
  again at the start's second occurrence; when it is set back into the window, it reopens at
  the jump. Either way: open exactly when the wall clock says so.
* :meth:`CallingWindow.next_open` answers the exact instant: ``at`` itself when open, else the
  earliest later instant at which every zone is open: an opening minute in some zone, or a
  zone's DST change. It looks at most 8 days ahead (:data:`HORIZON_MS`) and answers ``None``
  when nothing opens by then (zones whose windows never overlap, e.g. 12 hours apart with
  6-hour windows; a weekly window in one zone always opens within 8 days).

The Lua side has no tz database: for each zone it gets a :func:`zone_offset_entry`
``"<offset before>|<transition ms>|<offset after>"`` (its UTC offset now and its next change).
An entry knows only one change, so entries must be refreshed at least daily (a second change
within the 8-day horizon of a claim is then ignored: no zone changes offset twice in 8 days).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "HORIZON_MS",
    "NO_TRANSITION_MS",
    "PRESETS",
    "CallingWindow",
    "zone_offset_entry",
    "zones_for_number",
]

#: How far :meth:`CallingWindow.next_open` (and the Lua twin) looks ahead.
HORIZON_MS = 8 * 86_400_000
#: The transition of a :func:`zone_offset_entry` for a zone with no change in sight (year 10000).
NO_TRANSITION_MS = 253_402_300_800_000
#: How far :func:`zone_offset_entry` looks for a zone's next offset change.
ENTRY_SEARCH_DAYS = 400

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_INDEX = {name: i for i, name in enumerate(_DAY_NAMES)}
_EXAMPLES = (
    "expected e.g. 'mon-sat 09:00-21:00', 'mon,wed,fri 10:00-18:30', 'daily 08:00-21:00', "
    "'fri-mon 22:00-02:00' or a preset (tcpa, trai)"
)
_TEXT_RE = re.compile(
    r"^\s*(?P<days>[a-z][a-z,\-\s]*?)\s+(?P<start>\S+?)\s*-\s*(?P<end>\S+)\s*$", re.IGNORECASE
)
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")

_US = timedelta(microseconds=1)
_MIN_US = 60_000_000
_DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
#: Offset changes are looked for in steps of this many seconds, then pinned down by bisection.
#: (Two changes that cancel out within one step would go unseen; the tz database has none.)
_STEP_S = 6 * 3600
#: Last second zoneinfo can convert with a day to spare (datetime stops at year 9999).
_MAX_S = 253_402_300_799 - 86_400


@dataclass(frozen=True, slots=True)
class CallingWindow:
    """Weekdays and local hours at which calls may be placed.

    ``days``: 0 = Monday … 6 = Sunday, the local day on which an opening *starts*.
    ``start_min``/``end_min``: minutes after local midnight (start 0..1439, end 0..1440). A
    start after the end crosses midnight: 22:00–02:00 opens at 22:00 on a listed day and
    closes at 02:00 the next day. See the module docstring for DST behaviour.
    """

    days: frozenset[int]
    start_min: int
    end_min: int

    def __post_init__(self) -> None:
        days = self.days
        if not isinstance(days, frozenset):
            if isinstance(days, str) or not isinstance(days, Iterable):
                raise ValueError(f"days must be a set of weekday numbers 0..6, got {days!r}")
            days = frozenset(days)
            object.__setattr__(self, "days", days)
        if not days:
            raise ValueError("days is empty: a calling window needs at least one weekday")
        for day in days:
            if not _is_int(day) or not 0 <= day <= 6:
                raise ValueError(
                    f"days must be weekday numbers 0 (Monday)..6 (Sunday), got {day!r}"
                )
        if not _is_int(self.start_min) or not 0 <= self.start_min <= 1439:
            raise ValueError(
                f"start_min must be 0..1439 minutes after local midnight (00:00-23:59), "
                f"got {self.start_min!r}"
            )
        if not _is_int(self.end_min) or not 0 <= self.end_min <= 1440:
            raise ValueError(
                f"end_min must be 0..1440 minutes after local midnight (00:00-24:00), "
                f"got {self.end_min!r}"
            )
        if self.start_min == self.end_min:
            raise ValueError(
                f"start_min and end_min are both {self.start_min}: that window is empty "
                "(for a whole day use 00:00-24:00)"
            )

    # -- text forms -----------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> CallingWindow:
        """A window from text: a preset (``tcpa``, ``trai``) or ``"<days> <HH:MM>-<HH:MM>"``.

        Days: ``daily``, names (``mon``..``sun``), comma lists and ranges, which may wrap
        (``fri-mon`` = fri, sat, sun, mon). Times: ``HH:MM``, end up to ``24:00``; an end before
        the start crosses midnight. Raises ``ValueError`` saying what is wrong.
        """
        if not isinstance(text, str):
            raise ValueError(f"calling window must be text, got {type(text).__name__}; {_EXAMPLES}")
        preset = PRESETS.get(text.strip().lower())
        if preset is not None:
            return preset
        match = _TEXT_RE.match(text)
        if match is None:
            raise ValueError(
                f"bad calling window {text!r}: expected '<days> <start>-<end>'; {_EXAMPLES}"
            )
        days = _parse_days(text, match["days"])
        start = _parse_time(text, match["start"], "start")
        end = _parse_time(text, match["end"], "end")
        if start == 1440:
            raise ValueError(f"bad calling window {text!r}: the start must be before 24:00")
        if start == end:
            raise ValueError(
                f"bad calling window {text!r}: start and end are equal, so it is never open "
                f"(for a whole day use 00:00-24:00); {_EXAMPLES}"
            )
        return cls(days, start, end)

    def to_text(self) -> str:
        """Canonical text, which :meth:`parse` reads back to an equal window."""
        return f"{_days_text(self.days)} {_time_text(self.start_min)}-{_time_text(self.end_min)}"

    def encode(self) -> str:
        """The compact form the Lua side reads: ``"<mask>|<start_min>|<end_min>"`` (bit d of
        mask set for weekday d, Monday = bit 0)."""
        return f"{self.mask}|{self.start_min}|{self.end_min}"

    @classmethod
    def decode(cls, encoded: str) -> CallingWindow:
        """The window :meth:`encode` gave ``encoded``."""
        parts = encoded.split("|")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"bad encoded calling window {encoded!r}: expected e.g. '63|540|1260'")
        mask, start, end = (int(p) for p in parts)
        if not 1 <= mask <= 127:
            raise ValueError(f"bad encoded calling window {encoded!r}: mask must be 1..127")
        return cls(frozenset(d for d in range(7) if mask >> d & 1), start, end)

    @property
    def mask(self) -> int:
        """The weekdays as a 7-bit mask, Monday = bit 0."""
        return sum(1 << d for d in self.days)

    @property
    def crosses_midnight(self) -> bool:
        return self.start_min > self.end_min

    # -- evaluation -----------------------------------------------------------------------

    def is_open(self, zones: Sequence[str], at: datetime) -> bool:
        """Whether the window is open at ``at`` (aware) on the wall clock of every zone."""
        loaded = _load_zones(zones)
        _check_aware(at)
        mask, start, end = self.mask, self.start_min * _MIN_US, self.end_min * _MIN_US
        for zone in loaded:
            local = at.astimezone(zone).replace(tzinfo=None)
            if not _open_local(mask, start, end, (local - _EPOCH_NAIVE) // _US):
                return False
        return True

    def next_open(self, zones: Sequence[str], at: datetime) -> datetime | None:
        """``at`` if open now in every zone, else the earliest later instant open in every zone
        (in ``at``'s time zone), or ``None`` if there is none within 8 days."""
        loaded = _load_zones(zones)
        _check_aware(at)
        t = (at - _EPOCH) // _US
        limit = t + HORIZON_MS * 1000
        mask, start, end = self.mask, self.start_min * _MIN_US, self.end_min * _MIN_US
        pieces = [_Piece(zone, t, limit) for zone in loaded]
        # The same loop as window_next_open in _window.lua: every zone is closed from c up to
        # its own next opening, so the common opening is at or after the latest of them.
        c = t
        while True:
            best = c
            for piece in pieces:
                u = piece.next_open(mask, start, end, c)
                if u > best:
                    best = u
            if best > limit:
                return None
            if best == c:
                return at if c == t else _from_us(c, at.tzinfo)
            if len(pieces) == 1:
                return _from_us(best, at.tzinfo)
            c = best


# -- zones --------------------------------------------------------------------------------


def zone_offset_entry(zone: str, now_ms: int) -> str:
    """What the Lua side needs to know ``zone``'s UTC offset around ``now_ms``:
    ``"<offset_min_before>|<transition_ms>|<offset_min_after>"``.

    The offset (minutes east of UTC) at ``now_ms``, the instant (epoch ms, a whole second) of
    the zone's next offset change after ``now_ms`` within 400 days, and the offset after it;
    with no change in sight, the transition is :data:`NO_TRANSITION_MS` and the offsets are
    equal. An entry is good until its transition passes and knows no later change: refresh
    entries at least daily. (Offsets that are not whole minutes, only local mean times before
    ~1900, are rounded down.)
    """
    loaded = _load_zone(zone)
    now_s = now_ms // 1000
    before = _offset(loaded, now_s) // timedelta(minutes=1)
    change = _next_change(loaded, now_s, now_s + ENTRY_SEARCH_DAYS * 86_400)
    if change is None:
        return f"{before}|{NO_TRANSITION_MS}|{before}"
    return f"{before}|{change * 1000}|{_offset(loaded, change) // timedelta(minutes=1)}"


def zones_for_number(e164: str, override: str | None = None) -> tuple[str, ...]:
    """The IANA zones a callee may be in: ``(override,)`` when given (it must be a zone
    zoneinfo knows, else ``ValueError``), else the zones of the number's prefix (phonenumbers'
    geocoding data), leaving out ``Etc/Unknown`` and any zone zoneinfo cannot load. ``()`` when
    unknown: the caller then uses a fallback zone. ``ValueError`` if ``e164`` is no number."""
    if override is not None:
        _load_zone(override)
        return (override,)
    # Late: phonenumbers is slow to load, and the engine, which imports this module in every
    # process, needs it only here (not a way round a cycle: numbers imports nothing of ours).
    import phonenumbers

    from callqueue.numbers import parse_international, time_zones

    try:
        number = parse_international(e164)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(
            f"not a phone number in E.164 form (+<country><number>): {e164!r}"
        ) from exc
    return zones_of_parsed(time_zones(number))


def zones_of_parsed(names: Sequence[str]) -> tuple[str, ...]:
    """phonenumbers' zones for a number, without ``Etc/Unknown`` and zones zoneinfo lacks."""
    return _known_zones(tuple(names))


@functools.lru_cache(maxsize=4096)
def _known_zones(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if name != "Etc/Unknown" and zone_exists(name))


# -- helpers ------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_days(text: str, spec: str) -> frozenset[int]:
    spec = re.sub(r"\s*([,-])\s*", r"\1", spec.strip().lower())
    if re.search(r"\s", spec):
        raise ValueError(
            f"bad calling window {text!r}: days {spec!r} must be one word such as 'mon-sat' "
            f"or 'mon,wed,fri'; {_EXAMPLES}"
        )
    days: set[int] = set()
    for item in spec.split(","):
        if item == "daily":
            days.update(range(7))
            continue
        first, sep, last = item.partition("-")
        a, b = _DAY_INDEX.get(first), _DAY_INDEX.get(last if sep else first)
        if a is None or b is None:
            bad = first if a is None else last
            raise ValueError(
                f"bad calling window {text!r}: unknown day {bad!r} (use mon, tue, wed, thu, "
                f"fri, sat, sun or daily); {_EXAMPLES}"
            )
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _parse_time(text: str, value: str, which: str) -> int:
    match = _TIME_RE.match(value)
    if match is None:
        raise ValueError(
            f"bad calling window {text!r}: {which} time {value!r} is not HH:MM; {_EXAMPLES}"
        )
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(
            f"bad calling window {text!r}: {which} time {value!r} is out of range "
            f"(00:00 to 24:00); {_EXAMPLES}"
        )
    return hours * 60 + minutes


def _days_text(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "daily"
    # Maximal runs, each possibly wrapping past Sunday, listed from the first run start.
    starts = [d for d in range(7) if d in days and (d - 1) % 7 not in days]
    parts = []
    for first in starts:
        last = first
        while (last + 1) % 7 in days:
            last = (last + 1) % 7
        name = _DAY_NAMES[first]
        parts.append(name if last == first else f"{name}-{_DAY_NAMES[last]}")
    return ",".join(parts)


def _time_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str):
        raise ValueError(f"a time zone must be an IANA name such as 'Asia/Kolkata', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as 'America/New_York'"
        ) from exc


def zone_exists(name: str) -> bool:
    try:
        _load_zone(name)
    except ValueError:
        return False
    return True


def _load_zones(zones: Sequence[str]) -> list[ZoneInfo]:
    if isinstance(zones, str):
        raise TypeError("zones must be a sequence of zone names, not one str: use (zone,)")
    if not zones:
        raise ValueError("no time zones given: pass the callee's zones or a fallback zone")
    return [_load_zone(name) for name in zones]


def _check_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"at must be a timezone-aware datetime, got naive {at!r}")


def _from_us(t: int, tz: tzinfo | None) -> datetime:
    return (_EPOCH + timedelta(microseconds=t)).astimezone(tz)


def _offset(zone: ZoneInfo, second: int) -> timedelta:
    offset = datetime.fromtimestamp(second, tz=zone).utcoffset()
    assert offset is not None
    return offset


def _next_change(zone: ZoneInfo, start_s: int, limit_s: int) -> int | None:
    """The first second in (start_s, limit_s] at which ``zone``'s offset differs from its
    offset at ``start_s``, or None."""
    limit_s = min(limit_s, _MAX_S)
    before = _offset(zone, start_s)
    lo = start_s
    while lo < limit_s:
        hi = min(lo + _STEP_S, limit_s)
        if _offset(zone, hi) != before:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == before:
                    lo = mid
                else:
                    hi = mid
            return hi
        lo = hi
    return None


def _open_local(mask: int, start: int, end: int, local: int) -> bool:
    """Whether local wall time ``local`` (µs since 1970-01-01 00:00 local) is in the window."""
    day, tod = divmod(local, _DAY_US)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    if start < end:
        return start <= tod < end and bool(mask >> weekday & 1)
    return (tod >= start and bool(mask >> weekday & 1)) or (
        tod < end and bool(mask >> (weekday + 6) % 7 & 1)
    )


def _local_next(mask: int, start: int, end: int, local: int) -> int:
    """The first local wall time at or after ``local`` in the window, on a clock without DST."""
    if _open_local(mask, start, end, local):
        return local
    day, tod = divmod(local, _DAY_US)
    weekday = (day + 3) % 7
    k = 1 if tod >= start else 0
    while not mask >> (weekday + k) % 7 & 1:
        k += 1
    return (day + k) * _DAY_US + start


class _Piece:
    """One zone's timeline as stretches of constant offset, walked forward from ``t``."""

    __slots__ = ("end", "limit_s", "offset", "zone")

    def __init__(self, zone: ZoneInfo, t: int, limit: int) -> None:
        self.zone = zone
        self.limit_s = limit // 1_000_000 + 1
        self._enter(t // 1_000_000)

    def _enter(self, second: int) -> None:
        self.offset = _offset(self.zone, second) // _US
        change = _next_change(self.zone, second, self.limit_s)
        self.end = None if change is None else change * 1_000_000

    def next_open(self, mask: int, start: int, end: int, c: int) -> int:
        """The first instant at or after ``c`` (never earlier than the last one asked) at which
        this zone's wall clock is in the window."""
        while True:
            while self.end is not None and c >= self.end:
                self._enter(self.end // 1_000_000)
            u = _local_next(mask, start, end, c + self.offset) - self.offset
            if self.end is None or u < self.end:
                return u
            c = self.end  # closed until the change; after it the clock reads differently


#: The presets :meth:`CallingWindow.parse` knows by name.
PRESETS: dict[str, CallingWindow] = {
    "tcpa": CallingWindow(frozenset(range(7)), 8 * 60, 21 * 60),
    "trai": CallingWindow(frozenset(range(7)), 9 * 60, 21 * 60),
}
