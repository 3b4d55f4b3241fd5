"""The interaction store: WAL mode, round trip, feedback, cursor paging, gradable filter, image files."""

import hashlib
import threading

import pytest

from serve.store import BlobStore, Store, UnknownInteraction
from tests.serve.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures


def row(iid="chatcmpl-1", choice=0, **kw):
    base = dict(id=iid, choice_index=choice, created=1.0, model="openvlthinker@v0001", adapter_version="v0001",
                effort="auto", mode="think", budget=256, budget_hit=False,
                request={"messages": [{"role": "user", "content": [{"type": "image", "sha256": "ab" * 32},
                                                                  {"type": "text", "text": "How many?"}]}],
                         "params": {"temperature": 1.0}},
                meta={}, problem_type=None, task_type=None, has_reference=False, thinking="t", answer="3",
                text="<thinking>t</thinking><answer>3</answer>", prompt_token_ids=[1, 2, 3],
                completion_token_ids=[7, 8], logprobs=[-0.5, -0.25], finish_reason="stop", prompt_tokens=3,
                completion_tokens=2, reasoning_tokens=1, latency_s=0.1, stream=False)
    base.update(kw)
    return base


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same store tests on a SQLite file and on a real PostgreSQL database."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'db' / 'serve.db'}"


@pytest.fixture
def store(store_url, tmp_path):
    s = Store(store_url, tmp_path / "images")
    yield s
    s.close()


def test_sqlite_runs_in_wal_mode_with_full_sync(store):
    if not store.is_sqlite:
        pytest.skip("SQLite only")
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL


def test_round_trip_keeps_every_field(store, store_url, tmp_path):
    store.add_interactions([row(), row(choice=1, answer="4")])
    store.close()
    again = Store(store_url, tmp_path / "images")  # a new process would see this
    items = again.get_interaction("chatcmpl-1")
    assert [i["choice_index"] for i in items] == [0, 1] and items[1]["answer"] == "4"
    first = items[0]
    assert first["completion_token_ids"] == [7, 8] and first["logprobs"] == [-0.5, -0.25]
    assert first["request"]["messages"][0]["content"][0] == {"type": "image", "sha256": "ab" * 32}
    assert first["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "reasoning_tokens": 1}
    assert first["adapter_version"] == "v0001" and first["mode"] == "think" and first["feedback"] == []


def test_feedback_attaches_to_one_choice(store):
    store.add_interactions([row(), row(choice=1)])
    fb = store.add_feedback("chatcmpl-1", 1, thumbs="down", correction="2", rating=None, score=None, comment="no")
    assert fb.startswith("fb-")
    items = store.get_interaction("chatcmpl-1")
    assert items[0]["feedback"] == [] and items[1]["feedback"][0]["correction"] == "2"
    with pytest.raises(UnknownInteraction):
        store.add_feedback("chatcmpl-nope", 0, thumbs="up")
    with pytest.raises(UnknownInteraction, match="choice_index 5"):
        store.add_feedback("chatcmpl-1", 5, thumbs="up")


def test_cursor_paging_and_gradable_filter(store):
    for i in range(5):
        store.add_interactions([row(f"c{i}", has_reference=(i == 3))])
    store.add_feedback("c1", 0, score=0.5)
    page, cursor, more = store.list_interactions(after=0, limit=2)
    assert [p["id"] for p in page] == ["c0", "c1"] and more
    page2, cursor2, more2 = store.list_interactions(after=cursor, limit=10)
    assert [p["id"] for p in page2] == ["c2", "c3", "c4"] and not more2
    assert store.list_interactions(after=cursor2)[0] == []
    assert store.list_interactions(after=cursor2)[1] == cursor2  # an empty page keeps the cursor
    gradable, _, _ = store.list_interactions(gradable=True)
    assert [g["id"] for g in gradable] == ["c1", "c3"] and all(g["gradable"] for g in gradable)
    assert [g["id"] for g in store.list_interactions(gradable=False)[0]] == ["c0", "c2", "c4"]


def test_feedback_feed_carries_its_interaction(store):
    store.add_interactions([row("old"), row("new")])
    _, cursor, _ = store.list_interactions()  # the RL loop has paged past both
    first = store.add_feedback("old", 0, thumbs="up")
    store.add_feedback("new", 0, rating=4)
    page, fcursor, more = store.list_feedback(after=0, limit=1)
    assert more and page[0]["id"] == first and page[0]["interaction"]["id"] == "old"
    rest, _, more = store.list_feedback(after=fcursor)
    assert not more and rest[0]["rating"] == 4 and rest[0]["interaction"]["feedback"][0]["rating"] == 4


def test_concurrent_writers_do_not_fail(store):
    errors = []

    def write(k):
        try:
            for i in range(10):
                store.add_interactions([row(f"t{k}-{i}")])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and store.count() == 40


def test_images_are_content_addressed(tmp_path):
    blobs = BlobStore(tmp_path / "images")
    data = b"\x89PNG fake bytes"
    sha = blobs.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert blobs.path(sha) == tmp_path / "images" / sha[:2] / sha
    assert blobs.put(data) == sha and len(list((tmp_path / "images").rglob("*"))) == 2  # one dir, one file
    assert blobs.get(sha) == data and blobs.get("0" * 64) is None and blobs.get("../etc") is None
    with pytest.raises(ValueError):
        blobs.path("../../etc/passwd")


def test_any_sqlalchemy_url(tmp_path):
    s = Store(f"sqlite+pysqlite:///{tmp_path / 'other.db'}", tmp_path / "img")
    s.add_interactions([row()])
    assert s.count() == 1
    s.close()
