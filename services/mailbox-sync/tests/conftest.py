import sys
from pathlib import Path

# importlib mode: make the shared test kit importable as `mailbox_sync_testkit`
sys.path.insert(0, str(Path(__file__).parent))

from mailbox_sync_testkit import dovecot, harness  # noqa: F401 - fixtures
