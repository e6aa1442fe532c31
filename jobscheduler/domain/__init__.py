"""Pure code: models, errors, status derivation, rendering, the job-type registry, retry rules,
dependencies, label selectors, validation, cron, catch-up, run statistics, admission policy and
configuration.

Contract: no I/O, no grpc, no `kubernetes`; dict in, value out. Everything above may import it.
"""
