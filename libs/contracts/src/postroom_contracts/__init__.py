"""Postroom's public event catalogue: events, subjects, streams and the tenant registry model."""

from .codec import decode
from .events import (
    BY_TYPE,
    CATALOGUE,
    CLASSIFICATION_LABELS,
    ArcVerdict,
    AudioFormat,
    BlobRef,
    CallDetails,
    DeadLetter,
    DeliveryFailed,
    DeliveryRequested,
    DeliverySent,
    DkimVerdict,
    DmarcVerdict,
    DocumentMetadata,
    DocumentRef,
    DocumentStored,
    Event,
    IprevVerdict,
    MailAuthenticated,
    MailClassified,
    MailFailed,
    MailLabelCorrected,
    MailParsed,
    MailReceived,
    ReplyDrafted,
    RouteDecision,
    SmtpSession,
    SpfVerdict,
    VoicemailTranscribed,
    WordTiming,
)
from .ids import derive_event_id, is_tenant_slug, mail_key, synthetic_message_id
from .subjects import (
    BLOBS_BUCKET,
    DEAD_LETTERS,
    DLQ_STREAM,
    EVENTS,
    EVENTS_STREAM,
    STREAMS,
    TENANTS_BUCKET,
    StreamSpec,
    dlq_subject,
    subject_filter,
    subject_for,
)
from .tenants import Action, MailboxRoute, Pbx, Tenant, TenantSeed, VoicemailForward

__all__ = [
    "BLOBS_BUCKET", "BY_TYPE", "CATALOGUE", "CLASSIFICATION_LABELS", "DEAD_LETTERS",
    "DLQ_STREAM", "EVENTS",
    "EVENTS_STREAM", "STREAMS", "TENANTS_BUCKET", "Action", "ArcVerdict", "AudioFormat",
    "BlobRef", "CallDetails", "DeadLetter", "DeliveryFailed", "DeliveryRequested",
    "DeliverySent", "DkimVerdict", "DmarcVerdict", "DocumentMetadata", "DocumentRef",
    "DocumentStored", "Event", "IprevVerdict", "MailAuthenticated", "MailClassified",
    "MailFailed", "MailLabelCorrected", "MailParsed", "MailReceived", "MailboxRoute", "Pbx", "ReplyDrafted",
    "RouteDecision", "SmtpSession", "SpfVerdict", "StreamSpec", "Tenant", "TenantSeed",
    "VoicemailForward", "VoicemailTranscribed", "WordTiming", "decode", "derive_event_id",
    "dlq_subject", "is_tenant_slug", "mail_key", "subject_filter", "subject_for",
    "synthetic_message_id",
]
