"""Unihan parsing and definition cleaning.

Unihan lines are `U+XXXX<TAB>kField<TAB>value`; kDefinition gives the English definition and
kRSUnicode the Kangxi radical and residual stroke count ("85.3"; "120'.3" marks a simplified
radical form; several values may follow, the first is the primary one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from glyffuser.errors import GlyffuserError


def read_field(path: Path, field: str) -> dict[int, str]:
    """{codepoint: value} for one Unihan field; a malformed line fails with its line number."""
    values: dict[int, str] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or not parts[0].startswith("U+"):
                raise GlyffuserError(f"{path}:{lineno}: malformed Unihan line (expected 'U+XXXX<TAB>kField<TAB>value')")
            if parts[1] != field:
                continue
            try:
                cp = int(parts[0][2:], 16)
            except ValueError:
                raise GlyffuserError(f"{path}:{lineno}: malformed codepoint {parts[0]!r}") from None
            values[cp] = parts[2]
    return values


_RS = re.compile(r"^(\d+)('{0,3})\.(-?\d+)$")


def parse_radical_strokes(value: str) -> tuple[int, int]:
    """First kRSUnicode value -> (Kangxi radical 1..214, residual strokes)."""
    m = _RS.match(value.split()[0])
    if not m or not 1 <= int(m.group(1)) <= 214:
        raise GlyffuserError(f"malformed kRSUnicode value {value!r}")
    return int(m.group(1)), int(m.group(3))


# Han characters and their relatives that can appear inside English definitions.
_HAN = re.compile(
    "[\u2e80-\u2fff\u3005-\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003ffff]"
)
_PAREN = re.compile(r"\(([^()]*)\)")
# Once the Han characters are gone, a parenthetical made only of these words just pointed to
# another character ("same as 鵡", "simplified form of 紬") and carries no meaning.
_REFERENCE_WORDS = frozenset(
    """same as form forms of non-classical classical non-standard standard interchangeable with
    ancient archaic old obsolete corrupted simplified traditional abbreviated variant a an the
    and or see refer to used for in japanese korean cant. incorrect almost large small seal type
    from non simp. trad. abbr. var. dial. also""".split()
)


def is_han(char: str) -> bool:
    return bool(_HAN.fullmatch(char))


def _is_reference_only(text: str) -> bool:
    words = [w for w in re.split(r"[\s,;:]+", text.lower()) if w]
    return all(w in _REFERENCE_WORDS for w in words)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,;:.)])", r"\1", text)  # "fish ," -> "fish,"
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ;" left by a removed word
    return text.strip(" ,;:")


def clean_definition(raw: str) -> str:
    """Remove Han characters from an English definition, and the parentheses they leave empty.

    '(same as 鵡) parrot' -> 'parrot'; 'a ladle (often made of dried calabash or gourd)' unchanged.
    """
    if not _HAN.search(raw):
        return raw.strip()

    def paren(m: re.Match[str]) -> str:
        inner = m.group(1)
        if not _HAN.search(inner):
            return m.group(0)
        inner = _tidy(_HAN.sub("", inner))
        return "" if _is_reference_only(inner) else f"({inner})"

    return _tidy(_HAN.sub("", _PAREN.sub(paren, raw)))


def split_of(codepoint: int, validation: float, test: float) -> str:
    """Deterministic split from a hash of the codepoint: independent of seed, order and range."""
    u = int.from_bytes(hashlib.sha256(f"U+{codepoint:04X}".encode()).digest()[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


@dataclass(frozen=True)
class Entry:
    codepoint: int
    raw_definition: str
    definition: str
    radical: int
    residual_strokes: int
