"""Parsing phone numbers: ``phonenumbers.parse(text, None)``, with a short cut for the form
nearly every backend sends (plain E.164: ``+`` and digits).

``phonenumbers.parse`` handles every way a person may write a number (spaces, dashes, brackets,
letters, extensions, ``tel:`` URIs, international dialling prefixes); for a plain ``+`` and
digits most of that work finds nothing to do, yet it is most of a bulk row's CPU. The short cut
does the part that matters for such input, exactly as the library does it: the country code
(the shortest known prefix, 1-3 digits) and the national number. Whenever the library might do
more - the national number starts with what the region's metadata calls a national prefix
(which the library may strip), or with a 0 (Italian leading zeros), or is too short or too
long - the number goes through ``phonenumbers.parse`` itself. tests/unit/test_numbers.py checks
that both give equal results over every region's example numbers and random digit strings.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumber

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
