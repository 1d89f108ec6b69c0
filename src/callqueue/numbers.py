"""Parsing phone numbers and finding their type and time zones: ``phonenumbers``' own
answers, with short cuts for the common case.

**Parsing** (``parse_international``) is ``phonenumbers.parse(text, None)``, with a short cut
for the form nearly every backend sends (plain E.164: ``+`` and digits).

``phonenumbers.parse`` handles every way a person may write a number (spaces, dashes, brackets,
letters, extensions, ``tel:`` URIs, international dialling prefixes); for a plain ``+`` and
digits most of that work finds nothing to do, yet it is most of a bulk row's CPU. The short cut
does the part that matters for such input, exactly as the library does it: the country code
(the shortest known prefix, 1-3 digits) and the national number. Whenever the library might do
more - the national number starts with what the region's metadata calls a national prefix
(which the library may strip), or with a 0 (Italian leading zeros), or is too short or too
long - the number goes through ``phonenumbers.parse`` itself.

**Type and time zones** (``number_type``, ``time_zones``) are the library's
``number_type`` and ``timezone.time_zones_for_number`` for a number of a country code with one
region, using the same metadata with its patterns compiled once (the library re-fetches and
re-checks each pattern on every call: most of a valid number's CPU); country codes shared by
several regions (+1, +7, ...) and numbers with Italian leading zeros go to the library.

tests/unit/test_numbers.py checks that every short cut gives the library's answer over every
region's example numbers and random digit strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumber, PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.phonenumberutil import is_number_type_geographical
from phonenumbers.phonenumberutil import number_type as _library_number_type

_PLAIN = re.compile(r"\+[1-9][0-9]{2,19}")
_MAX_NSN = 17  # the library's _MAX_LENGTH_FOR_NSN
_MIN_NSN = 3  # shorter ones go the long way (the library refuses up to 2 digits)

# country code -> (whether its main region has metadata, that metadata's national-prefix
# pattern or None); without metadata the long way says what is wrong.
_prefixes: dict[int, tuple[bool, re.Pattern[str] | None]] = {}


def _prefix_for(cc: int) -> tuple[bool, re.Pattern[str] | None]:
    found = _prefixes.get(cc)
    if found is None:
        region = COUNTRY_CODE_TO_REGION_CODE[cc][0]
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
        npp = metadata.national_prefix_for_parsing if metadata is not None else None
        found = (metadata is not None, re.compile(npp) if npp else None)
        _prefixes[cc] = found
    return found


def plain_e164(text: str) -> PhoneNumber | None:
    """The number that ``phonenumbers.parse(text, None)`` returns, when ``text`` is plain E.164
    whose parsing has nothing else to do; else None (then call the library)."""
    if _PLAIN.fullmatch(text) is None:
        return None
    for n in (1, 2, 3):
        cc = int(text[1 : n + 1])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    nsn = text[n + 1 :]
    if not _MIN_NSN <= len(nsn) <= _MAX_NSN or nsn[0] == "0":
        return None
    known, prefix = _prefix_for(cc)
    if not known or (prefix is not None and prefix.match(nsn)):
        return None
    return PhoneNumber(country_code=cc, national_number=int(nsn))


def parse_international(text: str) -> PhoneNumber:
    """``phonenumbers.parse(text, None)`` (raises ``NumberParseException`` as it does)."""
    number = plain_e164(text)
    return number if number is not None else phonenumbers.parse(text, None)


# -- type and time zones ------------------------------------------------------------------

# A number description as (possible lengths or None for any, compiled pattern or None).
_Desc = tuple[frozenset[int] | None, re.Pattern[str] | None] | None
# The specific types, in the order the library tries them (before fixed line and mobile).
_SPECIFIC = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)


def _desc(desc: Any) -> _Desc:
    if desc is None:
        return None
    lengths = frozenset(desc.possible_length) if len(desc.possible_length) > 0 else None
    pattern = desc.national_number_pattern
    return lengths, (re.compile(pattern) if pattern else None)


def _matches(nsn: str, desc: _Desc) -> bool:
    """The library's _is_number_matching_desc (a match must cover the whole number)."""
    if desc is None:
        return False
    lengths, pattern = desc
    if lengths is not None and len(nsn) not in lengths:
        return False
    return pattern is not None and pattern.fullmatch(nsn) is not None


class _Types:
    """One region's number descriptions, compiled."""

    def __init__(self, metadata: Any) -> None:
        self.general = _desc(metadata.general_desc)
        self.specific = [(_desc(getattr(metadata, name)), kind) for name, kind in _SPECIFIC]
        self.fixed_line = _desc(metadata.fixed_line)
        self.mobile = _desc(metadata.mobile)
        self.same_mobile_and_fixed = bool(metadata.same_mobile_and_fixed_line_pattern)

    def type_of(self, nsn: str) -> int:
        """The library's _number_type_helper."""
        if not _matches(nsn, self.general):
            return PhoneNumberType.UNKNOWN
        for desc, kind in self.specific:
            if _matches(nsn, desc):
                return kind
        if _matches(nsn, self.fixed_line):
            if self.same_mobile_and_fixed or _matches(nsn, self.mobile):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self.same_mobile_and_fixed and _matches(nsn, self.mobile):
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


_types: dict[int, _Types | None] = {}  # country code (of one region) -> its types


def _types_for(cc: int, region: str) -> _Types | None:
    if cc not in _types:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
        _types[cc] = _Types(metadata) if metadata is not None else None
    return _types[cc]


def number_type(number: PhoneNumber) -> int:
    """``phonenumbers.number_type(number)``."""
    cc = number.country_code
    regions = COUNTRY_CODE_TO_REGION_CODE.get(cc) if cc is not None else None
    if cc is None or regions is None or len(regions) != 1 or number.italian_leading_zero:
        return int(_library_number_type(number))
    types = _types_for(cc, regions[0])
    if types is None:
        return PhoneNumberType.UNKNOWN
    return types.type_of(str(number.national_number))


def time_zones(number: PhoneNumber) -> Sequence[str]:
    """``phonenumbers.timezone.time_zones_for_number(number)``."""
    kind = number_type(number)
    if kind == PhoneNumberType.UNKNOWN or number.country_code is None:
        return (pn_timezone.UNKNOWN_TIMEZONE,)
    if not is_number_type_geographical(kind, number.country_code):
        return _country_zones(number.country_code)
    return tuple(pn_timezone.time_zones_for_geographical_number(number))


@functools.cache
def _country_zones(cc: int) -> tuple[str, ...]:
    """The library's _country_level_time_zones_for_number (it depends on the code only)."""
    code = str(cc)
    data: dict[str, Sequence[str]] = getattr(pn_timezone, "TIMEZONE_DATA")  # noqa: B009 - untyped
    longest: int = getattr(pn_timezone, "TIMEZONE_LONGEST_PREFIX")  # noqa: B009
    for prefix_len in range(longest, 0, -1):
        prefix = code[: 1 + prefix_len]
        if prefix in data:
            return tuple(data[prefix])
    return (pn_timezone.UNKNOWN_TIMEZONE,)
