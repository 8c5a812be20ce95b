"""Errors of the read-only API layer: one message naming what was asked, retries of 429."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from kvtrace.inspect import kube as kube_mod
from kvtrace.inspect.errors import InspectError

pytestmark = pytest.mark.unit


def api(code: int, message: str, reason: str = "") -> ApiError:
    return ApiError(status=Status(code=code, message=message, reason=reason))


def fake() -> kube_mod.Kube:
    client = kube_mod.Kube.__new__(kube_mod.Kube)
    client.server = "https://127.0.0.1:6443"
    return client


def raising(*errors: Exception) -> Any:
    queue = list(errors)

    def fn() -> str:
        if queue:
            raise queue.pop(0)
        return "ok"

    return fn


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            api(403, "pods is forbidden", "Forbidden"),
            "the API server refused to list Pod in namespace s (403 Forbidden): pods is forbidden; kvtrace needs get and list on it",
        ),
        (
            api(404, "the server could not find the requested resource"),
            "cannot list Pod in namespace s: the API server does not serve it (are the kvtrace CRDs installed?",
        ),
        (api(500, "etcd down"), "cannot list Pod in namespace s: 500 etcd down"),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "cannot reach the API server at https://127.0.0.1:6443 to list Pod in namespace s: [Errno 111] Connection refused",
        ),
    ],
)
def test_errors_name_the_request(error: Exception, message: str) -> None:
    with pytest.raises(InspectError) as info:
        fake()._call("list Pod in namespace s", raising(error))
    assert str(info.value).startswith(message)


def test_throttled_requests_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("kvtrace.inspect.kube.time.sleep", sleeps.append)
    assert (
        fake()._call("list", raising(api(429, "storage is (re)initializing"), api(429, "again")))
        == "ok"
    )
    assert sleeps == [0.5, 1.0]
    with pytest.raises(InspectError, match="cannot list: 429 still"):
        fake()._call("list", raising(*[api(429, "still")] * 5))
    assert len(sleeps) == 2 + len(kube_mod.RETRY_429)


def test_missing_kubeconfig_names_the_flag(tmp_path: Any) -> None:
    with pytest.raises(InspectError, match=f"--kubeconfig: {tmp_path}/nope is not a file"):
        kube_mod.Kube(str(tmp_path / "nope"))
