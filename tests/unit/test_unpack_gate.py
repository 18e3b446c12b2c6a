"""UnpackGate: how many uploads one API process unpacks at once, in all and per tenant."""

from __future__ import annotations

import uuid

import pytest

from services.api.unpackgate import RETRY_AFTER_S, UnpackGate
from shared.errors import TooManyRequests

A, B, C = (uuid.uuid4() for _ in range(3))


def test_a_tenant_over_its_share_gets_429_while_others_still_get_in() -> None:
    # Given a gate of 3 in all, 2 per tenant, with tenant A holding both of its slots
    gate = UnpackGate(limit=3, per_tenant=2)
    with gate.slot(A), gate.slot(A):
        # When A asks for a third
        with pytest.raises(TooManyRequests) as refused, gate.slot(A):
            pass
        # Then it is refused with Retry-After and naming the field, and B still gets the last slot
        assert refused.value.retry_after_s == RETRY_AFTER_S
        assert refused.value.field == "files"
        assert "already has 2 uploads" in refused.value.message
        with gate.slot(B):
            assert gate.active == 3
            # ...after which the process is full, for C too
            with pytest.raises(TooManyRequests, match="3 uploads are being unpacked"), gate.slot(C):
                pass
    assert gate.active == 0
    assert not gate.by_tenant


def test_a_slot_is_given_back_when_the_upload_fails() -> None:
    # Given a gate of one slot
    gate = UnpackGate(limit=1, per_tenant=1)
    # When an upload holding it raises
    with pytest.raises(ValueError, match="bomb"), gate.slot(A):
        raise ValueError("bomb")
    # Then the slot is free again
    with gate.slot(A):
        assert gate.active == 1
    assert gate.active == 0
