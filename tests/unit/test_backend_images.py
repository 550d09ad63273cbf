"""The ``image`` input: base64 image files of any mode reach vLLM as RGB, as the official
backend converts them; anything else is the request's fault."""

import base64
import io
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend" / "tritonvllm"))
from tritonvllm_backend.images import decode_images
from tritonvllm_backend.sampling import RequestError


def encoded(image: Image.Image, file_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=file_format)
    return base64.b64encode(buffer.getvalue())


def pixels(image: Image.Image) -> list[object]:
    width, height = image.size
    return [image.getpixel((x, y)) for y in range(height) for x in range(width)]


def palette_image() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    image.putdata([0, 1])
    return image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGBA", (2, 1), (10, 20, 30, 40)), [(10, 20, 30)] * 2),
        (palette_image(), [(255, 0, 0), (0, 0, 255)]),
        (Image.new("L", (2, 1), 128), [(128, 128, 128)] * 2),
        (Image.new("LA", (2, 1), (200, 0)), [(200, 200, 200)] * 2),
        (Image.new("1", (2, 1), 1), [(255, 255, 255)] * 2),
        (Image.new("RGB", (2, 1), (1, 2, 3)), [(1, 2, 3)] * 2),
    ],
    ids=["rgba", "palette", "grayscale", "grayscale-alpha", "bilevel", "rgb"],
)
def test_every_mode_arrives_as_rgb(image: Image.Image, expected: list[tuple[int, ...]]) -> None:
    (decoded,) = decode_images([encoded(image)])
    assert decoded.mode == "RGB"
    assert decoded.size == image.size
    assert pixels(decoded) == expected


def test_a_cmyk_jpeg_arrives_as_rgb() -> None:
    (decoded,) = decode_images([encoded(Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG")])
    assert decoded.mode == "RGB"
    assert all(channel > 245 for pixel in pixels(decoded) for channel in pixel)  # white


def test_several_images_keep_their_order() -> None:
    red, blue = Image.new("RGB", (1, 1), (255, 0, 0)), Image.new("L", (1, 1), 0)
    decoded = decode_images([encoded(red), encoded(blue)])
    assert [image.getpixel((0, 0)) for image in decoded] == [(255, 0, 0), (0, 0, 0)]


@pytest.mark.parametrize(
    "data", [b"not base64!", base64.b64encode(b"plain text, not an image"), b""]
)
def test_what_is_not_an_image_file_is_the_requests_fault(data: bytes) -> None:
    good = encoded(Image.new("RGB", (1, 1)))
    with pytest.raises(RequestError, match="image 1 must be a base64-encoded image file"):
        decode_images([good, data])
