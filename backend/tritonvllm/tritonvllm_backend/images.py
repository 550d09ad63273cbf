"""Decode a request's ``image`` input: base64-encoded image files, converted to RGB.

The official backend converts each image to RGB before handing it to vLLM, so palette, RGBA,
greyscale and CMYK images reach a multimodal model's processor in the one mode it expects.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from .sampling import RequestError


def decode_images(encoded: list[bytes]) -> list[Any]:
    """PIL images in RGB mode; RequestError when one is not a base64-encoded image file."""
    from PIL import Image

    images = []
    for position, data in enumerate(encoded):
        try:
            with Image.open(io.BytesIO(base64.b64decode(data))) as image:
                images.append(image.convert("RGB"))
        except Exception as err:  # whatever PIL raises, the request gets an answer
            raise RequestError(
                f"image {position} must be a base64-encoded image file: {err}"
            ) from None
    return images
