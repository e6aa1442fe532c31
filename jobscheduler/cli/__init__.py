"""The `jobscheduler` command: `serve`, `version`, `completion`, and a human client of a
running service.

main (entry point, parser) · channel (server address, TLS, token, the call's hints, `run`) ·
exits (the exit-code table) · flags (flag values, help layout) · output (tables, JSON, YAML,
streams) · jobspec (a job given as flags) · typeflags (each job type's flags) · jobs, streams,
schedules, templates (the commands of each RPC group) · specfile (specs read from YAML/JSON) ·
completion (bash, zsh).

Contract: talks to the service only through gRPC and the generated stubs (jobscheduler.api);
never imports the use cases, the Kubernetes gateway or the server.
"""
