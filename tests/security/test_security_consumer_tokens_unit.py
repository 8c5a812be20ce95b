"""One OTLP token per consumer (docs/security.md), pure: who the consumers of a pipeline are, the Secrets
rendered for them, the token-set file the collector reads, and the errors of
``spec.security.auth.consumers``. The real collector's side is
``test_security_consumer_tokens_dataplane.py``, the operator's
``test_security_consumer_tokens_controlplane.py``."""

from __future__ import annotations

from typing import Any

import pytest
from test_security_render_unit import kvc, tp

from kvtrace.devstack.otlp_token import LocalToken
from kvtrace_operator import crds
from kvtrace_operator.render import (
    SpecError,
    render_kvcluster,
    render_pipeline,
    strict,
    validate_pipeline,
)
from kvtrace_operator.render import consumer_tokens as ct
from kvtrace_operator.render.secret_refs import pipeline_secret_names
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.unit

APP_REF = {"name": "app-token", "key": "value"}


def auth(**fields: Any) -> dict[str, Any]:
    return {"auth": {"enabled": True, **fields}}


def test_every_consumer_has_its_own_secret() -> None:
    settings = parse_pipeline(
        {
            "security": auth(
                consumers=[{"name": "billing"}, {"name": "app", "tokenSecretRef": APP_REF}]
            )
        }
    ).security.auth
    # generated: the operator makes the Secret (a missing one is awaited, not reported)
    assert ct.consumers(
        settings,
        "traces",
        [("KVCluster", "orders"), ("KVCluster", "carts"), ("KVCluster", "orders")],
    ) == [
        ct.Consumer("pipeline", "traces-otlp-token", "token", generated=True),
        ct.Consumer("KVCluster/carts", "carts-otlp-client-token", "token", generated=True),
        ct.Consumer("KVCluster/orders", "orders-otlp-client-token", "token", generated=True),
        ct.Consumer(
            "consumer/billing", "traces-billing-otlp-consumer-token", "token", generated=True
        ),
        ct.Consumer("consumer/app", "app-token", "value", generated=False),
    ]
    # The pipeline's own token is the user's Secret when it names one (pipelines from before).
    own = parse_pipeline(
        {"security": auth(tokenSecretRef={"name": "otlp-token", "key": "token"})}
    ).security.auth
    assert ct.consumers(own, "traces", [])[0] == ct.Consumer("pipeline", "otlp-token", "token")


def test_the_names_of_the_secrets_never_collide() -> None:
    """A KVCluster and a pipeline may share a name; a consumer may be called like a cluster."""
    names = {
        ct.pipeline_token_secret("a"),
        ct.client_token_secret("a"),
        ct.consumer_token_secret("a", "b"),
        ct.client_token_secret("a-b"),
        ct.token_set_secret("a"),
        ct.consumer_token_secret("a", "otlp"),
    }
    assert len(names) == 6


def test_a_pipeline_renders_the_token_set_and_the_generated_consumer_tokens() -> None:
    pipe = tp(
        security=auth(consumers=[{"name": "billing"}, {"name": "app", "tokenSecretRef": APP_REF}])
    )
    secrets = {o["metadata"]["name"]: o for o in render_pipeline(pipe) if o["kind"] == "Secret"}
    assert list(secrets) == [
        "traces-otlp-tokens",
        "traces-otlp-token",
        "traces-billing-otlp-consumer-token",
    ]
    assert all(
        "data" not in s and s["metadata"]["ownerReferences"][0]["uid"] == "u-tp"
        for s in secrets.values()
    )
    assert secrets["traces-otlp-tokens"]["metadata"]["annotations"] == {
        ct.GENERATED_ANNOTATION: "tokens",
        ct.TOKEN_SET_ANNOTATION: "tokens",
    }
    # The Secret watch covers every Secret holding a token the set is made of.
    assert pipeline_secret_names(pipe) >= {
        "traces-otlp-token",
        "traces-billing-otlp-consumer-token",
        "app-token",
    }


def test_a_kvcluster_owns_its_token_only_while_its_pipeline_authenticates() -> None:
    [secret] = [
        o
        for o in render_kvcluster(kvc(), tp())
        if o["kind"] == "Secret" and "otlp" in o["metadata"]["name"]
    ]
    assert secret["metadata"]["name"] == "orders-otlp-client-token"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "KVCluster"
    assert secret["metadata"]["annotations"] == {ct.GENERATED_ANNOTATION: "token"}

    def otlp_tokens(pipe: dict[str, Any] | None) -> list[dict[str, Any]]:
        return [
            o
            for o in render_kvcluster(kvc(), pipe)
            if o["kind"] == "Secret" and "otlp" in o["metadata"]["name"]
        ]

    assert not otlp_tokens(tp(security={"auth": {"enabled": False}}))
    assert not otlp_tokens(None)


def test_the_token_file_has_a_labelled_line_per_consumer() -> None:
    entries = [("tok-a", "pipeline"), ("tok-b", "KVCluster/orders")]
    text = ct.compose(entries, "never-used")
    assert text == "tok-a pipeline\ntok-b KVCluster/orders\n"
    assert ct.parse(text) == entries
    assert not ct.needs_rewrite(text, entries)
    assert ct.needs_rewrite(text, entries[:1])  # a consumer gone: its line goes
    assert ct.needs_rewrite(text, entries[::-1]) and ct.needs_rewrite(
        text, [("tok-c", "pipeline"), entries[1]]
    )


def test_without_consumers_the_file_holds_a_placeholder_nobody_has() -> None:
    """The extension keeps its last tokens when its file becomes empty: never write one."""
    empty = ct.compose([], "random-placeholder")
    assert ct.parse(empty) == [("random-placeholder", ct.PLACEHOLDER_LABEL)]
    assert not ct.needs_rewrite(empty, [])  # stable: no rewrite on every reconcile
    # What the operator creates first (a random value, no label) is rewritten at once.
    assert ct.needs_rewrite("fresh-random-token", [])
    assert ct.needs_rewrite("", [])


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("abc-DEF_123.~+/=", "abc-DEF_123.~+/="),
        ("  padded\n", "padded"),
        ("", None),
        ("two tokens", None),
        ("tab\tinside", None),
        ("new\nline", None),
        ('quote"', None),
    ],
)
def test_only_a_usable_token_enters_the_set(value: str, token: str | None) -> None:
    assert ct.usable(value) == token


@pytest.mark.parametrize(
    ("consumers", "field", "words"),
    [
        ("billing", "spec.security.auth.consumers", "expected a list"),
        (["billing"], "spec.security.auth.consumers[0]", "expected an object"),
        ([{"name": "Billing"}], "spec.security.auth.consumers[0].name", "expected a DNS label"),
        ([{}], "spec.security.auth.consumers[0].name", "got ''"),
        (
            [{"name": "a"}, {"name": "a"}],
            "spec.security.auth.consumers[1].name",
            "duplicate consumer 'a'",
        ),
        (
            [{"name": "a", "tokenSecretRef": {"name": "s"}}],
            "spec.security.auth.consumers[0].tokenSecretRef",
            "expected {name: SECRET, key: KEY}",
        ),
    ],
)
def test_bad_consumers_are_refused_naming_the_field(consumers: Any, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_pipeline(tp(security=auth(consumers=consumers)))
    assert info.value.field == field and words in str(info.value)


def test_an_unknown_consumer_field_is_refused_by_the_strict_check() -> None:
    """Unknown fields are the schema check's (render.strict, the API server's for the operator),
    before the typed parse and the validator see the spec."""
    resource = tp(security=auth(consumers=[{"name": "a", "token": "x"}]))
    report = strict.check(resource, crds.schemas()[(resource["apiVersion"], resource["kind"])])
    assert [error.field for error in report.errors] == ["spec.security.auth.consumers[0].token"]
    assert "unknown field" in report.errors[0].message


def test_local_harnesses_resolve_every_consumer_secret_to_their_token(tmp_path: Any) -> None:
    token = LocalToken("t0k3n", tmp_path / "token")
    data = token.secrets(tp())
    assert data[("traces-otlp-token", "token")] == "t0k3n"
    assert ("orders-otlp-client-token", "token") in data and data[
        ("orders-otlp-client-token", "token")
    ] == "t0k3n"
    assert ("orders-otlp-client-token", "other") not in data and ("unrelated", "token") not in data
    assert token.secrets(tp(security={"auth": {"enabled": False}})) == {}
