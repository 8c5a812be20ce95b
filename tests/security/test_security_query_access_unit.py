"""What ``spec.jaeger.query.auth`` renders (docs/security.md, "Access to trace data"), its validation
errors, and the ``--jaeger-credentials-file`` option of the inspection commands. The
behaviour against the real Jaeger is in ``test_security_query_access_dataplane.py``, the
CRD's rules on the real API server in ``test_security_query_access_controlplane.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace_operator.render import (
    SpecError,
    render_jaeger_config,
    render_pipeline,
    validate_pipeline,
)
from kvtrace_operator.render.query_access import (
    CREDENTIALS_DIR,
    EXTENSION,
    GENERATED_PREFIX_ANNOTATION,
    HTPASSWD_FILE,
)
from kvtrace_operator.render.secret_refs import pipeline_secret_names, referenced_secrets
from kvtrace_operator.render.security import GENERATED_ANNOTATION

pytestmark = pytest.mark.unit

OWN = {"name": "query-users", "key": "htpasswd"}


def tp(auth: dict[str, Any] | None = None, **jaeger: Any) -> dict[str, Any]:
    if auth is not None:
        jaeger["query"] = {"auth": auth}
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store", "uid": "u-tp"},
        # Plaintext: these tests are about authentication (TLS on the query port: _proxy_unit.py).
        "spec": {"jaeger": jaeger, "security": {"tls": {"enabled": False}}},
    }


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    return found


def jaeger_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(named(objects, "Deployment", "traces-jaeger")["spec"]["template"]["spec"])


@pytest.mark.parametrize("auth", [None, {"mode": "none"}])
def test_mode_none_renders_no_authenticator_secret_or_volume(auth: dict[str, Any] | None) -> None:
    config = render_jaeger_config(tp(auth))
    assert (
        EXTENSION not in config["extensions"] and EXTENSION not in config["service"]["extensions"]
    )
    assert "auth" not in config["extensions"]["jaeger_query"]["http"]
    assert "auth" not in config["extensions"]["jaeger_query"]["grpc"]
    objects = render_pipeline(tp(auth))
    # only the OTLP token Secrets of the default telemetry auth (test_security_render_unit.py)
    assert [
        obj["metadata"]["name"]
        for obj in objects
        if obj["kind"] == "Secret" and not obj["metadata"]["name"].startswith("traces-otlp-")
    ] == []
    assert all(volume["name"] != "query-credentials" for volume in jaeger_pod(objects)["volumes"])


def test_basic_puts_both_query_servers_behind_basicauth_reading_a_file() -> None:
    config = render_jaeger_config(tp({"mode": "basic"}))
    assert config["extensions"][EXTENSION] == {"htpasswd": {"file": HTPASSWD_FILE}}
    assert EXTENSION in config["service"]["extensions"]
    query = config["extensions"]["jaeger_query"]
    assert query["http"]["auth"] == query["grpc"]["auth"] == {"authenticator": EXTENSION}
    assert query["http"]["endpoint"].endswith(":16686") and query["grpc"]["endpoint"].endswith(
        ":16685"
    )
    # The OTLP receiver (fed by the pipeline's own collector) is not affected.
    assert all("auth" not in server for server in config["receivers"]["otlp"]["protocols"].values())


def test_basic_without_ref_generates_a_secret_mounted_as_the_htpasswd_file() -> None:
    objects = render_pipeline(tp({"mode": "basic"}))
    secret = named(objects, "Secret", "traces-jaeger-query-credentials")
    assert "data" not in secret and "stringData" not in secret  # filled once by the k8s layer
    assert secret["metadata"]["annotations"] == {
        GENERATED_ANNOTATION: "credentials",
        GENERATED_PREFIX_ANNOTATION: "kvtrace:",
    }
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-tp"
    pod = jaeger_pod(objects)
    [volume] = [v for v in pod["volumes"] if v["name"] == "query-credentials"]
    assert volume["secret"] == {
        "secretName": "traces-jaeger-query-credentials",
        "items": [{"key": "credentials", "path": "htpasswd"}],
    }
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "query-credentials"]
    assert mount == {"name": "query-credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}
    assert f"{CREDENTIALS_DIR}/htpasswd" == HTPASSWD_FILE
    # Generated with the apply: not a missing Secret, but in the Secret watch's index.
    assert "traces-jaeger-query-credentials" not in {
        ref.name for ref in referenced_secrets(objects)
    }
    assert "traces-jaeger-query-credentials" in pipeline_secret_names(tp({"mode": "basic"}))


def test_basic_with_own_secret_mounts_that_key_and_rolls_jaeger_when_it_changes() -> None:
    pipe = tp({"mode": "basic", "credentialsSecretRef": OWN})
    objects = render_pipeline(pipe)
    # only the OTLP token Secrets of the default telemetry auth (test_security_render_unit.py)
    assert [
        obj["metadata"]["name"]
        for obj in objects
        if obj["kind"] == "Secret" and not obj["metadata"]["name"].startswith("traces-otlp-")
    ] == []
    [volume] = [v for v in jaeger_pod(objects)["volumes"] if v["name"] == "query-credentials"]
    assert volume["secret"] == {
        "secretName": "query-users",
        "items": [{"key": "htpasswd", "path": "htpasswd"}],
    }
    [ref] = [ref for ref in referenced_secrets(objects) if ref.name == "query-users"]
    assert (ref.name, ref.key, ref.rolls) == (
        "query-users",
        "htpasswd",
        True,
    )  # basicauth reads it at start
    assert "query-users" in pipeline_secret_names(pipe)


@pytest.mark.parametrize(
    "auth", [{"mode": "none"}, {"mode": "basic"}, {"mode": "basic", "credentialsSecretRef": OWN}]
)
def test_no_credential_reaches_a_configmap_and_query_services_stay_clusterip(
    auth: dict[str, Any],
) -> None:
    objects = render_pipeline(tp(auth))
    config_map = named(objects, "ConfigMap", "traces-jaeger")
    text = yaml.safe_dump(config_map)
    assert "kvtrace:" not in text and "password" not in text.lower()
    for name in ("traces-jaeger-query", "traces-jaeger-otlp"):
        assert named(objects, "Service", name)["spec"]["type"] == "ClusterIP"


def test_jaeger_disabled_ignores_query_auth() -> None:
    pipe = tp({"mode": "basic"}, enabled=False)
    pipe["spec"]["exporters"] = {"debug": {"enabled": True}}
    assert [
        obj for obj in render_pipeline(pipe) if obj["metadata"]["name"].startswith("traces-jaeger")
    ] == []


ISSUER = "https://idp.example.com/realms/kvtrace"


@pytest.mark.parametrize(
    ("auth", "field", "words"),
    [
        (
            {"mode": "ldap"},
            "spec.jaeger.query.auth.mode",
            "expected one of none, basic, bearer, oidc",
        ),
        (
            {"credentialsSecretRef": OWN},
            "spec.jaeger.query.auth.credentialsSecretRef",
            "not used with mode none",
        ),
        ({"mode": "oidc"}, "spec.jaeger.query.auth.oidc", "required with mode oidc"),
        (
            {"mode": "oidc", "oidc": {"audience": "a"}},
            "spec.jaeger.query.auth.oidc.issuer",
            "the https URL of the OIDC",
        ),
        (
            {"mode": "oidc", "oidc": {"issuer": "http://idp.example.com", "audience": "a"}},
            "spec.jaeger.query.auth.oidc.issuer",
            "expected an https URL",
        ),
        (
            {"mode": "oidc", "oidc": {"issuer": ISSUER + "#x", "audience": "a"}},
            "spec.jaeger.query.auth.oidc.issuer",
            "without query or fragment",
        ),
        (
            {"mode": "oidc", "oidc": {"issuer": ISSUER}},
            "spec.jaeger.query.auth.oidc.audience",
            "expected the audience",
        ),
        (
            {
                "mode": "oidc",
                "oidc": {"issuer": ISSUER, "audience": "a", "requiredClaim": {"name": "groups"}},
            },
            "spec.jaeger.query.auth.oidc.requiredClaim.value",
            "the value the claim must hold",
        ),
        (
            {
                "mode": "oidc",
                "oidc": {
                    "issuer": ISSUER,
                    "audience": "a",
                    "requiredClaim": {"name": "a=b", "value": "c"},
                },
            },
            "spec.jaeger.query.auth.oidc.requiredClaim.name",
            "without '='",
        ),
        (
            {
                "mode": "oidc",
                "oidc": {"issuer": ISSUER, "audience": "a", "caSecretRef": {"name": "ca"}},
            },
            "spec.jaeger.query.auth.oidc.caSecretRef",
            "expected {name: SECRET, key: KEY}",
        ),
        (
            {"mode": "bearer", "oidc": {"issuer": ISSUER, "audience": "a"}},
            "spec.jaeger.query.auth.oidc",
            "only used with mode oidc",
        ),
        (
            {"mode": "basic", "proxyImage": "x/y:1"},
            "spec.jaeger.query.auth.proxyImage",
            "only used with modes bearer",
        ),
        (
            {"mode": "basic", "credentialsSecretRef": {"name": "x"}},
            "spec.jaeger.query.auth.credentialsSecretRef",
            "expected {name: SECRET, key: KEY}",
        ),
    ],
)
def test_bad_query_auth_is_refused_naming_the_field(
    auth: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as info:
        validate_pipeline(tp(auth))
    assert info.value.field == field
    assert words in str(info.value)


def jaeger_options(**given: str) -> Any:
    import argparse

    options = {
        "jaeger_credentials_file": None,
        "jaeger_token_file": None,
        "jaeger_ca_file": None,
        "jaeger_server_name": None,
    }
    return argparse.Namespace(**{**options, **given})


def test_access_options_set_the_client_credentials_token_and_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvtrace.inspect.cli import use_jaeger_credentials
    from kvtrace.shared import jaeger_client
    from kvtrace.shared.jaeger_client import JaegerClient

    for env in (
        jaeger_client.CREDENTIALS_ENV,
        jaeger_client.TOKEN_ENV,
        jaeger_client.CA_FILE_ENV,
        jaeger_client.SERVER_NAME_ENV,
    ):
        monkeypatch.setenv(env, "")  # recorded: what the options set is undone after the test
        monkeypatch.delenv(env)
    good = tmp_path / "credentials"
    good.write_text("kvtrace:s3cret\nother:$2y$05$hash\n")
    token = tmp_path / "token"
    token.write_text("abc.def-ghi\nsecond\n")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    use_jaeger_credentials(
        jaeger_options(
            jaeger_credentials_file=str(good),
            jaeger_token_file=str(token),
            jaeger_ca_file=str(ca),
            jaeger_server_name="traces-jaeger-query",
        )
    )
    client = JaegerClient("http://127.0.0.1:1")
    assert (client.credentials, client.token) == ("kvtrace:s3cret", "abc.def-ghi")
    assert (client.ca_pem, client.server_hostname) == (
        "-----BEGIN CERTIFICATE-----\n",
        "traces-jaeger-query",
    )
    # What the caller passes beats the environment.
    assert JaegerClient("http://127.0.0.1:1", credentials="a:b")._headers() == {
        "Authorization": "Basic YTpi"
    }
    assert JaegerClient("http://127.0.0.1:1", token="t")._headers() == {"Authorization": "Bearer t"}


@pytest.mark.parametrize(
    ("option", "content", "words"),
    [
        ("jaeger_credentials_file", None, "cannot read"),
        ("jaeger_credentials_file", "no-colon\n", "expected USER:PASSWORD on the first line"),
        ("jaeger_credentials_file", ":nouser\n", "expected USER:PASSWORD on the first line"),
        ("jaeger_token_file", None, "cannot read"),
        ("jaeger_token_file", "\n", "expected a token on the first line"),
        ("jaeger_token_file", "two words\n", "expected a token on the first line"),
        ("jaeger_ca_file", None, "is not a file"),
    ],
)
def test_access_options_refuse_bad_files_naming_the_option(
    tmp_path: Path, option: str, content: str | None, words: str
) -> None:
    from kvtrace.inspect.cli import use_jaeger_credentials
    from kvtrace.inspect.errors import InspectError

    path = tmp_path / "file"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InspectError) as info:
        use_jaeger_credentials(jaeger_options(**{option: str(path)}))
    flag = "--" + option.replace("_", "-")
    assert str(info.value).startswith(f"{flag}: ") and words in str(info.value)
