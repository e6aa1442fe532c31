"""The built-in job types, registered through the `jobscheduler.job_types` entry-point group.

Contract: they import only what a third-party job type may (the registry's Parameter and
Workload, settings, errors, validation, and the workloads they run), never a use case, the
gateway or the transport.
"""
