"""A Dockerfile read as text (no container engine here): its instructions, stage by stage."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, RUN, COPY, ...
    value: str


class Dockerfile:
    def __init__(self, path: Path) -> None:
        self.path = path
        text = re.sub(r"\\\n\s*", " ", path.read_text())
        lines = (raw.strip() for raw in text.splitlines())
        self.instructions = [
            Instruction(line.split(None, 1)[0].upper(), (line.split(None, 1) + [""])[1])
            for line in lines
            if line and not line.startswith("#")
        ]

    def values(self, name: str) -> list[str]:
        return [i.value for i in self.instructions if i.name == name]

    def args(self) -> dict[str, str]:
        """ARG defaults (``ARG NAME=VALUE``)."""
        return dict(value.split("=", 1) for value in self.values("ARG") if "=" in value)

    def bases(self) -> list[str]:
        """The image of every FROM, ARG defaults substituted; stage names left out."""
        stages: set[str] = set()
        bases = []
        for value in self.values("FROM"):
            words = value.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: self.args()[m.group(1)], words[0])
            if image not in stages:
                bases.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        return bases

    def final(self) -> list[Instruction]:
        """The instructions of the last stage (what the image runs)."""
        starts = [n for n, i in enumerate(self.instructions) if i.name == "FROM"]
        return self.instructions[starts[-1] :]

    def final_values(self, name: str) -> list[str]:
        return [i.value for i in self.final() if i.name == name]

    def exec_form(self, name: str) -> list[str]:
        """The last ENTRYPOINT or CMD of the final stage, which must be in exec (JSON) form."""
        values = self.final_values(name)
        assert values, f"{self.path}: no {name}"
        parsed: list[str] = json.loads(values[-1])
        return parsed

    def labels(self) -> dict[str, str]:
        return dict(re.findall(r'([\w.-]+)="([^"]*)"', " ".join(self.final_values("LABEL"))))

    def exposed(self) -> set[int]:
        return {
            int(port.split("/")[0])
            for value in self.final_values("EXPOSE")
            for port in value.split()
        }

    def copy_sources(self) -> list[str]:
        """Sources of every COPY from the build context (not ``--from=`` a stage)."""
        sources = []
        for value in self.values("COPY"):
            words = value.split()
            if any(word.startswith("--from=") for word in words):
                continue
            sources += [word for word in words if not word.startswith("--")][:-1]
        return sources

    def dockerignore(self) -> list[str]:
        """Lines of ``<Dockerfile>.dockerignore`` (BuildKit's per-Dockerfile context filter)."""
        path = self.path.with_name(self.path.name + ".dockerignore")
        return [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
