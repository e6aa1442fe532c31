"""Generated from proto/jobscheduler/api/scheduler.proto by hack/protogen.sh: never edited by hand.

The wire contract: the transport and the command-line client import it; nothing else does.
"""
