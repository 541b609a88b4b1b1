"""The text forms the wire accepts, as regular expressions shared by the reader and the schema.

Each form is one expression body. The reader checks a value with it (as a pydantic-core
pattern, or ``compile_body(...).fullmatch``) and ``ledger schema`` prints the same body as
a JSON Schema ``pattern`` (``schema_pattern``), so the reader and every schema validator
agree on the text by construction, not by keeping two lists in step.

Only what Python's ``re``, ECMAScript (ajv) and Rust's ``regex`` (pydantic) read alike is
used: ASCII classes spelled ``[0-9]`` (``\\d`` is any Unicode digit in Python), alternation,
counted repetition, non-capturing groups. Schema patterns alone add a lookahead and
surrogate escapes (``schema_pattern``, ``schema_text_body``), which Rust's engine never sees.
"""

from __future__ import annotations

import re
from typing import Final

# RFC 3339 as every language writes it: seconds always, 1-9 fractional digits (Go's
# RFC3339Nano has 9), an offset always, no leap second. The year is read as written, not
# converted to UTC: the fixed window 2000-2099 is then a text rule a pattern says exactly.
TIMESTAMP: Final = (
    r"20[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
KEY_HASH: Final = r"[0-9a-f]{64}"
# A budget's scope: one key by its id (lower-case, as the ledger writes ids) or an owner.
BUDGET_KEY_SCOPE: Final = (r"key:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                           r"[0-9a-f]{12}")

# Characters refused in text, as the inside of a negated class. C0 controls (NUL included:
# PostgreSQL text cannot hold it) and DEL in names; free text (metadata values) keeps tab,
# newline and carriage return; free-form JSON only loses NUL (jsonb cannot hold it).
PLAIN_TEXT_REFUSES: Final = r"\x00-\x1f\x7f"
FREE_TEXT_REFUSES: Final = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
JSON_TEXT_REFUSES: Final = r"\x00"
# A lone UTF-16 surrogate escape ("\ud800") is JSON that JavaScript and Python read into a
# string but the reader's parser refuses, so the schema refuses it in every string too.
# Only in schema patterns: the reader's (Rust) patterns cannot even name surrogates.
_LONE_SURROGATES = r"\ud800-\udfff"


def text_body(refused: str) -> str:
    """Any number of characters outside ``refused``: the reader's pattern body."""
    return f"[^{refused}]*"


def budget_scope(text: str) -> str:
    """``key:<uuid>`` or ``owner:<name>``; ``text`` is ``text_body`` or ``schema_text_body``."""
    one = text.removesuffix("*")  # the class alone: an owner name has one character or more
    return f"{BUDGET_KEY_SCOPE}|owner:{one}{text}"


def schema_text_body(refused: str) -> str:
    """``text_body`` for the schema: also no lone surrogate."""
    return f"[^{refused}{_LONE_SURROGATES}]*"


# The longest decimal string read. It bounds what the other rules leave open (trailing zeros,
# a zero's exponent), so no string grows a PostgreSQL numeric beyond its scale limit.
MAX_DECIMAL_TEXT: Final = 100


def _fraction(places: int) -> str:
    """A fraction with at most ``places`` digits up to its last non-zero one (then any zeros)."""
    if places <= 0:
        return r"\.0+"
    before = rf"[0-9]{{0,{places - 1}}}" if places > 1 else ""
    return rf"\.(?:{before}[1-9]0*|0+)"


def _exponent(value: int) -> str:
    """``e`` or ``E`` and exactly ``value``, signed or not, with leading zeros (Go writes e-07)."""
    if value == 0:
        return r"[eE][+-]?0+"
    if value > 0:
        return rf"[eE]\+?0*{value}"
    return rf"[eE]-0*{-value}"


def decimal_text(digits: int, places: int) -> str:
    """0 <= x <= 10**digits with at most ``places`` decimal places (trailing zeros aside).

    Written as JSON writes a number, without a sign: plain (``0.000389``, ``500.00``) or in
    normalized scientific notation, one non-zero digit before the point (``1.5E-7``, what
    Python's ``str(Decimal)``, Java's ``BigDecimal.toString``, JavaScript and Go write for
    small values). Not ``-0``, ``+1``, ``.5``, ``1.``, ``01``, ``1_000``, ``1,50``, ``NaN``,
    ``Infinity`` or ``15E-8``. The value bounds are spelled out per exponent, which keeps the
    expression regular: the value is below 10**digits when the exponent is below ``digits``.
    """
    whole = rf"(?:0|[1-9][0-9]{{0,{digits - 1}}})"
    forms = [
        rf"{whole}(?:{_fraction(places)})?",
        rf"1{'0' * digits}(?:\.0+)?",  # exactly the maximum
        r"0(?:\.0+)?[eE][+-]?0*[0-9]{1,3}",  # zero with an exponent, as Python writes 0E-10
    ]
    for exponent in range(-places, digits):
        # m * 10**e has max(0, f - e) places, f being m's digits after the point.
        forms.append(rf"[1-9](?:{_fraction(places + exponent)})?{_exponent(exponent)}")
    forms.append(rf"1(?:\.0+)?{_exponent(digits)}")  # 1E+9: exactly the maximum again
    return "|".join(forms)


def schema_pattern(body: str) -> str:
    """``body`` as a JSON Schema pattern that means a whole-string match to every validator.

    Validators search (``re.search`` in Python's jsonschema), so the body is anchored; and
    Python's ``$`` also matches before a final newline, which ECMAScript's does not: the
    ``(?!\\n)`` after it makes ``"1\\n"`` fail in both.
    """
    return rf"^(?:{body})$(?!\n)"


def compile_body(body: str) -> re.Pattern[str]:
    """``body`` compiled, for ``.fullmatch`` (which has no trailing-newline quirk)."""
    return re.compile(rf"(?:{body})")
