"""Source-agnostic masking of variable parts (numbers, ids, addresses, paths, times) in log messages."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

# A placeholder is what masking leaves behind; a token holding one is a variable for the miner.
WILDCARD: Final = "<*>"
_PLACEHOLDER = re.compile(r"<(?:\*|[A-Z]+)>")

_B = r"(?<![\w.:/-])"  # start boundary: not glued to a word, path, host or number on the left
_E = r"(?![\w/-]|:\d|\.\w)"  # end boundary: a trailing sentence dot is fine, ".5" or ".com" is not

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_TIME = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,:]\d+)?"

# Order matters: the most specific shapes go first so that, e.g., an IP inside a URL is
# swallowed by the URL rule instead of leaving half a URL behind.
_RULES: Final[tuple[tuple[str, str], ...]] = (
    ("URL", r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>)\]]+"),
    ("UUID", _B + r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}" + _E),
    ("EMAIL", _B + r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+" + _E),
    # Whole human-readable timestamps ("Fri Jun 17 07:07:00 2005", ISO 8601, syslog style) are one
    # value; masking only their digits would leave the month/day names as fake constants.
    ("TS", r"\b(?:" + _DAY + r",?\s+)?" + _MONTH + r"\s+\d{1,2},?\s+" + _TIME + r"(?:\s+\d{4})?\b"),
    (
        "TS",
        _B + r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[T\s_-]+" + _TIME + r"|[-.]\d{2}\.\d{2}\.\d{2}(?:\.\d+)?)?"
        r"(?:Z|[+-]\d{2}:?\d{2})?" + _E,
    ),
    ("TS", _B + _TIME + _E),
    ("MAC", _B + r"(?:[0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}" + _E),
    ("IP", _B + r"(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?:%\w+)?(?=[\s,;)\]]|$)"),
    ("IP", _B + r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?" + _E),
    # host:port and dotted host names (three or more labels, last one alphabetic) are addresses.
    ("HOST", _B + r"(?:[\w-]+\.)+[a-zA-Z][\w-]*:\d{1,5}" + _E),
    ("HOST", _B + r"(?:[\w-]+\.){2,}[a-zA-Z][\w-]*" + _E),
    ("PATH", r"(?<![\w:.<>])(?:[A-Za-z]:)?(?:[/\\]+[\w.@~+%$-]+)+[/\\]*"),
    ("HEX", _B + r"0[xX][0-9a-fA-F]+" + _E),
    ("HEX", _B + r"(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}" + _E),
    # Sizes and durations with a unit ("18.4 KB", "250ms", "<1 sec") are a single number.
    ("NUM", r"(?<![\w.])[<>~]?[-+]?\d+(?:\.\d+)?\s?(?:[KMGTP]i?B|bytes|ms|us|ns|sec|secs|s|min|mins|h)\b"),
    # A word mixing letters and digits (blk_-123, attempt_01_000002, R02-M1-N0) is an identifier.
    ("ID", r"(?<![\w<>.-])(?=[\w.-]*\d)(?=[\w.-]*[A-Za-z_])[\w][\w.-]*(?<![.-])"),
    ("NUM", r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*" + _E),
)
# All rules as one alternation, so a message is scanned once instead of once per rule; at each
# position the first rule that matches wins, which keeps the "specific before generic" order.
# Every rule refuses to start right after a word character, so that check is hoisted in front of
# the alternation: most positions in a message are then rejected once instead of once per rule.
# A second guard skips plain words: every rule needs a digit or one of @ / . : \\ - somewhere in the
# token, except the timestamp rule, which may start with a month or day name.
_ONE_PASS: Final = re.compile(
    r"(?<!\w)(?=\S*[\d@/.:\\-]|"
    + _DAY
    + "|"
    + _MONTH
    + r")(?:"
    + "|".join(f"(?P<{name}_{i}>{rx})" for i, (name, rx) in enumerate(_RULES))
    + ")"
)
_GROUP_PLACEHOLDER: Final = {f"{name}_{i}": f"<{name}>" for i, (name, _) in enumerate(_RULES)}


def _placeholder(m: re.Match[str]) -> str:
    return _GROUP_PLACEHOLDER[m.lastgroup or ""]


_HAS_DIGIT = re.compile(r"\d")
_ALNUM = re.compile(r"[^\W_]")  # placeholders contain letters, so they never count as punctuation


def mask(message: str) -> str:
    """Replace variable-looking substrings (numbers, ids, addresses, ...) with typed placeholders."""
    return _ONE_PASS.sub(_placeholder, message)


# Token classifiers are hot (called per token per comparison) and tokens repeat a lot: cache them.
@lru_cache(maxsize=1 << 16)
def is_variable(token: str) -> bool:
    """True for tokens that hold a placeholder or still contain a digit (ids that escaped masking)."""
    return _PLACEHOLDER.search(token) is not None or _HAS_DIGIT.search(token) is not None


@lru_cache(maxsize=1 << 16)
def is_punctuation(token: str) -> bool:
    """True for tokens made only of punctuation (they carry little evidence of sameness)."""
    return _ALNUM.search(token) is None
