"""Movie titles in free text (crs_core/titles.py): parsing an LLM's list, mapping titles to catalog ids,
and the leak guard that finds (and masks) a target's title in a simulated seeker's message."""

from __future__ import annotations

import pytest
from movie_catalog import CATALOG

from crs_core.titles import (
    TitleGuard,
    TitleMatcher,
    normalize_title,
    parse_title_list,
    rank_from_matches,
    split_year,
)


# ------------------------------------------------------------------------------------- title parsing
def test_parse_title_list_takes_list_entries_and_drops_the_rest():
    answer = """Sure! Here are my recommendations:
1. The Conjuring (2013) - a classic haunted-house film
2) **Insidious** (2010)
3. "Heat" (1995): Michael Mann's best
- 'It' (2017)
4. the conjuring (2013)
5. Amélie
6. Movie: <b>Heat</b>
7. <title>Saw</title> <year>2004</year>
User: what about comedies?
I hope you enjoy them!"""
    assert parse_title_list(answer) == ["The Conjuring (2013)", "Insidious (2010)", "Heat (1995)", "It (2017)",
                                        "Amélie", "Heat", "Saw (2004)"]
    assert parse_title_list(answer, limit=2) == ["The Conjuring (2013)", "Insidious (2010)"]


def test_parse_title_list_without_markers_is_strict_about_prose():
    answer = "Heat (1995)\nInsidious\nThese are great movies for a scary night in.\nWhat about Bob?\nMore:"
    assert parse_title_list(answer) == ["Heat (1995)", "Insidious"]
    for nothing in ("", "System: Hi!\nUser: I like horror.", "I cannot recommend movies."):
        with pytest.raises(ValueError, match="no movie titles"):
            parse_title_list(nothing)


@pytest.mark.parametrize("title, expected", [
    ("The Conjuring (2013)", ("conjuring", 2013)),
    ("Conjuring, The (2013)", ("conjuring", 2013)),
    ("Spider-Man: Far from Home [2019]", ("spider man far from home", 2019)),
    ("The King's Man", ("kings man", None)),
    ("Fast & Furious (2009 film)", ("fast and furious", 2009)),
    ("Amélie (2001)", ("amelie", 2001)),
    ("Blade Runner 2049", ("blade runner 2049", None)),  # a bare number is part of the title, not a year
    ("The", ("the", None)),
])
def test_normalize_title_and_year(title, expected):
    assert (normalize_title(title), split_year(title)[1]) == expected


@pytest.mark.parametrize("title, item_id, how", [
    ("The Conjuring (2013)", 1, "exact"),
    ("conjuring", 1, "title"),
    ("CONJURING, THE (2013)", 1, "exact"),
    ("The Conjuring (2016)", 1, "title"),  # wrong year: the title still decides
    ("It (1990)", 5, "exact"),
    ("It", 4, "title"),  # two catalog items share the title: the first in catalog order
    ("Amelie", 7, "title"),
    ("Fast and Furious (2009)", 9, "exact"),
    ("Kings Man (2020)", 10, "exact"),
    ("Spiderman: Far From Home (2019)", 6, "fuzzy"),
    ("The Conjuing (2013)", 1, "fuzzy"),  # a near-miss typo
    ("Hunger Game", 8, "fuzzy"),
    ("Completely Unknown Film (1999)", None, "unmapped"),
    ("Insidious 2 (2013)", None, "unmapped"),  # a sequel is another movie, however similar the title
    ("Insidious II", None, "unmapped"),
    ("Up (2009)", None, "unmapped"),  # short titles are not forced onto "It"
])
def test_title_matcher(title, item_id, how):
    match = TitleMatcher(CATALOG).match(title)
    assert (match.item_id, match.how) == (item_id, how)


def test_ranking_keeps_answer_order_once_per_item_and_skips_unmapped():
    matches = TitleMatcher(CATALOG).match_all(["Heat", "Nope Movie", "The Conjuring", "conjuring (2013)", "It"])
    assert rank_from_matches(matches) == [3, 1, 4]


# --------------------------------------------------------------------------------------- leak guard
@pytest.mark.parametrize("title, text, masked", [
    ("The Conjuring (2013)", "Something like the Conjuring, please.", "Something like [that movie], please."),
    ("The Conjuring (2013)", "i want conjuring (2013)!", "i want [that movie]!"),
    ("Spider-Man: Far from Home (2019)", "Maybe spiderman far-from-home?", "Maybe [that movie]?"),
    ("The King's Man (2020)", "THE KINGS MAN was fun", "[that movie] was fun"),
    ("Amélie (2001)", "I adore Amelie and Paris.", "I adore [that movie] and Paris."),
    ("It (2017)", "I loved It so much", "I loved [that movie] so much"),
    ("It (2017)", 'Something like "it" maybe', "Something like [that movie] maybe"),
    ("It (2017)", "like it (2017), ok", "like [that movie], ok"),
])
def test_title_guard_finds_and_masks_the_title(title, text, masked):
    guard = TitleGuard(title)
    assert guard.leaks(text) and guard.mask(text) == masked and not guard.leaks(masked)


@pytest.mark.parametrize("title, text", [
    ("It (2017)", "It is a scary clown movie and I want it."),  # the pronoun, not the title
    ("Up (2009)", "Cheer me up, please. Up for anything!"),
    ("Heat (1995)", "A heist film with a long shootout."),
    ("Insidious (2010)", "Insidiously slow horror."),
])
def test_title_guard_leaves_other_text_alone(title, text):
    assert not TitleGuard(title).leaks(text) and TitleGuard(title).mask(text) == text


def test_title_guard_errs_toward_masking_for_longer_one_word_titles():
    assert TitleGuard("The Conjuring (2013)").mask("conjuring tricks") == "[that movie] tricks"
