"""The built-in job types, registered through the jobscheduler.job_types entry-point group."""
