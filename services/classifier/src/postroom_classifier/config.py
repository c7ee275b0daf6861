"""classifier settings: the shared runtime settings plus the model's."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from postroom_runtime import RuntimeSettings


class ClassifierSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``CLASSIFIER_MODEL_PATH=/models/x.joblib``."""

    service_name: ClassVar[str] = "classifier"
    http_port: int = Field(default=8029, ge=0, le=65535)

    classifier_model_path: str | None = Field(
        default=None, description="A model file made by `postroom classifier train`; "
        "default: the model shipped in postroom-classify")
    classifier_read_headers: bool = Field(
        default=True, description="Read the raw mail's header block from the blob store "
        "(List-Unsubscribe, Precedence, Auto-Submitted, Authentication-Results)")
    classifier_processor_id: str | None = Field(
        default=None, description="processor_id in mail.classified; default: host name "
        "and process id")
