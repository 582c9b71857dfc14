"""Request and audit event ids: random, unique, read from the CSPRNG in batches; a caller's
request id kept only when well formed."""

from __future__ import annotations

import pytest

from corral.common.ids import MAX_REQUEST_ID, RandomIds, request_id


def test_ids_are_hex_of_sixteen_bytes_and_never_repeat_across_refills() -> None:
    ids = RandomIds(batch=3)
    drawn = [ids.next() for _ in range(1000)]
    assert len(set(drawn)) == len(drawn)
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in drawn)


def test_two_sources_do_not_share_ids() -> None:
    first, second = RandomIds(), RandomIds()
    assert {first.next() for _ in range(300)}.isdisjoint(second.next() for _ in range(300))


def test_a_batch_holds_at_least_one_id() -> None:
    with pytest.raises(ValueError, match="at least one id"):
        RandomIds(batch=0)


@pytest.mark.parametrize(
    "presented", ["req-1.2:3", "0f8e2a4c-2b6e-4c5d-9a8b-1d2e3f4a5b6c", "A_b" * 42, "x" * 128]
)
def test_a_well_formed_request_id_is_kept(presented: str) -> None:
    assert request_id(presented, RandomIds().next) == presented


def test_a_missing_or_malformed_request_id_is_replaced_by_a_fresh_one() -> None:
    ids = RandomIds()
    refused = [
        None,
        "",
        "a b",
        "x" * (MAX_REQUEST_ID + 1),
        "é",
        'quote"',
        "<tag>",
        "tilde~",
        "a\nb",
    ]
    generated = [request_id(bad, ids.next) for bad in refused]
    assert len(set(generated)) == len(refused)
    assert all(len(value) == 32 and value.isalnum() for value in generated)
