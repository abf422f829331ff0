"""`hubindex task add/list/remove`: every source, the seeded split, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, catalog_snapshot

from hubindex.index import Index
from hubindex.task_targets import encode_labels, stratified_split
from hubindex.tasks import load_task


def write_images(folder: Path, classes: dict[str, int], size: int = 12) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def stored(index: Index, name: str):  # noqa: ANN201 - a Task
    with index.open_catalog(read_only=True) as catalog:
        return load_task(index, catalog, name)


def test_image_folder_task_is_copied_split_and_listed(hubindex, index: Index, tmp_path: Path) -> None:
    write_images(tmp_path / "photos", {"cat": 10, "dog": 5})
    result = hubindex("task", "add", "pets", "--images", str(tmp_path / "photos"))
    assert result.exit_code == 0, result.stderr
    assert "15 image examples, 2 classes, 12 train / 3 validation" in result.stdout
    task = stored(index, "pets")
    assert task.classes == ["cat", "dog"] and task.modality == "image"
    assert np.bincount(task.labels).tolist() == [10, 5]
    # Stratified: 20% of each class held out.
    assert np.bincount(task.labels[~task.train]).tolist() == [2, 1]
    # The task survives its source folder: examples live in the index.
    import shutil

    shutil.rmtree(tmp_path / "photos")
    assert stored(index, "pets").content_hash == task.content_hash
    listed = json.loads(hubindex("task", "list", "--json").stdout)
    assert [(t["task"], t["n_examples"], t["n_classes"]) for t in listed] == [("pets", 15, 2)]


def test_csv_task_and_same_data_twice_is_a_no_op(hubindex, index: Index, tmp_path: Path) -> None:
    rows = [(f"text number {i} about {'sport' if i % 2 else 'money'}", "sport" if i % 2 else "business")
            for i in range(20)]
    path = write_csv(tmp_path / "news.csv", rows)
    assert hubindex("task", "add", "news", "--csv", str(path), "--text-col", "text", "--label-col", "label").exit_code == 0
    task = stored(index, "news")
    assert task.modality == "text" and task.items[1] == rows[1][0] and task.classes == ["business", "sport"]
    before = catalog_snapshot(index)
    again = hubindex("task", "add", "news", "--csv", str(path), "--text-col", "text", "--label-col", "label")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert catalog_snapshot(index) == before


def test_other_data_under_the_same_name_needs_replace(hubindex, index: Index, tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", [(f"a {i}", str(i % 2)) for i in range(10)])
    second = write_csv(tmp_path / "b.csv", [(f"b {i}", str(i % 3)) for i in range(12)])
    args = ("--text-col", "text", "--label-col", "label")
    assert hubindex("task", "add", "t", "--csv", str(first), *args).exit_code == 0
    old_folder = index.root / next(iter((index.root / "tasks").iterdir())).name
    before = catalog_snapshot(index)
    refused = hubindex("task", "add", "t", "--csv", str(second), *args)
    assert_one_line_error(refused, "task 't' already exists", "--replace", exit_code=2)
    assert catalog_snapshot(index) == before
    assert hubindex("task", "add", "t", "--csv", str(second), *args, "--replace").exit_code == 0
    assert stored(index, "t").size == 12 and stored(index, "t").classes == ["0", "1", "2"]
    assert not old_folder.exists()  # the replaced examples are gone, the new ones are in place


def test_arrays_task_of_digit_images(hubindex, index: Index, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(tmp_path / "x.npy", digits.images[:50] / 16.0)
    np.save(tmp_path / "y.npy", digits.target[:50])
    result = hubindex("task", "add", "digits", "--arrays", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert result.exit_code == 0, result.stderr
    task = stored(index, "digits")
    assert task.modality == "image" and task.size == 50 and task.items[0].size == (8, 8)
    assert task.items[0].mode == "RGB"
    # 0..16 grey levels scaled to [0, 1] come back as 0..255 pixels.
    assert np.array(task.items[0])[..., 0].tolist() == np.rint(digits.images[0] / 16.0 * 255).astype(int).tolist()


def test_arrays_task_of_texts(hubindex, index: Index, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array(["good film", "bad film", "great plot", "awful plot"]))
    np.save(tmp_path / "y.npy", np.array(["pos", "neg", "pos", "neg"]))
    assert hubindex("task", "add", "tiny", "--arrays", str(tmp_path / "x.npy"), str(tmp_path / "y.npy")).exit_code == 0
    assert stored(index, "tiny").items == ["good film", "bad film", "great plot", "awful plot"]


def test_saved_datasets_dataset(hubindex, index: Index, tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    data = Dataset.from_dict({"text": ["fine", "poor", "nice", "dull", "ok"], "label": [1, 0, 1, 0, 1]},
                             features=features)
    data.save_to_disk(str(tmp_path / "ds"))
    result = hubindex("task", "add", "reviews", "--dataset", str(tmp_path / "ds"), "--text-col", "text",
                      "--label-col", "label")
    assert result.exit_code == 0, result.stderr
    task = stored(index, "reviews")
    assert task.classes == ["neg", "pos"] and task.labels.tolist() == [1, 0, 1, 0, 1]


def test_split_is_seeded_stratified_and_keeps_a_training_example() -> None:
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    train = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(train, stratified_split(labels, 0.2, seed=3))
    assert not np.array_equal(train, stratified_split(labels, 0.2, seed=4))
    assert np.bincount(labels[~train], minlength=4).tolist() == [2, 1, 0, 0]
    assert all(train[labels == c].any() for c in range(4))


def test_labels_integers_or_strings() -> None:
    assert encode_labels([3, 1, 3, 10], "y")[0].tolist() == [1, 0, 1, 2]  # numeric order, not text order
    assert encode_labels([3, 1, 3, 10], "y")[1] == ["1", "3", "10"]
    assert encode_labels(["b", "a", "b"], "y")[1] == ["a", "b"]
    assert encode_labels([1.0, 2.0], "y")[0].tolist() == [0, 1]


BAD_LABELS = [
    (["x", "x", "x"], "only one class"),
    ([0.5, 1.0], "not a class"),
    ([True, False], "booleans"),
    ([1, "a"], "mix integers and strings"),
    ([1, None], "missing"),
    ([1, "  "], "empty"),
]


@pytest.mark.parametrize(("labels", "message"), BAD_LABELS)
def test_bad_labels_are_named(labels: list, message: str) -> None:
    from hubindex.errors import UsageError

    with pytest.raises(UsageError, match=message):
        encode_labels(labels, "y")


def bad_inputs(tmp_path: Path) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(arguments after `task add NAME`, fragments of the one-line error)."""
    np.save(tmp_path / "x10.npy", np.zeros((10, 4, 4)))
    np.save(tmp_path / "y9.npy", np.arange(9) % 2)
    np.save(tmp_path / "y10_one.npy", np.zeros(10, dtype=int))
    np.save(tmp_path / "y10_float.npy", np.linspace(0, 1, 10))
    nan = np.zeros((10, 4, 4))
    nan[3, 1, 1] = np.nan
    np.save(tmp_path / "xnan.npy", nan)
    np.save(tmp_path / "y10.npy", np.arange(10) % 2)
    np.save(tmp_path / "features.npy", np.ones((10, 5)))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 4)))
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("text,label\n")
    (tmp_path / "bad.npy").write_text("not numpy")
    write_csv(tmp_path / "one.csv", [("a b", "x"), ("c d", "x")])
    write_csv(tmp_path / "fraction.csv", [("a b", "0.5"), ("c d", "1")])
    write_csv(tmp_path / "blank.csv", [("a b", "x"), ("", "y")])
    (tmp_path / "noclasses").mkdir()
    write_images(tmp_path / "oneclass", {"only": 3})
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"not a png")
    csv_cols = ("--text-col", "text", "--label-col", "label")
    x10, p = str(tmp_path / "x10.npy"), tmp_path
    return [
        (("--arrays", x10, str(p / "y9.npy")), ("10 examples", "9 labels", "same length")),
        (("--arrays", x10, str(p / "y10_one.npy")), ("only one class",)),
        (("--arrays", x10, str(p / "y10_float.npy")), ("not a class",)),
        (("--arrays", str(p / "xnan.npy"), str(p / "y10.npy")), ("NaN", "image 3")),
        (("--arrays", str(p / "features.npy"), str(p / "y10.npy")), ("looks like features", "hubindex metric")),
        (("--arrays", str(p / "empty.npy"), str(p / "y10.npy")), ("no examples",)),
        (("--arrays", str(p / "bad.npy"), str(p / "y10.npy")), ("not a .npy array file",)),
        (("--arrays", str(p / "missing.npy"), str(p / "y10.npy")), ("no such file",)),
        (("--csv", str(p / "empty.csv"), *csv_cols), ("the file is empty",)),
        (("--csv", str(p / "header.csv"), *csv_cols), ("no rows",)),
        (("--csv", str(p / "one.csv"), *csv_cols), ("only one class",)),
        (("--csv", str(p / "fraction.csv"), *csv_cols), ("'0.5' is not a class",)),
        (("--csv", str(p / "blank.csv"), *csv_cols), ("line 3", "empty 'text'")),
        (("--csv", str(p / "one.csv"), "--text-col", "body", "--label-col", "label"), ("no column 'body'",)),
        (("--csv", str(p / "one.csv")), ("--text-col and --label-col",)),
        (("--images", str(p / "noclasses")), ("no class sub-folders",)),
        (("--images", str(p / "oneclass")), ("only one class",)),
        (("--images", str(p / "broken")), ("x.png", "not a readable image")),
        (("--dataset", str(p / "noclasses"), "--label-col", "label"), ("not a dataset saved with save_to_disk",)),
        ((), ("exactly one source",)),
        (("--csv", str(p / "one.csv"), "--images", str(p / "oneclass")), ("exactly one source", "--images, --csv")),
        (("--csv", str(p / "one.csv"), *csv_cols, "--validation-fraction", "1.5"), ("--validation-fraction", "0<x<1")),
    ]


def test_bad_task_input_is_one_clear_line_and_changes_nothing(hubindex, index: Index, tmp_path: Path) -> None:
    write_csv(tmp_path / "ok.csv", [(f"t {i}", str(i % 2)) for i in range(6)])
    assert hubindex("task", "add", "keep", "--csv", str(tmp_path / "ok.csv"), "--text-col", "text",
                    "--label-col", "label").exit_code == 0
    before = catalog_snapshot(index)
    for args, fragments in bad_inputs(tmp_path):
        assert_one_line_error(hubindex("task", "add", "new", *args), *fragments, exit_code=2)
    assert_one_line_error(hubindex("task", "add", "../up", "--csv", str(tmp_path / "ok.csv")), "task name")
    assert catalog_snapshot(index) == before
    # Nothing half-written is left among the stored tasks.
    assert sorted(p.name for p in (index.root / "tasks").iterdir()) == [stored(index, "keep").name + "-" +
                                                                        stored(index, "keep").content_hash[:12]]


def test_remove_task_and_unknown_task(hubindex, index: Index, tmp_path: Path) -> None:
    write_csv(tmp_path / "ok.csv", [(f"t {i}", str(i % 2)) for i in range(6)])
    hubindex("task", "add", "gone", "--csv", str(tmp_path / "ok.csv"), "--text-col", "text", "--label-col", "label")
    assert hubindex("task", "remove", "gone").exit_code == 0
    assert not any((index.root / "tasks").iterdir())
    assert_one_line_error(hubindex("task", "remove", "gone"), "no task named 'gone'")
    assert_one_line_error(hubindex("score", "--task", "gone"), "no task named 'gone'")


def test_tampered_task_examples_are_detected(hubindex, index: Index, tmp_path: Path) -> None:
    write_csv(tmp_path / "ok.csv", [(f"t {i}", str(i % 2)) for i in range(6)])
    hubindex("task", "add", "t", "--csv", str(tmp_path / "ok.csv"), "--text-col", "text", "--label-col", "label")
    folder = next((index.root / "tasks").iterdir())
    np.save(folder / "labels.npy", np.zeros(6, dtype=np.int64))
    assert_one_line_error(hubindex("score", "--task", "t", "--metric", "knn"), "changed since they were added",
                          "--replace")


def test_a_decompression_bomb_is_refused_in_one_line(tmp_path: Path, hubindex: Any) -> None:
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / "imgs" / name / f"{i}.png")
    # 20,000 x 20,000 one-bit pixels: a 48 KB PNG that decodes to 400 megapixels; and one just over
    # hubindex's own limit that PIL alone would only warn about.
    Image.new("1", (20000, 20000)).save(tmp_path / "imgs" / "a" / "bomb.png")
    result = hubindex("task", "add", "bombs", "--images", str(tmp_path / "imgs"))
    assert_one_line_error(result, "bomb.png", "not a readable image", exit_code=2)
    (tmp_path / "imgs" / "a" / "bomb.png").unlink()
    Image.new("1", (9000, 8000)).save(tmp_path / "imgs" / "b" / "big.png")
    result = hubindex("task", "add", "bombs", "--images", str(tmp_path / "imgs"))
    assert_one_line_error(result, "big.png", "9000x8000 pixels, over the limit", exit_code=2)
    from hubindex.errors import UsageError
    from hubindex.probing import make_corpus

    with pytest.raises(UsageError, match="big.png: 9000x8000 pixels"):  # the same check for probing corpora
        make_corpus(f"images:{tmp_path / 'imgs'}").load()
    (tmp_path / "imgs" / "b" / "big.png").unlink()
    assert hubindex("task", "add", "bombs", "--images", str(tmp_path / "imgs")).exit_code == 0
