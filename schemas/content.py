"""Content blocks: text, inline images and images stored in the blob store."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas._base import Frozen

BLOB_ID_PATTERN = r"^sha256:[0-9a-f]{64}$"
BlobId = Annotated[str, StringConstraints(pattern=BLOB_ID_PATTERN)]


class ImageMediaType(StrEnum):
    PNG = "image/png"
    JPEG = "image/jpeg"
    GIF = "image/gif"
    WEBP = "image/webp"


class TextBlock(Frozen):
    type: Literal["text"] = "text"
    text: str


class InlineImageBlock(Frozen):
    type: Literal["image"] = "image"
    media_type: ImageMediaType
    source: Literal["inline"] = "inline"
    data: str = Field(description="base64 of the image bytes")


class BlobImageBlock(Frozen):
    type: Literal["image"] = "image"
    media_type: ImageMediaType
    source: Literal["blob"] = "blob"
    blob_id: BlobId


ImageBlock = Annotated[InlineImageBlock | BlobImageBlock, Field(discriminator="source")]
ContentBlock = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]
Content = str | list[ContentBlock]
"""Text, or a list of content blocks."""
