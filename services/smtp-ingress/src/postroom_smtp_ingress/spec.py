"""smtp-ingress as the rest of Postroom sees it (registered as a ``postroom.services`` entry
point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import MailAuthenticated, MailReceived
from postroom_contracts.services import Consumes, Port, ServiceSpec

SERVICE = ServiceSpec(
    name="smtp-ingress",
    module="postroom_smtp_ingress",
    http_port=8025,
    summary="Receives business mail over SMTP; answers 250 once the raw MIME is stored and "
    "mail.received is acknowledged by JetStream.",
    consumes=(
        # its own mail.received, after the 250: DNS never delays the SMTP reply. The durable
        # name is fixed forever: a new name would reprocess the whole stream
        Consumes(MailReceived, durable="smtp-ingress-mail-authentication",
                 summary="Verifies SPF, DKIM, DMARC, ARC and iprev; emits mail.authenticated."),
    ),
    # mail.received directly (before the 250), mail.authenticated from the consumer's outbox
    publishes=(MailReceived, MailAuthenticated),
    # non-root cannot bind 25: the container listens on 2525, published as 25
    ports=(Port("smtp", env="SMTP_PORT", container=2525, published=25, public=True),),
    embedded_env={"SMTP_HOST": "{smtp_host}", "SMTP_PORT": "{smtp_port}"},
    embedded_addresses=(("SMTP", "{smtp_host}:{smtp_port}"),),
)
