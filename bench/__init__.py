"""The jobscheduler benchmark: the service against the Kubernetes API it wraps, side by side, in one run.

`python -m bench.run` (or `hack/dev.sh bench`) measures ScheduleJob, GetJobStatus, ListJobs,
memory and WatchJob delay on the local dev cluster; see bench/run.py for the phases and
bench/README.md for how to read the results.
"""
