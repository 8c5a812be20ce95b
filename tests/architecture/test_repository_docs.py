"""The repository is self-contained: docs link only to files that exist in it, nothing cites a
document or issue kept elsewhere, and the license files match what pyproject.toml declares."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# DESIGN.md was the contracts document kept beside the repository (now docs/design.md).
OUTSIDE = re.compile(r"\bDESIGN\.md\b|(?i:\bissues? #?\d+|\bbeside (this|the) repo)")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def test_markdown_links_to_repository_files_resolve() -> None:
    broken = []
    for doc in tracked("*.md"):
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = target.split("#", 1)[0]
            if not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_nothing_cites_documents_or_issues_kept_outside_the_repository() -> None:
    found = []
    for path in tracked(
        "*.md", "*.py", "*.yaml", "*.toml", "*.txt", "Makefile", "*Dockerfile", "*.go", "*.mod"
    ):
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            if OUTSIDE.search(line) and path != Path(__file__):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "cite docs/design.md or a doc in the repository instead:\n" + "\n".join(found)


def test_license_files_match_the_declared_license() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert (
        text.split()[:3] == ["Apache", "License", "Version"] and "Version 2.0, January 2004" in text
    )
    assert "END OF TERMS AND CONDITIONS" in text
    notice = (REPO / "NOTICE").read_text()
    assert "src/kvtrace/devstack/kwok_stages.py" in notice  # the vendored KWOK stages
    for doc in ("CHANGELOG.md", "CONTRIBUTING.md", "docs/design.md"):
        assert (REPO / doc).is_file(), doc
