"""The use cases: schedule, read, list, watch, cancel and resume jobs; schedules; templates;
job logs. Each is a straight path: resolve, validate, admit, render, submit, report.

Contract: no grpc (the transport converts to and from these), no `kubernetes` (the gateway in
jobscheduler.kube does the I/O).
"""
