"""mailer as the rest of Postroom sees it (registered as a ``postroom.services`` entry point;
read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import DeliveryFailed, DeliveryRequested, DeliverySent
from postroom_contracts.services import Consumes, ServiceSpec

SERVICE = ServiceSpec(
    name="mailer",
    module="postroom_mailer",
    http_port=8028,
    summary="The one service that sends mail: composes each delivery.requested (forwarded, "
    "enhanced voicemail, reply), sends it once through the outbound relay (or captures it "
    "with none) and publishes delivery.sent or delivery.failed.",
    consumes=(
        # the durable name is fixed forever: a new name would reprocess the whole stream
        Consumes(DeliveryRequested, durable="mailer-delivery-requested",
                 summary="Composes the mail and queues it in the mailer's send outbox."),
    ),
    publishes=(DeliverySent, DeliveryFailed),
    # with no MAILER_RELAY_URL the embedded stack captures mail here (`postroom outbox`)
    embedded_env={"MAILER_CAPTURE_DIR": "{data_dir}/outbox"},
)
