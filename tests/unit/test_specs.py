"""Call ids of bulk rows (stable across versions, so a replayed batch queues nothing twice),
and phone numbers with their time zones."""

from __future__ import annotations

import uuid

import phonenumbers
from hypothesis import given
from hypothesis import strategies as st

from callqueue.schemas.calls import QueueCallRequest, normalize_phone
from callqueue.schemas.specs import BATCH_ROW_NAMESPACE, batch_row_id


@given(st.text(min_size=1, max_size=100), st.integers(min_value=0, max_value=9_999))
def test_row_id_is_the_uuid5_of_batch_and_index(batch_id: str, index: int) -> None:
    expected = uuid.uuid5(BATCH_ROW_NAMESPACE, f"{batch_id}/{index}").hex
    assert batch_row_id(batch_id, index) == expected


def test_row_ids_differ_by_batch_and_position() -> None:
    ids = {batch_row_id(b, i) for b in ("a", "b") for i in range(100)}
    assert len(ids) == 200


@given(
    st.sampled_from(["1", "44", "91", "49", "61", "55", "7", "86", "234", "971"]),
    st.text(alphabet="0123456789", min_size=4, max_size=12),
)
def test_phone_check_accepts_exactly_the_valid_numbers(country: str, rest: str) -> None:
    # normalize_phone decides validity from the number's time-zone lookup (its type), and
    # asks is_valid_number only when no zone is known: the same numbers must pass as with
    # is_valid_number alone.
    text = f"+{country}{rest}"
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return
    valid = phonenumbers.is_valid_number(number)
    try:
        e164 = normalize_phone(text)
    except ValueError:
        assert not valid
        return
    assert valid
    assert e164 == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_numbers_carry_their_time_zones() -> None:
    assert normalize_phone("+91 98765-43210").zones == ("Asia/Calcutta",)
    assert normalize_phone("+1 212 555 0123").zones == ("America/New_York",)
    request = QueueCallRequest.model_validate(
        {"phone_number": "+12125550123", "timezone": "America/Chicago"}
    )
    assert request.time_zones == ("America/Chicago",)
