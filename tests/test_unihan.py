from collections import Counter

import pytest

from glyffuser.artifacts.unihan import clean_definition, parse_radical_strokes, read_field, split_of
from glyffuser.errors import GlyffuserError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        # The examples from Unihan 17 that define the rule.
        ("(same as 鵡) parrot", "parrot"),
        ("(simplified form of 紬) a thread; a clue", "a thread; a clue"),
        ("a ladle (often made of dried calabash or gourd)", "a ladle (often made of dried calabash or gourd)"),
        # A parenthetical that only held characters goes; one with other content keeps it.
        ("swelling; (渤海) the Bohai Sea", "swelling; the Bohai Sea"),
        ("a chemical element (鎄) (Es)", "a chemical element (Es)"),
        ("(non-classical form of 瓌) (variant of 瑰) a kind of jasper", "a kind of jasper"),
        ("(same as 冬) winter, (in lunar calendar) the tenth moon", "winter, (in lunar calendar) the tenth moon"),
        ("(Cant.) 啲咑, a trumpet", "(Cant.), a trumpet"),
        ("relaxed, comfortable, at ease; hexagram ䷏", "relaxed, comfortable, at ease; hexagram"),
        ("a river", "a river"),
    ],
)
def test_clean_definition(raw, clean):
    assert clean_definition(raw) == clean


def test_clean_definition_can_leave_nothing():
    assert clean_definition("(same as 鵡)") == ""


def test_radical_strokes():
    assert parse_radical_strokes("85.3") == (85, 3)
    assert parse_radical_strokes("120'.3") == (120, 3)
    assert parse_radical_strokes("35.6 66.6") == (35, 6)
    with pytest.raises(GlyffuserError):
        parse_radical_strokes("215.1")
    with pytest.raises(GlyffuserError):
        parse_radical_strokes("x")


def test_malformed_unihan_line_names_the_line(tmp_path):
    path = tmp_path / "Unihan_Readings.txt"
    path.write_text("# header\nU+4E00\tkDefinition\tone\nU+4E01 kDefinition broken\n", encoding="utf-8")
    with pytest.raises(GlyffuserError, match=r"Unihan_Readings.txt:3: malformed"):
        read_field(path, "kDefinition")


def test_split_is_deterministic_and_follows_fractions():
    splits = [split_of(cp, 0.1, 0.2) for cp in range(0x4E00, 0x4E00 + 5000)]
    assert splits == [split_of(cp, 0.1, 0.2) for cp in range(0x4E00, 0x4E00 + 5000)]
    share = Counter(splits)
    assert abs(share["test"] / 5000 - 0.2) < 0.03
    assert abs(share["validation"] / 5000 - 0.1) < 0.03
