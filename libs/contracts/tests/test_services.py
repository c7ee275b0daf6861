"""Service specs, their discovery through entry points, and the AsyncAPI document built from
them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest

from postroom_contracts import (
    CATALOGUE,
    DocumentStored,
    MailClassified,
    MailParsed,
    MailReceived,
    VoicemailTranscribed,
)
from postroom_contracts import catalogue as catalogue_module
from postroom_contracts.catalogue import ASYNCAPI_FILE, asyncapi_document, service_problems
from postroom_contracts.events import Event
from postroom_contracts.headers import HEADERS, MAIL_KEY, MSG_ID, REQUIRED, event_headers
from postroom_contracts.services import (
    GROUP,
    Consumes,
    Port,
    ServiceRegistryError,
    ServiceSpec,
    load,
    registered,
    validate,
)

ASYNCAPI_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"

INGRESS = ServiceSpec(
    name="ingress", module="postroom_ingress", http_port=9025, summary="Mail in.",
    publishes=(MailReceived,),
    ports=(Port("smtp", env="SMTP_PORT", container=2525, published=25, public=True),),
)
EXTRACTOR = ServiceSpec(
    name="extractor", module="postroom_extractor", http_port=9026, summary="Documents out.",
    consumes=(Consumes(MailReceived, durable="extractor-mail-received", summary="Parses."),),
    publishes=(DocumentStored, MailParsed),
)
AUDITOR = ServiceSpec(
    name="auditor", module="postroom_auditor", http_port=9027, summary="Keeps a log.",
    consumes=(Consumes(MailReceived, durable="auditor-mail-received"),
              Consumes(DocumentStored, durable="auditor-document-stored")),
    publishes=(MailParsed,),  # a second producer of one event
)
SPECS = (INGRESS, EXTRACTOR, AUDITOR)


class PlannedEvent(Event):
    """Draft: an event no service publishes yet (the catalogue may have none at a time)."""

    event_type: ClassVar[str] = "planned.thing"
    schema_version: ClassVar[int] = 1
    draft: ClassVar[bool] = True

    note: str = ""


@pytest.fixture
def with_draft(monkeypatch: pytest.MonkeyPatch) -> type[Event]:
    """The catalogue with one draft event in it."""
    monkeypatch.setattr(catalogue_module, "CATALOGUE", (*CATALOGUE, PlannedEvent))
    monkeypatch.setattr(catalogue_module, "BY_TYPE",
                        {**catalogue_module.BY_TYPE, PlannedEvent.event_type: PlannedEvent})
    return PlannedEvent


def _spec(**changes: Any) -> ServiceSpec:
    fields = dict(name="svc", module="postroom_svc", http_port=9030, summary="s")
    return ServiceSpec(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(name="Bad_Name"), "dash-case"),
        (dict(consumes=(Consumes(MailReceived, durable="a"), Consumes(DocumentStored,
                                                                      durable="a"))), "twice"),
        (dict(consumes=(Consumes(MailReceived, durable="a"), Consumes(MailReceived,
                                                                      durable="b"))),
         "one consumer per event type"),
        (dict(publishes=(MailParsed, MailParsed)), "listed twice"),
    ],
    ids=["name", "durable-twice", "event-twice", "published-twice"],
)
def test_a_malformed_spec_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ServiceRegistryError, match=message):
        _spec(**changes)


def test_bad_durable_names_and_ports_are_refused() -> None:
    with pytest.raises(ServiceRegistryError, match="durable consumer name"):
        Consumes(MailReceived, durable="svc.mail.received")  # a dot splits a subject
    with pytest.raises(ServiceRegistryError, match="unprivileged"):
        Port("smtp", env="SMTP_PORT", container=25, published=25)
    with pytest.raises(ServiceRegistryError, match="not 'http'"):
        Port("http", env="HTTP_PORT", container=8080, published=80)
    with pytest.raises(ServiceRegistryError, match="not a variable"):
        Port("smtp", env="smtp-port", container=2525, published=25)


def test_clashing_services_are_refused_and_the_order_is_by_http_port() -> None:
    assert [s.name for s in validate([AUDITOR, INGRESS, EXTRACTOR])] == [
        "ingress", "extractor", "auditor"]
    with pytest.raises(ServiceRegistryError, match="HTTP port 9025 is claimed by both"):
        validate([INGRESS, _spec(name="other", module="postroom_other", http_port=9025)])
    with pytest.raises(ServiceRegistryError, match="durable consumer extractor-mail-received"):
        validate([EXTRACTOR, _spec(consumes=(
            Consumes(DocumentStored, durable="extractor-mail-received"),))])
    with pytest.raises(ServiceRegistryError, match="published port 25"):
        validate([INGRESS, _spec(ports=(Port("smtps", env="SMTPS_PORT", container=4650,
                                             published=25),))])


def test_spec_helpers() -> None:
    assert EXTRACTOR.durable_for(MailReceived) == "extractor-mail-received"
    with pytest.raises(KeyError):
        EXTRACTOR.durable_for(DocumentStored)
    assert _spec(name="attachment-extractor").store_name == "attachment_extractor"
    assert _spec(name="attachment-extractor").package == "postroom-attachment-extractor"


NOT_A_SPEC = "not a spec"


def test_an_entry_point_must_hold_the_spec_named_after_it() -> None:
    good = EntryPoint(name="ingress", value=f"{__name__}:INGRESS", group=GROUP)
    assert load(good) is INGRESS
    with pytest.raises(ServiceRegistryError, match="holds the spec of 'ingress'"):
        load(EntryPoint(name="smtp", value=f"{__name__}:INGRESS", group=GROUP))
    with pytest.raises(ServiceRegistryError, match="is a str, not a ServiceSpec"):
        load(EntryPoint(name="x", value=f"{__name__}:NOT_A_SPEC", group=GROUP))
    with pytest.raises(ServiceRegistryError, match="cannot be loaded: ModuleNotFoundError"):
        load(EntryPoint(name="x", value="postroom_no_such_service.spec:SERVICE", group=GROUP))


def test_discovery_reads_only_the_specs_not_the_services() -> None:
    """Loading the specs imports the service packages' spec modules and nothing heavier: the
    catalogue can be generated without starting or even importing a service."""
    script = (
        "import json, sys\n"
        "from postroom_contracts.services import registered\n"
        "names = [s.name for s in registered()]\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('postroom_')\n"
        "                and not m.startswith('postroom_contracts'))\n"
        "print(json.dumps({'names': names, 'loaded': loaded,\n"
        "                  'heavy': [m for m in ('faststream', 'sqlalchemy', 'nats')\n"
        "                            if m in sys.modules]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    out = json.loads(result.stdout)
    modules = {f"postroom_{name.replace('-', '_')}" for name in out["names"]}
    assert set(out["loaded"]) == modules | {f"{m}.spec" for m in modules}
    assert out["heavy"] == []


# --------------------------------------------------------------------------- AsyncAPI


def test_asyncapi_sends_per_producer_and_receives_per_durable_consumer() -> None:
    doc = asyncapi_document(SPECS)
    ops = doc["operations"]
    sends = sorted((k, v["channel"]["$ref"]) for k, v in ops.items() if v["action"] == "send")
    assert sends == [
        ("auditor-publish-mail-parsed", "#/channels/mail_parsed"),
        ("extractor-publish-document-stored", "#/channels/document_stored"),
        ("extractor-publish-mail-parsed", "#/channels/mail_parsed"),
        ("ingress-publish-mail-received", "#/channels/mail_received"),
    ]
    receives = sorted((k, v["channel"]["$ref"]) for k, v in ops.items()
                      if v["action"] == "receive")
    assert receives == [
        ("auditor-document-stored", "#/channels/document_stored"),
        ("auditor-mail-received", "#/channels/mail_received"),
        ("extractor-mail-received", "#/channels/mail_received"),
    ]
    receive = ops["extractor-mail-received"]
    assert receive["x-durable-consumer"] == "extractor-mail-received"
    assert receive["summary"] == "Parses."
    assert ops["auditor-mail-received"]["summary"] == "Keeps a log."  # the service's summary
    assert "postroom.mail.received.*" in receive["description"]
    assert "postroom.dlq.extractor-mail-received" in receive["description"]
    assert receive["tags"] == [{"name": "extractor"}]
    assert receive["messages"] == [{"$ref": "#/channels/mail_received/messages/mail_received_v1"}]
    assert doc["info"]["tags"] == [{"name": s.name, "description": s.summary} for s in SPECS]
    parsed = doc["channels"]["mail_parsed"]["description"]
    assert "Published by extractor, auditor." in parsed


def test_asyncapi_keeps_drafts_nobody_publishes_as_drafts(with_draft: type[Event]) -> None:
    doc = asyncapi_document(SPECS)
    for event in (with_draft,):
        name = event.event_type.replace(".", "_")
        channel = doc["channels"][name]
        assert channel["title"] == f"{event.event_type} (draft)"
        assert "Draft: no service publishes it yet" in channel["description"]
        assert doc["components"]["messages"][f"{name}_v1"]["title"].endswith("(draft)")
        assert not [op for op in doc["operations"].values()
                    if op["channel"]["$ref"] == f"#/channels/{name}"]


def test_every_message_documents_the_headers_the_runtime_sets() -> None:
    doc = asyncapi_document(SPECS)
    for event in CATALOGUE:
        message = doc["components"]["messages"][
            f"{event.event_type.replace('.', '_')}_v{event.schema_version}"]
        headers = message["headers"]
        assert set(headers["properties"]) == set(HEADERS) == {
            "Nats-Msg-Id", "traceparent", "Postroom-Event-Type", "Postroom-Schema-Version",
            "Postroom-Mail-Key"}
        assert headers["required"] == list(REQUIRED)
        assert headers["properties"]["Postroom-Event-Type"]["const"] == event.event_type
        # any revision: a reader accepts a higher one than it knows (tolerant reader)
        version = re.compile(headers["properties"]["Postroom-Schema-Version"]["pattern"])
        for accepted in (event.schema_version, event.schema_version + 1):
            assert version.match(str(accepted))
        assert not version.match("0") and not version.match("v1")
    event = MailReceived.model_construct(event_id="e-1", tenant="acme", mail_key="k" * 32)
    assert event_headers(event) == {
        MSG_ID: "e-1", "Postroom-Event-Type": "mail.received", "Postroom-Schema-Version": "1",
        MAIL_KEY: "k" * 32}


def test_an_operation_id_clash_is_refused() -> None:
    clash = _spec(name="ingress-publish", module="postroom_x", consumes=(
        Consumes(MailReceived, durable="ingress-publish-mail-received"),))
    with pytest.raises(ServiceRegistryError, match="defined twice"):
        asyncapi_document((INGRESS, clash))


def test_service_problems(with_draft: type[Event]) -> None:
    lonely = ServiceSpec(name="classifier", module="postroom_classifier", http_port=9031,
                         summary="s", publishes=(MailClassified, with_draft),
                         consumes=(Consumes(VoicemailTranscribed, durable="c-voicemail"),))
    problems = service_problems((INGRESS, EXTRACTOR, lonely))
    assert ("classifier: consumes voicemail.transcribed, which no registered service "
            "publishes") in problems
    assert any(p.startswith("planned.thing: published by classifier but still marked draft")
               for p in problems)
    assert any(p.startswith("mail.failed: no registered service publishes it") for p in problems)
    assert not any(p.startswith(("mail.received", "document.stored", "mail.parsed"))
                   for p in problems)

    class Stray(MailReceived):
        event_type = "mail.stray"

    stray = _spec(publishes=(Stray,))
    assert any("Stray (mail.stray) is not an event of the catalogue" in p
               for p in service_problems((stray,)))


def test_registered_services_publish_every_released_event() -> None:
    """The workspace's services, found through their entry points, cover the catalogue."""
    specs = registered()
    assert specs, "no registered service: uv sync --all-packages"
    assert service_problems(specs) == []


def _validate(tmp_path: Path, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(doc))
    tool = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(tool), "--schemafile", str(ASYNCAPI_SCHEMA), str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_document_is_valid_asyncapi_3(tmp_path: Path) -> None:
    """Against the official AsyncAPI 3.0.0 JSON Schema (@asyncapi/specs 6.11.1,
    ``3.0.0-without-$id.json``, Apache-2.0, stored minified in tests/data)."""
    for doc in (json.loads(ASYNCAPI_FILE.read_text()), asyncapi_document(SPECS)):
        result = _validate(tmp_path, doc)
        assert result.returncode == 0, result.stdout + result.stderr
    broken = asyncapi_document(SPECS)
    broken["operations"]["extractor-mail-received"]["action"] = "subscribe"  # AsyncAPI 2 verb
    result = _validate(tmp_path, broken)
    assert result.returncode != 0
