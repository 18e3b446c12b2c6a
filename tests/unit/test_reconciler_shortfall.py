"""The reconciler's re-send rule under fair share: a message wakes a worker for its queue, whichever job it
names, so a queue needs as many waiting messages as queued jobs. Pure function, no services."""

from __future__ import annotations

import uuid

from workers.reconciler import to_resend


def _ids(count: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1) for i in range(count)]


def test_a_queue_with_a_message_per_queued_job_gets_none_even_if_they_name_other_jobs() -> None:
    # Given 3 queued gpu jobs past their grace, and 3 waiting gpu messages naming other (already run) jobs
    jobs = _ids(3)
    waiting = {"gpu": [str(uuid.UUID(int=100 + i)) for i in range(3)]}
    # When the reconciler decides, Then it sends nothing: each message will claim one of them
    assert to_resend([(j, "gpu") for j in jobs], waiting, {"gpu": 3}) == []


def test_only_the_shortfall_is_sent_for_jobs_without_their_own_message_oldest_first() -> None:
    # Given 5 queued gpu jobs (candidates oldest first), 2 waiting messages, one of them naming the second job
    jobs = _ids(5)
    waiting = {"gpu": [str(jobs[1]), str(uuid.UUID(int=999))]}
    # When the reconciler decides, Then it sends 3 messages, for the oldest jobs without one of their own
    assert to_resend([(j, "gpu") for j in jobs], waiting, {"gpu": 5}) == [
        (jobs[0], "gpu"),
        (jobs[2], "gpu"),
        (jobs[3], "gpu"),
    ]


def test_after_a_redis_flush_every_queued_job_past_its_grace_is_sent_per_queue() -> None:
    # Given queued jobs on both queues and no message anywhere (Redis flushed)
    gpu, cpu = _ids(2), [uuid.UUID(int=50), uuid.UUID(int=51)]
    candidates = [(gpu[0], "gpu"), (cpu[0], "cpu"), (gpu[1], "gpu"), (cpu[1], "cpu")]
    # When the reconciler decides, Then all four are sent
    assert sorted(to_resend(candidates, {}, {"gpu": 2, "cpu": 2})) == sorted(candidates)


def test_a_queues_messages_never_cover_another_queues_jobs() -> None:
    # Given one queued cpu job and 4 waiting gpu messages
    job = uuid.UUID(int=7)
    waiting = {"gpu": [str(uuid.UUID(int=i)) for i in range(10, 14)]}
    # When the reconciler decides, Then the cpu job is still sent
    assert to_resend([(job, "cpu")], waiting, {"cpu": 1, "gpu": 0}) == [(job, "cpu")]


def test_jobs_within_their_grace_count_as_queued_but_are_not_sent() -> None:
    # Given 3 queued gpu jobs of which one is past its grace, and no waiting message
    old = uuid.UUID(int=1)
    # When the reconciler decides, Then only the old one is sent (the others are sent on a later pass)
    assert to_resend([(old, "gpu")], {"gpu": []}, {"gpu": 3}) == [(old, "gpu")]
