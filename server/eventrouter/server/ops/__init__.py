"""Operating a node: health and reflection, Prometheus metrics, status page, logs, config CLI.

- ``runtime.Operability``: what ``RouterServer`` starts beside the router
  (gRPC health + reflection, the HTTP endpoint of /metrics, / and /status.json).
- ``metrics.RouterCollector``: reads the core's counters at scrape time.
- ``status`` / ``status_page``: the live status snapshot and its HTML page.
- ``logs``: text/json/logfmt formatters, user id hashing, token redaction.
- ``config_cli``: ``eventrouter config`` (the effective configuration as TOML).
"""
