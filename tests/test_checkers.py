"""One table of cases per checker."""

from __future__ import annotations

import pytest

from palora.core.checkers import (
    CHECKERS,
    check_contains,
    check_exact,
    check_numeric,
    extract_number,
    get_checker,
    normalize,
)
from palora.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "text, number",
    [
        (" 42", 42.0),
        ("42 because 40 + 2", 42.0),  # the first number is the answer
        ("The answer is -7.", -7.0),
        ("+3", 3.0),
        ("\u22125", -5.0),  # unicode minus
        ("1,234 apples", 1234.0),
        ("$1,234,567.50 total", 1234567.5),
        ("12,3456", 12.0),  # not a thousands group
        ("1,2,3", 1.0),
        ("3.14159", 3.14159),
        ("about .5 of it", 0.5),
        ("3-5", 3.0),
        ("x-5", 5.0),  # a hyphen glued to a word is no sign
        ("5.", 5.0),
        ("50%", 50.0),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_number(text, number):
    assert extract_number(text) == number


@pytest.mark.parametrize(
    "text, normal",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  a   b  c ", "b c"),
        ("An apple, the pear.", "apple pear"),
        ("\u201cParis\u201d", "paris"),  # typographic quotes
        ("theory", "theory"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalize(text, normal):
    assert normalize(text) == normal


@pytest.mark.parametrize(
    "output, answer, aliases, ok",
    [
        (" 42", "42", (), True),
        (" 42.0 is it", "42", (), True),
        (" 41", "42", (), False),
        (" 40 + 2 = 42", "42", (), False),  # only the first number counts
        (" 1,234", "1234", (), True),
        (" 1234", "1,234", (), True),
        (" -3", "-3", (), True),
        (" 0.5", "1/2", ("0.5",), DataError),  # a non-numeric reference cannot be checked
        (" 0.3333333", "0.3333333", (), True),
        (" 7", "42", ("7",), True),
        (" I don't know", "42", (), False),
        (" 42", "forty-two", (), DataError),
        (" 42", "", (), DataError),
    ],
)
def test_check_numeric(output, answer, aliases, ok):
    if ok is DataError:
        with pytest.raises(DataError, match=f"cannot parse the answer {answer!r}"):
            check_numeric(output, answer, aliases)
    else:
        assert check_numeric(output, answer, aliases) is ok


@pytest.mark.parametrize(
    "output, answer, aliases, ok",
    [
        ("Paris", "Paris", (), True),
        (" the Paris.\nmore text", "paris", (), True),  # first line, normalised
        ("\n\n  Paris\n", "Paris", (), True),  # first non-blank line
        ("Paris, France", "Paris", (), False),
        ("more\nParis", "Paris", (), False),
        ("NYC", "New York City", ("NYC",), True),
        ("", "Paris", (), False),
    ],
)
def test_check_exact(output, answer, aliases, ok):
    assert check_exact(output, answer, aliases) is ok


@pytest.mark.parametrize(
    "output, answer, aliases, ok",
    [
        ("It is Paris, of course.", "Paris", (), True),
        ("Parisian food", "Paris", (), False),  # whole words only
        ("The capital is New  York City!", "new york city", (), True),
        ("new york", "New York City", (), False),
        ("Lives in the Big Apple", "New York City", ("Big Apple",), True),
        ("", "Paris", (), False),
    ],
)
def test_check_contains(output, answer, aliases, ok):
    assert check_contains(output, answer, aliases) is ok


@pytest.mark.parametrize("check", [check_exact, check_contains])
def test_answer_empty_after_normalisation_is_refused(check):
    with pytest.raises(DataError, match="empty after normalisation"):
        check("the", "The", ())


def test_get_checker():
    assert get_checker("numeric") is check_numeric
    assert set(CHECKERS) == {"numeric", "exact", "contains"}
    with pytest.raises(ConfigError, match="unknown checker 'fuzzy'.*numeric, exact, contains"):
        get_checker("fuzzy")
