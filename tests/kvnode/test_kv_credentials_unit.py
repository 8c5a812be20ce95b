"""The node's TLS and token settings, its credentials (tokens, reload) and the client's."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import pytest

from kvnode.client import ClientError, Security, security_from
from kvnode.process.config import ConfigError, resolve
from kvnode.process.node import CredentialsError, load_credentials
from kvnode.transport.credentials import Credentials, TlsFiles, read_tokens
from kvtrace_operator import pki

pytestmark = pytest.mark.unit

BASE = {"KVNODE_ID": "a", "KVNODE_PEERS": "a=127.0.0.1:7071"}
NOW = datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"KVNODE_TLS_CERT_FILE": "c"},
            "--tls-cert-file given without --tls-key-file, --tls-ca-file",
        ),
        (
            {"KVNODE_TLS_KEY_FILE": "k", "KVNODE_TLS_CA_FILE": "ca"},
            "--tls-key-file, --tls-ca-file given without --tls-cert-file",
        ),
        ({"KVNODE_RELOAD_INTERVAL": "0"}, "--reload-interval must be positive"),
    ],
)
def test_tls_settings_come_together(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve({}, {**BASE, **env})


def write_pair(root: Path, ca: pki.KeyPair, name: str = "kv") -> TlsFiles:
    leaf = pki.issue(ca, name, [name], NOW, datetime.timedelta(days=1))
    for file, text in (
        ("tls.crt", leaf.cert_pem),
        ("tls.key", leaf.key_pem),
        ("ca.crt", ca.cert_pem),
    ):
        (root / file).write_text(text)
    return TlsFiles(str(root / "tls.crt"), str(root / "tls.key"), str(root / "ca.crt"))


def test_unreadable_tls_files_stop_the_node_naming_the_flags(tmp_path: Path) -> None:
    config = resolve(
        {},
        {
            **BASE,
            "KVNODE_TLS_CERT_FILE": str(tmp_path / "missing.crt"),
            "KVNODE_TLS_KEY_FILE": str(tmp_path / "k"),
            "KVNODE_TLS_CA_FILE": str(tmp_path / "c"),
        },
    )
    with pytest.raises(CredentialsError, match="--tls-cert-file/--tls-key-file/--tls-ca-file"):
        load_credentials(config)
    config = resolve({}, {**BASE, "KVNODE_AUTH_TOKEN_DIR": str(tmp_path / "nowhere")})
    with pytest.raises(CredentialsError, match="--auth-token-dir"):
        load_credentials(config)


def test_tokens_one_per_file_labelled_by_name(tmp_path: Path) -> None:
    (tmp_path / "app").write_text("tok-1\n")
    (tmp_path / "empty").write_text("  \n")
    (tmp_path / "spaced").write_text("two words")
    (tmp_path / "..data").mkdir()  # the kubelet's bookkeeping is not a client
    creds = Credentials(None, str(tmp_path))
    assert sorted(read_tokens(str(tmp_path)).values()) == ["app"]
    assert creds.token_label("Bearer tok-1") == "app"
    assert creds.token_label("bearer tok-1") == "app"
    for header in (None, "", "Bearer", "Bearer tok-2", "Basic tok-1", "tok-1", "Bearer two words"):
        assert creds.token_label(header) is None, header
    (tmp_path / "app").unlink()
    (tmp_path / "new").write_text("tok-2")
    assert creds.refresh() and creds.reloads == 1
    assert creds.token_label("Bearer tok-1") is None and creds.token_label("Bearer tok-2") == "new"
    assert not creds.refresh(), "nothing changed: nothing re-read"


def test_tls_reload_keeps_the_previous_contexts_until_the_files_load(tmp_path: Path) -> None:
    ca = pki.make_ca("ca", NOW, datetime.timedelta(days=2))
    files = write_pair(tmp_path, ca)
    creds = Credentials(files, None)
    first = creds.peer_server
    assert first is not None and first.verify_mode == ssl.CERT_REQUIRED
    assert creds.client_server is not None and creds.client_server.verify_mode == ssl.CERT_NONE
    listening = creds.listening(peer=True)
    assert listening is not None and listening.sni_callback is not None
    assert creds.listening(peer=False) is not None
    (tmp_path / "tls.key").write_text(pki.make_ca("other", NOW, datetime.timedelta(days=1)).key_pem)
    os.utime(tmp_path / "tls.key", ns=(1, 1))
    assert not creds.refresh() and creds.peer_server is first, "a key that does not match: kept"
    write_pair(tmp_path, ca, "kv2")
    assert creds.refresh() and creds.peer_server is not first and creds.reloads == 1
    assert Credentials(None, None).listening(peer=True) is None


def test_client_security_from_flags_and_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    assert security_from(None, str(token_file), None, {}) == Security(None, "abc", None)
    env = {"KVTRACE_KV_CA_FILE": "/ca", "KVTRACE_KV_TOKEN": "t", "KVTRACE_KV_SERVER_NAME": "kv.ns"}
    assert security_from(None, None, None, env) == Security("/ca", "t", "kv.ns")
    assert security_from("/flag", None, "n", env) == Security("/flag", "t", "n")
    assert (
        Security(token="t").headers() == "Authorization: Bearer t\r\n"
        and Security().headers() == ""
    )
    with pytest.raises(ClientError, match="--token-file .*missing"):
        security_from(None, str(tmp_path / "missing"), None, {})
    token_file.write_text("two words")
    with pytest.raises(ClientError, match="expected one token"):
        security_from(None, str(token_file), None, {})
