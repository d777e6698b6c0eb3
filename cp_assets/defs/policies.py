"""Retry policies shared by the asset definitions."""


import dagster as dg

PG_RETRY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL)
"""For every asset and check that talks to Postgres: a failed step is retried after 1, 3 and 7 s.

Meant for `DatabaseUnavailable` (the server restarting, stopped or crashed): the failed attempt's error says which
database and how to start it, and a retry reconnects; the embedded server is started again by the retry's first
connection. Dagster cannot retry on one exception type only, so every failure is retried: the steps are idempotent
(partitions are replaced atomically, embedding builds resume), and a step whose failure must not be retried raises
`dg.Failure(allow_retries=False)`. Runs can switch retries off with the executor's `retries: {disabled: {}}` config."""
