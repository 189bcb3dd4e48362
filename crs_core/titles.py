"""Movie titles in free text: parse an LLM's list, map titles to catalog ids, and find a title in a sentence.

Catalog titles look like "The Conjuring (2013)". Matching compares normalised titles (case, accents,
punctuation, "&", a leading or trailing article, the year) in three steps: exact title + year, title
alone (the first catalog item in catalog order when several years share it), then the closest title by
`difflib`'s ratio above a cutoff (typos, small wording changes) with the same sequel numbers. The leak
guard uses the same normalisation: one regex per title finds it (and masks it) in a seeker's message.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from crs_core.config import ZeroShotConfig
from crs_core.schema import Catalog

ARTICLES = ("the", "a", "an")
FUZZY_CUTOFF = ZeroShotConfig.fuzzy_cutoff  # the `zero_shot.fuzzy_cutoff` default
EVERYDAY_WORD_MAX_LETTERS = 4  # one-word titles this short ("It", "Up", "Home") are guarded by case (TitleGuard)
MAX_TITLE_WORDS = 15  # a "title" longer than this is a sentence of prose, not a list entry
MAX_UNMARKED_WORDS = 8  # the same for a line without list marker or year
_YEAR = re.compile(r"\s*[(\[]\s*((?:18|19|20)\d{2})\b[^)\]]*[)\]]")
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}\s*[.):\]]|[-*•·+]|#\d+\.?)\s*")
_DIALOGUE_LINE = re.compile(r"^\s*(?:system|user|assistant|recommender|seeker)\s*:", re.IGNORECASE)
_TRAILING_NOTE = re.compile(r"\s+(?:[-–—]|\||//)\s+.*$")
_MARKUP_TAG = re.compile(r"</?[a-zA-Z][^>]*>")  # "<title>Heat</title>"
_MARKUP_YEAR = re.compile(r"<year>\s*(\d{4})\s*</year>", re.IGNORECASE)
_LABEL = re.compile(r"^(?:movie|film|title)\s*:\s*", re.IGNORECASE)  # "Movie: Heat"
_SINGLE_QUOTED = re.compile(r"^['‘](.+?)['’](?=\s*[(\[]|\s*$|\s+[-–—:|])")  # 'It' (2017) -> It (2017)
_QUOTES = str.maketrans("", "", "\"“”«»*_`")
_EDGE_QUOTES = "'‘’ "
_WORD = re.compile(r"[0-9a-z]+")
_APOSTROPHES = "'’‘`"
_ROMAN = {"ii", "iii", "iv", "vi", "vii", "viii", "ix", "xi", "xii"}  # "v" and "x" are also plain words


def fold(text: str) -> str:
    """Lower case without accents, "&" read as "and", apostrophes dropped ("Schindler's" -> "schindlers")."""
    return _fold_map(text, lower=True)[0]


def split_year(title: str) -> tuple[str, int | None]:
    """"Heat (1995)" -> ("Heat", 1995); a year is only read from brackets, so "Blade Runner 2049" keeps its number."""
    match = _YEAR.search(title)
    if match is None:
        return title.strip(), None
    return (title[: match.start()] + title[match.end():]).strip(), int(match.group(1))


def title_words(title: str) -> list[str]:
    """The words of a title without its year and without one leading (or trailing ", The") article."""
    words = _WORD.findall(fold(split_year(title)[0]))
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    elif len(words) > 1 and words[-1] in ARTICLES and re.search(r",\s*(the|a|an)\s*$", fold(title.split("(")[0])):
        words = words[:-1]
    return words


def normalize_title(title: str) -> str:
    return " ".join(title_words(title))


def clean_entry(line: str) -> str | None:
    """One list line -> the title it names (with its year when given), or None for a line that is not an entry."""
    text = _LIST_MARKER.sub("", line, count=1)
    text = _MARKUP_TAG.sub("", _MARKUP_YEAR.sub(r"(\1)", text))
    text = _LABEL.sub("", text.translate(_QUOTES).strip(), count=1)
    text = _SINGLE_QUOTED.sub(r"\1", text).strip(_EDGE_QUOTES)
    year = _YEAR.search(text)
    if year is not None:
        text = text[: year.end()]  # whatever follows "(2013)" is commentary
    else:
        text = _TRAILING_NOTE.sub("", text)
    text = text.strip().strip(_EDGE_QUOTES).rstrip(".,;:!").strip()
    if not _WORD.search(fold(text)) or len(text.split()) > MAX_TITLE_WORDS:
        return None
    return text


def parse_title_list(text: str, limit: int | None = None) -> list[str]:
    """The titles of an answer that lists movies one per line, best first, de-duplicated.

    When some lines carry a list marker ("1.", "2)", "-", "*"), only those lines count, so a preamble
    ("Here are 20 movies:") or a closing remark is ignored. Without markers a line counts when it has a
    year in brackets, or is short and does not end like a sentence. Headings (ending in ":") and dialogue
    lines ("User: ...") never count. Raises ValueError when nothing title-like is found.
    """
    lines = [line for line in (text or "").splitlines() if line.strip() and not _DIALOGUE_LINE.match(line)]
    marked = [line for line in lines if _LIST_MARKER.match(line)]
    titles: list[str] = []
    seen: set[str] = set()
    for line in marked or lines:
        if line.rstrip().endswith(":"):
            continue
        title = clean_entry(line)
        if title is None or not marked and _YEAR.search(title) is None and (
                len(title.split()) > MAX_UNMARKED_WORDS or line.rstrip()[-1] in ".?!"):
            continue
        key = f"{normalize_title(title)}|{split_year(title)[1]}"
        if key not in seen:
            seen.add(key)
            titles.append(title)
    if not titles:
        raise ValueError(f"no movie titles in the answer: {(text or '').strip()[:80]!r}")
    return titles[:limit] if limit is not None else titles


@dataclass(frozen=True)
class TitleMatch:
    title: str
    item_id: int | None
    how: str  # "exact" (title + year), "title" (year ignored), "fuzzy", or "unmapped"


class TitleMatcher:
    """Maps free-text titles to catalog item ids (exact title + year, then title, then fuzzy)."""

    def __init__(self, catalog: Catalog, cutoff: float = FUZZY_CUTOFF):
        self.cutoff = cutoff
        self._by_title: dict[str, list[tuple[int | None, int]]] = {}
        for item in catalog.items:
            _, year = split_year(item.title)
            self._by_title.setdefault(normalize_title(item.title), []).append((year, item.item_id))
        self._titles = list(self._by_title)
        self._fuzzy = lru_cache(maxsize=65536)(self._closest)

    def match(self, title: str) -> TitleMatch:
        norm, year = normalize_title(title), split_year(title)[1]
        if norm in self._by_title:
            return TitleMatch(title, self._pick(norm, year), "exact" if self._has_year(norm, year) else "title")
        closest = self._fuzzy(norm)
        if closest is None:
            return TitleMatch(title, None, "unmapped")
        return TitleMatch(title, self._pick(closest, year), "fuzzy")

    def match_all(self, titles: Iterable[str]) -> list[TitleMatch]:
        return [self.match(title) for title in titles]

    def _has_year(self, norm: str, year: int | None) -> bool:
        return year is not None and any(y == year for y, _ in self._by_title[norm])

    def _pick(self, norm: str, year: int | None) -> int:
        entries = self._by_title[norm]
        return next((item for y, item in entries if year is not None and y == year), entries[0][1])

    def _closest(self, norm: str) -> str | None:
        """The most similar catalog title that carries the same sequel numbers ("Insidious 2" is not "Insidious")."""
        if not norm:
            return None
        found = difflib.get_close_matches(norm, self._titles, n=5, cutoff=self.cutoff)
        return next((title for title in found if _sequel_marks(title) == _sequel_marks(norm)), None)


def _sequel_marks(norm: str) -> set[str]:
    return {word for word in norm.split() if word.isdigit() or word in _ROMAN}


def rank_from_matches(matches: Iterable[TitleMatch]) -> list[int]:
    """Mapped item ids in answer order, each once (two titles can map to the same item)."""
    ranking: list[int] = []
    for match in matches:
        if match.item_id is not None and match.item_id not in ranking:
            ranking.append(match.item_id)
    return ranking


class TitleGuard:
    """Finds a title in a message (and masks it) the way a reader would spot it: year and leading article
    optional, any case, accents, apostrophes, punctuation or spacing between words ("Spider-Man" =
    "spiderman" = "spider man").

    A short one-word title ("It", "Up", "Her", "Home") is also an everyday word, so it counts only when
    written capitalised mid-sentence, quoted, or followed by its year; otherwise every "it" would leak.
    Longer one-word titles ("Parasite", "The Kitchen") count in any case: the guard errs toward masking.
    """

    def __init__(self, title: str):
        self.title = title
        self.words = title_words(title)
        self.year = split_year(title)[1]
        core = r"[\W_]*".join(re.escape(word) for word in self.words)
        article = rf"(?:(?:{'|'.join(ARTICLES)})[\W_]+)?"
        with_year = rf"(?:\s*[(\[]?\s*{self.year}\b[)\]]?)?" if self.year else ""
        self._any_case = re.compile(rf"(?<![0-9a-z]){article}{core}(?![0-9a-z]){with_year}")
        self._everyday = len(self.words) == 1 and len(self.words[0]) <= EVERYDAY_WORD_MAX_LETTERS
        if self._everyday:
            shown = _fold_map(split_year(title)[0].split()[-1], lower=False)[0]
            self._capitalised = re.compile(rf"(?<!\w)(?:(?:The|A|An)\s+)?{re.escape(shown)}(?!\w)")
            year = rf"\s*[(\[]?\s*{self.year}\b[)\]]?" if self.year else r"(?!)"
            self._marked = re.compile(rf"[\"“”*]{article}{core}[\"“”*]|(?<![0-9a-z]){article}{core}{year}")

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character spans of the title in `text`, in order, not overlapping."""
        if not self.words:
            return []
        lower, where = _fold_map(text, lower=True)
        if not self._everyday:
            found = [(where[m.start()], where[m.end() - 1] + 1) for m in self._any_case.finditer(lower)]
        else:
            cased, cased_where = _fold_map(text, lower=False)
            found = [(where[m.start()], where[m.end() - 1] + 1) for m in self._marked.finditer(lower)]
            found += [(cased_where[m.start()], cased_where[m.end() - 1] + 1)
                      for m in self._capitalised.finditer(cased) if not _sentence_start(cased, m.start())]
        spans = sorted(span for span in found if span[1] > span[0])
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def leaks(self, text: str) -> bool:
        return bool(self.spans(text))

    def mask(self, text: str, mask: str = "[that movie]") -> str:
        for start, end in reversed(self.spans(text)):
            text = text[:start] + mask + text[end:]
        return text


def _fold_map(text: str, lower: bool) -> tuple[str, list[int]]:
    """`text` folded like `fold` (optionally keeping case), and for each folded character its index in `text`."""
    chars: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if ch in _APOSTROPHES:
            continue
        piece = " and " if ch == "&" else "".join(
            c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        for c in piece.lower() if lower else piece:
            chars.append(c)
            where.append(i)
    return "".join(chars), where


def _sentence_start(text: str, position: int) -> bool:
    before = text[:position].rstrip()
    return not before or before[-1] in ".!?"
