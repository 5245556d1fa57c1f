"""What lets an operator watch the shop: Prometheus metrics (``metrics``, with
``metrics_dir`` for gunicorn's multiprocess mode) and JSON log lines with the
request id (``logs``). It imports nothing of the shop."""
