"""The interrupted half of a resume test: a run stopped by a shutdown request, then resumed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from workers.hooks import STOP_SHUTDOWN, InMemoryHooks, StopRequested


def stopped_and_resumed(run: Callable[[InMemoryHooks], object], *, stop_at: int) -> InMemoryHooks:
    """Call ``run`` with a shutdown requested once step ``stop_at`` is done (the loop checkpoints
    and raises StopRequested), then again on the same hooks, so it resumes from that checkpoint."""
    hooks = InMemoryHooks(stop_at_step=stop_at, stop_reason=STOP_SHUTDOWN)
    with pytest.raises(StopRequested):
        run(hooks)
    hooks.stop_at_step = None
    run(hooks)
    return hooks
