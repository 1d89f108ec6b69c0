"""The E.164 short cut gives what phonenumbers.parse gives, or steps aside."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberType
from phonenumbers import timezone as pn_timezone

from callqueue.numbers import number_type, parse_international, plain_e164, time_zones
from callqueue.schemas.calls import normalize_phone

TYPES = [t for t in vars(PhoneNumberType).values() if isinstance(t, int)]


def _library(text: str) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None


def _examples() -> list[str]:
    """Every region's example number of every type, in E.164."""
    out = []
    regions = {r for rs in COUNTRY_CODE_TO_REGION_CODE.values() for r in rs}
    for region in sorted(regions):
        for kind in TYPES:
            if region == "001":
                continue
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                out.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    for cc in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(cc)
        if number is not None:
            out.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return out


def _random_digits(count_per_code: int, seed: int = 20261202) -> list[str]:
    """For every country code, random national numbers of every length 1-18, some starting
    with the region's national prefix or a 0."""
    rng = random.Random(seed)
    out = []
    for cc in sorted(COUNTRY_CODE_TO_REGION_CODE):
        for _ in range(count_per_code):
            length = rng.randint(1, 18)
            first = rng.choice("0123456789")
            rest = "".join(rng.choice("0123456789") for _ in range(length - 1))
            out.append(f"+{cc}{first}{rest}")
    return out


def test_every_example_number_parses_as_the_library_parses_it() -> None:
    examples = _examples()
    assert len(examples) > 1000
    shortcut = 0
    for text in examples:
        fast = plain_e164(text)
        if fast is not None:
            shortcut += 1
            assert fast == phonenumbers.parse(text, None), text
        assert parse_international(text) == phonenumbers.parse(text, None), text
    assert shortcut > len(examples) * 0.8  # the short cut is the common case


def test_random_digit_strings_parse_as_the_library_parses_them() -> None:
    for text in _random_digits(150):
        fast = plain_e164(text)
        slow = _library(text)
        if fast is not None:
            assert fast == slow, text  # never a number where the library finds none
        got: phonenumbers.PhoneNumber | None
        try:
            got = parse_international(text)
        except phonenumbers.NumberParseException:
            got = None
        assert got == slow, text


def _parsed(text: str) -> phonenumbers.PhoneNumber | None:
    try:
        return parse_international(text)
    except phonenumbers.NumberParseException:
        return None


@pytest.mark.parametrize(
    "text",
    ["+91 91234-56789", "+1 (212) 555-0100", "+44 20 7946 0958", "+٩١٩١٢٣٤٥٦٧٨٩",
     "+44 7911 123456 ext. 12", "tel:+919123456789", "+91-9123456789", "+"],
)  # fmt: skip
def test_written_forms_take_the_long_way(text: str) -> None:
    assert plain_e164(text) is None
    assert _parsed(text) == _library(text)


@pytest.mark.parametrize(
    "text",
    ["+3906698812345",  # Italian leading zero: the library sets flags for it
     "+4407911123456",  # a trunk 0 after the country code
     "+112125550100",  # NANPA's national prefix 1 after the country code
     "+999123456",  # no such country code
     "+9112"],  # too short
)  # fmt: skip
def test_what_the_library_may_rewrite_or_refuse_takes_the_long_way(text: str) -> None:
    assert plain_e164(text) is None
    assert _parsed(text) == _library(text)


def _all_parsed() -> list[phonenumbers.PhoneNumber]:
    out = []
    for text in _examples() + _random_digits(60, seed=7):
        number = _library(text)
        if number is not None:
            out.append(number)
    return out


def test_type_and_zones_are_the_librarys() -> None:
    numbers = _all_parsed()
    kinds = set()
    for number in numbers:
        kind = number_type(number)
        kinds.add(kind)
        assert kind == phonenumbers.number_type(number), number
        assert tuple(time_zones(number)) == tuple(pn_timezone.time_zones_for_number(number)), number
    # Every kind of answer came up: the comparison covered each branch.
    assert {PhoneNumberType.UNKNOWN, PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE,
            PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.TOLL_FREE,
            PhoneNumberType.PREMIUM_RATE, PhoneNumberType.VOIP} <= kinds  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "+91 9123 456 702 ext 5",
        "+91 9123 456 702 ext. 5",
        "+91 9123 456 702 x5",
        "+919123456702;ext=5",
        "+91 9123456702 extension 55",
        "+91 9123 456 702 #5",
        "0091 9123 456 702 ext 5",
    ],
)
def test_an_extension_is_refused_never_dropped(text: str) -> None:
    assert parse_international(text.replace("0091", "+91")).extension  # the library reads one
    with pytest.raises(ValueError, match="extension"):
        normalize_phone(text)
    assert normalize_phone("+91 9123 456 702") == "+919123456702"
