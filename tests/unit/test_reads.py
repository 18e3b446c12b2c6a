"""The polling read path's cache and single-flight, with the database read stubbed out."""

from __future__ import annotations

import asyncio
import types
import uuid
from typing import Any

import pytest

from services.api.reads import JobReader
from shared.errors import Unauthorized

TENANT = uuid.uuid4()


class CountingReader(JobReader):
    """A JobReader whose database read is a slow in-memory stand-in that counts calls."""

    def __init__(self, *, cache_s: float, row: dict[str, Any] | None) -> None:
        super().__init__("postgresql+psycopg://nobody@127.0.0.1:1/none", cache_s=cache_s)
        self.reads = 0
        self.row = row

    async def _read(self, key_hash: str, job_id: uuid.UUID) -> Any:
        self.reads += 1
        await asyncio.sleep(0.05)
        if self.row is None:
            raise Unauthorized("invalid or revoked API key")
        return {**self.row, "id": job_id}


def render(job: types.SimpleNamespace) -> bytes:
    return str(job.id).encode()


def test_concurrent_misses_share_one_read_then_the_cache_serves() -> None:
    reader = CountingReader(cache_s=60.0, row={"key_tenant": TENANT})
    job_id = uuid.uuid4()

    async def scenario() -> list[bytes]:
        first = await asyncio.gather(*(reader.job_for_key("k", job_id, render) for _ in range(20)))
        again = await reader.job_for_key("k", job_id, render)
        return [*first, again]

    bodies = asyncio.run(scenario())
    assert bodies == [str(job_id).encode()] * 21
    assert reader.reads == 1


def test_without_cache_each_wave_reads_once_and_errors_reach_every_waiter() -> None:
    reader = CountingReader(cache_s=0.0, row=None)
    job_id = uuid.uuid4()

    async def scenario() -> list[BaseException | bytes]:
        return await asyncio.gather(
            *(reader.job_for_key("k", job_id, render) for _ in range(5)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, Unauthorized) for r in results)
    assert reader.reads == 1
    asyncio.run(scenario())
    assert reader.reads == 2  # nothing cached, nothing left in flight


def test_forget_drops_cached_reads() -> None:
    reader = CountingReader(cache_s=60.0, row={"key_tenant": TENANT})
    job_id = uuid.uuid4()
    asyncio.run(reader.job_for_key("k", job_id, render))
    reader.forget(job_id)
    asyncio.run(reader.job_for_key("k", job_id, render))
    assert reader.reads == 2


@pytest.mark.parametrize("cache_s", [0.0, 60.0])
def test_other_keys_do_not_share(cache_s: float) -> None:
    reader = CountingReader(cache_s=cache_s, row={"key_tenant": TENANT})
    job_id = uuid.uuid4()

    async def scenario() -> None:
        await asyncio.gather(reader.job_for_key("a", job_id, render), reader.job_for_key("b", job_id, render))

    asyncio.run(scenario())
    assert reader.reads == 2
