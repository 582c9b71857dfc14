"""Request and audit event ids: random, unique, read from the CSPRNG in batches."""

from __future__ import annotations

import pytest

from corral.common.ids import RandomIds


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
