"""Monitoring: what an operator needs to see, on both backends.

- `metrics`: the Prometheus metrics (names, labels, meaning: README "Monitoring") and the one-line
  recording functions the gateway, the ingest and indexer services and the handlers call;
- `multiprocess`: the processes of `pacs up` (gateway workers, web server, supervisor) write their
  metrics to memory-mapped files in one directory; the web process serves them merged at /metrics;
- `state`: figures read when scraped (catalog counts, queue and dead-letter depths, live gateway workers);
- `health`: the components' status for /health, /health/live and /health/ready;
- `emf`: the same figures as CloudWatch Embedded Metric Format lines from the Lambda handlers.
"""
