"""Tiny images built in code, one per supported media type, for tests of the wire contract.

The PNG, GIF and WebP are complete 1x1 images; the JPEG is only a header, which is all the
magic-number check reads. ``padded`` stretches any of them to an exact size without touching
the leading bytes, so size limits can be tested at their boundary.
"""

from __future__ import annotations

import base64
import struct
import zlib

from schemas import ImageMediaType, InlineImageBlock

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(width: int = 1, height: int = 1) -> bytes:
    """An 8-bit RGB PNG, every pixel black."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # Each scanline starts with its filter byte (0 = none).
    scanlines = (b"\x00" + b"\x00\x00\x00" * width) * height
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_bytes() -> bytes:
    """Start of image, a JFIF APP0 segment and end of image."""
    app0 = b"JFIF\x00" + bytes([1, 1, 0]) + struct.pack(">HH", 1, 1) + bytes([0, 0])
    return b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def gif_bytes() -> bytes:
    """A 1x1 GIF89a with a two-colour palette."""
    screen = struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    # LZW minimum code size 2, one data sub-block, block terminator.
    pixels = b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + palette + image + pixels + b";"


def webp_bytes() -> bytes:
    """A 1x1 lossless (VP8L) WebP in its RIFF container."""
    vp8l = bytes.fromhex("2f00000010071011118888fe07")
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + b"\x00" * (len(vp8l) % 2)
    body = b"WEBP" + chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


IMAGE_BYTES: dict[ImageMediaType, bytes] = {
    ImageMediaType.PNG: png_bytes(),
    ImageMediaType.JPEG: jpeg_bytes(),
    ImageMediaType.GIF: gif_bytes(),
    ImageMediaType.WEBP: webp_bytes(),
}
"""One valid image per supported media type."""


def padded(raw: bytes, size: int) -> bytes:
    """``raw`` followed by zero bytes up to exactly ``size`` bytes."""
    if size < len(raw):
        raise ValueError(f"cannot pad {len(raw)} bytes down to {size}")
    return raw + b"\x00" * (size - len(raw))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def inline_image(
    media_type: ImageMediaType = ImageMediaType.PNG, raw: bytes | None = None
) -> InlineImageBlock:
    """An inline image block; by default the valid image of ``media_type``."""
    data = IMAGE_BYTES[media_type] if raw is None else raw
    return InlineImageBlock(media_type=media_type, data=b64(data))
