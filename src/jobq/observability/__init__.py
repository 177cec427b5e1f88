"""Observability: Prometheus metrics (``metrics``), JSON logs with the running job's fields
(``logs``) and OpenTelemetry traces (``tracing``). Progress is the handler's
(``JobContext.progress``), stored like a heartbeat.

Each part costs nothing unless asked for: ``metrics`` imports ``prometheus_client`` only when an
exporter starts, ``tracing`` imports OpenTelemetry once, and the facade and worker check one
module flag before doing any tracing work. See docs/observability.md.
"""
