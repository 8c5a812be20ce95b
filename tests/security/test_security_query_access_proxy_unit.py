"""What ``spec.jaeger.query.auth`` modes ``bearer`` and ``oidc`` render (docs/security.md: the
``query-proxy`` sidecar in the Jaeger pod, Jaeger's query servers on loopback), and TLS on
the query port. The proxy itself: test_security_query_proxy_unit.py and _dataplane.py."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import yaml

from kvtrace_operator import cli
from kvtrace_operator.render import names, render_jaeger_config, render_pipeline
from kvtrace_operator.render.images import OPERATOR_IMAGE, Images
from kvtrace_operator.render.podspec import container_security_context
from kvtrace_operator.render.query_access import EXTENSION, TOKENS_FILE
from kvtrace_operator.render.secret_refs import pipeline_secret_names, referenced_secrets
from kvtrace_operator.render.security import GENERATED_ANNOTATION, RELOADED_VOLUMES
from kvtrace_operator.render.tls import leaves
from kvtrace_operator.spec import PipelineSpec, parse_pipeline

pytestmark = pytest.mark.unit

ISSUER = "https://idp.example.com/realms/kvtrace"
OIDC = {"mode": "oidc", "oidc": {"issuer": ISSUER, "audience": "jaeger-query"}}
MANAGED_TLS = {"security": {"tls": {"enabled": True}}}


def tp(auth: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kvtrace.dev/v1alpha1",
        "kind": "TracingPipeline",
        "metadata": {"name": "traces", "namespace": "store", "uid": "u-tp"},
        "spec": {
            "jaeger": {"query": {"auth": auth}},
            "security": {"tls": {"enabled": False}},
            **spec,
        },
    }


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    return found


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(named(objects, "Deployment", "traces-jaeger")["spec"]["template"]["spec"])


def container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [c for c in pod(objects)["containers"] if c["name"] == name]
    return dict(found)


@pytest.mark.parametrize("auth", [{"mode": "bearer"}, OIDC])
def test_proxy_modes_put_jaeger_query_on_loopback_and_the_proxy_on_the_query_port(
    auth: dict[str, Any],
) -> None:
    config = render_jaeger_config(tp(auth))
    query = config["extensions"]["jaeger_query"]
    assert query["http"] == {"endpoint": "127.0.0.1:16687"} and query["grpc"] == {
        "endpoint": "127.0.0.1:16685"
    }
    assert (
        EXTENSION not in config["extensions"] and EXTENSION not in config["service"]["extensions"]
    )
    objects = render_pipeline(tp(auth))
    jaeger = container(objects, "jaeger")
    assert {port["name"] for port in jaeger["ports"]} == {
        "otlp-grpc",
        "otlp-http",
        "health",
        "metrics",
    }
    proxy = container(objects, "query-proxy")
    assert proxy["image"] == OPERATOR_IMAGE and proxy["command"] == ["kvtrace", "query-proxy"]
    assert proxy["args"][:8] == [
        "--mode",
        auth["mode"],
        "--listen",
        "0.0.0.0:16686",
        "--upstream",
        "http://127.0.0.1:16687",
        "--tokens-file",
        TOKENS_FILE,
    ]
    assert proxy["ports"] == [{"name": "query-http", "containerPort": 16686, "protocol": "TCP"}]
    assert proxy["securityContext"] == container_security_context()
    for probe in (
        "livenessProbe",
        "readinessProbe",
    ):  # the kubelet sends no token: /healthz needs none
        assert proxy[probe]["httpGet"] == {
            "path": "/healthz",
            "port": "query-http",
            "scheme": "HTTP",
        }
    assert proxy["resources"]["limits"]["memory"]
    # No API access for either container; gRPC is not offered through the Service.
    assert pod(objects)["automountServiceAccountToken"] is False
    service = named(objects, "Service", "traces-jaeger-query")
    assert service["spec"]["type"] == "ClusterIP"
    assert [port["name"] for port in service["spec"]["ports"]] == ["query-http"]
    # The tokens reach only the proxy, from a Secret volume it re-reads (no roll on change).
    [volume] = [v for v in pod(objects)["volumes"] if v["name"] == "auth-token"]
    assert volume["secret"] == {
        "secretName": "traces-jaeger-query-token",
        "items": [{"key": "token", "path": "tokens"}],
    }
    assert "auth-token" in RELOADED_VOLUMES
    assert [m["mountPath"] for m in proxy["volumeMounts"]] == ["/etc/jaeger-query-auth"]
    assert all(m["name"] != "auth-token" for m in jaeger["volumeMounts"])


def test_bearer_generates_a_token_secret_without_prefix() -> None:
    objects = render_pipeline(tp({"mode": "bearer"}))
    secret = named(objects, "Secret", "traces-jaeger-query-token")
    assert "data" not in secret and secret["metadata"]["annotations"] == {
        GENERATED_ANNOTATION: "token"
    }
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-tp"
    assert "traces-jaeger-query-token" in pipeline_secret_names(tp({"mode": "bearer"}))
    assert all(obj["metadata"]["name"] != "traces-jaeger-query-credentials" for obj in objects)


def test_own_token_secret_is_reloaded_and_the_issuer_ca_rolls() -> None:
    pipe = tp(
        {
            "mode": "oidc",
            "credentialsSecretRef": {"name": "readers", "key": "tokens"},
            "oidc": {
                **OIDC["oidc"],
                "requiredClaim": {"name": "groups", "value": "trace-readers"},
                "caSecretRef": {"name": "idp-ca", "key": "ca.crt"},
            },
        }
    )
    objects = render_pipeline(pipe)
    assert all(obj["metadata"]["name"] != "traces-jaeger-query-token" for obj in objects)
    refs = {(ref.name, ref.key): ref.rolls for ref in referenced_secrets(objects)}
    assert refs[("readers", "tokens")] is False  # the proxy re-reads the tokens file
    assert refs[("idp-ca", "ca.crt")] is True  # read at start
    proxy = container(objects, "query-proxy")
    assert proxy["args"][8:] == [
        "--issuer",
        ISSUER,
        "--audience",
        "jaeger-query",
        "--required-claim",
        "groups=trace-readers",
        "--oidc-ca-file",
        "/etc/jaeger-query-oidc-ca/ca.crt",
    ]
    assert {m["name"] for m in proxy["volumeMounts"]} == {"auth-token", "query-oidc-ca"}


OPERATORS_OWN = "mirror.internal/kvtrace-operator@sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("auth", "operator_image", "expected"),
    [
        (
            {"mode": "bearer"},
            None,
            OPERATOR_IMAGE,
        ),  # no image given to the render: the built-in one
        ({"mode": "bearer"}, OPERATORS_OWN, OPERATORS_OWN),  # the operator's own (chart) image
        (OIDC, OPERATORS_OWN, OPERATORS_OWN),
        (
            {"mode": "bearer", "proxyImage": "registry.local/kvtrace-operator:dev"},
            OPERATORS_OWN,
            "registry.local/kvtrace-operator:dev",
        ),  # the pipeline's proxyImage wins
    ],
)
def test_proxy_image_is_the_pipelines_else_the_operators_own(
    auth: dict[str, Any], operator_image: str | None, expected: str
) -> None:
    chosen = {} if operator_image is None else {"images": Images(query_proxy=operator_image)}
    objects = render_pipeline(tp(auth), **chosen)
    assert container(objects, "query-proxy")["image"] == expected
    assert container(objects, "jaeger")["image"] != operator_image  # Jaeger keeps its own image


def test_kvtrace_render_takes_the_same_query_proxy_image_option(tmp_path: Any, capsys: Any) -> None:
    source = tmp_path / "pipeline.yaml"
    source.write_text(yaml.safe_dump(tp({"mode": "bearer"})))
    parser = argparse.ArgumentParser(prog="kvtrace")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["render", "-f", str(source), "--query-proxy-image", OPERATORS_OWN])
    assert args.func(args) == 0
    assert (
        container(list(yaml.safe_load_all(capsys.readouterr().out)), "query-proxy")["image"]
        == OPERATORS_OWN
    )


def test_proxy_image_can_be_chosen_and_no_secret_reaches_a_configmap() -> None:
    objects = render_pipeline(
        tp({"mode": "bearer", "proxyImage": "registry.local/kvtrace-operator:dev"})
    )
    assert container(objects, "query-proxy")["image"] == "registry.local/kvtrace-operator:dev"
    text = yaml.safe_dump(named(objects, "ConfigMap", "traces-jaeger"))
    assert "token" not in text.replace("enable_tracing", "")


@pytest.mark.parametrize("auth", [{"mode": "none"}, {"mode": "basic"}])
def test_tls_jaeger_query_servers_serve_the_jaeger_leaf(auth: dict[str, Any]) -> None:
    pipe = tp(auth, **MANAGED_TLS)
    query = render_jaeger_config(pipe)["extensions"]["jaeger_query"]
    for server in ("http", "grpc"):
        assert query[server]["tls"]["cert_file"] == "/etc/jaeger-serving/tls.crt"
        assert query[server]["tls"]["key_file"] == "/etc/jaeger-serving/tls.key"
    assert (
        names.pipeline_endpoints(pipe)["jaegerQuery"]
        == "https://traces-jaeger-query.store.svc.cluster.local:16686"
    )
    assert "query-proxy" not in [c["name"] for c in pod(render_pipeline(pipe))["containers"]]


def test_tls_the_proxy_terminates_it_with_the_jaeger_leaf() -> None:
    pipe = tp({"mode": "bearer"}, **MANAGED_TLS)
    assert (
        "tls" not in render_jaeger_config(pipe)["extensions"]["jaeger_query"]["http"]
    )  # loopback only
    objects = render_pipeline(pipe)
    proxy = container(objects, "query-proxy")
    assert proxy["args"][-4:] == [
        "--tls-cert-file",
        "/etc/jaeger-serving/tls.crt",
        "--tls-key-file",
        "/etc/jaeger-serving/tls.key",
    ]
    assert {"name": "serving-cert", "mountPath": "/etc/jaeger-serving", "readOnly": True} in proxy[
        "volumeMounts"
    ]
    assert [v["name"] for v in pod(objects)["volumes"]].count("serving-cert") == 1
    for probe in ("livenessProbe", "readinessProbe"):
        assert proxy[probe]["httpGet"] == {
            "path": "/healthz",
            "port": "query-http",
            "scheme": "HTTPS",
        }


def test_the_probed_path_is_the_one_the_proxy_answers_without_a_token() -> None:
    from kvtrace.queryproxy import server
    from kvtrace_operator.render import query_proxy

    assert query_proxy.HEALTH_PATH == server.HEALTH_PATH


def test_the_jaeger_leaf_names_the_query_service_and_secret_mode_keeps_query_plaintext() -> None:
    pipe = tp({"mode": "none"}, **MANAGED_TLS)
    [jaeger] = [
        leaf
        for leaf in leaves(pipe, render_pipeline_spec(pipe))
        if leaf["secret"] == "traces-jaeger-tls"
    ]
    assert {
        "traces-jaeger-otlp.store.svc",
        "traces-jaeger-query",
        "traces-jaeger-query.store.svc",
        "traces-jaeger-query.store.svc.cluster.local",
    } <= set(jaeger["dnsNames"])
    own = tp({"mode": "bearer"}, security={"tls": {"enabled": True, "secretName": "edge"}})
    assert names.pipeline_endpoints(own)["jaegerQuery"].startswith("http://")
    assert "--tls-cert-file" not in container(render_pipeline(own), "query-proxy")["args"]
    assert (
        "tls"
        not in render_jaeger_config(tp({"mode": "basic"}))["extensions"]["jaeger_query"]["http"]
    )


def render_pipeline_spec(pipe: dict[str, Any]) -> PipelineSpec:
    return parse_pipeline(pipe["spec"])


def test_kvtrace_render_names_the_field_and_renders_the_sidecar(tmp_path: Any) -> None:
    import io
    from argparse import Namespace

    from kvtrace_operator.render_command import main

    def render(auth: dict[str, Any]) -> tuple[int, str, str]:
        path = tmp_path / "pipeline.yaml"
        path.write_text(yaml.safe_dump(tp(auth)))
        out, err = io.StringIO(), io.StringIO()
        code = main(Namespace(files=[str(path)]), stdout=out, stderr=err, stdin=io.StringIO(""))
        return code, out.getvalue(), err.getvalue()

    code, _, err = render(
        {"mode": "oidc", "oidc": {"issuer": "http://login.example.com", "audience": "jaeger"}}
    )
    # the CRD's own pattern (kvtrace render checks files as the API server does)
    assert (
        code == 1
        and "spec.jaeger.query.auth.oidc.issuer: Invalid value" in err
        and "https://" in err
    ), err
    code, _, err = render({"mode": "oidc"})
    assert code == 1 and "spec.jaeger.query.auth.oidc" in err and "mode oidc" in err, err
    code, out, err = render(OIDC)
    assert code == 0, err
    [deployment] = [
        doc
        for doc in yaml.safe_load_all(out)
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == "traces-jaeger"
    ]
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        "jaeger",
        "query-proxy",
    ]


@pytest.mark.parametrize(
    ("error", "option", "env"),
    [
        (
            "GET http://j/api/v3/traces/x: 401: Jaeger's query API asks for a bearer token and the token is needed "
            "($KVTRACE_JAEGER_TOKEN)",
            "--jaeger-token-file",
            "KVTRACE_JAEGER_TOKEN",
        ),
        (
            "GET http://j/api/v3/traces/x: 401: Jaeger's query API asks for HTTP Basic and the credentials are needed "
            "($KVTRACE_JAEGER_CREDENTIALS)",
            "--jaeger-credentials-file",
            "KVTRACE_JAEGER_CREDENTIALS",
        ),
    ],
)
def test_doctor_tells_which_query_credential_to_give(error: str, option: str, env: str) -> None:
    from kvtrace.inspect import doctor

    check = doctor.check_canary(
        {
            "trace_id": "ab" * 16,
            "collector": "http://c:4318",
            "jaeger": "http://j:16686",
            "timeout": 3.0,
            "waited": 3.0,
            "found": False,
            "jaeger_error": error,
        }
    )
    assert check.summary == "Jaeger at http://j:16686 asks for query credentials"
    assert option in check.fix and env in check.fix


@pytest.mark.parametrize(
    ("auth", "ports"),
    [({"mode": "basic"}, [16686, 16685]), ({"mode": "bearer"}, [16686]), (OIDC, [16686])],
)
def test_the_jaeger_network_policy_opens_only_the_served_query_ports(
    auth: dict[str, Any], ports: list[int]
) -> None:
    policy = named(render_pipeline(tp(auth)), "NetworkPolicy", "traces-jaeger")
    query_rules = [
        rule for rule in policy["spec"]["ingress"] if {"podSelector": {}} in rule.get("from", [])
    ]  # queryAccess: namespace
    assert [[port["port"] for port in rule["ports"]] for rule in query_rules] == [ports]
