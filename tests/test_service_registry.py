"""One list of services: the registered specs (``postroom.services`` entry points).

Every folder under services/ must register a :class:`ServiceSpec`, and every registered service
must be wired into each place that deploys, starts or documents it: the workspace, its settings
and code, its image (the one Dockerfile with its compose build args), docker-compose.yml and
the observability layer, the Helm values, the
PostgreSQL init script, .env.example, the embedded stack, the event catalogue (AsyncAPI) and
DEVELOPERS.md. Each ``check_*`` takes the file's content, so the tests at the bottom can feed it
a copy with one service left out and show that the failure names that service.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dockerimage import DOCKERFILE, DOCKERFILE_REL, compose_build_args, image
from ruamel.yaml import YAML

from postroom_contracts import BY_TYPE, CATALOGUE, subject_filter
from postroom_contracts.catalogue import (
    ASYNCAPI_FILE,
    _send_operation_id,
    asyncapi_document,
    service_problems,
)
from postroom_contracts.headers import HEADERS, REQUIRED, TRACEPARENT
from postroom_contracts.services import ServiceSpec, registered

ROOT = Path(__file__).resolve().parents[1]
SERVICES_DIR = ROOT / "services"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_OBSERVABILITY = ROOT / "docker-compose.observability.yml"
HELM_VALUES = ROOT / "deploy" / "helm" / "postroom" / "values.yaml"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init.sql"
ENV_EXAMPLE = ROOT / ".env.example"
DEVELOPERS_MD = ROOT / "DEVELOPERS.md"

SPECS: tuple[ServiceSpec, ...] = registered()
NAMES = [spec.name for spec in SPECS]


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def service_folders() -> list[str]:
    return sorted(p.parent.name for p in SERVICES_DIR.glob("*/pyproject.toml"))


def own_settings(spec: ServiceSpec) -> set[str]:
    """Variables the service's settings read beyond the runtime's shared ones."""
    from postroom_runtime import RuntimeSettings

    config = importlib.import_module(f"{spec.module}.config")
    names: set[str] = set()
    for obj in vars(config).values():
        if (isinstance(obj, type) and issubclass(obj, RuntimeSettings)
                and obj.__module__ == config.__name__):
            names |= {f.upper() for f in obj.model_fields if f not in RuntimeSettings.model_fields}
    return names


# ------------------------------------------------------------------------------ checks


def check_workspace(specs: tuple[ServiceSpec, ...], folders: list[str],
                    root: dict[str, Any], pyprojects: dict[str, dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    by_name = {spec.name: spec for spec in specs}
    for folder in folders:
        if folder not in by_name:
            problems.append(
                f"services/{folder}: no registered service. Declare SERVICE in "
                f"postroom_{folder.replace('-', '_')}/spec.py, register it under "
                f'[project.entry-points."postroom.services"] in services/{folder}/pyproject.toml, '
                f"add postroom-{folder} to the root pyproject.toml and run "
                "`uv sync --all-packages`")
    deps = set(root["project"]["dependencies"])
    sources = root["tool"]["uv"]["sources"]
    first_party = set(root["tool"]["ruff"]["lint"]["isort"]["known-first-party"])
    for spec in specs:
        name = spec.name
        if name not in folders:
            problems.append(f"{name}: registered, but there is no services/{name}/")
            continue
        project = pyprojects[name]["project"]
        if spec.module != f"postroom_{name.replace('-', '_')}":
            problems.append(f"{name}: module {spec.module!r}, expected "
                            f"postroom_{name.replace('-', '_')}")
        if project["name"] != spec.package:
            problems.append(f"{name}: services/{name}/pyproject.toml names the package "
                            f"{project['name']!r}, expected {spec.package!r}")
        registered_as = project.get("entry-points", {}).get("postroom.services", {})
        if registered_as.get(name) != f"{spec.module}.spec:SERVICE":
            problems.append(f"{name}: services/{name}/pyproject.toml must register "
                            f'{name} = "{spec.module}.spec:SERVICE" under '
                            '[project.entry-points."postroom.services"]')
        if project.get("scripts", {}).get(spec.package) != f"{spec.module}.__main__:main":
            problems.append(f"{name}: services/{name}/pyproject.toml needs the console script "
                            f'{spec.package} = "{spec.module}.__main__:main"')
        if spec.package not in deps:
            problems.append(f"{name}: {spec.package} is missing from the root pyproject.toml "
                            "dependencies")
        if sources.get(spec.package) != {"workspace": True}:
            problems.append(f"{name}: root pyproject.toml needs [tool.uv.sources] "
                            f"{spec.package} = {{ workspace = true }}")
        if spec.module not in first_party:
            problems.append(f"{name}: add {spec.module} to ruff's known-first-party in the root "
                            "pyproject.toml")
    return problems


def check_image(spec: ServiceSpec, compose: dict[str, Any], dockerfile: str) -> list[str]:
    """The image docker-compose.yml builds for the service: the one Dockerfile with its build
    args (folder, package, console script, ports), read as BuildKit would."""
    name = spec.name
    args = compose_build_args((compose.get("services") or {}).get(name) or {})
    if args is None:
        return [f"{name}: docker-compose.yml must build it from {DOCKERFILE_REL} with its build "
                "args"]
    problems: list[str] = []
    expected_args = {"SERVICE": name, "SERVICE_PACKAGE": spec.package,
                     "SERVICE_SCRIPT": spec.package, "HTTP_PORT": str(spec.http_port)}
    for arg, value in expected_args.items():
        if args.get(arg) != value:
            problems.append(f"{name}: build arg {arg}={value} expected (has {args.get(arg)!r})")
    img = image(args, dockerfile)
    expected = {spec.http_port} | {p.container for p in spec.ports}
    if img.exposed != expected:
        problems.append(f"{name}: the image EXPOSEs {sorted(img.exposed)}, expected "
                        f"{sorted(expected)} (build args HTTP_PORT, EXTRA_PORTS)")
    defaults = dict(pair.split("=", 1) for pair in img.env.get("POSTROOM_SERVICE_ENV", "").split()
                    if "=" in pair)
    environment = {**defaults, **img.env}
    for variable, value in [("OTEL_SERVICE_NAME", name), ("HTTP_PORT", spec.http_port),
                            *((p.env, p.container) for p in spec.ports)]:
        if environment.get(variable) != str(value):
            problems.append(f"{name}: the image must set {variable}={value} (has "
                            f"{environment.get(variable)!r}; build arg SERVICE_ENV for a port's)")
    if img.env.get("POSTROOM_SERVICE_SCRIPT") != spec.package:
        problems.append(f"{name}: the image's entry point must run {spec.package}")
    return problems


def _published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host address or '', host port)."""
    out: dict[int, tuple[str, int]] = {}
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        host = parts[0] if len(parts) == 3 else ""
        out[int(parts[-1])] = (host, int(parts[-2]))
    return out


def check_compose(specs: tuple[ServiceSpec, ...], compose: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = compose.get("services", {})
    names = {spec.name for spec in specs}
    for other, svc in services.items():
        if compose_build_args(svc) is not None and other not in names:
            problems.append(f"docker-compose.yml: {other} is built from {DOCKERFILE_REL} but is "
                            "not a registered service")
    for spec in specs:
        name = spec.name
        svc = services.get(name)
        if svc is None:
            problems.append(f"docker-compose.yml: service {name} is missing")
            continue
        if compose_build_args(svc) is None:
            problems.append(f"docker-compose.yml: {name} must be built from {DOCKERFILE_REL}")
        env = env_of(svc)
        expected = {"OTEL_SERVICE_NAME": name, "HTTP_PORT": str(spec.http_port),
                    **{p.env: str(p.container) for p in spec.ports}}
        for variable, value in expected.items():
            if env.get(variable) != value:
                problems.append(f"docker-compose.yml: {name} must set {variable}={value} "
                                f"(has {env.get(variable)!r})")
        database = env.get("DATABASE_URL", "")
        if spec.database and not database.endswith(f"/{spec.store_name}"):
            problems.append(f"docker-compose.yml: {name} needs DATABASE_URL=.../{spec.store_name}")
        if not spec.database and database:
            problems.append(f"docker-compose.yml: {name} keeps no database but sets DATABASE_URL")
        published = _published(svc)
        wanted = {spec.http_port: ("127.0.0.1", spec.http_port)}
        wanted |= {p.container: ("" if p.public else "127.0.0.1", p.published)
                   for p in spec.ports}
        if published != wanted:
            problems.append(f"docker-compose.yml: {name} publishes {published}, expected {wanted} "
                            "(container port: (host address, host port); '' = every interface)")
    return problems


def check_observability(specs: tuple[ServiceSpec, ...], layer: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services = layer.get("services", {})
    for spec in specs:
        svc = services.get(spec.name)
        if svc is None:
            problems.append(f"docker-compose.observability.yml: service {spec.name} is missing "
                            "(every service exports traces to the collector)")
        elif "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(svc):
            problems.append(f"docker-compose.observability.yml: {spec.name} must set "
                            "OTEL_EXPORTER_OTLP_ENDPOINT")
    return problems


def check_helm_values(specs: tuple[ServiceSpec, ...], values: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    components = values.get("components") or {}
    urls = (values.get("database") or {}).get("urls") or {}
    names = {spec.name for spec in specs}
    for other in sorted(set(components) - names):
        problems.append(f"Helm values: component {other} is not a registered service")
    for spec in specs:
        name = spec.name
        component = components.get(name)
        if component is None:
            problems.append(f"Helm values: components.{name} is missing")
            continue
        if component.get("enabled") is not True:
            problems.append(f"Helm values: components.{name}.enabled must be true")
        ports = {p.get("name"): p for p in component.get("ports") or []}
        http = ports.get("http") or {}
        if http.get("containerPort") != spec.http_port:
            problems.append(f"Helm values: components.{name} needs a port named http with "
                            f"containerPort {spec.http_port}")
        env = {k: str(v) for k, v in (component.get("env") or {}).items()}
        for port in spec.ports:
            got = ports.get(port.name) or {}
            if (got.get("containerPort"), got.get("servicePort"), bool(got.get("public"))) != (
                    port.container, port.published, port.public):
                problems.append(
                    f"Helm values: components.{name}.ports needs {{name: {port.name}, "
                    f"containerPort: {port.container}, servicePort: {port.published}"
                    + (", public: true" if port.public else "") + "}")
            if env.get(port.env) != str(port.container):
                problems.append(f"Helm values: components.{name}.env.{port.env} must be "
                                f'"{port.container}"')
        if spec.database and not str(urls.get(name, "")).endswith(f"/{spec.store_name}"):
            problems.append(f"Helm values: database.urls.{name} must point at the database "
                            f"{spec.store_name}")
        if spec.database == (component.get("database") is False):
            problems.append(f"Helm values: components.{name}.database must be "
                            + ("left out (true)" if spec.database else "false"))
    return problems


def check_postgres_init(specs: tuple[ServiceSpec, ...], text: str) -> list[str]:
    created = set(re.findall(r"^\s*CREATE DATABASE (\w+)", text, re.M | re.I))
    problems: list[str] = []
    for spec in specs:
        if spec.database and spec.store_name not in created:
            problems.append(f"deploy/postgres/init.sql: CREATE DATABASE {spec.store_name} (for "
                            f"{spec.name}) is missing")
    owners = {spec.store_name for spec in specs if spec.database}
    for database in sorted(created - owners):
        problems.append(f"deploy/postgres/init.sql: database {database} belongs to no registered "
                        "service")
    return problems


def env_sections(text: str) -> dict[str, set[str]]:
    """``# --- <title> ---`` section of .env.example -> the variables documented in it."""
    sections: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        heading = re.match(r"^# --- (.+?) -+\s*$", line)
        if heading:
            current = heading.group(1).strip()
            sections.setdefault(current, set())
            continue
        variable = re.match(r"^#? ?([A-Z][A-Z0-9_]+)=", line)
        if variable:
            sections.setdefault(current, set()).add(variable.group(1))
    return sections


def check_env_example(specs: tuple[ServiceSpec, ...], text: str,
                      settings: dict[str, set[str]]) -> list[str]:
    """A service whose settings read variables of its own documents them in its section."""
    problems: list[str] = []
    sections = env_sections(text)
    for spec in specs:
        own = settings.get(spec.name, set())
        if not own:
            continue
        if spec.name not in sections:
            problems.append(f".env.example: no '# --- {spec.name} ---' section for "
                            f"{', '.join(sorted(own))}")
            continue
        missing = sorted(own - sections[spec.name])
        if missing:
            problems.append(f".env.example: the {spec.name} section lacks {', '.join(missing)}")
    return problems


def check_embedded_stack(specs: tuple[ServiceSpec, ...], services: tuple[Any, ...]) -> list[str]:
    from postroom_cli.stack import StackConfig

    problems: list[str] = []
    by_name = {service.name: service for service in services}
    cfg = StackConfig()
    for spec in specs:
        service = by_name.get(spec.name)
        if service is None:
            problems.append(f"embedded stack: `postroom up` does not start {spec.name}")
            continue
        if (service.module, service.http_port) != (spec.module, spec.http_port):
            problems.append(f"embedded stack: {spec.name} runs {service.module} on "
                            f"{service.http_port}, its spec says {spec.module} on {spec.http_port}")
        try:
            service.env(cfg)
            for _, template in service.addresses:
                template.format_map({**vars(cfg), "nats_url": cfg.nats_url})
        except KeyError as exc:
            problems.append(f"embedded stack: {spec.name}'s template names {exc}, which the "
                            "stack's settings (StackConfig) do not have")
        if service.entry_point_missing():
            problems.append(f"embedded stack: {spec.name}: {service.entry_point_missing()}")
    return problems


def check_catalogue(specs: tuple[ServiceSpec, ...], doc: dict[str, Any]) -> list[str]:
    """Every publisher has its send operation, every durable consumer its receive operation,
    every projecting service (``projects``) a receive operation per event type; no operation
    of a service that does not declare it."""
    problems = list(service_problems(specs))
    operations = doc.get("operations", {})
    expected: dict[str, tuple[str, str, str]] = {}
    for spec in specs:
        for event in spec.publishes:
            expected[_send_operation_id(spec.name, event)] = ("send", spec.name, event.event_type)
        for consumer in spec.consumes:
            expected[consumer.durable] = ("receive", spec.name, consumer.event.event_type)
        if spec.projects:
            for event in CATALOGUE:
                key = f"{spec.name}_projects_{event.event_type.replace('.', '_')}"
                expected[key] = ("receive", spec.name, event.event_type)
    channels = {f"#/channels/{key}": channel["address"]
                for key, channel in doc.get("channels", {}).items()}
    for key, (action, service, event_type) in expected.items():
        operation = operations.get(key)
        verb = "publishes" if action == "send" else "consumes"
        if operation is None:
            problems.append(f"asyncapi.json: no {action} operation {key!r} ({service} {verb} "
                            f"{event_type}); run `python -m postroom_contracts generate`")
            continue
        address = channels.get(operation.get("channel", {}).get("$ref", ""))
        if operation.get("action") != action or address != f"postroom.{event_type}.{{tenant}}":
            problems.append(f"asyncapi.json: operation {key!r} must {action} on "
                            f"postroom.{event_type}.{{tenant}}")
    for key in sorted(set(operations) - set(expected)):
        problems.append(f"asyncapi.json: operation {key!r} belongs to no registered service's "
                        "spec; run `python -m postroom_contracts generate`")
    return problems


def check_developers_md(specs: tuple[ServiceSpec, ...], text: str) -> list[str]:
    return [
        f"DEVELOPERS.md: the services table has no row | {spec.name} | `{spec.package}` | "
        f"{spec.http_port} | ..."
        for spec in specs
        if not re.search(rf"^\| {re.escape(spec.name)} \| `{re.escape(spec.package)}` \| "
                         rf"{spec.http_port} \|", text, re.M)
    ]


# --------------------------------------------------------------- the real files pass


def real_pyprojects() -> dict[str, dict[str, Any]]:
    return {folder: tomllib.loads((SERVICES_DIR / folder / "pyproject.toml").read_text())
            for folder in service_folders()}


def stack_services() -> tuple[Any, ...]:
    from postroom_cli.services import SERVICES

    return SERVICES


PLACES: dict[str, Callable[[tuple[ServiceSpec, ...]], list[str]]] = {
    "workspace": lambda specs: check_workspace(
        specs, service_folders(), tomllib.loads((ROOT / "pyproject.toml").read_text()),
        real_pyprojects()),
    "image": lambda specs: [p for s in specs for p in check_image(
        s, load_yaml(COMPOSE), DOCKERFILE.read_text())],
    "compose": lambda specs: check_compose(specs, load_yaml(COMPOSE)),
    "compose-observability": lambda specs: check_observability(
        specs, load_yaml(COMPOSE_OBSERVABILITY)),
    "helm-values": lambda specs: check_helm_values(specs, load_yaml(HELM_VALUES)),
    "postgres-init": lambda specs: check_postgres_init(specs, POSTGRES_INIT.read_text()),
    "env-example": lambda specs: check_env_example(
        specs, ENV_EXAMPLE.read_text(), {s.name: own_settings(s) for s in specs}),
    "embedded-stack": lambda specs: check_embedded_stack(specs, stack_services()),
    "catalogue": lambda specs: check_catalogue(specs, json.loads(ASYNCAPI_FILE.read_text())),
    "developers-md": lambda specs: check_developers_md(specs, DEVELOPERS_MD.read_text()),
}


def test_services_are_registered() -> None:
    assert NAMES, "no service is registered: is the workspace synced (uv sync --all-packages)?"
    assert service_folders(), "no services/*/pyproject.toml found"


@pytest.mark.parametrize("place", sorted(PLACES))
def test_every_registered_service_is_wired_in(place: str) -> None:
    assert PLACES[place](SPECS) == []


def test_settings_defaults_match_the_spec() -> None:
    """OTEL_SERVICE_NAME and HTTP_PORT default to the spec's name and port."""
    from postroom_runtime import RuntimeSettings

    for spec in SPECS:
        config = importlib.import_module(f"{spec.module}.config")
        classes = [obj for obj in vars(config).values()
                   if isinstance(obj, type) and issubclass(obj, RuntimeSettings)
                   and obj.__module__ == config.__name__]
        assert len(classes) == 1, f"{spec.module}.config: expected one settings class"
        settings = classes[0]
        declared = getattr(settings, "service_name", None)
        name = declared if isinstance(declared, str) else settings.model_fields[
            "otel_service_name"].default
        assert name == spec.name, f"{spec.module}.config: service name {name!r}"
        assert settings.model_fields["http_port"].default == spec.http_port, spec.name


CONSUMERS_IN_CODE = r"""
import importlib, json
from prometheus_client import CollectorRegistry
from postroom_contracts.services import registered
from postroom_runtime import RuntimeSettings
out = {}
for spec in registered():
    config = importlib.import_module(f"{spec.module}.config")
    (settings,) = [o for o in vars(config).values() if isinstance(o, type)
                   and issubclass(o, RuntimeSettings) and o.__module__ == config.__name__]
    app = importlib.import_module(f"{spec.module}.app")
    runtime = app.build_runtime(settings(), registry=CollectorRegistry(), configure_logging=False)
    out[spec.name] = sorted(
        [str(getattr(sub.subject, "template", sub.subject)), sub.config.durable_name]
        for sub in runtime.broker.subscribers)
print(json.dumps(out))
"""


def test_the_durable_consumers_in_code_are_the_declared_ones(tmp_path: Path) -> None:
    """Each service's ``app.build_runtime`` subscribes exactly the consumers its spec declares
    (subject filter and durable name): the AsyncAPI receive operations are the real ones."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SMTP_", "EXTRACT_", "OTEL_", "HTTP_", "DATABASE_", "NATS_"))}
    result = subprocess.run([sys.executable, "-c", CONSUMERS_IN_CODE], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    in_code = json.loads(result.stdout.strip().splitlines()[-1])
    for spec in SPECS:
        declared = sorted([subject_filter(c.event.event_type), c.durable] for c in spec.consumes)
        assert in_code[spec.name] == declared, spec.name


def test_the_runtime_publishes_exactly_the_documented_headers() -> None:
    from postroom_runtime.jetstream import event_headers

    doc = asyncapi_document()  # the committed file equals it: `python -m ... check`
    received = BY_TYPE["mail.received"]
    sample = received.model_construct(event_id="e1", tenant="acme", mail_key="k" * 32)
    headers = event_headers(sample)
    assert set(headers) == set(REQUIRED)
    for event in CATALOGUE:
        message = doc["components"]["messages"][
            f"{event.event_type.replace('.', '_')}_v{event.schema_version}"]
        documented = message["headers"]["properties"]
        assert set(documented) == set(HEADERS) == set(REQUIRED) | {TRACEPARENT}
        assert set(message["headers"]["required"]) == set(REQUIRED)
        assert documented["Postroom-Event-Type"]["const"] == event.event_type
        assert all(documented[name]["description"] for name in documented)


# ------------------------------------------------------------ a service left out is named


def _without_service(place: str, name: str) -> list[str]:
    """Run one check on a copy of its input with ``name`` left out of it."""
    spec = next(s for s in SPECS if s.name == name)
    if place == "workspace":
        others = tuple(s for s in SPECS if s.name != name)  # the folder stays, the spec is gone
        return check_workspace(others, service_folders(),
                               tomllib.loads((ROOT / "pyproject.toml").read_text()),
                               real_pyprojects())
    if place == "image":
        doc = copy.deepcopy(load_yaml(COMPOSE))
        del doc["services"][name]["build"]["args"]
        return check_image(spec, doc, DOCKERFILE.read_text())
    if place in ("compose", "compose-observability"):
        doc = copy.deepcopy(load_yaml(COMPOSE if place == "compose" else COMPOSE_OBSERVABILITY))
        del doc["services"][name]
        check = check_compose if place == "compose" else check_observability
        return check(SPECS, doc)
    if place == "helm-values":
        values = copy.deepcopy(load_yaml(HELM_VALUES))
        del values["components"][name]
        return check_helm_values(SPECS, values)
    if place == "postgres-init":
        text = re.sub(rf"^CREATE DATABASE {spec.store_name}\b.*\n", "",
                      POSTGRES_INIT.read_text(), flags=re.M)
        return check_postgres_init(SPECS, text)
    if place == "env-example":
        text = re.sub(rf"^# --- {re.escape(name)} -+\n(?:(?!# --- ).*\n)*", "",
                      ENV_EXAMPLE.read_text(), flags=re.M)
        return check_env_example(SPECS, text, {s.name: own_settings(s) for s in SPECS})
    if place == "embedded-stack":
        return check_embedded_stack(SPECS, tuple(s for s in stack_services() if s.name != name))
    if place == "catalogue":
        doc = asyncapi_document(s for s in SPECS if s.name != name)
        return check_catalogue(SPECS, doc)
    if place == "developers-md":
        text = re.sub(rf"^\| {re.escape(name)} \|.*\n", "", DEVELOPERS_MD.read_text(), flags=re.M)
        return check_developers_md(SPECS, text)
    raise AssertionError(place)


def _relevant(place: str, spec: ServiceSpec) -> bool:
    if place == "env-example":
        return bool(own_settings(spec))
    if place == "postgres-init":
        return spec.database
    return True


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_service_left_out_fails_and_is_named(place: str, name: str) -> None:
    spec = next(s for s in SPECS if s.name == name)
    if not _relevant(place, spec):
        pytest.skip(f"{name} needs nothing in {place}")
    before = PLACES[place](SPECS)  # empty when everything is wired in
    problems = [p for p in _without_service(place, name) if p not in before]
    assert problems, f"{place}: leaving {name} out went unnoticed"
    assert all(name in problem or spec.store_name in problem for problem in problems), problems


def test_an_unregistered_service_in_a_deployment_file_is_named() -> None:
    values = copy.deepcopy(load_yaml(HELM_VALUES))
    values["components"]["ghost"] = copy.deepcopy(values["components"][NAMES[0]])
    assert check_helm_values(SPECS, values) == [
        "Helm values: component ghost is not a registered service"]
    compose = copy.deepcopy(load_yaml(COMPOSE))
    compose["services"]["ghost"] = {"build": {"dockerfile": DOCKERFILE_REL}}
    assert check_compose(SPECS, compose) == [
        f"docker-compose.yml: ghost is built from {DOCKERFILE_REL} but is not a "
        "registered service"]
    assert check_postgres_init(SPECS, POSTGRES_INIT.read_text() + "CREATE DATABASE ghost;\n") == [
        "deploy/postgres/init.sql: database ghost belongs to no registered service"]


def test_a_wrong_port_or_durable_name_is_caught() -> None:
    compose = copy.deepcopy(load_yaml(COMPOSE))
    smtp = next(s for s in SPECS if s.ports)
    env = compose["services"][smtp.name]["environment"]
    env[smtp.ports[0].env] = "2526"
    assert any(f"{smtp.ports[0].env}={smtp.ports[0].container}" in p
               for p in check_compose(SPECS, compose))
    args = compose["services"][smtp.name]["build"]["args"]
    args["SERVICE_ENV"] = args["SERVICE_ENV"].replace(str(smtp.ports[0].container), "2526")
    del args["EXTRA_PORTS"]
    problems = check_image(smtp, compose, DOCKERFILE.read_text())
    assert any("EXPOSEs" in p and str(smtp.ports[0].container) in p for p in problems)
    assert any(f"{smtp.ports[0].env}={smtp.ports[0].container}" in p for p in problems)
    other = next(s for s in SPECS if s.name != smtp.name)
    compose["services"][other.name]["build"]["args"]["SERVICE_PACKAGE"] = smtp.package
    assert any(f"SERVICE_PACKAGE={other.package}" in p
               for p in check_image(other, compose, DOCKERFILE.read_text()))
    consumer = next(s for s in SPECS if s.consumes)
    doc = asyncapi_document(SPECS)
    durable = consumer.consumes[0].durable
    doc["operations"][durable + "-renamed"] = doc["operations"].pop(durable)
    problems = check_catalogue(SPECS, doc)
    assert any(f"no receive operation {durable!r}" in p for p in problems)
    assert any(f"{durable + '-renamed'!r} belongs to no registered" in p for p in problems)
