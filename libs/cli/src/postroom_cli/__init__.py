"""The ``postroom`` CLI and the embedded stack supervisor (``postroom up``)."""
