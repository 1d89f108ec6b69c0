"""Strict checks of the form fields of a signed carrier callback (Plivo, Twilio).

Why the signature is not enough: Plivo (Signature V3) and Twilio sign the URL followed by the
form fields sorted by name, each written as ``name`` + ``value`` with no separator. The
signature therefore does not fix where one field ends and the next begins. With one captured
genuine request, bytes can be moved from a value into the next field's name, or a whole field
folded into the value before it (``BillDuration=5`` and ``CallStatus=completed`` resent as
``BillDuration=5CallStatuscompleted``), and the signature still matches. So once the signature
is checked, the whole form is checked against what the carrier really sends, and a form that
fails is refused as a whole (400, naming the field) before the engine sees any of it.

The rule (each carrier's tables are in ``plivo_events`` and ``twilio_events``):

1. **Names.** A name is either one the carrier documents for these callbacks, or an extra with
   the carrier's own form of name (both carriers write names in PascalCase: an upper-case
   letter, then letters and digits, at most 64 characters; Plivo also passes custom SIP headers
   as ``X-PH-<letters and digits>``, Twilio as ``SipHeader_<name>``). Carriers add optional
   parameters over time, so such extras are tolerated, and ignored. Any other name (one that
   starts lower-case or with a digit, holds a space, ``=``, ``&`` or other punctuation, or is
   longer) is refused: it is what the tail of a value run into the next name looks like, and
   its sort position would have to match the original's for the signature to hold, which a
   well-formed name almost never allows. A name sent twice is refused: carriers send each once.
   An extra that spells a field the engine reads and the form lacks is refused too: its name
   holds that field's name (``GHangupCauseCode``), or its name and value run together start
   with it (``CallDuratio`` = ``n0``: ``CallDuration`` = ``0`` with its name cut short). The
   price: a future extra named after such a field (``MachineXyz`` in a callback without
   ``Machine``) is refused, logged, until it is added to the carrier's table.
2. **Values.** Every documented field has a format, checked whether or not the engine reads
   it: ids (UUIDs, ``CA``/``AC`` + 32 hex), integers within sane bounds, booleans, statuses from
   the carrier's documented set, timestamps in the carrier's own format, short tokens. A field
   folded into the one sorted before it makes that one fail its format. Free text (numbers,
   names, places, extras) must be printable, at most :data:`MAX_TEXT` characters, and must
   not carry the name of a field the engine reads run into more text (``CalleeMachinetrue``):
   that is a field folded into free text.
3. **Presence.** The fields the engine needs for the kind of callback must be present.
4. **The call.** The ids a callback names its call by (Plivo ``CallUUID``/``RequestUUID``,
   Twilio ``CallSid``) must include the attempt's carrier id once the engine knows it. The
   engine checks it in the script that applies the event (code ``mismatch``: nothing
   changed), and the route answers 400.

Open-ended sets (hangup cause names, error codes) are checked by format, not against a list:
an unknown cause maps to a plain failure anyway, while refusing a genuine end-of-call callback
would hold the call's slot until its longest life passed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "MAX_TEXT",
    "CallbackFieldError",
    "Check",
    "FormRules",
    "check_form",
    "decimal",
    "integer",
    "one_of",
    "pattern",
    "timestamp",
]

#: Longest free-text value accepted (a caller name, a place, an extra's value).
MAX_TEXT = 4096
#: Longest name shown back in an error (a refused name may be anything).
_SHOWN = 64

#: A value's format: True when the value is well formed.
Check = Callable[[str], bool]


class CallbackFieldError(ValueError):
    """A signed callback whose fields are not what the carrier sends."""

    def __init__(self, field: str, problem: str) -> None:
        shown = field if len(field) <= _SHOWN else field[:_SHOWN] + "..."
        super().__init__(f"{shown}: {problem}")
        self.field = shown
        self.problem = problem


def pattern(regex: str) -> Check:
    """Values that match ``regex`` as a whole (ASCII classes: ``\\d`` is 0-9 only)."""
    compiled = re.compile(regex, re.ASCII)
    return lambda value: compiled.fullmatch(value) is not None


def one_of(*values: str) -> Check:
    allowed = frozenset(values)
    return lambda value: value in allowed


_DIGITS = re.compile(r"[0-9]{1,12}")


def integer(low: int, high: int) -> Check:
    """A whole number written in digits only (no sign, space or exponent), within bounds."""
    return lambda value: _DIGITS.fullmatch(value) is not None and low <= int(value) <= high


#: A non-negative amount such as a rate or a cost (``0.00850``).
decimal = pattern(r"[0-9]{1,12}(\.[0-9]{1,12})?")


def timestamp(regex: str, layout: str, *, empty: bool = False) -> Check:
    """A time in the carrier's layout: ``regex`` fixes the shape (strptime alone accepts
    single digits and stray spaces), ``layout`` the calendar; '' too when ``empty``."""
    shape = re.compile(regex, re.ASCII)

    def check(value: str) -> bool:
        if value == "":
            return empty
        if shape.fullmatch(value) is None:
            return False
        try:
            datetime.strptime(value, layout)
        except ValueError:
            return False
        return True

    return check


@dataclass(frozen=True, slots=True)
class FormRules:
    """What one carrier's callbacks may hold (see the module docstring for the rule)."""

    carrier: str
    #: Documented names and their formats; None: free text.
    fields: Mapping[str, Check | None]
    #: The form of an extra's name (an undocumented optional parameter).
    extra_names: re.Pattern[str]
    #: The fields the engine reads.
    engine: tuple[str, ...]
    #: One of :attr:`engine` run into more text: seen inside free text, it was folded in.
    folded: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        names = "|".join(re.escape(n) for n in sorted(self.engine, key=len, reverse=True))
        # Followed by more than a space: ``Machinetrue``, not ``Machine Detected``.
        object.__setattr__(self, "folded", re.compile(f"(?:{names})(?=\\S)"))


def _free_text(rules: FormRules, name: str, value: str) -> None:
    if len(value) > MAX_TEXT:
        raise CallbackFieldError(name, f"longer than {MAX_TEXT} characters")
    if not value.isprintable():
        raise CallbackFieldError(name, "holds control characters")
    folded = rules.folded.search(value)
    if folded is not None:
        raise CallbackFieldError(
            name, f"holds the field name {folded.group()!r} run into more text"
        )


def _extra(rules: FormRules, form: Mapping[str, str], name: str, value: str) -> None:
    """An extra that spells a missing engine field is that field re-shaped: its name cut
    short (``CallDuratio`` = ``n0``), run into its value (``CallDuration0`` = ''), or moved
    behind the tail of the value before it."""
    text = name + value
    for engine in rules.engine:
        if engine not in form and (engine in name or text.startswith(engine)):
            raise CallbackFieldError(repr(name), f"spells {engine}, which is missing")


def check_form(
    rules: FormRules, items: Iterable[tuple[str, str]], required: Iterable[str]
) -> dict[str, str]:
    """The form as a dict once every field passed the rule, else :class:`CallbackFieldError`
    for the first field that did not (``items`` as received, repeated names included)."""
    form: dict[str, str] = {}
    extras: list[str] = []
    for name, value in items:
        if name in form:
            raise CallbackFieldError(name, "sent more than once")
        form[name] = value
        if name in rules.fields:
            check = rules.fields[name]
        elif rules.extra_names.fullmatch(name):
            check = None
            extras.append(name)
        else:
            raise CallbackFieldError(repr(name), f"not a field name {rules.carrier} sends")
        if check is None:
            _free_text(rules, name, value)
        elif not check(value):
            raise CallbackFieldError(name, "not a valid value")
    for name in required:
        if name not in form:
            raise CallbackFieldError(name, "missing")
    for name in extras:
        _extra(rules, form, name, form[name])
    return form
