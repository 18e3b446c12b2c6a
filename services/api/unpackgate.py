"""How many uploads one API process unpacks at once: at most ``limit`` in all and ``per_tenant``
of one tenant. One more is refused at once with 429 and Retry-After rather than queued, so a
tenant's burst of archive bombs takes a bounded share of the process's memory and threads.

The count lives in the process (an API process is the unit whose memory it protects); it is
changed only on the event loop, between awaits, so it needs no lock.
"""

from __future__ import annotations

import collections
import contextlib
import uuid
from collections.abc import Iterator

from shared.errors import TooManyRequests

RETRY_AFTER_S = 1  # an unpack takes a second or two; the client retries then


class UnpackGate:
    """Counts uploads being unpacked, in all and per tenant."""

    def __init__(self, *, limit: int, per_tenant: int) -> None:
        self.limit = limit
        self.per_tenant = per_tenant
        self.active = 0
        self.by_tenant: collections.Counter[uuid.UUID] = collections.Counter()

    @contextlib.contextmanager
    def slot(self, tenant_id: uuid.UUID) -> Iterator[None]:
        """Hold one slot while the block runs; TooManyRequests if none is free."""
        if self.by_tenant[tenant_id] >= self.per_tenant:
            raise TooManyRequests(
                f"files: this tenant already has {self.per_tenant} uploads being unpacked; retry in {RETRY_AFTER_S} s",
                field="files",
                retry_after_s=RETRY_AFTER_S,
            )
        if self.active >= self.limit:
            raise TooManyRequests(
                f"files: {self.limit} uploads are being unpacked; retry in {RETRY_AFTER_S} s",
                field="files",
                retry_after_s=RETRY_AFTER_S,
            )
        self.active += 1
        self.by_tenant[tenant_id] += 1
        try:
            yield
        finally:
            self.active -= 1
            self.by_tenant[tenant_id] -= 1
            if not self.by_tenant[tenant_id]:
                del self.by_tenant[tenant_id]
