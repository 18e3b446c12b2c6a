"""Claimers racing on the real Postgres: threads with a connection each, started together, each claiming
through the production claim (``queries.claim_next``) once or until nothing is left."""

from __future__ import annotations

import threading
import uuid

from shared.config import Settings
from shared.db import queries
from shared.db.session import make_engine, make_sessionmaker, transaction

LEASE_S = 600.0
WINDOW_S = 3600.0
JOIN_TIMEOUT_S = 120.0


def race_claims(settings: Settings, token: uuid.UUID, racers: int, *, until_empty: bool) -> list[queries.Claim]:
    """Every claim ``racers`` threads made, started at one barrier; each claims once, or until it gets None.

    Fails (AssertionError) if a thread is still running after ``JOIN_TIMEOUT_S``.
    """
    engine = make_engine(settings, pool_size=racers, call_deadline_s=30.0)
    sessions = make_sessionmaker(engine)
    start = threading.Barrier(racers)
    got: list[queries.Claim] = []
    lock = threading.Lock()

    def racer(index: int) -> None:
        start.wait(timeout=30)
        while True:
            with transaction(sessions) as session:
                claimed = queries.claim_next(
                    session, job_id=token, owner=f"racer-{index}", lease_s=LEASE_S, window_s=WINDOW_S
                )
            if claimed is None:
                return
            with lock:
                got.append(claimed)
            if not until_empty:
                return

    threads = [threading.Thread(target=racer, args=(i,), daemon=True) for i in range(racers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=JOIN_TIMEOUT_S)
        assert not any(t.is_alive() for t in threads), "a claimer hung"
    finally:
        engine.dispose()
    return got
