"""The client commands' pure parts: flag parsing, the exit code table and where it is
documented, table rendering and the --wait loop (against a stand-in for the status RPC)."""

from __future__ import annotations

import argparse
import io
import os
import re
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.cli import channel, exits, flags, jobs, jobspec, output
from jobscheduler.cli.main import CLIENT_COMMANDS, build_parser, main
from tests.conftest import ROOT

S = pb.JobState
TIMER = ["schedule", "timer", "--duration", "5", "--timer-name", "t", "--endpoint", "http://cp:1"]
# Nobody listens on port 1: a test that got past the parser would fail with 5, not 2.
NOBODY = ["--server", "127.0.0.1:1"]


@pytest.fixture(autouse=True)
def _grpc_verbosity(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() sets GRPC_VERBOSITY for client commands; keep that out of the other tests' processes.
    monkeypatch.setenv("GRPC_VERBOSITY", os.environ.get("GRPC_VERBOSITY", "ERROR"))


# -- flags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pair"),
    [("team=a", ("team", "a")), ("URL=http://x?a=b", ("URL", "http://x?a=b")), ("EMPTY=", ("EMPTY", ""))],
)
def test_key_value_splits_at_the_first_equals_sign(text: str, pair: tuple[str, str]) -> None:
    assert flags.parse_key_value(text) == pair


@pytest.mark.parametrize("text", ["team", "=a", "", " =a"])
def test_key_value_without_a_key_or_equals_sign_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
        flags.parse_key_value(text)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--env", "A=1", "--env", "A=2"], "argument --env: key 'A' given twice"),
        (["-l", "team"], "argument -l/--label: expected KEY=VALUE, got 'team'"),
        (["--annotation", "=x"], "argument --annotation: expected KEY=VALUE"),
        (["--duration", "2147483648"], "argument --duration: 2147483648 is out of range"),
        (["--backoff-limit", "many"], "argument --backoff-limit: 'many' is not an integer"),
        (["--wait", "--wait-timeout", "0"], "argument --wait-timeout: must be greater than 0"),
    ],
)
def test_bad_flag_values_are_usage_errors_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*NOBODY, *TIMER, *flags])

    assert exit_.value.code == exits.EXIT_USAGE.code == 2
    assert message in capsys.readouterr().err


def test_key_value_flags_collect_into_a_dict() -> None:
    args = build_parser().parse_args([*TIMER, "-l", "a=1", "--label", "b=2", "--env", "X=y=z"])

    assert args.labels == {"a": "1", "b": "2"}
    assert args.env == {"X": "y=z"}
    assert args.annotations is None


@pytest.mark.parametrize(
    "text", ["running", "RUNNING", "Running", "job_state_running", " JOB_STATE_RUNNING "]
)
def test_states_are_accepted_in_any_case_with_or_without_prefix(text: str) -> None:
    assert flags.parse_state(text) == S.JOB_STATE_RUNNING


@pytest.mark.parametrize("text", ["sleeping", "UNSPECIFIED", "JOB_STATE_UNSPECIFIED", ""])
def test_unknown_states_are_refused_listing_the_valid_ones(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED"):
        flags.parse_state(text)


@pytest.mark.parametrize(
    ("argv", "server", "timeout"),
    [
        (["--server", "a:1", "--timeout", "3", "health"], "a:1", 3.0),
        (["health", "--server", "b:2"], "b:2", channel.DEFAULT_TIMEOUT_SECONDS),
        (["--server", "a:1", "health", "--server", "b:2"], "b:2", channel.DEFAULT_TIMEOUT_SECONDS),
        (["health"], "from-env:9", channel.DEFAULT_TIMEOUT_SECONDS),
    ],
)
def test_common_flags_work_before_or_after_the_command_and_default_from_the_environment(
    argv: list[str], server: str, timeout: float
) -> None:
    args = build_parser().parse_args(argv)

    options = channel.ClientOptions.from_args(args, {"JOBSCHEDULER_SERVER": "from-env:9"})

    assert (options.server, options.timeout) == (server, timeout)


def test_without_server_flag_or_environment_the_server_is_localhost_50054() -> None:
    options = channel.ClientOptions.from_args(build_parser().parse_args(["health"]), {})

    assert options.server == "localhost:50054"
    assert (options.namespace, options.output, options.tls) == ("", "table", False)


@pytest.mark.parametrize("flag", [["--ca-cert", "ca.pem"], ["--server-name", "x"], ["--tls"]])
def test_tls_is_on_with_tls_or_any_flag_that_only_makes_sense_with_it(flag: list[str]) -> None:
    options = channel.ClientOptions.from_args(build_parser().parse_args(["health", *flag]), {})

    assert options.tls


def test_client_flags_on_serve_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--server", "x:1", "serve"])

    assert exit_.value.code == 2
    assert "--server: only for the client commands, not for serve" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*TIMER, "--wait-timeout", "5"], "--wait-timeout needs --wait"),
        ([*TIMER, "--wait", "--dry-run"], "--wait and --dry-run exclude each other"),
        (["health", "--cert", "c.pem"], "--cert and --key go together"),
        (["health", "--ca-cert", "/nonexistent/ca.pem"], "cannot read --ca-cert /nonexistent/ca.pem"),
    ],
)
def test_flags_that_need_each_other_exit_2_before_any_call(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*NOBODY, *argv]) == 2
    assert message in capsys.readouterr().err


def test_every_client_command_the_parser_knows_is_dispatched_to_the_client() -> None:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]

    assert set(sub.choices) - {"serve", "version", "version-full", "completion"} == CLIENT_COMMANDS


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.OK, 1),
        (grpc.StatusCode.CANCELLED, 1),
        (grpc.StatusCode.UNKNOWN, 1),
        (grpc.StatusCode.INVALID_ARGUMENT, 2),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 5),
        (grpc.StatusCode.NOT_FOUND, 3),
        (grpc.StatusCode.ALREADY_EXISTS, 4),
        (grpc.StatusCode.PERMISSION_DENIED, 1),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 1),
        (grpc.StatusCode.FAILED_PRECONDITION, 4),
        (grpc.StatusCode.ABORTED, 1),
        (grpc.StatusCode.OUT_OF_RANGE, 1),
        (grpc.StatusCode.UNIMPLEMENTED, 1),
        (grpc.StatusCode.INTERNAL, 1),
        (grpc.StatusCode.UNAVAILABLE, 5),
        (grpc.StatusCode.DATA_LOSS, 1),
        (grpc.StatusCode.UNAUTHENTICATED, 1),
    ],
)
def test_each_grpc_status_ends_in_its_exit_code(status: grpc.StatusCode, code: int) -> None:
    assert exits.exit_code_for(status).code == code


def test_exit_codes_are_distinct_and_each_grpc_status_is_in_at_most_one() -> None:
    codes = [e.code for e in exits.EXIT_CODES]
    statuses = [s for e in exits.EXIT_CODES for s in e.grpc_codes]

    assert len(codes) == len(set(codes))
    assert len(statuses) == len(set(statuses))


def test_the_cli_reference_documents_the_exit_code_table_as_the_code_defines_it() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    section = reference.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]

    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M)

    assert [(int(c), m) for c, m in rows] == [(e.code, e.meaning) for e in exits.EXIT_CODES]


@pytest.mark.parametrize(
    "argv", [["--help"], *([c, "--help"] for c in sorted(CLIENT_COMMANDS - {"schedule"}))]
)
def test_help_shows_every_exit_code(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)

    out = capsys.readouterr().out
    for e in exits.EXIT_CODES:
        assert re.search(rf"^  {e.code}\s+{re.escape(e.meaning)}$", out, re.M), (e, out)


def test_schedule_timer_help_has_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["schedule", "timer", "--help"])

    out = capsys.readouterr().out
    assert "examples:\n  jobscheduler schedule timer --duration 300" in out
    assert "exit codes:\n  0    success" in out


# -- output ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (-3, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m"),
        (192, "3m12s"),
        (3600, "1h"),
        (5 * 3600 + 3 * 60 + 9, "5h3m"),
        (86400, "1d"),
        (2 * 86400 + 4 * 3600 + 59, "2d4h"),
    ],
)
def test_age_reads_like_kubectl(seconds: float, age: str) -> None:
    assert output.format_age(seconds) == age


def test_table_columns_are_aligned_two_spaces_apart_without_trailing_blanks() -> None:
    text = output.render_table(["A", "LONGER"], [["xxxx", ""], ["y", "z"]])

    assert text.splitlines() == ["A     LONGER", "xxxx", "y     z"]


def test_a_status_renders_as_a_row_of_the_job_columns() -> None:
    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    status = pb.JobStatus(
        job_id="job-abc",
        name="my-timer",
        job_type="timer",
        state=S.JOB_STATE_FAILED,
        reason="BackoffLimitExceeded",
        message="exited with code 3",
        attempts=1,
    )
    status.created_at.FromDatetime(created)

    text = output.render_statuses([status], now=created + timedelta(seconds=75), with_message=True)

    header, row = text.splitlines()
    assert header.split("  ")[0] == "JOB ID"
    assert re.split(r"\s{2,}", header) == [*output.COLUMNS, "MESSAGE"]
    assert re.split(r"\s{2,}", row) == [
        "job-abc",
        "my-timer",
        "timer",
        "FAILED",
        "BackoffLimitExceeded",
        "1",
        "1m15s",
        "exited with code 3",
    ]


def test_a_status_without_creation_time_or_reason_shows_dashes() -> None:
    text = output.render_statuses(
        [pb.JobStatus(job_id="job-x", state=S.JOB_STATE_PENDING)], now=datetime.now(UTC)
    )

    assert re.split(r"\s{2,}", text.splitlines()[1]) == ["job-x", "PENDING", "-", "0", "-"]


# -- --wait ----------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Statuses:
    """Answers GetJobStatus with the given statuses in turn."""

    def __init__(self, *statuses: tuple[int, str]) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    def GetJobStatus(self, request: pb.GetJobStatusRequest, timeout: float) -> pb.GetJobStatusResponse:  # noqa: N802
        assert (request.job_id, request.namespace, timeout) == ("job-w", "ns", 7)
        self.calls += 1
        state, reason = self.statuses.pop(0)
        return pb.GetJobStatusResponse(status=pb.JobStatus(job_id="job-w", state=state, reason=reason))  # type: ignore[arg-type]


def _wait(
    stub: _Statuses, first: tuple[int, str], wait_timeout: float | None = None, clock: _Clock | None = None
) -> tuple[pb.JobStatus, str]:
    err = io.StringIO()
    ctx = channel.Context(
        options=channel.ClientOptions(timeout=7),
        channel=None,  # type: ignore[arg-type]
        stub=stub,  # type: ignore[arg-type]
        out=io.StringIO(),
        err=err,
    )
    clock = clock or _Clock()
    initial = pb.JobStatus(job_id="job-w", state=first[0], reason=first[1])  # type: ignore[arg-type]
    final = jobs.wait_for_job(
        ctx, initial, namespace="ns", wait_timeout=wait_timeout, clock=clock, sleep=clock.sleep
    )
    return final, err.getvalue()


def test_wait_prints_a_line_per_change_of_state_or_reason_with_the_elapsed_time() -> None:
    stub = _Statuses(
        (S.JOB_STATE_PENDING, "Created"),
        (S.JOB_STATE_PENDING, "ImagePullBackOff"),
        (S.JOB_STATE_RUNNING, "Running"),
        (S.JOB_STATE_RUNNING, "Running"),
        (S.JOB_STATE_SUCCEEDED, "Completed"),
    )

    final, err = _wait(stub, (S.JOB_STATE_PENDING, "Created"))

    assert final.state == S.JOB_STATE_SUCCEEDED
    assert stub.calls == 5
    assert err.splitlines()[1:] == [
        "    0.0s  PENDING    Created",
        "    2.0s  PENDING    ImagePullBackOff",
        "    3.0s  RUNNING    Running",
        "    5.0s  SUCCEEDED  Completed",
    ]


def test_wait_returns_at_once_for_a_job_that_has_ended() -> None:
    stub = _Statuses()

    final, _ = _wait(stub, (S.JOB_STATE_CANCELLED, "Cancelled"))

    assert (final.state, stub.calls) == (S.JOB_STATE_CANCELLED, 0)


def test_wait_timeout_raises_exit_5_naming_the_state_the_job_is_still_in() -> None:
    stub = _Statuses(*[(S.JOB_STATE_RUNNING, "Running")] * 10)
    clock = _Clock()

    with pytest.raises(exits.ClientError) as error:
        _wait(stub, (S.JOB_STATE_PENDING, "Created"), wait_timeout=2.5, clock=clock)

    assert error.value.exit_status is exits.EXIT_UNAVAILABLE
    assert error.value.status == "DEADLINE_EXCEEDED"
    assert "job-w is still RUNNING after 2.5s" in error.value.message
    assert "jobscheduler status job-w -n ns" in error.value.hint
    # Polls at 1s, 2s and 2.5s: the last pause is shortened so that it gives up on time.
    assert (stub.calls, clock.now) == (3, 2.5)


# -- the server's address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["localhost:50054", "10.0.0.1:1", "[::1]:50054", "[::1]", "scheduler.example", "dns:///x:443", "unix:/s"],
)
def test_addresses_grpc_can_resolve_are_accepted(address: str) -> None:
    channel.check_server_address(address, source="--server")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("localhost:notaport", "the port 'notaport' is not a number from 1 to 65535"),
        ("localhost:0", "the port '0' is not a number from 1 to 65535"),
        ("localhost:65536", "the port '65536' is not a number from 1 to 65535"),
        ("localhost:", "the port '' is not a number"),
        (":50054", "expected HOST:PORT"),
        ("::1:50054", "an IPv6 address goes in brackets"),
        ("[nothost]:1", "'nothost' is not an IPv6 address"),
    ],
)
def test_a_malformed_address_is_a_usage_error_naming_where_it_came_from(address: str, why: str) -> None:
    with pytest.raises(exits.ClientError) as error:
        channel.ClientOptions.from_args(
            build_parser().parse_args(["health"]), {"JOBSCHEDULER_SERVER": address}
        )

    assert error.value.exit_status is exits.EXIT_USAGE
    assert error.value.message.startswith(f"$JOBSCHEDULER_SERVER {address}: ")
    assert why in error.value.message
    assert "Kubernetes" not in error.value.hint


def test_a_malformed_server_flag_exits_2_before_any_call(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--server", "localhost:notaport", "status", "x"]) == 2
    assert capsys.readouterr().err.startswith("jobscheduler: --server localhost:notaport: the port")


# -- the parsers -----------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_no_flag_of_a_command_overwrites_what_dispatch_reads() -> None:
    # A subcommand's `--command` once stored into `command`, the top-level dispatch key.
    reserved = {"command", "handler", "command_name", "fill_job"}
    for parser in _parsers(build_parser()):
        dests = {a.dest for a in parser._actions if not isinstance(a, argparse._SubParsersAction)}
        assert not dests & reserved, (parser.prog, dests & reserved)


def test_every_client_command_has_a_handler_and_the_name_its_hints_use() -> None:
    local = {"jobscheduler", "jobscheduler serve", "jobscheduler version", "jobscheduler version-full"}
    leaves = [
        p
        for p in _parsers(build_parser())
        if not any(isinstance(a, argparse._SubParsersAction) and a.required for a in p._actions)
        and p.prog not in local | {"jobscheduler completion"}
    ]

    assert len(leaves) > 30
    for parser in leaves:
        assert callable(parser._defaults.get("handler")), parser.prog
        # `schedules create NAME timer`: the name is the words of the command, NAME left out.
        assert parser.prog.replace(" NAME", "") == f"jobscheduler {parser._defaults['command_name']}"


def _request(*argv: str) -> pb.ScheduleJobRequest:
    return jobspec.job_request(build_parser().parse_args(["schedule", *argv]), namespace="ns")


def test_each_job_type_fills_its_own_field() -> None:
    image = ("--image", "busybox")
    assert _request("container", *image, "--command", "sh", "--arg=-c", "--", "echo hi").container_job == (
        pb.ContainerJob(image="busybox", command=["sh"], args=["-c", "echo hi"])
    )
    assert _request("batch", *image, "--completions", "3").batch_job == pb.BatchJob(
        image="busybox", completions=3
    )
    webhook = _request("webhook", "--url", "https://x", "--header", "A=1", "--backoff", "0").webhook_job
    assert (webhook.url, dict(webhook.headers), webhook.HasField("backoff_seconds")) == (
        "https://x",
        {"A": "1"},
        True,
    )
    targets = _request("health-check", "--http", "http://a", "--tcp", "[::1]:5432").health_check_job.targets
    assert [(t.type, t.url, t.host, t.port) for t in targets] == [
        ("http", "http://a", "", 0),
        ("tcp", "", "::1", 5432),
    ]


def test_generic_params_are_json_when_they_parse_and_param_wins_over_params() -> None:
    request = _request(
        "generic", "--type", "plug", "--params", '{"a": 1, "b": "x"}', "--param", "b=2", "--param", "c=text"
    )

    assert request.generic_job.type == "plug"
    assert dict(request.generic_job.params) == {"a": 1, "b": 2, "c": "text"}


def test_job_flags_left_out_leave_the_service_defaults() -> None:
    request = _request("timer", *TIMER[2:])

    assert request.namespace == "ns"
    for name in (
        "resources",
        "retry",
        "backoff_limit",
        "ttl_seconds_after_finished",
        "pending_timeout_seconds",
    ):
        assert not request.HasField(name), name


def test_retry_and_dependency_flags_fill_their_fields() -> None:
    request = _request(
        "timer", *TIMER[2:], "--fail-on-exit-code", "3", "--count-oom", "--after", "job-a",
        "--after-condition", "FINISHED",
        "--retry-rule", '{"action": "RETRY_ACTION_IGNORE", "exit_codes": [42]}',
    )  # fmt: skip

    assert request.retry == pb.RetryPolicy(
        fail_on_exit_codes=[3],
        count_oom=True,
        rules=[pb.RetryRule(action=pb.RETRY_ACTION_IGNORE, exit_codes=[42])],
    )
    assert (list(request.after), request.after_condition) == (["job-a"], pb.DEPENDENCY_CONDITION_FINISHED)


def test_a_bad_retry_rule_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*NOBODY, *TIMER, "--retry-rule", '{"action": "NOPE"}'])

    assert exit_.value.code == 2
    assert "argument --retry-rule:" in capsys.readouterr().err


def test_placement_flags_become_the_requests_placement() -> None:
    from jobscheduler.cli.jobspec import job_request

    args = build_parser().parse_args(
        [
            *TIMER,
            "--node-selector", "accelerator=a100",
            "--toleration", "nvidia.com/gpu:NoSchedule",
            "--toleration", "dedicated=batch:NoExecute",
            "--toleration", "*",
            "--priority-class", "batch-high",
        ]
    )  # fmt: skip
    request = job_request(args)

    assert dict(request.node_selector) == {"accelerator": "a100"}
    assert [(t.key, t.operator, t.value, t.effect) for t in request.tolerations] == [
        ("nvidia.com/gpu", "Exists", "", "NoSchedule"),
        ("dedicated", "Equal", "batch", "NoExecute"),
        ("", "Exists", "", ""),
    ]
    assert request.priority_class_name == "batch-high"
