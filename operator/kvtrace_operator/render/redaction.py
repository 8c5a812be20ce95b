"""The redaction defaults of every pipeline (``spec.redaction.defaultPatterns``, on unless
turned off): what the collector's ``redaction`` processor masks even when the user lists
nothing. The user's ``blockedKeyPatterns`` / ``blockedValues`` are added after these.

Go RE2 syntax (the processor's), kept to what Python's ``re`` reads the same way so the unit
tests can check them. Value patterns use ``\\b`` so they never fire inside the hex digests of
``attributes/hash`` (digits next to letters are no word boundary).
"""

from __future__ import annotations

from typing import Any

from kvtrace_operator.spec.pipeline import Redaction

# Attribute keys whose values are always masked.
DEFAULT_KEY_PATTERNS = [
    r"(?i).*(password|passwd|secret|token|api[-_.]?key|authorization|cookie|credential|private[-_.]?key).*",
]

# Values masked wherever they appear, whatever the key.
DEFAULT_VALUE_PATTERNS = [
    # Bearer and Basic credentials as they appear in headers and error messages.
    r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}",
    # JSON Web Tokens.
    r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    # E-mail addresses.
    r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
    # Payment card numbers: Visa, Mastercard, American Express, Discover, undivided...
    r"\b(4[0-9]{12}([0-9]{3})?|5[1-5][0-9]{14}|2[2-7][0-9]{14}|3[47][0-9]{13}|6(011|5[0-9]{2})[0-9]{12})\b",
    # ...or in four groups of four digits.
    r"\b[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{4}\b",
]


def redaction_processor(redaction: Redaction) -> dict[str, Any] | None:
    """The ``redaction`` processor for ``spec.redaction``, or None when it masks nothing."""
    builtin = redaction.default_patterns
    patterns = (DEFAULT_KEY_PATTERNS if builtin else []) + list(redaction.blocked_key_patterns)
    values = (DEFAULT_VALUE_PATTERNS if builtin else []) + list(redaction.blocked_values)
    if not (patterns or values):
        return None
    return {
        "allow_all_keys": True,
        "blocked_key_patterns": patterns,
        "blocked_values": values,
        "summary": "silent",
    }
