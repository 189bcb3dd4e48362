"""A small book-recommendation dataset in the documented JSONL format (docs/data.md), written by the tests.

Thirty books in six genres, forty dialogues: the seeker names a book and a genre, the recommender answers with
another book of that genre, the seeker asks for something else, the recommender names a third. Adding it to the
project takes its two data files and one config file (`CONFIG`), nothing else.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BOOKS = {
    "fantasy": [("The Hobbit", "J. R. R. Tolkien"), ("A Wizard of Earthsea", "Ursula K. Le Guin"),
                ("The Name of the Wind", "Patrick Rothfuss"), ("Mistborn", "Brandon Sanderson"),
                ("The Lies of Locke Lamora", "Scott Lynch")],
    "mystery": [("The Hound of the Baskervilles", "Arthur Conan Doyle"), ("Gone Girl", "Gillian Flynn"),
                ("The Big Sleep", "Raymond Chandler"), ("And Then There Were None", "Agatha Christie"),
                ("The Girl with the Dragon Tattoo", "Stieg Larsson")],
    "science fiction": [("Dune", "Frank Herbert"), ("Neuromancer", "William Gibson"), ("Foundation", "Isaac Asimov"),
                        ("The Left Hand of Darkness", "Ursula K. Le Guin"), ("Hyperion", "Dan Simmons")],
    "romance": [("Pride and Prejudice", "Jane Austen"), ("Jane Eyre", "Charlotte Bronte"),
                ("Outlander", "Diana Gabaldon"), ("Me Before You", "Jojo Moyes"), ("The Notebook", "Nicholas Sparks")],
    "horror": [("Dracula", "Bram Stoker"), ("The Shining", "Stephen King"), ("Frankenstein", "Mary Shelley"),
               ("The Haunting of Hill House", "Shirley Jackson"), ("Pet Sematary", "Stephen King")],
    "history": [("Wolf Hall", "Hilary Mantel"), ("The Pillars of the Earth", "Ken Follett"),
                ("I, Claudius", "Robert Graves"), ("All the Light We Cannot See", "Anthony Doerr"),
                ("The Name of the Rose", "Umberto Eco")],
}
DIALOGUES = 40

CONFIG = """\
# Books: the test's own dataset. One file: how to read it, what to call it, and a profile small enough for a test.
dataset: books
data:
  format: jsonl
  label: Books
  note: forty test dialogues
retrieval:
  top_k: 10
teacher:
  kind: kg
  contexts: 20
  candidates_per_context: 5
student:
  kind: features
  folds: 3
synthesize:
  threshold: 2.5
  curve_thresholds: [2.0, 2.5, 3.0]
train:
  runner: local
  epochs_stage1: 1
  epochs_stage2: 1
  trainable_layers: 0
  learning_rate: 0.001
  batch_size: 8
  max_length: 64
evaluation:
  ks: [1, 5, 10]
  top_n: 20
"""


def catalog_rows() -> list[dict]:
    rows = []
    for genre, books in BOOKS.items():
        for title, author in books:
            rows.append({"item_id": len(rows), "title": title, "tags": [genre], "creators": [author],
                         "description": f"A {genre} novel by {author}."})
    return rows


def dialogue_rows(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    catalog = catalog_rows()
    by_genre = {genre: [r for r in catalog if r["tags"] == [genre]] for genre in BOOKS}
    rows = []
    for number in range(DIALOGUES):
        genre = rng.choice(sorted(BOOKS))
        liked, first, second = rng.sample(by_genre[genre], 3)
        turns = [
            {"role": "seeker", "text": f"I loved {liked['title']}. Can you suggest more {genre} books?",
             "items": [liked["item_id"]]},
            {"role": "recommender", "text": f"You might like {first['title']} by {first['creators'][0]}.",
             "items": [first["item_id"]]},
            {"role": "seeker", "text": f"I have read that one already. Any other {genre} novel?", "items": []},
            {"role": "recommender", "text": f"Then try {second['title']}.", "items": [second["item_id"]]},
        ]
        rows.append({"dialog_id": f"book-{number:02d}", "turns": turns})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_books(data_dir: Path, config_dir: Path) -> Path:
    """The dataset under `data_dir/books/` and its registry entry `config_dir/books.yaml`; returns the latter."""
    write_jsonl(data_dir / "books" / "catalog.jsonl", catalog_rows())
    write_jsonl(data_dir / "books" / "dialogues.jsonl", dialogue_rows())
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "books.yaml").write_text(CONFIG, encoding="utf-8")
    return config_dir / "books.yaml"
