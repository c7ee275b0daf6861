"""attachment-extractor settings: the shared runtime settings plus the extraction limits."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from postroom_runtime import RuntimeSettings

from .handlers import Limits


class ExtractorSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``EXTRACT_MAX_PARTS=200``."""

    service_name: ClassVar[str] = "attachment-extractor"
    http_port: int = Field(default=8026, ge=0, le=65535)
    # attachments up to 512 KiB in the KV bucket: one acknowledged write each instead of the
    # Object Store's lookup, chunk and metadata (docs/benchmarks.md, drain)
    blob_small_max_bytes: int = Field(default=524_288, ge=0, le=1_048_576)

    extract_max_parts: int = Field(
        default=200, ge=1, description="MIME parts looked at per mail; the rest is skipped"
    )
    extract_max_depth: int = Field(
        default=10, ge=1, description="Deepest multipart / message nesting looked into"
    )
    extract_max_attachment_bytes: int = Field(
        default=26_214_400, ge=1, description="Larger attachments are skipped (with a defect)"
    )
    extract_include_inline: bool = Field(
        default=False, description="Also store inline images (signatures, logos) as documents"
    )
    extract_body_text_limit: int = Field(
        default=65_536, ge=0, description="Characters of body text carried by mail.parsed"
    )
    extract_text_excerpt_chars: int = Field(
        default=2_000, ge=0, description="Characters of PDF text kept in a document's metadata"
    )

    def limits(self) -> Limits:
        return Limits(
            max_parts=self.extract_max_parts,
            max_depth=self.extract_max_depth,
            max_attachment_bytes=self.extract_max_attachment_bytes,
            include_inline=self.extract_include_inline,
            body_text_limit=self.extract_body_text_limit,
            text_excerpt_chars=self.extract_text_excerpt_chars,
        )
