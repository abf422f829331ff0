"""Reading image files from users and the Hub: bounded, and every failure one clear error.

An image's size is read from its header before any pixel is decoded: a file over MAX_IMAGE_PIXELS
(a decompression bomb - a few KB of PNG that decodes to gigabytes - or just a huge scan) is refused
with the file named, as is a file that is not a readable image.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from hubindex.errors import UsageError

# 64 megapixels: far above any probing or task image (models see ~0.05-0.3 MP), far below what
# would exhaust memory once decoded (64 MP of RGB is 192 MB).
MAX_IMAGE_PIXELS = 64 * 1024 * 1024


def open_image(path: Path) -> Any:
    """The image at path as an RGB PIL image; a UsageError naming the file if it is not one or too large."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UsageError(f"{path}: {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                                     "(a decompression bomb, or an image to scale down first)")
                return image.convert("RGB")
    except UsageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise UsageError(f"{path}: not a readable image ({' '.join(str(exc).split())[:200]})") from None
