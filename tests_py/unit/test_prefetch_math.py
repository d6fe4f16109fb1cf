"""prefetch.py without a server: how many jobs the buffer asks for (nothing above its
low-water mark or while a claim is in flight, never more than a batch), how the target
follows the handlers' finishing rate, and what a stop hands back."""

from __future__ import annotations

import pytest
from pgjobs.prefetch import HORIZON, RATE_WINDOW, Mode, Prefetch


def test_starts_by_asking_only_for_what_can_run():
    p = Prefetch(size=100, concurrency=4, batch_size=50)
    assert p.target == 0
    assert p.wanted(running=0, notified=True) == 4
    assert p.wanted(running=3, notified=True) == 1
    assert p.wanted(running=4, notified=True) == 0


def test_one_claim_at_a_time_and_idle_until_notified(make_job):
    p = Prefetch(size=100, concurrency=4, batch_size=50)
    p.fetching(4)
    assert p.wanted(0, True) == 0  # a claim is in flight
    p.fetched([make_job(1)])  # fewer than asked: the database had no more
    assert p.mode is Mode.IDLE
    assert p.wanted(0, notified=True) == 0  # a job waits in the buffer (target 0)
    assert p.take().id == 1
    assert p.wanted(1, notified=False) == 0  # nothing new since the claim
    assert p.wanted(1, notified=True) == 3
    with pytest.raises(AssertionError):
        p.fetched([make_job(2)])  # no claim was sent


def test_target_follows_the_finishing_rate_and_caps_the_batch(make_job):
    p = Prefetch(size=100, concurrency=4, batch_size=50)
    for _ in range(16):  # 16 handlers finish in 0.1 s: 160/s
        p.ran(0.1)
    assert p.rate == pytest.approx(160)
    assert p.target == int(160 * HORIZON)  # what finishes within HORIZON (0.1 s) at that rate
    assert p.wanted(0, True) == 20  # the target plus a job per runner
    p.fetching(20)
    p.fetched([make_job(i) for i in range(20)])
    assert p.wanted(0, True) == 0  # above the low-water mark (half the target)
    p.tick(0.2 + RATE_WINDOW)  # a whole window with nothing finished: the target falls
    assert p.target == 0 and p.over_target()


def test_excess_and_release(make_job):
    p = Prefetch(size=100, concurrency=2, batch_size=50)
    p.fetching(6)
    p.fetched([make_job(i) for i in range(1, 7)])
    assert p.over_target()
    extra = p.excess()
    assert [j.id for j in extra] == [1, 2, 3, 4, 5, 6]  # target 0: all of them, in order
    p.restore(extra[:2])
    assert 1 in p and len(p) == 2
    assert p.take().id == 1
    assert [j.id for j in p.release()] == [2]
    assert p.take() is None and p.wanted(0, True) == 0
