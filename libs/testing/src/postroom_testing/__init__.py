"""Test infrastructure for Postroom: real nats-server, PostgreSQL databases, service processes.

The pytest plugin is ``postroom_testing.plugin``; the helpers below also serve scripts
(benchmarks) that need a real broker or a running service.
"""

from postroom_testing.nats import NatsServer
from postroom_testing.procs import STARTUP_SECONDS, ServiceProcess, free_port

__all__ = ["STARTUP_SECONDS", "NatsServer", "ServiceProcess", "free_port"]
