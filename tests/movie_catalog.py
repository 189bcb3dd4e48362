"""A small catalog of real movie titles with awkward spellings (articles, accents, "&", shared titles), plus
60 fillers, shared by the title tests and the simulator / zero-shot tests."""

from __future__ import annotations

from crs_core.schema import Catalog, Item


def movie(item_id: int, title: str, genre: str = "drama") -> Item:
    return Item(item_id, title, f"{title} Genres: {genre}. Plot: a story.", (genre,))


TITLES = ["The Conjuring (2013)", "Insidious (2010)", "Heat (1995)", "It (2017)", "It (1990)",
          "Spider-Man: Far from Home (2019)", "Amélie (2001)", "The Hunger Games (2012)", "Fast & Furious (2009)",
          "The King's Man (2020)", "The Matrix (1999)"]  # item ids 1..11; SmolLM2 likes to name The Matrix
FILLERS = [movie(100 + i, f"Filler Picture Number {i} (2000)") for i in range(60)]
CATALOG = Catalog([movie(i + 1, title) for i, title in enumerate(TITLES)] + FILLERS)
