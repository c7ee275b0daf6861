"""`postroom up` starts the registered services (entry points), wired from their specs."""

from __future__ import annotations

import pytest

from postroom_cli.services import BY_NAME, SERVICES, Service
from postroom_cli.stack import StackConfig
from postroom_contracts.services import ServiceSpec, registered


def test_the_stack_runs_every_registered_service_in_service_order() -> None:
    specs = registered()
    assert specs, "no registered service: uv sync --all-packages"
    assert [(s.name, s.module, s.http_port) for s in SERVICES] == [
        (s.name, s.module, s.http_port) for s in specs]
    assert [s.http_port for s in SERVICES] == sorted(s.http_port for s in SERVICES)
    assert set(BY_NAME) == {s.name for s in specs}


def test_a_spec_s_embedded_env_is_formatted_over_the_stack_settings() -> None:
    spec = ServiceSpec(name="mailer", module="postroom_mailer", http_port=8030, summary="s",
                       embedded_env={"LISTEN": "{smtp_host}:{smtp_port}", "BUS": "{nats_url}"},
                       embedded_addresses=(("SMTP", "{smtp_host}:{smtp_port}"),))
    service = Service.from_spec(spec)
    cfg = StackConfig(smtp_port=2600, nats_port=14999)
    assert service.env(cfg) == {"LISTEN": "127.0.0.1:2600", "BUS": "nats://127.0.0.1:14999"}
    assert service.addresses == (("SMTP", "{smtp_host}:{smtp_port}"),)
    assert service.http_port_from(9000) == 9005
    assert service.store_name == "mailer"
    broken = Service.from_spec(ServiceSpec(name="x", module="postroom_x", http_port=8031,
                                           summary="s", embedded_env={"A": "{no_such}"}))
    with pytest.raises(KeyError, match="no_such"):
        broken.env(cfg)
