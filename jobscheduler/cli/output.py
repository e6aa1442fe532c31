"""What the client commands print: aligned tables for people, or the response message as JSON
or YAML (proto field names, every field present) for scripts; streams (watch, logs) as one
table row, JSON line or YAML document per message, printed as it arrives."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.channel import ClientOptions

COLUMNS = ("JOB ID", "NAME", "TYPE", "STATE", "REASON", "ATTEMPTS", "AGE")


def now() -> datetime:
    return datetime.now(UTC)


def state_name(state: pb.JobState.ValueType) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")


def format_age(seconds: float) -> str:
    """Like kubectl's AGE column: 45s, 3m12s, 5h3m, 2d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86400}d{s % 86400 // 3600}h" if s % 86400 // 3600 else f"{s // 86400}d"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def age_of(timestamp: Timestamp, *, present: bool, at: datetime) -> str:
    return format_age((at - timestamp.ToDatetime(tzinfo=UTC)).total_seconds()) if present else "-"


def status_row(status: pb.JobStatus, *, now: datetime) -> list[str]:
    return [
        status.job_id,
        status.name,
        status.job_type,
        state_name(status.state),
        status.reason or "-",
        str(status.attempts),
        age_of(status.created_at, present=status.HasField("created_at"), at=now),
    ]


def render_statuses(statuses: Sequence[pb.JobStatus], *, now: datetime, with_message: bool = False) -> str:
    """The table of `list`; one job's views (`status`, `cancel`, `schedule`) add its message."""
    headers = list(COLUMNS) + (["MESSAGE"] if with_message else [])
    rows = [status_row(s, now=now) + ([s.message] if with_message else []) for s in statuses]
    return render_table(headers, rows)


def message_dict(message: Message) -> dict[str, Any]:
    # Fields at their default value are kept so that scripts find every field in every answer.
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def emit(message: Message, options: ClientOptions, table: Callable[[], str], out: TextIO) -> None:
    if options.output == "json":
        text = json.dumps(message_dict(message), indent=2)
    elif options.output == "yaml":
        text = yaml.safe_dump(message_dict(message), sort_keys=False).rstrip("\n")
    else:
        text = table()
    if text:
        print(text, file=out)


def emit_streamed(message: Message, options: ClientOptions, line: Callable[[], str], out: TextIO) -> None:
    """One message of a stream, at once: a JSON object on one line (JSON Lines), a YAML document
    (`---` between them), or `line()` for people."""
    if options.output == "json":
        text = json.dumps(message_dict(message), separators=(",", ":"))
    elif options.output == "yaml":
        text = "---\n" + yaml.safe_dump(message_dict(message), sort_keys=False).rstrip("\n")
    else:
        text = line()
    print(text, file=out, flush=True)


# -- watch -----------------------------------------------------------------------------------------

# A stream's table cannot be aligned on its widest cell: fixed widths, as `kubectl get -w`.
EVENT_WIDTHS = (8, 8, 20, 16, 10, 9, 24)
EVENT_COLUMNS = ("TIME", "EVENT", "JOB ID", "NAME", "TYPE", "STATE", "REASON", "MESSAGE")


def _fixed(cells: Sequence[str]) -> str:
    padded = [c.ljust(w) for c, w in zip(cells, EVENT_WIDTHS, strict=False)]
    return "  ".join([*padded, *cells[len(EVENT_WIDTHS) :]]).rstrip()


def event_header() -> str:
    return _fixed(EVENT_COLUMNS)


def event_row(event: pb.JobEvent) -> str:
    seen = event.observed_at.ToDatetime(tzinfo=UTC).astimezone() if event.HasField("observed_at") else None
    s = event.status
    return _fixed(
        [
            seen.strftime("%H:%M:%S") if seen else "-",
            pb.JobEventType.Name(event.type).removeprefix("JOB_EVENT_TYPE_"),
            s.job_id,
            s.name or "-",
            s.job_type or "-",
            state_name(s.state),
            s.reason or "-",
            s.message,
        ]
    )


# -- schedules, templates, job types ---------------------------------------------------------------


def _timestamp(ts: Timestamp, present: bool) -> str:
    if not present:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def schedule_rows(schedules: Sequence[pb.Schedule], *, now: datetime) -> str:
    headers = ["NAME", "TIMING", "TYPE", "PAUSED", "ACTIVE", "LAST RUN", "NEXT RUN", "AGE"]
    rows = []
    for s in schedules:
        spec, st = s.spec, s.status
        timing = f"cron {spec.cron}" if spec.cron else f"every {spec.interval}"
        if spec.cron and spec.time_zone:
            timing += f" ({spec.time_zone})"
        last = f"{st.last_run.job_id} {state_name(st.last_run.state)}" if st.HasField("last_run") else "-"
        rows.append(
            [
                spec.name,
                timing,
                job_type_of(spec.job),
                "yes" if spec.paused else "no",
                str(len(st.active_runs)),
                last,
                _timestamp(st.next_runs[0], True) if st.next_runs else "-",
                age_of(st.created_at, present=st.HasField("created_at"), at=now),
            ]
        )
    return render_table(headers, rows)


def job_type_of(job: pb.ScheduleJobRequest) -> str:
    field = job.WhichOneof("job_type")
    if field == "generic_job":
        return job.generic_job.type
    return (field or "-").removesuffix("_job").replace("_", "-")


def render_schedule(schedule: pb.Schedule, *, now: datetime) -> str:
    """One schedule: its list row, then its runs' facts as `key: value` lines."""
    st = schedule.status
    lines = [schedule_rows([schedule], now=now), ""]
    lines.append(f"executor:    {st.executor or '-'}")
    if st.cron:
        lines.append(f"cron:        {st.cron}")
    lines.append("next runs:   " + (", ".join(_timestamp(t, True) for t in st.next_runs) or "-"))
    lines.append(f"last start:  {_timestamp(st.last_schedule_time, st.HasField('last_schedule_time'))}")
    lines.append("active runs: " + (", ".join(st.active_runs) or "-"))
    if st.paused_reason:
        lines.append(
            f"paused:      {st.paused_reason} at {_timestamp(st.paused_at, True)}: {st.paused_message}"
        )
    if st.consecutive_failures:
        lines.append(f"failing:     {st.consecutive_failures} runs in a row")
    if st.HasField("buffered_run"):
        lines.append(f"waiting run: {_timestamp(st.buffered_run, True)} (buffer_one)")
    if st.backfilled_runs:
        lines.append(f"backfilled:  {st.backfilled_runs} of the runs kept")
    stats = st.stats
    rate = f"{stats.success_rate:.0%}" if stats.HasField("success_rate") else "-"
    mean = f"{stats.mean_duration_seconds:.1f}s" if stats.HasField("mean_duration_seconds") else "-"
    lines.append(
        f"runs kept:   {stats.runs} (succeeded {stats.succeeded}, failed {stats.failed}, "
        f"cancelled {stats.cancelled}, active {stats.active}); success rate {rate}, mean duration {mean}"
    )
    return "\n".join(lines)


def render_templates(templates: Sequence[pb.Template]) -> str:
    headers = ["NAME", "VERSION", "TYPE", "UPDATED", "UPDATED BY", "DESCRIPTION"]
    rows = [
        [
            t.name,
            str(t.version),
            t.job_type or "-",
            _timestamp(t.updated_at, t.HasField("updated_at")),
            t.updated_by or "-",
            t.description,
        ]
        for t in templates
    ]
    return render_table(headers, rows)


def render_template(template: pb.Template) -> str:
    """One template: its row, its versions, and its job as YAML."""
    versions = ", ".join(map(str, template.versions)) or "-"
    job = yaml.safe_dump(message_dict_sparse(template.job), sort_keys=False).rstrip("\n")
    return "\n".join(
        [
            render_templates([template]),
            "",
            f"versions: {versions} (latest {template.latest_version})",
            "job:",
            *("  " + line for line in job.splitlines()),
        ]
    )


def message_dict_sparse(message: Message) -> dict[str, Any]:
    """Only the fields that are set: a template's job reads as it was written."""
    return MessageToDict(message, preserving_proto_field_name=True)


def render_job_types(types: Sequence[pb.JobTypeInfo]) -> str:
    if len(types) == 1:
        [t] = types
        rows = [
            [p.name, p.type, "yes" if p.required else "no", p.default or "-", p.description]
            for p in t.parameters
        ]
        head = f"{t.name} ({t.request_field}): {t.description}"
        return head + "\n\n" + render_table(["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"], rows)
    return render_table(
        ["NAME", "FIELD", "DESCRIPTION"], [[t.name, t.request_field, t.description] for t in types]
    )


def render_service_status(status: pb.ServiceStatus, *, now: datetime) -> str:
    """GetServiceStatus for people: who answers and who leads, then one row per condition."""
    serving = "SERVING" if status.serving else "NOT_SERVING"
    health = "degraded" if status.degraded else "healthy"
    leader = (
        ("this replica" if status.leader.this_replica else status.leader.identity or "nobody")
        if status.leader.enabled
        else "not electing"
    )
    head = f"{serving}, {health}; replica {status.replica} ({status.version}), leader: {leader}"
    rows = [
        [
            c.type,
            "yes" if c.ok else "NO",
            c.reason,
            age_of(c.since, present=c.HasField("since"), at=now),
            c.message,
        ]
        for c in status.conditions
    ]
    return head + "\n" + render_table(["CONDITION", "OK", "REASON", "SINCE", "MESSAGE"], rows)
