"""Every target's health at a glance: the status rules (status, pure), the facts gathered for the
dashboard in a fixed number of queries (summary), live progress (progress) and the history
charts drawn server-side as SVG (charts); for machines: processes' heartbeats (heartbeats),
readiness checks (readiness) and the Prometheus metrics (metrics)."""
