"""Files in and out, below every command: images (:mod:`.images`), videos read and written with PyAV
(:mod:`.video`), the output formats (:mod:`.outputs`) and the records of a batch of photos (:mod:`.records`).

The image functions are re-exported here: ``from attnmesh.io import load_image``.
"""

from __future__ import annotations

from .images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageError, as_rgb_uint8, decode_image, iter_image_paths, load_image

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "ImageError", "as_rgb_uint8", "decode_image", "iter_image_paths",
           "load_image"]
