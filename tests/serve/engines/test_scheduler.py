"""The worker's queue: arrivals join a running batch in groups, never beyond max_batch or join_wait."""

import time

from serve.engines.scheduler import Job, Scheduler


def _job(arrival=None):
    job = Job(request=None, loop=None, queue=None, prompt="p", images=[], prefix="", n_prompt=1)
    if arrival is not None:
        job.arrival = arrival
    return job


def test_busy_worker_takes_arrivals_as_a_group_or_after_join_wait():
    sched = Scheduler(max_queue=10, batch_wait=0.0, join_wait=0.2, join_batch=3)
    first, second = _job(), _job()
    sched.admit(first)
    sched.admit(second)
    assert sched.next_work(room=8, busy=True) == []  # two wait, the group is three: keep decoding
    third = _job()
    sched.admit(third)
    assert sched.next_work(room=8, busy=True) == [first, second, third]
    late = _job(arrival=time.monotonic() - 0.25)  # alone, but waited longer than join_wait
    sched.admit(late)
    assert sched.next_work(room=8, busy=True) == [late]


def test_a_small_room_is_filled_without_waiting_for_a_whole_group():
    sched = Scheduler(max_queue=10, batch_wait=0.0, join_wait=10.0, join_batch=4)
    a, b = _job(), _job()
    sched.admit(a)
    sched.admit(b)
    assert sched.next_work(room=1, busy=True) == [a]
    assert sched.next_work(room=0, busy=True) == []


def test_join_wait_zero_takes_every_arrival_at_once_and_idle_is_unchanged():
    sched = Scheduler(max_queue=10, batch_wait=0.0)
    job = _job()
    sched.admit(job)
    assert sched.next_work(room=8, busy=True) == [job]
    idle = _job()
    sched.admit(idle)
    assert sched.next_work(room=8, busy=False) == [idle]
