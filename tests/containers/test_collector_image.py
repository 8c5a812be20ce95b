"""The collector image's EC2 stand-in (tools/otelcol/stubs/ec2): otelcol-kvtrace leaves the AWS
SDK's EC2 API client out to meet its size budget. Its ec2 resource detector still reads the
instance metadata service (a module of its own), and asking it for the instance's tags (the
EC2 API's DescribeTags) fails saying what is missing and where it is. The metadata service here
is a fake on loopback (AWS_EC2_METADATA_SERVICE_ENDPOINT): a real one must not be contacted."""

from __future__ import annotations

import http.server
import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from image_stack import SHIPPED

from kvtrace.devstack import podcontainers
from kvtrace.devstack.proc import free_port, urlopen_direct
from kvtrace.devstack.pytest_plugin import poll

pytestmark = pytest.mark.containers

INSTANCE = {
    "instanceId": "i-0kvtrace0imds0001",
    "region": "eu-west-3",
    "availabilityZone": "eu-west-3a",
    "accountId": "123456789012",
    "imageId": "ami-0kvtrace",
    "instanceType": "m5.large",
}
HOSTNAME = "ip-10-0-0-7.eu-west-3.compute.internal"


class FakeIMDS(http.server.BaseHTTPRequestHandler):
    """IMDSv2 as the SDK asks it: a session token, then the instance's id, identity document
    and host name. Every path asked is kept in ``asked``."""

    asked: list[str] = []

    def do_PUT(self) -> None:
        self.asked.append(f"PUT {self.path}")
        self._send(b"fake-token", {"X-Aws-Ec2-Metadata-Token-Ttl-Seconds": "21600"})

    def do_GET(self) -> None:
        self.asked.append(f"GET {self.path}")
        answers = {
            "/latest/meta-data/instance-id": INSTANCE["instanceId"].encode(),
            "/latest/dynamic/instance-identity/document": json.dumps(INSTANCE).encode(),
            "/latest/meta-data/hostname": HOSTNAME.encode(),
        }
        if self.path in answers:
            self._send(answers[self.path], {})
        else:
            self.send_error(404)

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[tuple[str, list[str]]]:
    """The fake metadata service's endpoint and the paths it was asked."""
    asked: list[str] = []
    handler = type("Handler", (FakeIMDS,), {"asked": asked})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def config(otlp_port: int) -> dict[str, Any]:
    """OTLP/HTTP in, the ec2 detector asked for tags, every span printed."""
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {
            "resource_detection": {"detectors": ["ec2"], "timeout": "30s", "ec2": {"tags": [".*"]}}
        },
        "exporters": {"debug": {"verbosity": "detailed"}},
        "service": {
            "telemetry": {"metrics": {"level": "none"}},
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["resource_detection"],
                    "exporters": ["debug"],
                }
            },
        },
    }


SPAN = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "p"}}]},
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "probe",
                            "kind": 2,
                            "startTimeUnixNano": "1000",
                            "endTimeUnixNano": "2000",
                        }
                    ]
                }
            ],
        }
    ]
}


def endpoint_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def send_span(port: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces",
        data=json.dumps(SPAN).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urlopen_direct(request, timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_ec2_detector_reads_instance_metadata_and_tags_fail_naming_the_contrib_image(
    engine: str, imds: tuple[str, list[str]], tmp_path: Path
) -> None:
    endpoint, asked = imds
    otlp_port = free_port()
    configmap = tmp_path / "otelcol"  # as a ConfigMap volume: readable by the image's user
    configmap.mkdir(mode=0o755)
    (configmap / "config.yaml").write_text(yaml.safe_dump(config(otlp_port)))
    (configmap / "config.yaml").chmod(0o644)
    pod = {"spec": {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001}}}
    container = {
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    }
    name = f"kvtrace-test-ec2-{uuid.uuid4().hex[:8]}"
    argv = podcontainers.run_argv(
        engine,
        name=name,
        pod=pod,
        container=container,
        image=SHIPPED["collector"],
        args=["--config=/etc/otelcol/config.yaml"],
        env_names=["AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_ENDPOINT_URL_EC2"],
        mounts=[podcontainers.Mount(configmap, "/etc/otelcol", read_only=True)],
    )
    # An EC2 API client, were one linked, would be sent to a closed loopback port.
    aws = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint, "AWS_ENDPOINT_URL_EC2": endpoint_of(1)}
    env = podcontainers.engine_client_env(aws, os.environ)
    collector = podcontainers.ContainerProcess(
        engine, name, "collector", argv, tmp_path / "collector.log", env=env
    ).start()
    try:
        poll(
            lambda: send_span(otlp_port) or not collector.alive(),
            timeout=180,
            interval=1,
            message="the collector container accepting a span",
        )
        assert collector.alive(), collector.tail(60)
        printed = poll(
            lambda: "host.id: Str(" in (text := collector.tail(400)) and text,
            timeout=60,
            interval=0.5,
            message="the span printed with its detected resource",
        )
    finally:
        collector.stop()
    # The instance metadata path works: the fake service's answers are on the span.
    for attribute, value in (
        ("cloud.provider", "aws"),
        ("cloud.platform", "aws_ec2"),
        ("cloud.region", INSTANCE["region"]),
        ("cloud.account.id", INSTANCE["accountId"]),
        ("host.id", INSTANCE["instanceId"]),
        ("host.type", INSTANCE["instanceType"]),
        ("host.name", HOSTNAME),
    ):
        assert f"{attribute}: Str({value})" in printed, printed
    assert "GET /latest/dynamic/instance-identity/document" in asked, asked
    # The tags would need DescribeTags: the stand-in refuses it, naming what to use instead.
    assert "failed fetching ec2 instance tags" in printed, printed
    assert "ec2 DescribeTags: the EC2 API client is not part of otelcol-kvtrace" in printed
    assert "otel/opentelemetry-collector-contrib" in printed
    assert "ec2.tag." not in printed
