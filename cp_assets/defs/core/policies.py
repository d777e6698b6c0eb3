"""Retry policies shared by the asset definitions."""


from contextlib import contextmanager

import dagster as dg

PG_RETRY = dg.RetryPolicy(max_retries=3, delay=0.5, backoff=dg.Backoff.EXPONENTIAL)
"""For every asset and check that talks to Postgres: a failed step is retried after 0.5, 1.5 and 3.5 s.

Meant for `DatabaseUnavailable` (the server restarting, stopped or crashed): the failed attempt's error names the
database and how to start it, and the retry reconnects; a stopped embedded server is started again by the retry's first
connection. Dagster retries every failure, not one exception type, so the waits are short (a failure that is not the
database's costs 5.5 s more), the steps are idempotent (partitions replaced atomically, embedding builds resume), and a
step whose failure must not be retried raises `dg.Failure(allow_retries=False)` (`bad_input_is_final`)."""


@contextmanager
def bad_input_is_final():
    """Bad input (a malformed record, an unknown split, a registry error) fails the step at once: a retry would
    read the same bytes again (on a large split, for minutes) and fail the same way."""
    from cp_assets.lib.corpus.registry import RegistryError
    from cp_assets.lib.corpus.sources import BadRecord

    try:
        yield
    except (BadRecord, RegistryError) as exc:
        raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
