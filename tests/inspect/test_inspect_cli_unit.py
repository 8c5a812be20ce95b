"""The inspection commands are registered in `kvtrace` and as the kubectl plugin; bad flags
are argparse errors naming the flag."""

from __future__ import annotations

import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.cli import build_parser
from kvtrace.cli import main as kvtrace_main
from kvtrace.inspect import cli, urls
from kvtrace.inspect.errors import EXIT_UNREACHABLE, EXIT_USAGE

pytestmark = pytest.mark.unit

COMMANDS = ("status", "doctor", "trace", "traces")


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_are_in_kvtrace_and_the_kubectl_plugin(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for parser, prog in (
        (build_parser(), "kvtrace"),
        (cli.build_kubectl_parser(), "kubectl kvtrace"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: {prog} {command}")


def test_kubectl_plugin_parses_like_kvtrace() -> None:
    args = cli.build_kubectl_parser().parse_args(["status", "-n", "store", "kv", "-o", "json"])
    assert (args.command, args.namespace, args.name, args.output) == (
        "status",
        "store",
        "kv",
        "json",
    )
    args = build_parser().parse_args(
        ["traces", "--service", "kv", "--errors", "--slower-than", "250ms"]
    )
    assert (args.service, args.errors, args.slower_than, args.limit) == ("kv", True, "250ms", 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["traces", "--service", "kv", "--limit", "0"],
            "argument --limit: expected a positive whole number, got '0'",
        ),
        (["status", "-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
    ],
)
def test_bad_flags_name_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.kubectl_main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_urls_are_checked_and_jaeger_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    from kvtrace.inspect.errors import InspectError

    monkeypatch.delenv(urls.JAEGER_ENV, raising=False)
    monkeypatch.delenv("KVTRACE_ENDPOINT_MAP", raising=False)
    with pytest.raises(InspectError, match="--jaeger: give Jaeger's query URL"):
        urls.jaeger_url(None)
    with pytest.raises(InspectError, match="--jaeger: expected an http"):
        urls.jaeger_url("localhost:16686")
    monkeypatch.setenv(urls.JAEGER_ENV, "http://jaeger:16686")
    assert urls.jaeger_url(None) == "http://jaeger:16686"


def test_an_inspect_error_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(urls.JAEGER_ENV, raising=False)
    assert cli.kubectl_main(["trace", "abc"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"kvtrace trace: error: --jaeger: give Jaeger's query URL (e.g. http://localhost:16686) or set {urls.JAEGER_ENV}\n"
    )


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """Two contexts: ``here`` (the current one) and ``there``, both at a closed loopback port."""
    server = f"https://127.0.0.1:{unused_port()}"
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "here",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {
                        "name": "here",
                        "context": {"cluster": "c", "user": "u", "namespace": "ns-here"},
                    },
                    {
                        "name": "there",
                        "context": {"cluster": "c", "user": "u", "namespace": "ns-there"},
                    },
                ],
            }
        )
    )
    return path


def test_context_selects_a_kubeconfig_context(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvtrace.inspect.kube import Kube

    assert Kube(str(kubeconfig)).default_namespace == "ns-here"
    assert Kube(str(kubeconfig), context="there").default_namespace == "ns-there"
    assert (
        cli.kubectl_main(["status", "--kubeconfig", str(kubeconfig), "--context", "elsewhere"])
        == EXIT_USAGE
    )
    assert capsys.readouterr().err == (
        "kvtrace status: error: --context: Context 'elsewhere' not found in the kubeconfig\n"
    )


def test_an_unreachable_cluster_or_jaeger_exits_3_and_names_it(
    kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.kubectl_main(["status", "--kubeconfig", str(kubeconfig), "--context", "there"])
        == EXIT_UNREACHABLE
    )
    assert (
        "kvtrace status: error: cannot reach the API server at https://127.0.0.1:"
        in capsys.readouterr().err
    )
    jaeger = f"http://127.0.0.1:{unused_port()}"
    assert cli.kubectl_main(["trace", "abc", "--jaeger", jaeger]) == EXIT_UNREACHABLE
    assert (
        f"kvtrace trace: error: cannot reach Jaeger at {jaeger} (--jaeger)"
        in capsys.readouterr().err
    )
    assert (
        cli.kubectl_main(["trace", "not-hex", "--jaeger", jaeger]) == EXIT_USAGE
    )  # checked before


@pytest.mark.parametrize(
    "main", [kvtrace_main, cli.kubectl_main], ids=["kvtrace", "kubectl-kvtrace"]
)
def test_version_is_the_distributions(main: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.split()[-1] == metadata.version("kvtrace")


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            cli.kubectl_main([command, "--help"])
        out = capsys.readouterr().out
        assert (
            "exit codes:\n" in out
            and "  3  the API server, the collector or Jaeger could not be reached" in out
        )
