"""console as the rest of Postroom sees it (registered as a ``postroom.services`` entry point;
read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import MailLabelCorrected, ReplyReviewed
from postroom_contracts.services import ServiceSpec

SERVICE = ServiceSpec(
    name="console",
    module="postroom_console",
    http_port=8030,
    summary="The read side: a projection of every event in its own store (rebuildable from the "
    "stream), the REST API, the WebSocket feed and the web dashboard; label corrections as "
    "mail.label_corrected, decisions on AI replies as reply.reviewed.",
    projects=True,
    publishes=(MailLabelCorrected, ReplyReviewed),
    # `postroom up` keeps an admin key for its data directory and prints it in the banner
    embedded_env={"CONSOLE_ADMIN_KEY": "{console_admin_key}",
                  # the Mailboxes page: mailbox-sync of the same stack, with the token it keeps
                  "CONSOLE_MAILBOX_SYNC_URL": "{mailbox_sync_url}",
                  "CONSOLE_MAILBOX_SYNC_TOKEN_FILE": "{data_dir}/mailbox-sync/api-token"},
    embedded_addresses=(("Console", "{console_url}  (admin key {console_admin_key})"),),
)
