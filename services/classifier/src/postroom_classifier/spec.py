"""classifier as the rest of Postroom sees it (registered as a ``postroom.services`` entry
point; read by ``postroom up``, the AsyncAPI document and the deployment tests)."""

from postroom_contracts import MailClassified, MailLabelCorrected, MailParsed
from postroom_contracts.services import Consumes, ServiceSpec

SERVICE = ServiceSpec(
    name="classifier",
    module="postroom_classifier",
    http_port=8029,
    summary="Labels every parsed mail (meeting, promotion, intro, voicemail, order, support, "
    "spam, unknown) with its statistical model and, when configured, SpamAssassin's spamd: "
    "mail.classified with every label's score, the spam score and the model version. Keeps "
    "corrections for training the next model version.",
    consumes=(
        # the durable names are fixed forever: a new name would reprocess the whole stream
        Consumes(MailParsed, durable="classifier-mail-parsed",
                 summary="Classifies the mail from its text, headers and attachment types "
                 "(and spamd's score)."),
        Consumes(MailLabelCorrected, durable="classifier-label-corrected",
                 summary="Stores the correction with the mail's model input (latest per "
                 "mail wins) for `postroom classifier train` and automatic retraining."),
    ),
    publishes=(MailClassified,),
    # training takes a few seconds on a laptop: a correction made in the local dashboard
    # becomes a new model version right away (a worker process trains it)
    embedded_env={"CLASSIFIER_RETRAIN_AFTER_CORRECTIONS": "1",
                  "CLASSIFIER_RETRAIN_DEBOUNCE_SECONDS": "5"},
)
