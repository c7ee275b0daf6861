"""console: the read side of Postroom (projection of every event, REST, WebSocket, dashboard)."""
