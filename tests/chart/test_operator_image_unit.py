"""operator/Dockerfile, read as text (no container engine here): a pinned base, non-root
with the ids the chart expects, OCI labels, only the operator extra, the right entrypoint."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from chartlib import CHART, REPO

pytestmark = pytest.mark.unit

DOCKERFILE = REPO / "operator" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def test_base_image_is_pinned_to_a_python_3_11_patch_release() -> None:
    args = dict(re.findall(r"ARG (\w+)=(\S+)", DOCKERFILE.read_text()))
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    froms = [value for name, value in instructions() if name == "FROM"]
    assert froms and all(value.startswith("${PYTHON_IMAGE}") for value in froms), froms


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    users = [value for name, value in instructions() if name == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["podSecurityContext"]["runAsUser"] != 0
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]


def test_installs_only_the_operator_extra_and_runs_the_operator() -> None:
    runs = " ".join(value for name, value in instructions() if name == "RUN")
    assert '".[operator]"' in runs and "[node]" not in runs and "[dev]" not in runs
    entrypoint = [value for name, value in instructions() if name == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["kvtrace", "operator", "run"]


def test_has_oci_labels() -> None:
    labels = " ".join(value for name, value in instructions() if name == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_build_context_is_filtered() -> None:
    ignore = (REPO / "operator" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*" and "!operator/" in ignore
