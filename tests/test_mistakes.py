"""Wrong numeric answers sorted by kind: hand-made outputs of each kind, the order the kinds are
tested in, and the tally's invariant (its counts add up to the wrong answers, right ones uncounted)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palora.core.checkers import check_numeric
from palora.core.mistakes import KINDS, fact_prefixes, kind_of, tally
from palora.report.tables import mistakes_table

FACTS = fact_prefixes(["1987", "1903", "Paris", "7", "2,045"])


def test_fact_prefixes_are_the_whole_numbers_and_their_beginnings():
    assert FACTS == {"19", "198", "1987", "190", "1903", "20", "204", "2045"}  # words and 1-digit answers: none


@pytest.mark.parametrize("output, answer, kind", [
    (" 19", "-37", "fact"),                      # a birth year begun on an arithmetic prompt
    (" 1987. He was born", "57", "fact"),
    (" 190", "129", "fact"),
    (" -19", "57", "fact"),                      # the sign is not the format
    (" 1950", "57", "other"),                    # a year, but none of the facts' numbers
    (" 19", "18", "near"),                       # near the reference: a slip first
    (" 58", "57", "near"),                       # off by one
    (" 110", "100", "near"),                     # 10 % of a larger answer
    (" 111", "100", "other"),
    (" -3", "-2", "near"),
    (" 75", "57", "other"),                      # digits swapped
    (" 19.5", "57", "fact"),                     # its whole part
    (" fifty-seven", "57", "words"),
    ("", "57", "words"),
])
def test_each_kind(output, answer, kind):
    assert not check_numeric(output, answer)
    assert kind_of(output, answer, FACTS) == kind


def test_without_numeric_facts_nothing_is_a_fact():
    assert kind_of(" 19", "-37") == "other"
    assert kind_of(" 19", "-37", fact_prefixes(["Paris", "economist"])) == "other"


@given(st.lists(st.tuples(st.integers(-3000, 3000), st.integers(-3000, 3000)), max_size=30))
def test_tally_counts_every_wrong_answer_once(pairs):
    outputs = [f" {p}" for p, _ in pairs]
    answers = [str(a) for _, a in pairs]
    correct = [check_numeric(o, a) for o, a in zip(outputs, answers)]
    counts = tally(outputs, answers, correct, FACTS)
    assert set(counts) == set(KINDS)
    assert sum(counts.values()) == correct.count(False)
    assert counts["words"] == 0  # every output here holds a number


def test_the_table_shows_shares_and_skips_sets_without_counts():
    text = mistakes_table([("lora", {"near": 10, "fact": 73, "other": 100, "words": 17}, 500),
                           ("base", None, 500)])
    assert "| lora | 2.0 | 14.6 | 20.0 | 3.4 | 40.0 |" in text
    assert "base" not in text
    assert mistakes_table([("base", None, 500)]) == ""
