"""``postroom-smtp-ingress``: SMTP in, raw MIME to the blob store, ``mail.received`` out."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import tempfile

# nothing here may import prometheus_client before setup_worker_metrics() ran
from .workers import MULTIPROC_ENV, worker_number


def use_uvloop() -> bool:
    """Run on uvloop where available (``SMTP_UVLOOP=false`` turns it off): the SMTP protocol,
    NATS client and HTTP server all share one event loop, and uvloop roughly halves its cost."""
    if os.environ.get("SMTP_UVLOOP", "true").lower() in ("0", "false", "no", "off"):
        return False
    try:
        import uvloop
    except ImportError:  # not available on this platform
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# Collect the youngest generation every 10,000 net allocations, not 700: a mail allocates
# thousands of short-lived objects (spans, the event, header parsing) while 50 sessions keep
# theirs alive, so the default ran a collection every few mails over all of them.
GC_THRESHOLD = (10_000, 10, 10)


def tune_gc() -> None:
    """Move everything loaded at start-up out of the collector's way (``gc.freeze``) and
    collect the young generation less often (``GC_THRESHOLD``): about 8% of the CPU per mail."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def setup_worker_metrics() -> str | None:
    """With ``SMTP_WORKERS`` > 1 every process writes its metrics to files in one folder, which
    ``prometheus_client`` must know before it is imported. The primary creates the folder (and
    returns it, to remove it at exit); a worker finds it in the environment it was given."""
    if worker_number():
        return None
    try:
        workers = int(os.environ.get("SMTP_WORKERS", "1"))
    except ValueError:
        return None  # the settings report it
    if workers <= 1:
        return None
    folder = tempfile.mkdtemp(prefix="postroom-smtp-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    return folder


def main() -> int:
    metrics_folder = setup_worker_metrics()
    use_uvloop()
    from postroom_runtime import load_settings, run

    from .app import build_runtime
    from .config import IngressSettings

    tune_gc()
    try:
        return run(lambda: build_runtime(load_settings(IngressSettings)))
    finally:
        if metrics_folder is not None:
            shutil.rmtree(metrics_folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
