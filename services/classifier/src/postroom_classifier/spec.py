"""classifier as the rest of Postroom sees it (registered as a ``postroom.services`` entry
point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import MailClassified, MailParsed
from postroom_contracts.services import Consumes, ServiceSpec

SERVICE = ServiceSpec(
    name="classifier",
    module="postroom_classifier",
    http_port=8029,
    summary="Labels every parsed mail (meeting, promotion, intro, voicemail, order, support, "
    "spam, unknown) with the shipped statistical model: mail.classified with every label's "
    "score and the model version.",
    consumes=(
        # the durable name is fixed forever: a new name would reprocess the whole stream
        Consumes(MailParsed, durable="classifier-mail-parsed",
                 summary="Classifies the mail from its text, headers and attachment types."),
    ),
    publishes=(MailClassified,),
)
