"""Images under an fsspec URL: the folder store's layout and write-once rule, on fsspec's local and memory filesystems."""

import hashlib
import uuid
from pathlib import Path

import pytest

from serve.store import Store
from serve.store.blobs import BlobStore, FsspecBlobStore, open_blobs

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture(params=["file", "memory"])
def url(request, tmp_path):
    return f"file://{tmp_path}/images" if request.param == "file" else f"memory://images-{uuid.uuid4().hex}"


def test_open_blobs_takes_a_url_or_a_folder(tmp_path, url):
    assert isinstance(open_blobs(url), FsspecBlobStore)
    assert isinstance(open_blobs(tmp_path / "images"), BlobStore) and isinstance(open_blobs(str(tmp_path)), BlobStore)


def test_content_addressed_written_once_read_back(url):
    blobs = open_blobs(url)
    sha = blobs.put(PNG)
    assert sha == hashlib.sha256(PNG).hexdigest() and blobs.put(PNG) == sha
    assert blobs.get(sha) == PNG and blobs.data_url(sha).startswith("data:image/png;base64,")
    assert blobs.get("0" * 64) is None and blobs.get("not-a-hash") is None
    # one object per image, under <sha[:2]>/<sha>, no temporary file left behind
    assert [p.rsplit("/", 1)[-1] for p in blobs.fs.find(blobs._base)] == [sha]
    assert open_blobs(url).get(sha) == PNG  # another store on the same URL reads it


def test_a_local_url_is_the_same_layout_as_the_folder_store(tmp_path):
    sha = open_blobs(f"file://{tmp_path}/images").put(PNG)
    assert (tmp_path / "images" / sha[:2] / sha).read_bytes() == PNG
    assert BlobStore(tmp_path / "images").get(sha) == PNG


def test_an_unusable_url_is_named():
    with pytest.raises(ValueError) as err:
        open_blobs("nope://x/images")
    assert "nope://x/images" in str(err.value) and "Protocol not known" in str(err.value)


def test_the_store_writes_images_under_a_url(tmp_path, url):
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}", url)
    sha = store.blobs.put(PNG)
    assert store.blobs.get(sha) == PNG and store.blobs.root == url
    store.close()


def test_the_image_and_poll_flags_reach_the_config_and_bad_ones_are_named(tmp_path):
    from openvlthinker.cli import build_parser
    from serve.cli import build_config
    from serve.config import ServeConfig

    def parse(*argv):
        return build_config(build_parser().parse_args(["serve", "--run-dir", str(tmp_path), *argv]))

    default = parse()
    assert default.images_location == tmp_path / "images" and default.registry_poll_s == 1.0
    assert parse("--images-dir", "/srv/images").images_location == Path("/srv/images")
    cfg = parse("--images-url", "memory://shared", "--registry-poll-s", "0.25")
    assert cfg.images_location == "memory://shared" and cfg.registry_poll_s == 0.25
    for kw, words in ((dict(images_url="/srv/images"), "fsspec URL"), (dict(images_url="memory://a", images_dir="/x"),
                                                                         "not both"), (dict(registry_poll_s=0), "> 0")):
        with pytest.raises(ValueError, match=words):
            ServeConfig(model="m", **kw)
