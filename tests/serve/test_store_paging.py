"""Cursor paging with several writers whose commits are delayed at random: no row is ever skipped
(on PostgreSQL, seqs can commit out of order; see serve/store/horizon.py), on SQLite and PostgreSQL."""

import random
import threading
import time

from sqlalchemy import event

from tests.serve.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
from tests.serve.test_store import row, store, store_url  # noqa: F401 - fixtures


def _delay_commits(store, seconds):
    """Sleep a random time, up to `seconds`, before every commit (after the rows took their seqs)."""
    rng, lock = random.Random(0), threading.Lock()

    def before_commit(_conn):
        with lock:
            pause = rng.uniform(0, seconds)
        time.sleep(pause)

    event.listen(store.engine, "commit", before_commit)


def _page_all(list_page, until, out):
    """Page with `after=` as the RL loop does, until `until` is set and a page comes back empty."""
    cursor = 0
    while True:
        done = until.is_set()
        page, cursor, _ = list_page(after=cursor or 0, limit=7)
        cursor = cursor or 0
        out.extend(item["id"] for item in page)
        if done and not page:
            return
        time.sleep(0.005)


def _read_while_writing(list_page, writes) -> list:
    """Page through `list_page` from one thread while each of `writes` runs in its own; every id seen."""
    written, seen = threading.Event(), []
    reader = threading.Thread(target=_page_all, args=(list_page, written, seen))
    writers = [threading.Thread(target=w) for w in writes]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    written.set()
    reader.join(30)
    return seen


def test_concurrent_writers_committing_out_of_order_skip_no_interaction(store):
    _delay_commits(store, 0.05)
    ids = [[f"w{k}-{i}" for i in range(12)] for k in range(4)]
    seen = _read_while_writing(store.list_interactions,
                               [lambda mine=mine: [store.add_interactions([row(i)]) for i in mine] for mine in ids])
    assert sorted(seen) == sorted(i for mine in ids for i in mine)  # each exactly once


def test_concurrent_feedback_committing_out_of_order_skips_none(store):
    store.add_interactions([row("c0")])
    _delay_commits(store, 0.05)
    seen = _read_while_writing(store.list_feedback,
                               [lambda: [store.add_feedback("c0", 0, thumbs="up") for _ in range(10)]] * 4)
    assert len(seen) == len(set(seen)) == 40
