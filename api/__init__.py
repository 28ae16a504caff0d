"""The HTTP side of jobstream: REST API, live SSE stream, Prometheus metrics and the dashboard (``api.app``)."""
