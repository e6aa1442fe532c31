"""jobscheduler: a gRPC service that launches Kubernetes Jobs and reports their status."""

__version__ = "0.1.0"
