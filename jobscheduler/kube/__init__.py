"""Kubernetes I/O: the gateway's calls (gateway) over one lean HTTP path (http, wire),
credentials and backoff (connection), API errors as domain errors (translate), pod-log
streams (podlog), and the watch-fed informer cache of Jobs and Pods (cache). The only
importer of the `kubernetes` client.

Contract: objects cross this boundary as plain dicts; API failures leave as the domain's
errors (jobscheduler.domain.errors). Imports no grpc and no use case.
"""
