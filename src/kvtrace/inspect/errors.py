"""The one error type the inspection commands report: a message for the user, no traceback."""

from __future__ import annotations


class InspectError(Exception):
    """Bad input or an unreachable dependency; the message names the parameter or address."""
