"""Your own dataset: the JSONL format's checks (file, line, field) and the whole pipeline on forty book dialogues,
added with one config file and its data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from book_dataset import catalog_rows, dialogue_rows, write_books, write_jsonl

from crs_core.data import jsonl
from crs_core.errors import DataError
from crs_core.registry import CONFIG_PATH_ENV, known_datasets


def _dataset(tmp_path: Path, catalog=None, dialogues=None) -> Path:
    root = tmp_path / "mine"
    write_jsonl(root / "catalog.jsonl", catalog_rows() if catalog is None else catalog)
    write_jsonl(root / "dialogues.jsonl", dialogue_rows() if dialogues is None else dialogues)
    return root


def test_books_load_with_a_seeded_split_and_linked_entities(tmp_path: Path) -> None:
    dataset = jsonl.load_dataset(_dataset(tmp_path), "catalog.jsonl", "dialogues.jsonl", 0.1, 0.1, seed=42)
    assert [len(dataset.dialogues[s]) for s in jsonl.SPLITS] == [32, 4, 4]  # int(40 * 0.1) = 4 each
    hobbit = dataset.items[0]
    assert (hobbit.title, hobbit.genres, hobbit.directors) == ("The Hobbit", ("fantasy",), ("J. R. R. Tolkien",))
    assert hobbit.description == "The Hobbit Tags: fantasy. By J. R. R. Tolkien. A fantasy novel by J. R. R. Tolkien."
    first_turn = next(d for d in dataset.dialogues["train"] if d.dialog_id == "book-00").turns[0]
    assert first_turn.entities == [dialogue_rows()[0]["turns"][0]["text"].split("more ")[1].split(" books")[0]]
    again = jsonl.load_dataset(_dataset(tmp_path), "catalog.jsonl", "dialogues.jsonl", 0.1, 0.1, seed=42)
    assert [d.dialog_id for d in again.dialogues["test"]] == [d.dialog_id for d in dataset.dialogues["test"]]


def test_split_by_field_and_by_files(tmp_path: Path) -> None:
    rows = dialogue_rows()
    for number, row in enumerate(rows):
        row["split"] = "test" if number < 5 else "valid" if number < 8 else "train"
    dataset = jsonl.load_dataset(_dataset(tmp_path, dialogues=rows), "catalog.jsonl", "dialogues.jsonl")
    assert [len(dataset.dialogues[s]) for s in jsonl.SPLITS] == [32, 3, 5]
    root = tmp_path / "by-files"
    write_jsonl(root / "catalog.jsonl", catalog_rows())
    for split, chosen in (("train", rows[8:]), ("valid", rows[5:8]), ("test", rows[:5])):
        write_jsonl(root / f"{split}.jsonl", [{k: v for k, v in r.items() if k != "split"} for r in chosen])
    assert jsonl.default_dialogues_name(root) == "{split}.jsonl"
    by_files = jsonl.load_dataset(root, "catalog.jsonl", "{split}.jsonl")
    assert [len(by_files.dialogues[s]) for s in jsonl.SPLITS] == [32, 3, 5]


def _bad_line(rows: list[dict], index: int, change) -> list[dict]:
    rows = json.loads(json.dumps(rows))
    change(rows[index])
    return rows


@pytest.mark.parametrize(
    ("which", "change", "where"),
    [
        ("catalog", lambda r: r.pop("title"), "catalog.jsonl, line 4, field 'title': missing"),
        ("catalog", lambda r: r.update(item_id="x17"), "catalog.jsonl, line 4, field 'item_id': expected an integer"),
        ("catalog", lambda r: r.update(item_id=0), "catalog.jsonl, line 4, field 'item_id': item 0 is listed twice"),
        ("catalog", lambda r: r.update(tags=["ok", 3]), "catalog.jsonl, line 4, field 'tags[1]'"),
        ("dialogues", lambda r: r["turns"][1].update(items=[999]),
         "dialogues.jsonl, line 4, field 'turns[1].items[0]': item 999 is not in the catalog"),
        ("dialogues", lambda r: r["turns"][0].update(role="user"),
         "dialogues.jsonl, line 4, field 'turns[0].role': expected one of seeker, recommender"),
        ("dialogues", lambda r: r.update(dialog_id="book-00"),
         "line 4, field 'dialog_id': dialog_id 'book-00' already"),
        ("dialogues", lambda r: r.update(split="dev"), "dialogues.jsonl, line 4, field 'split'"),
        ("dialogues", lambda r: r.update(split="test"), "39 of 40 dialogues have no 'split'"),
    ],
)
def test_bad_lines_are_named_by_file_line_and_field(tmp_path: Path, which, change, where) -> None:
    catalog, dialogues = catalog_rows(), dialogue_rows()
    if which == "catalog":
        catalog = _bad_line(catalog, 3, change)
    else:
        dialogues = _bad_line(dialogues, 3, change)
    with pytest.raises(DataError) as info:
        jsonl.load_dataset(_dataset(tmp_path, catalog, dialogues), "catalog.jsonl", "dialogues.jsonl")
    assert where in str(info.value)


def test_crs_data_check_prints_counts_or_one_error_line(tmp_path: Path, capsys) -> None:
    from rayjobs.cli import main

    root = _dataset(tmp_path)
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "catalog: 30 items" in out and "train         32" in out
    (root / "dialogues.jsonl").write_text('{"dialog_id": "x", "turns": [{"role": "seeker"}]}\n')
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {root / 'dialogues.jsonl'}, line 1, field 'turns[0].text': missing"]


def test_a_new_dataset_is_one_config_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path / "configs"))
    assert "books" not in known_datasets()
    write_books(tmp_path / "data", tmp_path / "configs")
    assert known_datasets()[0] == "books" and {"inspired", "redial"} <= set(known_datasets())


@pytest.mark.ray
def test_the_whole_pipeline_runs_on_forty_book_dialogues(tmp_path: Path, monkeypatch, capsys) -> None:
    from rayjobs.cli import main

    write_books(tmp_path / "data", tmp_path / "configs")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path / "configs"))
    monkeypatch.setenv("CRS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dataset", "books", "--set", "ray.num_cpus=2"]) == 0
    out = capsys.readouterr().out
    assert "dataset: Books (forty test dialogues)" in out and "Books test (FNSCRS protocol" in out
    assert "label expansion, Books (forty test dialogues)" in out
    assert "paper" not in out.split("label expansion")[1][:400]
    run = tmp_path / "runs" / "books" / "default"
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert {"minilm", "minilm-aug", "popularity", "ease"} <= set(metrics)
    assert metrics["minilm"]["removed"]["n"] == 8
    config_before = (run / "config.yaml").read_bytes()
    assert main(["evaluate", "--models", "minilm"]) == 0  # the run's recorded dataset and settings, no --dataset
    assert (run / "config.yaml").read_bytes() == config_before
