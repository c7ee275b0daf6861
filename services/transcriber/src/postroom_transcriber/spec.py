"""transcriber as the rest of Postroom sees it (registered as a ``postroom.services``
entry point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import DeliveryRequested, MailParsed, VoicemailTranscribed
from postroom_contracts.services import Consumes, ServiceSpec

SERVICE = ServiceSpec(
    name="transcriber",
    module="postroom_transcriber",
    http_port=8027,
    summary="Transcribes the audio of voicemail mails a tenant's PBX relayed (or sent to its "
    "voicemail address): voicemail.transcribed per recording, then one delivery.requested "
    "to forward the mail, enhanced or unchanged.",
    consumes=(
        # the durable name is fixed forever: a new name would reprocess the whole stream
        Consumes(MailParsed, durable="transcriber-mail-parsed",
                 summary="Transcribes a routed mail's recordings and asks for its delivery; "
                 "other mails are acknowledged and left alone."),
    ),
    publishes=(VoicemailTranscribed, DeliveryRequested),
)
