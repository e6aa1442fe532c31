"""Observability: structlog configuration, the Prometheus metrics, and build information.

Contract: depends on nothing else of the service (except the package version), so every layer
may log, count and report its version.
"""
