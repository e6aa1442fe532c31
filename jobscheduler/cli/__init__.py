"""The `jobscheduler` command: `serve`, `version`, and a human client of a running service.

Contract: talks to the service only through gRPC and the generated stubs (jobscheduler.api);
never imports the use cases, the Kubernetes gateway or the server.
"""
