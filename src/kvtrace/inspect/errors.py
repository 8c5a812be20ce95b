"""The errors the inspection commands report: a message for the user, no traceback, and the
exit code that tells them apart (docs/troubleshooting.md, "Exit codes")."""

from __future__ import annotations

EXIT_FAILED_CHECK = 1  # kvtrace doctor: a check failed
EXIT_USAGE = 2  # bad flags or input (argparse's own code for usage errors)
EXIT_UNREACHABLE = 3  # the API server, the collector or Jaeger could not be reached


class InspectError(Exception):
    """Bad input; the message names the parameter. Exit code :data:`EXIT_USAGE`."""

    exit_code = EXIT_USAGE


class Unreachable(InspectError):
    """The API server, the collector or Jaeger did not answer (connection refused, timeout,
    TLS failure); the message names the address. Exit code :data:`EXIT_UNREACHABLE`."""

    exit_code = EXIT_UNREACHABLE
