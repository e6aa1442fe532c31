"""The job a client command describes with flags: one subcommand per job type (the JOB_TYPES
of typeflags) with the type's own flags and the job flags every type shares, turned into a
ScheduleJobRequest.

`schedule`, `schedules create|update` and `templates create|update` all take a job this way;
`purpose` leaves out the flags the API refuses in schedules and templates.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli.flags import KeyValueAction, add_command, choice_of, int32, int64, json_message
from jobscheduler.cli.typeflags import FROM_TEMPLATE, JOB_TYPES

Purpose = str  # "schedule", "schedules" or "templates"
AFTER_CONDITIONS = ("succeeded", "finished")


def _retry_rule(text: str) -> pb.RetryRule:
    rule: pb.RetryRule = json_message(text, pb.RetryRule())
    return rule


def toleration(text: str) -> pb.Toleration:
    """KEY[=VALUE][:EFFECT], as taints are written (`kubectl taint`): with a value the taint's
    value must match (Equal), without one any value does (Exists); KEY `*` tolerates every taint."""
    rest, _, effect = text.rpartition(":") if ":" in text else (text, "", "")
    key, eq, value = rest.partition("=")
    if key == "*":
        key = ""
    return pb.Toleration(key=key, operator="Equal" if eq else "Exists", value=value, effect=effect)


def _add_placement_flags(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument_group("placement (where the pods may run)")
    p.add_argument(
        "--node-selector", dest="node_selector", action=KeyValueAction, metavar="KEY=VALUE",
        help="run only on nodes with this label (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--toleration", type=toleration, action="append", metavar="KEY[=VALUE][:EFFECT]",
        help="tolerate this node taint, e.g. nvidia.com/gpu:NoSchedule (repeatable; KEY * for all)",
    )  # fmt: skip
    p.add_argument("--priority-class", default="", metavar="NAME", help="a PriorityClass of the cluster")
    q = parser.add_argument_group("queueing (Kueue; docs/queueing.md)")
    q.add_argument(
        "--queue", default="", metavar="NAME", help="wait in this LocalQueue for Kueue to admit the job"
    )
    q.add_argument("--priority", default="", metavar="NAME", help="a WorkloadPriorityClass (with --queue)")


def _add_job_flags(parser: argparse.ArgumentParser, purpose: Purpose) -> None:
    j = parser.add_argument_group("job")
    j.add_argument("--name", default="", help="human name, a DNS-1123 label (default: the job type)")
    j.add_argument(
        "-l", "--label", dest="labels", action=KeyValueAction, metavar="KEY=VALUE",
        help="label on the Job and its pods (repeatable)",
    )  # fmt: skip
    j.add_argument(
        "--annotation", dest="annotations", action=KeyValueAction, metavar="KEY=VALUE",
        help="annotation on the pod template (repeatable)",
    )  # fmt: skip
    for kind in ("cpu", "memory"):
        for which in ("request", "limit"):
            j.add_argument(
                f"--{kind}-{which}",
                default="",
                metavar="QUANTITY",
                help=f"{kind} {which}, a Kubernetes quantity"
                + (" (default: the server's)" if which == "request" else " (default: none)"),
            )
    j.add_argument(
        "--backoff-limit", type=int32, metavar="N", help="pod failures retried before FAILED (default 0)"
    )
    j.add_argument(
        "--active-deadline",
        type=int64,
        metavar="SECONDS",
        help="wall-clock limit; then FAILED (default: none)",
    )
    j.add_argument(
        "--ttl",
        type=int32,
        metavar="SECONDS",
        help="delete the finished Job after this (default: the server's)",
    )
    j.add_argument(
        "--pending-timeout", type=int64, metavar="SECONDS",
        help="fail a job stuck pending (ImagePullBackOff, ...) after this; 0: never",
    )  # fmt: skip
    j.add_argument("--after", action="append", metavar="JOB_ID", help="start after this job (repeatable)")
    j.add_argument(
        "--after-condition", type=choice_of(AFTER_CONDITIONS), metavar="COND",
        help="with --after: succeeded (default) or finished",
    )  # fmt: skip
    if purpose != "schedules":
        j.add_argument("--suspend", action="store_true", help="create the Job held until `resume`")
    if purpose == "schedule":
        j.add_argument(
            "--secret-env", action=KeyValueAction, metavar="KEY=VALUE",
            help="environment kept in a Secret, never shown (repeatable)",
        )  # fmt: skip
        j.add_argument(
            "--request-id",
            default="",
            metavar="ID",
            help="idempotency key: the same key returns the same job",
        )
        j.add_argument(
            "--dry-run",
            action="store_true",
            help="print the manifest the API server admitted (YAML); create nothing",
        )
    r = parser.add_argument_group("retries (the Job's podFailurePolicy)")
    r.add_argument("--fail-on-exit-code", type=int32, action="append", metavar="CODE", help="fail at once")
    r.add_argument(
        "--retry-on-exit-code", type=int32, action="append", metavar="CODE", help="retry only these codes"
    )
    r.add_argument("--ignore-disruptions", action="store_true", help="evicted pods do not count")
    r.add_argument("--count-oom", action="store_true", help="retry exit 137 (OOM) within --backoff-limit")
    r.add_argument(
        "--retry-rule", type=_retry_rule, action="append", metavar="JSON",
        help='a RetryRule: {"action": "RETRY_ACTION_IGNORE", "exit_codes": [42]} (repeatable)',
    )  # fmt: skip
    _add_placement_flags(parser)


def type_examples(before: str) -> Callable[[str, str], str]:
    """The examples text of one job type's subcommand under `jobscheduler BEFORE`."""

    def examples(job_type: str, flags: str) -> str:
        return f"  jobscheduler {before} {job_type} {flags}\n"

    return examples


def add_job_types(
    types: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    purpose: Purpose,
    common: argparse.ArgumentParser,
    within: str,
    handler: Callable[..., Any],
    examples: Callable[[str, str], str],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """One subcommand per job type under `types`, each taking the type's flags, the job flags
    and `extra`; `examples(type, flags)` is the text of its examples."""
    kinds = JOB_TYPES if purpose == "templates" else (*JOB_TYPES, FROM_TEMPLATE)
    for name, help_text, flags, fill, example in kinds:
        parser = add_command(types, name, help_text, examples(name, example), common=common, within=within)
        flags(parser.add_argument_group(name))
        _add_job_flags(parser, purpose)
        if extra:
            extra(parser)
        parser.set_defaults(handler=handler, fill_job=fill)


def job_request(args: argparse.Namespace, *, namespace: str = "") -> pb.ScheduleJobRequest:
    """The ScheduleJobRequest the job flags in `args` describe."""
    request = pb.ScheduleJobRequest(
        name=args.name,
        namespace=namespace,
        labels=args.labels or {},
        annotations=args.annotations or {},
        request_id=getattr(args, "request_id", ""),
        dry_run=getattr(args, "dry_run", False),
        suspend=getattr(args, "suspend", False),
        secret_env=getattr(args, "secret_env", None) or {},
        after=args.after or [],
        node_selector=args.node_selector or {},
        tolerations=args.toleration or [],
        priority_class_name=args.priority_class,
        queue=args.queue,
        priority=args.priority,
    )
    resources = {k: getattr(args, k) for k in ("cpu_request", "memory_request", "cpu_limit", "memory_limit")}
    if any(resources.values()):
        request.resources.CopyFrom(pb.Resources(**resources))
    # Optional in the proto: unset means "the service's default", which is not the same as 0.
    if args.backoff_limit is not None:
        request.backoff_limit = args.backoff_limit
    if args.active_deadline is not None:
        request.active_deadline_seconds = args.active_deadline
    if args.ttl is not None:
        request.ttl_seconds_after_finished = args.ttl
    if args.pending_timeout is not None:
        request.pending_timeout_seconds = args.pending_timeout
    if args.after_condition:
        request.after_condition = pb.DependencyCondition.Value(
            f"DEPENDENCY_CONDITION_{args.after_condition.upper()}"
        )
    retry = _retry_policy(args)
    if retry is not None:
        request.retry.CopyFrom(retry)
    args.fill_job(args, request)
    return request


def _retry_policy(args: argparse.Namespace) -> pb.RetryPolicy | None:
    fail, retry, rules = args.fail_on_exit_code or [], args.retry_on_exit_code or [], args.retry_rule or []
    if not (fail or retry or rules or args.ignore_disruptions or args.count_oom):
        return None
    return pb.RetryPolicy(
        fail_on_exit_codes=fail,
        retry_on_exit_codes=retry,
        ignore_disruptions=args.ignore_disruptions,
        count_oom=args.count_oom,
        rules=rules,
    )
