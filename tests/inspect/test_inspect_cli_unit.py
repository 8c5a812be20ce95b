"""The inspection commands are registered in `kvtrace` and as the kubectl plugin; bad flags
are argparse errors naming the flag."""

from __future__ import annotations

import pytest

from kvtrace.cli import build_parser
from kvtrace.inspect import cli, urls

pytestmark = pytest.mark.unit

COMMANDS = ("status", "doctor", "trace", "traces")


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_are_in_kvtrace_and_the_kubectl_plugin(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    for parser, prog in ((build_parser(), "kvtrace"), (cli.build_kubectl_parser(), "kubectl kvtrace")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([command, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: {prog} {command}")


def test_kubectl_plugin_parses_like_kvtrace() -> None:
    args = cli.build_kubectl_parser().parse_args(["status", "-n", "store", "kv", "-o", "json"])
    assert (args.command, args.namespace, args.name, args.output) == ("status", "store", "kv", "json")
    args = build_parser().parse_args(["traces", "--service", "kv", "--errors", "--slower-than", "250ms"])
    assert (args.service, args.errors, args.slower_than, args.limit) == ("kv", True, "250ms", 5)


@pytest.mark.parametrize(("argv", "message"), [
    (["traces", "--service", "kv", "--limit", "0"], "argument --limit: expected a positive whole number, got '0'"),
    (["status", "-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
    (["doctor"], "the following arguments are required: NAME"),
])
def test_bad_flags_name_the_flag(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
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


def test_an_inspect_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(urls.JAEGER_ENV, raising=False)
    assert cli.kubectl_main(["trace", "abc"]) == 2
    err = capsys.readouterr().err
    assert err == f"kvtrace trace: error: --jaeger: give Jaeger's query URL (e.g. http://localhost:16686) or set {urls.JAEGER_ENV}\n"
