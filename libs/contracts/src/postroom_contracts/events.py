"""Every event Postroom publishes. This module is the single source of truth.

Versioning (``python -m postroom_contracts check`` enforces it against the committed schemas):

- An event type (``event_type``) is a contract with its own subject,
  ``postroom.<event_type>.<tenant>``. Every revision of it is compatible with every other,
  in both directions: a consumer built for revision N reads payloads of later revisions
  (forward) and of earlier ones still in the stream, the dead letters or a replay (backward).
- ``schema_version`` is the revision; every payload carries it as ``version``. Readers accept
  any revision (``version`` is an ``int``, never a ``Literal`` pin) and ignore fields they do
  not know (``extra="ignore"``): decode with :func:`postroom_contracts.decode`. A compatible
  change may be made in place (regenerate the schema); bump ``schema_version`` when readers
  need to tell the payloads apart (e.g. a new field whose absence meant "unknown" before and
  means "none" from now on). The old revision's schema file stays committed as a baseline:
  the new revision must be compatible with every earlier one.
- Compatible means (postroom_contracts.compatibility has the full rules): add optional fields
  with a default their schema accepts, change descriptions; nothing else. Never remove,
  retype, widen (``str`` -> ``str | None``) or narrow a field, add or remove a ``Literal`` /
  enum value, add, loosen or tighten a constraint (length, pattern, format, bounds, item
  counts), make a field required, or change an optional field's default; recursively in
  nested models, list items and dict values.
- A draft (``draft = True``: no service publishes it yet) may change in any way; the schema
  committed while it was a draft is no baseline. Once a service publishes it, the rules apply.
- A breaking change is a new major: a new event type named ``<type>.v<major>`` (e.g.
  ``mail.received.v2``, subject ``postroom.mail.received.v2.<tenant>``, its own schemas with
  revisions from 1), published side by side with the old type until every consumer moved.
  The old type is then marked ``deprecated`` (the reason and the date publishing ends; the
  schema says ``deprecated: true``) and removed from the catalogue after that date.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .ids import TENANT_SLUG_PATTERN, derive_event_id
from .subjects import subject_for


def utcnow() -> datetime:
    return datetime.now(UTC)


class BlobRef(BaseModel):
    """Claim check: where a large payload lives (raw MIME, an attachment, audio)."""

    model_config = ConfigDict(frozen=True)

    bucket: str = Field(description="Blob bucket (NATS object store bucket or folder name)")
    key: str = Field(description="Object key, content-addressed: sha256/<hex>")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: str | None = None


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int]
    draft: ClassVar[bool] = False
    deprecated: ClassVar[str | None] = None
    """Set on a type being replaced by a new major: what replaces it and until when it is
    published (e.g. "replaced by mail.received.v2; published until 2027-06-30")."""

    event_id: str = Field(description="Unique id; derived from the cause, so repeats share it")
    occurred_at: datetime = Field(default_factory=utcnow)
    tenant: str = Field(pattern=TENANT_SLUG_PATTERN)
    mail_key: str = Field(min_length=8, max_length=64, description="Key of the mail")
    causation_id: str | None = Field(
        default=None, description="event_id of the event that caused this one (None: origin)"
    )
    version: int = Field(
        default=1, ge=1,
        description="Revision of the event type's schema the producer wrote (its "
        "schema_version). Readers accept every revision, later ones included, and ignore "
        "fields they do not know",
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A class's ``version`` defaults to its ``schema_version``: declare only the latter."""
        super().__pydantic_init_subclass__(**kwargs)
        revision = cls.__dict__.get("schema_version")
        field = cls.model_fields.get("version")
        if isinstance(revision, int) and field is not None and field.default != revision \
                and field.annotation is int:
            field.default = revision
            cls.model_rebuild(force=True)

    @property
    def nats_subject(self) -> str:
        return subject_for(self.event_type, self.tenant)

    @classmethod
    def caused_by(cls, cause: Event, part: str = "", **fields: Any) -> Any:
        """Build this event as a consequence of ``cause``, with a derived id."""
        fields.setdefault("tenant", cause.tenant)
        fields.setdefault("mail_key", cause.mail_key)
        return cls(
            event_id=derive_event_id(cause.event_id, cls.event_type, part),
            causation_id=cause.event_id,
            **fields,
        )


# --- order intake (issue: foundation) -------------------------------------------------


class SmtpSession(BaseModel):
    """What the SMTP server knew about the session that delivered a mail (trace facts, the
    input of authentication checks such as SPF, which needs the client IP and the HELO)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_ip: str = Field(description="IP address of the SMTP client (IPv4 or IPv6 text form)")
    client_port: int | None = Field(default=None, ge=0, le=65535)
    helo: str | None = Field(
        default=None, description="The HELO/EHLO name as the client gave it (not verified)"
    )
    esmtp: bool = Field(default=False, description="The client greeted with EHLO")
    tls_version: str | None = Field(
        default=None, description="e.g. 'TLSv1.3'; None when the session was not encrypted"
    )
    tls_cipher: str | None = None
    tls_bits: int | None = Field(default=None, ge=0)
    auth_user: str | None = Field(
        default=None, description="SMTP AUTH identity; None when not authenticated"
    )
    auth_mechanism: str | None = Field(default=None, description="e.g. 'PLAIN', 'LOGIN'")


class RouteDecision(BaseModel):
    """What smtp-ingress decided to do with a mail relayed by a tenant's PBX or sent to the
    tenant's plus-addressed voicemail mailbox (the registry's rule at the time of the 250)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["pbx", "voicemail-address"] = Field(
        description="'pbx': relayed by a PBX the tenant lists, for the tenant's user domains; "
        "'voicemail-address': sent to voicemail+<tenant>@<intake domain>"
    )
    pbx: str | None = Field(
        default=None, description="Name of the PBX in the tenant registry; None for "
        "'voicemail-address' mail from a client that is not a listed PBX"
    )
    matched_by: Literal["network", "auth"] | None = Field(
        default=None, description="How the client was recognised as the PBX: its address is "
        "in a listed network, or it authenticated (SMTP AUTH over TLS) as the PBX's identity"
    )
    transcribe: bool = Field(description="Transcribe the mail's audio")
    language: str | None = Field(
        default=None, description="BCP-47 language of the audio, e.g. 'en-US'"
    )
    forward_to: list[str] = Field(
        default_factory=list,
        description="Final recipients after the registry's forwarding rule",
    )
    forward_mode: Literal["original", "map", "list"] = Field(
        default="original",
        description="'original': the envelope recipients; 'map': recipients rewritten through "
        "the PBX's address map; 'list': the addresses the tenant lists for its voicemail",
    )


class MailReceived(Event):
    """A mail was accepted (SMTP 250) and its raw MIME is stored."""

    event_type: ClassVar[str] = "mail.received"
    schema_version: ClassVar[int] = 1

    source: Literal["smtp", "imap", "webhook"] = "smtp"
    message_id: str
    message_id_synthetic: bool = False
    mailbox: str = Field(description="Local part before '+', e.g. 'orders'")
    actions: list[str] = Field(default_factory=list, description="What the registry says to do")
    envelope_from: str = Field(
        description="Envelope sender (the MAIL FROM reverse path); '' for the null sender "
        "'<>' (bounces, DSNs)"
    )
    recipients: list[str] = Field(min_length=1)
    header_from: str | None = None
    subject: str | None = None
    date: str | None = None
    size: int = Field(ge=0)
    raw: BlobRef
    tls: bool = False
    authenticated: bool = False
    message_id_reused: bool = Field(
        default=False,
        description="This tenant already received another mail (other content) with this "
        "Message-ID; this one is a separate mail with its own mail_key",
    )
    smtp: SmtpSession | None = Field(
        default=None, description="Session facts (client, HELO, TLS, AUTH); None: not via SMTP"
    )
    route: RouteDecision | None = Field(
        default=None, description="Voicemail routing decision; None: ordinary intake mail"
    )


class DocumentMetadata(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    pages: int | None = None
    text_excerpt: str | None = None
    sheets: list[str] | None = None
    rows: int | None = None
    header: list[str] | None = None
    error: str | None = Field(default=None, description="Why metadata could not be read")


class DocumentStored(Event):
    """An attachment of a mail is stored as a document."""

    event_type: ClassVar[str] = "document.stored"
    schema_version: ClassVar[int] = 1

    document_id: str
    index: int = Field(ge=0, description="Position of the attachment within the mail")
    filename: str
    declared_content_type: str
    sniffed_content_type: str | None
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    blob: BlobRef
    supported: bool = Field(description="PDF, XLSX, CSV or ZIP")
    metadata: DocumentMetadata = Field(default_factory=DocumentMetadata)


class DocumentRef(BaseModel):
    """A stored attachment of a mail, as listed on mail.parsed (the facts of its
    document.stored event, so a consumer needs no second lookup)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    document_id: str
    index: int = Field(ge=0, description="Position of the attachment within the mail")
    filename: str
    content_type: str = Field(
        description="Sniffed content type, or the declared one when sniffing found none"
    )
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    blob: BlobRef


class MailParsed(Event):
    """The mail was parsed: its documents are stored and its text is available."""

    event_type: ClassVar[str] = "mail.parsed"
    schema_version: ClassVar[int] = 1

    message_id: str
    subject: str | None = None
    header_from: str | None = None
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    document_ids: list[str] = Field(default_factory=list)
    skipped_parts: int = 0
    body_text: str = ""
    body_text_truncated: bool = False
    has_html: bool = False
    defects: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    documents: list[DocumentRef] = Field(
        default_factory=list, description="The stored documents, in document_ids order"
    )
    route: RouteDecision | None = Field(
        default=None, description="mail.received's routing decision, copied through"
    )
    envelope_from: str | None = Field(
        default=None, description="Envelope sender (MAIL FROM) of the mail.received event; "
        "'' for a null sender; None when the producer did not say (earlier payloads)",
    )
    raw: BlobRef | None = Field(
        default=None, description="The raw MIME of the mail (mail.received's raw), copied "
        "through; None from producers that predate it"
    )


class MailFailed(Event):
    """Processing of a mail failed for good (terminal state FAILED)."""

    event_type: ClassVar[str] = "mail.failed"
    schema_version: ClassVar[int] = 1

    stage: str
    error: str


# --- mail authentication (SPF, DKIM, DMARC, ARC, iprev) ----------------------------------

SpfResult = Literal["none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"]
DkimResult = Literal["pass", "fail", "neutral", "policy", "temperror", "permerror"]
DmarcResult = Literal["none", "pass", "fail", "temperror", "permerror"]
ArcResult = Literal["none", "pass", "fail"]
IprevResult = Literal["pass", "fail", "temperror", "permerror"]


class SpfVerdict(BaseModel):
    """SPF (RFC 7208) of the MAIL FROM identity; of the HELO identity for the null sender."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    result: SpfResult
    identity: Literal["mailfrom", "helo"]
    domain: str | None = Field(description="The domain whose SPF record was evaluated")
    smtp_mailfrom: str | None = Field(
        default=None, description="Domain of the reverse path (smtp.mailfrom); None for '<>'"
    )
    smtp_helo: str | None = Field(default=None, description="The HELO/EHLO name (smtp.helo)")
    reason: str | None = Field(default=None, description="Why, in words (not for parsing)")


class DkimVerdict(BaseModel):
    """One DKIM-Signature header field (RFC 6376), topmost first."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    result: DkimResult
    domain: str | None = Field(description="d= of the signature (header.d)")
    selector: str | None = Field(description="s= of the signature (header.s)")
    algorithm: str | None = Field(default=None, description="a=, e.g. 'rsa-sha256'")
    signature_prefix: str | None = Field(
        default=None, description="First 8 characters of b= (header.b, RFC 6008)"
    )
    reason: str | None = Field(default=None, description="Why, in words (not for parsing)")


class DmarcVerdict(BaseModel):
    """DMARC (RFC 7489): is an SPF or DKIM pass aligned with the RFC5322.From domain, and
    what the domain owner asks for when not."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    result: DmarcResult
    header_from: str | None = Field(description="Domain of the From header field (header.from)")
    policy: Literal["none", "quarantine", "reject"] | None = Field(
        default=None,
        description="The policy that applies to this mail: p=, or sp= when the record was "
        "found at the organizational domain of a subdomain; None without a record",
    )
    policy_domain: str | None = Field(
        default=None, description="Where the DMARC record was found (_dmarc.<policy_domain>)"
    )
    spf_alignment: Literal["relaxed", "strict"] | None = Field(
        default=None, description="aspf= of the record"
    )
    dkim_alignment: Literal["relaxed", "strict"] | None = Field(
        default=None, description="adkim= of the record"
    )
    spf_aligned: bool = Field(default=False, description="SPF passed for an aligned domain")
    dkim_aligned: bool = Field(
        default=False, description="A DKIM signature passed for an aligned domain"
    )
    reason: str | None = Field(default=None, description="Why, in words (not for parsing)")


class ArcVerdict(BaseModel):
    """ARC (RFC 8617) chain validation; present only when the mail carries ARC sets."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    result: ArcResult
    chain_length: int = Field(ge=0, description="Number of ARC sets (the highest i=)")
    reason: str | None = Field(default=None, description="Why, in words (not for parsing)")


class IprevVerdict(BaseModel):
    """iprev (RFC 8601 section 3): the client IP's PTR name resolves back to the IP."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    result: IprevResult
    ip: str = Field(description="The SMTP client's IP address (policy.iprev)")
    hostname: str | None = Field(default=None, description="The PTR name that confirmed it")
    reason: str | None = Field(default=None, description="Why, in words (not for parsing)")


class MailAuthenticated(Event):
    """SPF, DKIM, DMARC, ARC and iprev of a received mail were verified (after the 250)."""

    event_type: ClassVar[str] = "mail.authenticated"
    schema_version: ClassVar[int] = 1

    message_id: str
    authserv_id: str = Field(description="Who verified (the authserv-id of the header)")
    spf: SpfVerdict | None = Field(
        default=None, description="None when the client IP is unknown (not received over SMTP)"
    )
    dkim: list[DkimVerdict] = Field(
        default_factory=list, description="One per signature; empty: no signature (dkim=none)"
    )
    dmarc: DmarcVerdict
    arc: ArcVerdict | None = Field(default=None, description="None: the mail has no ARC sets")
    iprev: IprevVerdict | None = Field(
        default=None, description="None when the client IP is unknown"
    )
    authentication_results: str = Field(
        description="Value of the Authentication-Results header field (RFC 8601) to prepend "
        "as 'Authentication-Results: <value>' (folded with CRLF + tab when long)"
    )


# --- drafts for later issues ------------------------------------------------------------


class AudioFormat(BaseModel):
    """How a recording was encoded, as the WAV header says."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    container: str = Field(description="e.g. 'WAV'")
    encoding: str = Field(
        description="soundfile subtype: 'ULAW', 'ALAW', 'PCM_16', 'GSM610', 'IMA_ADPCM', "
        "'MS_ADPCM', ..."
    )
    sample_rate: int = Field(ge=1, description="Hz, e.g. 8000")
    channels: int = Field(ge=1)


class CallDetails(BaseModel):
    """What the PBX said about the call, parsed from its notification mail (subject, body,
    headers). Every field is None when the PBX did not say it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    caller_name: str | None = None
    caller_number: str | None = Field(default=None, description="As the PBX wrote it")
    mailbox: str | None = Field(
        default=None, description="The called mailbox or extension (callee), as the PBX wrote it"
    )
    mailbox_name: str | None = Field(default=None, description="Name of the mailbox's owner")
    duration_seconds: float | None = Field(
        default=None, ge=0, description="Duration the PBX reported (not measured)"
    )
    called_at: str | None = Field(
        default=None, description="When the call came in, as the PBX wrote it"
    )


class WordTiming(BaseModel):
    """One recognised word with its place in the recording."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    word: str
    start_seconds: float = Field(ge=0)
    end_seconds: float = Field(ge=0)
    confidence: float | None = Field(default=None, ge=0, le=1)


class VoicemailTranscribed(Event):
    """A voicemail recording (one audio attachment of a mail a tenant's PBX relayed, or sent to
    its voicemail address) was transcribed, or could not be. One event per audio attachment;
    ``event_id`` is derived from the mail.parsed event and the attachment's index."""

    event_type: ClassVar[str] = "voicemail.transcribed"
    schema_version: ClassVar[int] = 1

    message_id: str = Field(description="Message-ID of the PBX's mail")
    document_id: str = Field(description="The audio attachment (as in document.stored)")
    index: int = Field(ge=0, description="Position of the attachment within the mail")
    filename: str
    status: Literal["transcribed", "failed"] = Field(
        description="'transcribed': text holds what was said (may be empty for silence); "
        "'failed': no engine could transcribe it, error says why (the mail is still forwarded, "
        "marked 'transcription unavailable')"
    )
    text: str = Field(default="", description="The transcript")
    confidence: float | None = Field(
        default=None, ge=0, le=1, description="Engine's confidence; None when it gives none"
    )
    engine: str = Field(description="Engine that produced the text: 'google', 'moonshine', ...")
    model: str | None = Field(default=None, description="Engine's model, e.g. 'telephony'")
    fallback: bool = Field(
        default=False,
        description="The preferred engine failed or its breaker was open; a fallback answered",
    )
    language: str = Field(description="BCP-47 language asked for, e.g. 'en-US'")
    duration_seconds: float = Field(ge=0, description="Measured length of the audio")
    processing_seconds: float = Field(ge=0, description="Wall time spent transcribing")
    real_time_factor: float | None = Field(
        default=None, ge=0, description="processing_seconds / duration_seconds"
    )
    audio: AudioFormat | None = Field(default=None, description="None when it could not be read")
    call: CallDetails = Field(default_factory=CallDetails)
    words: list[WordTiming] | None = Field(
        default=None, description="Word timings, when the tenant's configuration asks for them"
    )
    error: str | None = Field(default=None, description="Why it failed ('failed' status)")


ClassificationLabel = Literal[
    "meeting", "promotion", "intro", "voicemail", "order", "support", "spam", "unknown"]
CLASSIFICATION_LABELS: tuple[str, ...] = (
    "meeting", "promotion", "intro", "voicemail", "order", "support", "spam", "unknown")


class MailClassified(Event):
    """A mail was classified: exactly one label, its confidence and every label's score."""

    event_type: ClassVar[str] = "mail.classified"
    schema_version: ClassVar[int] = 1

    email_id: str = Field(description="The mail's Message-ID")
    classification: ClassificationLabel
    confidence: float = Field(ge=0, le=1, description="The chosen label's probability")
    processed_at: datetime
    processor_id: str = Field(description="The classifier instance that decided")
    processing_time_ms: float = Field(ge=0)
    scores: dict[str, float] = Field(
        default_factory=dict, description="Every label's probability (they sum to 1)")
    model_version: str
    spam_score: float | None = Field(
        default=None, description="SpamAssassin's score when spamd is configured")


class MailLabelCorrected(Event):
    """A person corrected a mail's label (in the console): the classifier keeps the correction
    and ``postroom classifier train`` learns from it in the next model version."""

    event_type: ClassVar[str] = "mail.label_corrected"
    schema_version: ClassVar[int] = 1

    correction_id: str = Field(description="Unique id of this correction")
    email_id: str = Field(description="The mail's Message-ID")
    label: ClassificationLabel = Field(description="The right label, as the person said")
    previous_label: ClassificationLabel | None = Field(
        default=None, description="The label the mail had (None: never classified)")
    previous_model_version: str | None = Field(
        default=None, description="Model version that gave the previous label")
    corrected_by: str = Field(description="Who corrected it: the name of the console API key")
    raw: BlobRef | None = Field(
        default=None, description="The raw mail (as in mail.received), what the model learns "
        "from; None: not known to the console")


ReplyBackend = Literal["local", "ai-core", "openai"]
ReplyStatus = Literal["pending", "held", "auto"]


class ReplySource(BaseModel):
    """What a drafted reply was grounded in: a message of the thread or a passage of the
    tenant's knowledge base, as it was given to the model."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["thread", "knowledge"]
    ref: str = Field(description="'thread': the Message-ID; 'knowledge': the passage's id")
    title: str = Field(default="", description="Subject of the message or title of the passage")


class ReplyDrafted(Event):
    """An AI reply to a mail was drafted (ai-responder). ``status`` says what happens next:
    'pending' waits for a person's decision (reply.reviewed); 'held' was flagged by a
    guardrail (``held_reasons``) and a person must review it before it may be sent; 'auto'
    was sent at once (the tenant's policy is auto-send: delivery.requested follows).

    The recipients come from the mail's headers and the tenant's policy, never from the
    model's output. ``reply_id`` is derived from the tenant and the mail's key: one reply per
    mail, whatever is redelivered."""

    event_type: ClassVar[str] = "reply.drafted"
    schema_version: ClassVar[int] = 1

    reply_id: str = Field(
        min_length=8, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
        description="Deterministic id of the reply (postroom_contracts.reply_id_for)")
    mailbox: str = Field(description="The tenant's mailbox the mail reached, e.g. 'support'")
    to: list[str] = Field(min_length=1, description="Recipients: the mail's Reply-To or From")
    from_address: str | None = Field(default=None, description="From of the reply")
    subject: str
    body_text: str = Field(description="The reply as sent: the template around the draft")
    body_html: str | None = None
    draft_text: str = Field(default="", description="The model's text alone (what a person "
                            "edits; body_text is the template rendered around it)")
    in_reply_to: str | None = Field(default=None, description="Message-ID of the mail answered")
    references: list[str] = Field(default_factory=list, description="The thread's Message-IDs")
    language: str = Field(description="Language of the reply, e.g. 'en', 'fr', 'de'")
    model: str = Field(description="Model that wrote the draft")
    backend: ReplyBackend
    prompt_version: str = Field(description="Version of the prompt template used")
    sources: list[ReplySource] = Field(default_factory=list)
    status: ReplyStatus
    held_reasons: list[str] = Field(
        default_factory=list, description="Why a guardrail held it ('held'), in words")
    prompt_tokens: int | None = Field(default=None, ge=0, description="None: not reported")
    completion_tokens: int | None = Field(default=None, ge=0, description="None: not reported")
    latency_ms: float = Field(ge=0, description="Time the backend took to answer")
    email_id: str | None = Field(default=None, description="Message-ID of the mail answered")


class ReplyReviewed(Event):
    """A person decided on a drafted reply (published by the console, and by ai-responder's
    own review API): 'approved' sends it (with ``body_text`` when the person edited the
    draft's text), 'rejected' never sends it. The first decision on a reply is final."""

    event_type: ClassVar[str] = "reply.reviewed"
    schema_version: ClassVar[int] = 1

    reply_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    decision: Literal["approved", "rejected"]
    reviewed_by: str = Field(min_length=1, description="Who decided: the API key's name")
    body_text: str | None = Field(
        default=None, description="The draft's text as edited by the person (the template is "
        "rendered around it again); None: sent as drafted")
    reason: str | None = Field(default=None, description="Why (a rejection's reason)")


class ReplySkipped(Event):
    """ai-responder decided not to draft a reply to a mail that asked for one (its mailbox
    lists 'reply')."""

    event_type: ClassVar[str] = "reply.skipped"
    schema_version: ClassVar[int] = 1

    reason: str = Field(
        description="'loop-guard' (automated mail, list, bounce, our own mail), 'rate-limit', "
        "'sender-blocked', 'sender-not-allowed', 'policy' (no reply policy or its labels do not "
        "include the mail's), 'guardrail' (forbidden topic)")
    detail: str = Field(default="", description="What exactly, in words (no addresses)")
    reply_id: str | None = Field(default=None, description="The reply it would have been")


class DeliveryRequested(Event):
    """Please send this mail: the mailer's one input, for every kind of outgoing mail (a
    forwarded or enhanced voicemail now, AI replies and notifications later).

    The mailer builds the message from ``original`` (the raw MIME it is based on) and/or the
    ``template`` with ``template_data`` and the body fields, sends it once to ``to`` through the
    outbound relay, and answers with delivery.sent or delivery.failed. ``delivery_id`` is the
    idempotency key: the same id is sent at most once, and the Message-ID of a composed mail is
    derived from it."""

    event_type: ClassVar[str] = "delivery.requested"
    schema_version: ClassVar[int] = 1

    delivery_id: str = Field(
        min_length=8, max_length=128, pattern=r"^[A-Za-z0-9._-]+$",
        description="Deterministic id of this delivery (derived from its cause)",
    )
    kind: Literal["forward", "voicemail", "reply", "notification"] = Field(
        description="'forward': ``original`` sent unchanged; 'voicemail': ``original`` "
        "enhanced with the transcripts in ``template_data`` (template 'voicemail'); 'reply' "
        "and 'notification': a new mail from ``template`` and the body fields"
    )
    to: list[str] = Field(min_length=1, description="Envelope recipients (RCPT TO)")
    envelope_from: str | None = Field(
        default=None,
        description="Envelope sender (MAIL FROM); '' for a null sender; None: the mailer's "
        "MAILER_ENVELOPE_FROM, else the original's envelope sender",
    )
    original: BlobRef | None = Field(
        default=None, description="Raw MIME (RFC 5322) the delivery is built from"
    )
    original_envelope_from: str | None = Field(
        default=None, description="Envelope sender of ``original`` as it was received"
    )
    template: str | None = Field(
        default=None,
        description="Template set to compose with (the tenant's override, else the mailer's), "
        "e.g. 'voicemail'",
    )
    template_data: dict[str, Any] = Field(
        default_factory=dict,
        description="Values for the template; for 'voicemail': 'transcripts' (a list of "
        "voicemail.transcribed payloads, one per audio attachment, in order) and 'call'",
    )
    subject: str | None = Field(default=None, description="Subject of a new mail")
    from_address: str | None = Field(default=None, description="From of a new mail")
    body_text: str | None = None
    body_html: str | None = None
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Further header fields of a new mail (e.g. Auto-Submitted). A value with "
        "CR or LF is refused (delivery.failed, permanent)",
    )


class DeliverySent(Event):
    """The relay accepted a mail (or, with no relay configured, it was captured)."""

    event_type: ClassVar[str] = "delivery.sent"
    schema_version: ClassVar[int] = 1

    delivery_id: str
    kind: str = Field(description="The delivery.requested kind")
    message_id: str = Field(description="Message-ID of the mail as sent")
    to: list[str] = Field(description="Recipients the relay accepted")
    refused: dict[str, str] = Field(
        default_factory=dict, description="Recipients the relay refused, with its reply"
    )
    relay: str = Field(description="host:port of the relay, or 'capture' with no relay")
    smtp_response: str = Field(description="The relay's reply to the end of DATA")
    attempts: int = Field(ge=1)
    dkim_signed: bool = False


class DeliveryFailed(Event):
    """A mail could not be sent: refused for good (5xx, a bad header, an unreadable original)
    or temporary failures until the retry schedule ran out. The request also goes to the
    dead letters of the mailer's consumer, so it can be replayed."""

    event_type: ClassVar[str] = "delivery.failed"
    schema_version: ClassVar[int] = 1

    delivery_id: str
    kind: str = Field(description="The delivery.requested kind")
    to: list[str]
    permanent: bool = Field(description="True: refused (5xx or invalid); False: retries ran out")
    smtp_code: int | None = Field(default=None, description="The relay's reply code, if any")
    error: str
    attempts: int = Field(ge=0)


CATALOGUE: tuple[type[Event], ...] = (
    MailReceived,
    DocumentStored,
    MailParsed,
    MailFailed,
    MailAuthenticated,
    VoicemailTranscribed,
    MailClassified,
    MailLabelCorrected,
    ReplyDrafted,
    ReplyReviewed,
    ReplySkipped,
    DeliveryRequested,
    DeliverySent,
    DeliveryFailed,
)

BY_TYPE: dict[str, type[Event]] = {cls.event_type: cls for cls in CATALOGUE}


# --- dead letters ---------------------------------------------------------------------------


class DeadLetter(BaseModel):
    """A message a consumer gave up on, published on ``postroom.dlq.<consumer>``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    consumer: str
    original_subject: str
    original_msg_id: str | None = None
    stream_sequence: int | None = None
    deliveries: int
    error: str
    payload_b64: str
    headers: dict[str, str] = Field(default_factory=dict)
    mail_key: str | None = None
    failed_at: datetime = Field(default_factory=utcnow)
