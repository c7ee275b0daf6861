"""classifier settings: the shared runtime settings plus the model's."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

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

    # --- SpamAssassin (optional) ---
    classifier_spamd_url: str | None = Field(
        default=None, description="spamd to ask about every mail: `host:port`, "
        "`tcp://host:port` or `unix:///path/to/socket`; unset: no SpamAssassin")
    classifier_spamd_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time for one spamd check (connect, send, answer); "
        "longer: the mail is classified without it")
    classifier_spamd_max_bytes: int = Field(
        default=512_000, ge=1, description="Larger mails are not sent to spamd (spamc's "
        "default limit, 500 KB): spam is small, and spamd's time grows with size")
    classifier_spam_threshold: float | None = Field(
        default=None, description="spamd score from which a mail is spam; default: spamd's "
        "own required score (required_score, 5.0 unless configured)")

    # --- model versions and corrections ---
    classifier_model_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often the store is asked for a newer model "
        "version (from `postroom classifier train` or the service's own retraining)")
    classifier_retrain_after_corrections: int = Field(
        default=0, ge=0, description="Train a new model version in a worker process once "
        "this many corrections arrived since the latest version; 0: never (run "
        "`postroom classifier train`)")
    classifier_retrain_debounce_seconds: float = Field(
        default=30.0, ge=0, description="Wait until no correction arrived for this long "
        "before retraining (a person correcting ten mails gets one new version)")
    classifier_corpus_dir: str | None = Field(
        default=None, description="The training corpus (train.jsonl, heldout.jsonl) for "
        "retraining; default: services/classifier/corpus of the checkout when there is one")

    @field_validator("classifier_spamd_url", "classifier_spam_threshold",
                     "classifier_corpus_dir", "classifier_model_path", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `CLASSIFIER_SPAM_THRESHOLD=` as in .env.example means "not set", not a bad number
        return None if isinstance(value, str) and not value.strip() else value
