"""The store's writer thread: concurrent requests committed together, each acknowledged after its commit,
a bad request failing alone, nothing lost at close (a real SQLite file and a real PostgreSQL database)."""

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import IntegrityError

from serve.store import UnknownInteraction
from serve.store.writer import StoreWriter, WriterClosed
from tests.serve.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
from tests.serve.test_store import row, store, store_url  # noqa: F401 - `store`: a real SQLite or PostgreSQL store per test


def _gate(store):
    """Make the next transaction wait until the returned event is set (the writer is then busy), and
    record the size of every transaction."""
    real, release, sizes, first = store.add_interaction_groups, threading.Event(), [], threading.Event()

    def gated(groups):
        if not first.is_set():
            first.set()
            release.wait(10)
        sizes.append(len(groups))
        return real(groups)

    store.add_interaction_groups = gated
    return release, first, sizes


def test_requests_waiting_together_are_committed_in_one_transaction(store):
    release, busy, sizes = _gate(store)
    writer = StoreWriter(store)
    first = writer.submit([], [row("chatcmpl-0")])
    assert busy.wait(10)  # the writer holds the first request's transaction open
    later = [writer.submit([], [row(f"chatcmpl-{i}"), row(f"chatcmpl-{i}", choice=1)]) for i in range(1, 9)]
    release.set()
    assert len(first.result(10)) == 1
    cursors = [f.result(10) for f in later]
    writer.close()
    assert sizes == [1, 8] and writer.batches == 2  # the eight that waited went in together
    for i, seqs in enumerate(cursors, start=1):  # each caller got its own rows' cursors
        assert [int(r["cursor"]) for r in store.get_interaction(f"chatcmpl-{i}")] == seqs
    assert store.count() == 17


def test_a_bad_request_in_a_group_fails_alone(store):
    release, busy, sizes = _gate(store)
    writer = StoreWriter(store)
    writer.submit([], [row("chatcmpl-a")])
    assert busy.wait(10)
    good1 = writer.submit([], [row("chatcmpl-b")])
    bad = writer.submit([], [row("chatcmpl-a")])  # the same (id, choice) again: the unique constraint refuses it
    good2 = writer.submit([], [row("chatcmpl-c")])
    release.set()
    assert good1.result(10) and good2.result(10)
    with pytest.raises(IntegrityError):
        bad.result(10)
    writer.close()
    assert sizes[:2] == [1, 3] and store.count() == 3


def test_images_are_written_before_their_rows_and_close_drains_the_queue(store):
    writer = StoreWriter(store)
    data = [b"png bytes %d" % i for i in range(20)]
    with ThreadPoolExecutor(8) as pool:  # concurrent callers, as the gateway's requests
        futures = list(pool.map(lambda i: writer.submit([data[i]], [row(f"chatcmpl-{i}")]), range(20)))
    writer.close()  # returns once everything submitted is committed
    assert all(f.done() and len(f.result()) == 1 for f in futures)
    assert store.count() == 20
    assert all(store.blobs.get(hashlib.sha256(d).hexdigest()) == d for d in data)
    with pytest.raises(WriterClosed):
        writer.submit([], [row("chatcmpl-late")])


def test_a_cancelled_caller_still_gets_its_interaction_written(store):
    release, busy, _ = _gate(store)
    writer = StoreWriter(store)
    writer.submit([], [row("chatcmpl-0")])
    assert busy.wait(10)
    gone = writer.submit([], [row("chatcmpl-gone")])
    assert gone.cancel()  # the client went away while it waited
    release.set()
    writer.close()
    assert store.get_interaction("chatcmpl-gone")  # the served request is logged all the same


def test_calls_run_on_the_writer_thread_in_order_with_the_interactions(store):
    release, busy, sizes = _gate(store)
    writer = StoreWriter(store)
    writer.submit([], [row("chatcmpl-0")])
    assert busy.wait(10)
    logged = writer.submit([], [row("chatcmpl-1")])
    # Feedback for the interaction submitted just before it: it runs after that commit, on the same thread.
    feedback = writer.call(lambda: (threading.current_thread().name, store.add_feedback("chatcmpl-1", thumbs="up")))
    after = writer.submit([], [row("chatcmpl-2")])
    failing = writer.call(lambda: store.add_feedback("chatcmpl-unknown", thumbs="up"))
    release.set()
    thread, fb_id = feedback.result(10)
    assert thread == "store-writer" and fb_id.startswith("fb-") and logged.result(10) and after.result(10)
    with pytest.raises(UnknownInteraction):
        failing.result(10)
    writer.close()
    assert sizes == [1, 1, 1]  # the call split the waiting submissions into two transactions
    assert store.get_interaction("chatcmpl-1")[0]["feedback"][0]["thumbs"] == "up"
