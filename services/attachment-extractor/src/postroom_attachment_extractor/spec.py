"""attachment-extractor as the rest of Postroom sees it (registered as a ``postroom.services``
entry point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import DocumentStored, MailFailed, MailParsed, MailReceived
from postroom_contracts.services import Consumes, ServiceSpec

SERVICE = ServiceSpec(
    name="attachment-extractor",
    module="postroom_attachment_extractor",
    http_port=8026,
    summary="Turns every attachment of a received mail into a stored, de-duplicated document; "
    "publishes document.stored per attachment, then mail.parsed (or mail.failed).",
    consumes=(
        # the durable name is fixed forever: a new name would reprocess the whole stream
        Consumes(MailReceived, durable="attachment-extractor-mail-received",
                 summary="Parses the mail and stores its attachments."),
    ),
    publishes=(DocumentStored, MailParsed, MailFailed),
)
