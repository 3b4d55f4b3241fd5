"""No key, no public bind: a non-loopback --host needs an API key (given, or generated into a 0600 file)
or an explicit --insecure-no-auth; `up` generates one; trusted feedback keys are client keys too."""

import argparse
import os
import stat
import subprocess
import sys

import httpx
import openai
import pytest

from openvlthinker.cli import build_parser
from serve.cli import build_config
from serve.config import ServeConfig
from serve.keys import is_loopback_host, load_or_create_key
from serve.launcher import free_port


def parse(*argv):
    return build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("10.0.0.5", False),
    ("myhost", False), ("localhost.example.com", False), ("", False),
])
def test_which_hosts_count_as_loopback(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.internal"])
def test_a_public_bind_without_a_key_is_refused_with_the_ways_out(host):
    with pytest.raises(ValueError) as info:
        build_config(parse("--host", host))
    message = str(info.value)
    assert f"host {host!r} is not a loopback address" in message
    assert "--api-key" in message and "--api-key-file" in message and "--insecure-no-auth" in message


def test_a_public_bind_is_accepted_with_a_key_a_key_file_or_insecure_no_auth(tmp_path):
    assert build_config(parse("--host", "0.0.0.0", "--api-key", "k")).api_key == "k"
    assert build_config(parse("--host", "0.0.0.0", "--api-key-file", str(tmp_path / "k"))).api_key is None
    assert build_config(parse("--host", "0.0.0.0", "--insecure-no-auth")).insecure_no_auth is True
    assert build_config(parse()).api_key is None  # loopback stays open, as before
    with pytest.raises(ValueError, match="not both"):
        build_config(parse("--api-key", "k", "--api-key-file", str(tmp_path / "k")))
    with pytest.raises(ValueError, match="insecure_no_auth must be true or false"):
        ServeConfig(insecure_no_auth="yes")


def test_serve_refuses_to_start_on_a_public_host_without_a_key(tmp_path):
    done = subprocess.run([sys.executable, "-m", "openvlthinker.cli", "serve", "--host", "0.0.0.0", "--port",
                           str(free_port()), "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "openvlthinker serve: error: host '0.0.0.0' is not a loopback address" in done.stderr
    assert "Traceback" not in done.stderr and not list(tmp_path.iterdir())  # nothing was started or written


def test_key_files_are_created_0600_and_read_back(tmp_path):
    path = tmp_path / "deep" / "api.key"
    key, created = load_or_create_key(path)
    assert created and len(key) >= 24 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == (key, False)
    path.write_text("  spaced key \n")
    with pytest.raises(ValueError, match="one key without spaces"):
        load_or_create_key(path)
    path.write_text("")
    with pytest.raises(ValueError, match="delete it to have a new key generated"):
        load_or_create_key(path)
    with pytest.raises(ValueError, match="is a directory"):
        load_or_create_key(tmp_path)


def test_a_generated_key_is_printed_once_and_required(start_server, tmp_path):
    key_file = tmp_path / "secrets" / "api.key"
    server = start_server("--api-key-file", str(key_file))
    key = key_file.read_text()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert server.output().count(key) == 1 and "It is not printed again" in server.output()
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert server.client(api_key=key).models.list().data
    assert httpx.get(f"{server.url}/health").status_code == 200  # health stays open for probes


def test_trusted_feedback_keys_are_accepted_as_api_keys(make_client):
    client = make_client(api_key="public", trusted_feedback_keys=["team-a, team-b"], admin_key="adm")
    for key, status in (("public", 200), ("team-a", 200), ("team-b", 200), ("adm", 401), ("other", 401)):
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == status, key
    with pytest.raises(ValueError, match="admin_key must differ from the trusted_feedback_keys"):
        ServeConfig(admin_key="adm", trusted_feedback_keys=["adm"])
    with pytest.raises(ValueError, match="list of strings"):
        ServeConfig(trusted_feedback_keys=[1, 2])


def _up_args(tmp_path, **kw):
    values = {"host": "127.0.0.1", "api_key": None, "admin_key": None, "insecure_no_auth": False, **kw}
    return argparse.Namespace(**values)


def test_up_keys_loopback_stays_open_and_a_public_host_gets_a_saved_key(tmp_path):
    from serve.up import Keys

    (tmp_path / "admin.key").write_text("old-admin")
    os.chmod(tmp_path / "admin.key", 0o644)  # as an older `up` left it
    local = Keys(_up_args(tmp_path), tmp_path)
    assert (local.admin, local.api, local.demo) == ("old-admin", None, None)
    assert local.serve_args() == ["--admin-key=old-admin"]
    assert stat.S_IMODE((tmp_path / "admin.key").stat().st_mode) == 0o600

    public = Keys(_up_args(tmp_path, host="0.0.0.0"), tmp_path)
    assert public.api == (tmp_path / "api.key").read_text() and public.demo
    assert stat.S_IMODE((tmp_path / "api.key").stat().st_mode) == 0o600
    args = public.serve_args()
    assert f"--api-key={public.api}" in args
    assert f"--trusted-feedback-keys={public.demo}" in args  # only the demo's feedback trains
    assert Keys(_up_args(tmp_path, host="0.0.0.0"), tmp_path).api == public.api  # kept across starts
    # what `up` passes must pass the gateway's own checks
    build_config(parse("--host", "0.0.0.0", *args))

    given = Keys(_up_args(tmp_path, host="0.0.0.0", api_key="mine"), tmp_path)
    assert given.api == "mine" and "saved" not in given.describe_api()
    insecure = Keys(_up_args(tmp_path / "x", host="0.0.0.0", insecure_no_auth=True), tmp_path / "x")
    assert insecure.api is None and "--insecure-no-auth" in insecure.serve_args()
    build_config(parse("--host", "0.0.0.0", *insecure.serve_args()))
    with pytest.raises(ValueError, match="must differ"):
        Keys(_up_args(tmp_path, api_key="same", admin_key="same"), tmp_path)
