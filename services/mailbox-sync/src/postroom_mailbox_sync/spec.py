"""mailbox-sync as the rest of Postroom sees it (registered as a ``postroom.services`` entry
point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import MailReceived
from postroom_contracts.services import ServiceSpec

SERVICE = ServiceSpec(
    name="mailbox-sync",
    module="postroom_mailbox_sync",
    http_port=8031,
    summary="Brings mail from existing mailboxes in as mail.received, the way SMTP mail "
    "arrives: IMAP accounts (IDLE or polling), a provider's push notifications with "
    "incremental history, and a signed inbound-parse endpoint for raw MIME.",
    publishes=(MailReceived,),
    # the embedded stack keeps the credentials key and the API token in its data dir
    embedded_env={
        "MAILBOX_SYNC_SECRET_KEY_FILE": "{data_dir}/mailbox-sync/secret-key",
        "MAILBOX_SYNC_API_TOKEN_FILE": "{data_dir}/mailbox-sync/api-token",
    },
    embedded_addresses=(
        ("IMAP", "accounts: `postroom mailboxes add|list|remove`"),
    ),
)
