"""Loops that run only on the elected leader: the Lease election itself, interval schedules,
dependency release, pending timeouts and jobs' notifications (jobscheduler.control.notify).

Contract: called by the server's wiring, never by an RPC; uses the use cases (jobscheduler.app)
and the gateway; imports no grpc.
"""
