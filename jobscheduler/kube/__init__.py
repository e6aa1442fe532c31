"""Kubernetes I/O: the gateway (the only importer of the `kubernetes` client), the watch-fed
informer cache of Jobs and Pods, and pod-log streams.

Contract: objects cross this boundary as plain dicts; API failures leave as the domain's
errors (jobscheduler.domain.errors). Imports no grpc and no use case.
"""
