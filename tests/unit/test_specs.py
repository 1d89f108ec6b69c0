"""Call ids of bulk rows: stable across versions, so a replayed batch queues nothing twice."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from callqueue.api.specs import BATCH_ROW_NAMESPACE, batch_row_id


@given(st.text(min_size=1, max_size=100), st.integers(min_value=0, max_value=9_999))
def test_row_id_is_the_uuid5_of_batch_and_index(batch_id: str, index: int) -> None:
    expected = uuid.uuid5(BATCH_ROW_NAMESPACE, f"{batch_id}/{index}").hex
    assert batch_row_id(batch_id, index) == expected


def test_row_ids_differ_by_batch_and_position() -> None:
    ids = {batch_row_id(b, i) for b in ("a", "b") for i in range(100)}
    assert len(ids) == 200
