"""The client commands that cover the rest of the API, each run as a person or a script runs
it — a real `jobscheduler` subprocess against the real server and cluster — and checked by what
it prints, its exit code and what exists in the cluster: every job type, resume, job-types,
watch, logs (with --follow), schedules and templates."""

from __future__ import annotations

import json
import re
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from tests.conftest import Cluster
from tests.integration.conftest import Service
from tests.integration.test_cli import TIMER_FLAGS, child, cli, jobs_in, table, wait_for_state
from tests.integration.test_job_logs import TEXT

S = pb.JobState
QUICK = ("--annotation", "sim.jobscheduler.io/duration=2s")
NEVER_SOON = "0 0 1 1 *"


def scheduled(out: str) -> dict[str, object]:
    printed: dict[str, object] = json.loads(out)
    return printed


# -- schedule: every job type --------------------------------------------------------------------


def test_each_job_type_is_scheduled_from_its_own_flags(
    cluster: Cluster, cached_service: Service, namespace: str
) -> None:
    address = cached_service.address
    runs = {
        "container": ("--image", "busybox:1.36", "--command", "sh", "--env", "A=1", "--", "-c", "echo hi"),
        "webhook": ("--url", "https://hooks.example/x", "--method", "PUT", "--header", "X-A=1",
                    "--attempts", "2"),
        "health-check": ("--http", "http://api:8080/healthz", "--tcp", "db:5432", "--grpc", "svc:50051"),
        "batch": ("--image", "busybox:1.36", "--completions", "3", "--parallelism", "2"),
        "generic": ("--type", "timer", "--param", "duration_seconds=5", "--params", '{"timer_name": "t",'
                    ' "control_plane_endpoint": "http://cp:50053"}'),
    }  # fmt: skip
    batch = client.BatchV1Api(cluster.api)
    for job_type, flags in runs.items():
        out = cli(
            address, "-n", namespace, "-o", "json", "schedule", job_type, "--name", "t-" + job_type, *flags
        )

        assert out.returncode == 0, (job_type, out.stderr)
        job = batch.read_namespaced_job(json.loads(out.stdout)["job_id"], namespace)
        expected = "timer" if job_type == "generic" else job_type
        assert job.metadata.labels["jobscheduler.io/job-type"] == expected
        [container] = job.spec.template.spec.containers
        if job_type == "container":
            assert (container.image, container.command, container.args) == (
                "busybox:1.36",
                ["sh"],
                ["-c", "echo hi"],
            )
            assert {e.name: e.value for e in container.env}["A"] == "1"
        if job_type == "batch":
            assert (job.spec.completions, job.spec.parallelism, job.spec.completion_mode) == (3, 2, "Indexed")
        if job_type == "generic":
            assert {e.name: e.value for e in container.env}["TIMER_DURATION_SECONDS"] == "5"


def test_retry_flags_become_the_pod_failure_policy(cached_service: Service, namespace: str) -> None:
    out = cli(
        cached_service.address, "-n", namespace, "schedule", "timer", *TIMER_FLAGS, "--dry-run",
        "--fail-on-exit-code", "3", "--ignore-disruptions",
        "--retry-rule", '{"action": "RETRY_ACTION_IGNORE", "exit_codes": [42]}',
    )  # fmt: skip

    assert out.returncode == 0, out.stderr
    rules = yaml.safe_load(out.stdout)["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}} in [
        {k: v for k, v in r.items() if k in ("action", "onExitCodes")} for r in rules
    ]
    assert any(r["action"] == "Ignore" and r.get("onExitCodes", {}).get("values") == [42] for r in rules)
    assert any(r["action"] == "Ignore" and "onPodConditions" in r for r in rules)


def test_a_bad_parameter_of_a_generic_job_exits_2_naming_it(cached_service: Service, namespace: str) -> None:
    out = cli(
        cached_service.address, "-n", namespace, "schedule", "generic", "--type", "timer", "--param", "x=1"
    )

    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("jobscheduler: INVALID_ARGUMENT: ")


def test_resume_releases_a_suspended_job(cached_service: Service, namespace: str) -> None:
    held = cli(cached_service.address, "-n", namespace, "-o", "json", "schedule", "timer", *TIMER_FLAGS,
               *QUICK, "--suspend")  # fmt: skip
    job_id = json.loads(held.stdout)["job_id"]
    assert json.loads(held.stdout)["status"]["state"] == "JOB_STATE_PENDING"

    out = cli(cached_service.address, "-n", namespace, "resume", job_id)

    assert out.returncode == 0, out.stderr
    assert table(out.stdout)[0]["JOB ID"] == job_id
    wait_for_state(cached_service, namespace, job_id, S.JOB_STATE_SUCCEEDED)
    unknown = cli(cached_service.address, "-n", namespace, "resume", "job-nope")
    assert unknown.returncode == 3


def test_job_types_lists_every_type_and_one_types_parameters(cached_service: Service) -> None:
    every = cli(cached_service.address, "job-types")
    one = cli(cached_service.address, "job-types", "webhook")
    as_json = cli(cached_service.address, "job-types", "-o", "json")
    unknown = cli(cached_service.address, "job-types", "nope")

    assert every.returncode == one.returncode == as_json.returncode == 0, every.stderr
    names = {row["NAME"] for row in table(every.stdout)}
    assert {"timer", "container", "webhook", "health-check", "batch"} <= names
    assert one.stdout.startswith("webhook (webhook_job): ")
    params = {row["PARAMETER"]: row for row in table(one.stdout.split("\n\n", 1)[1])}
    assert params["url"]["REQUIRED"] == "yes"
    assert {t["name"] for t in json.loads(as_json.stdout)["job_types"]} == names
    assert unknown.returncode == 3
    assert "jobscheduler job-types" in unknown.stderr


# -- watch, logs ---------------------------------------------------------------------------------


def test_watch_one_job_prints_each_change_and_ends_with_the_job(
    cached_service: Service, namespace: str
) -> None:
    job_id = json.loads(
        cli(
            cached_service.address, "-n", namespace, "-o", "json", "schedule", "timer", *TIMER_FLAGS, *QUICK
        ).stdout
    )["job_id"]

    out = cli(cached_service.address, "-n", namespace, "-o", "json", "watch", job_id, timeout=60)

    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["type"] == "JOB_EVENT_TYPE_INITIAL"
    assert events[-1]["status"]["state"] == "JOB_STATE_SUCCEEDED"
    assert {e["status"]["job_id"] for e in events} == {job_id}
    shown = cli(cached_service.address, "-n", namespace, "watch", job_id, timeout=60)
    assert shown.stdout.splitlines()[0].split() == ["TIME", "EVENT", "JOB", "ID", "NAME", "TYPE", "STATE",
                                                    "REASON", "MESSAGE"]  # fmt: skip
    assert f"{job_id}" in shown.stdout.splitlines()[-1]
    assert "SUCCEEDED" in shown.stdout.splitlines()[-1]


def test_watch_with_filters_streams_matching_changes_until_ctrl_c(
    cached_service: Service, namespace: str
) -> None:
    argv = ("-n", namespace, "-o", "json", "watch", "-l", "team=a", "--state", "succeeded", "--skip-initial")
    with child(cached_service.address, *argv) as watching:
        watching.read_until("err", re.compile("watching"))
        other = cli(cached_service.address, "-n", namespace, "-o", "json", "schedule", "timer", *TIMER_FLAGS,
                    *QUICK, "-l", "team=b")  # fmt: skip
        mine = cli(cached_service.address, "-n", namespace, "-o", "json", "schedule", "timer", *TIMER_FLAGS,
                   *QUICK, "-l", "team=a")  # fmt: skip
        job_id = json.loads(mine.stdout)["job_id"]
        line = watching.read_until("out", re.compile(job_id), timeout=60)
        watching.proc.send_signal(signal.SIGINT)
        code, out, err = watching.finish(timeout=30)

    event = json.loads(line.string)
    assert (event["type"], event["status"]["state"]) == ("JOB_EVENT_TYPE_UPDATED", "JOB_STATE_SUCCEEDED")
    assert json.loads(other.stdout)["job_id"] not in out
    assert code == 130, err


def test_logs_print_the_containers_lines_and_follow_ends_with_the_job(
    cached_service: Service, namespace: str
) -> None:
    sim = (
        "--annotation",
        "sim.jobscheduler.io/start-delay=2s",
        "--annotation",
        "sim.jobscheduler.io/duration=4s",
    )
    job_id = json.loads(
        cli(
            cached_service.address, "-n", namespace, "-o", "json", "schedule", "timer", *TIMER_FLAGS, *sim
        ).stdout
    )["job_id"]

    followed = cli(cached_service.address, "-n", namespace, "logs", job_id, "-f", timeout=60)
    wait_for_state(cached_service, namespace, job_id, S.JOB_STATE_SUCCEEDED)
    plain = cli(cached_service.address, "-n", namespace, "logs", job_id, "--prefix", "--tail", "2")
    as_json = cli(cached_service.address, "-n", namespace, "logs", job_id, "-o", "json")

    assert followed.returncode == plain.returncode == as_json.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == TEXT
    assert [re.sub(r"^\[\S+/\S+\] ", "", line) for line in plain.stdout.splitlines()] == TEXT[-2:]
    assert plain.stdout.startswith(f"[{job_id}-")
    chunks = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line for c in chunks for line in c["lines"]] == TEXT
    unknown = cli(cached_service.address, "-n", namespace, "logs", "job-nope")
    assert unknown.returncode == 3


# -- schedules -------------------------------------------------------------------------------------


def test_schedules_create_get_list_pause_resume_update_delete(
    cluster: Cluster, service: Service, namespace: str, tmp_path: Path
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        out = cli(service.address, "-n", namespace, *args)
        return out.returncode, out.stdout, out.stderr

    code, out, err = run("schedules", "create", "nightly", "--cron", NEVER_SOON, "--time-zone",
                         "Europe/Berlin", "timer", *TIMER_FLAGS, "--keep-failed", "2",
                         "-l", "team=a")  # fmt: skip
    assert code == 0, err
    [row] = table(out)
    assert (row["NAME"], row["TIMING"], row["TYPE"], row["PAUSED"]) == (
        "nightly", f"cron {NEVER_SOON} (Europe/Berlin)", "timer", "no"
    )  # fmt: skip
    cron = client.BatchV1Api(cluster.api).read_namespaced_cron_job("nightly", namespace)
    assert (cron.spec.schedule, cron.spec.time_zone, cron.spec.failed_jobs_history_limit) == (
        NEVER_SOON, "Europe/Berlin", 2
    )  # fmt: skip

    assert run("schedules", "create", "nightly", "--cron", NEVER_SOON, "timer", *TIMER_FLAGS)[0] == 4
    code, out, _ = run("schedules", "get", "nightly", "--next-runs", "2", "-o", "json")
    assert len(json.loads(out)["status"]["next_runs"]) == 2
    assert "next runs:" in run("schedules", "get", "nightly")[1]
    assert [r["NAME"] for r in table(run("schedules", "list")[1])] == ["nightly"]
    assert table(run("schedules", "pause", "nightly")[1])[0]["PAUSED"] == "yes"
    assert client.BatchV1Api(cluster.api).read_namespaced_cron_job("nightly", namespace).spec.suspend
    assert table(run("schedules", "resume", "nightly")[1])[0]["PAUSED"] == "no"

    # Read, modify, write: the printed YAML is what --file takes.
    saved = yaml.safe_load(run("schedules", "get", "nightly", "-o", "yaml")[1])
    saved["spec"]["cron"] = "0 3 1 1 *"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(saved))
    code, _, err = run("schedules", "update", "nightly", "--file", str(tmp_path / "s.yaml"))
    assert code == 0, err
    assert (
        client.BatchV1Api(cluster.api).read_namespaced_cron_job("nightly", namespace).spec.schedule
        == "0 3 1 1 *"
    )

    code, out, err = run("schedules", "delete", "nightly")
    assert (code, out) == (0, "schedule nightly deleted; its runs are deleted with it\n"), err
    code, _, err = run("schedules", "get", "nightly")
    assert code == 3
    assert f"jobscheduler schedules list -n {namespace}" in err
    assert run("schedules", "create", "x", "--cron", "not cron", "timer", *TIMER_FLAGS)[0] == 2
    assert run("schedules", "create", "x", "--cron", NEVER_SOON)[0] == 2  # no job


def test_schedules_trigger_runs_now_and_wait_follows_the_run(service: Service, namespace: str) -> None:
    created = cli(service.address, "-n", namespace, "schedules", "create", "now", "--cron", NEVER_SOON,
                  "timer", *TIMER_FLAGS, *QUICK)  # fmt: skip
    assert created.returncode == 0, created.stderr

    out = cli(service.address, "-n", namespace, "schedules", "trigger", "now", "--idempotency-key", "k1",
              "--wait", timeout=90)  # fmt: skip
    again = cli(service.address, "-n", namespace, "-o", "json", "schedules", "trigger", "now",
                "--idempotency-key", "k1")  # fmt: skip

    assert out.returncode == 0, out.stderr
    [row] = table(out.stdout)
    assert row["STATE"] == "SUCCEEDED"
    assert json.loads(again.stdout)["created"] is False
    assert json.loads(again.stdout)["status"]["job_id"] == row["JOB ID"]
    listed = cli(service.address, "-n", namespace, "list", "--schedule", "now")
    assert [r["JOB ID"] for r in table(listed.stdout)] == [row["JOB ID"]]


def test_schedules_backfill_pause_after_failures_and_buffer_one_flags(
    service: Service, namespace: str
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        out = cli(service.address, "-n", namespace, *args)
        return out.returncode, out.stdout, out.stderr

    code, _, err = run("schedules", "create", "mins", "--cron", "* * * * *", "--paused",
                       "--pause-after-failures", "4", "--concurrency", "buffer_one", "--keep-succeeded", "10",
                       "timer", *TIMER_FLAGS, *QUICK)  # fmt: skip
    assert code == 0, err
    code, out, err = run("-o", "json", "schedules", "get", "mins")
    assert code == 0, err
    got = json.loads(out)
    assert (got["spec"]["pause_after_failures"], got["spec"]["concurrency_policy"]) == (
        4,
        "CONCURRENCY_POLICY_BUFFER_ONE",
    )
    assert got["status"]["executor"] == "service"
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=3)
    span = ("--start", start.isoformat(), "--end", end.isoformat())
    code, out, err = run("schedules", "backfill", "mins", *span, "--dry-run")
    assert (code, out.split(":")[0]) == (0, "3 run times (nothing created)"), err
    code, out, err = run("schedules", "backfill", "mins", *span)
    assert code == 0, err
    assert out.splitlines()[0] == "3 runs created, 0 already there"
    code, out, err = run("-o", "json", "schedules", "backfill", "mins", *span)
    assert code == 0, err
    assert (json.loads(out)["created"], len(json.loads(out)["existing"])) == ([], 3)
    code, _, err = run(
        "schedules", "backfill", "mins", "--start", end.isoformat(), "--end", str(start.isoformat())
    )
    assert code != 0
    assert "end" in err


# -- templates -----------------------------------------------------------------------------------


def test_templates_create_update_get_list_schedule_from_and_delete(
    cluster: Cluster, service: Service, namespace: str, tmp_path: Path
) -> None:
    def run(*args: str) -> tuple[int, str, str]:
        out = cli(service.address, "-n", namespace, *args)
        return out.returncode, out.stdout, out.stderr

    code, out, err = run("templates", "create", "report", "--description", "daily report",
                         "timer", *TIMER_FLAGS, "-l", "team=a")  # fmt: skip
    assert code == 0, err
    assert table(out.split("\n\n")[0])[0]["VERSION"] == "1"
    assert "team: a" in out
    code, out, err = run("-o", "json", "templates", "update", "report", "--expected-version", "1",
                         "timer", *TIMER_FLAGS, "--duration", "120")  # fmt: skip
    assert code == 0, err
    assert (json.loads(out)["version"], json.loads(out)["job"]["timer_job"]["duration_seconds"]) == (2, 120)
    code, _, err = run("templates", "update", "report", "--expected-version", "1", "timer", *TIMER_FLAGS)
    assert code == 4, err
    assert "jobscheduler templates get report" in err

    first = yaml.safe_load(run("templates", "get", "report", "--version", "1", "-o", "yaml")[1])
    assert (first["version"], first["latest_version"], first["description"]) == (1, 2, "daily report")
    assert [(r["NAME"], r["VERSION"]) for r in table(run("templates", "list")[1])] == [("report", "2")]
    first["description"] = "from a file"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(first))
    code, out, err = run("-o", "json", "templates", "update", "report", "--file", str(tmp_path / "t.yaml"))
    assert (code, json.loads(out)["version"], json.loads(out)["description"]) == (0, 3, "from a file"), err

    code, out, err = run("-o", "json", "schedule", "from-template", "report", "--template-version", "2",
                         "--unset", "labels.team", "-l", "run=manual")  # fmt: skip
    assert code == 0, err
    job = client.BatchV1Api(cluster.api).read_namespaced_job(json.loads(out)["job_id"], namespace)
    assert job.metadata.labels["run"] == "manual"
    assert "team" not in job.metadata.labels
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["TIMER_DURATION_SECONDS"] == "120"

    assert run("templates", "delete", "report")[:2] == (0, "template report deleted, every version\n")
    code, _, err = run("templates", "get", "report")
    assert code == 3
    assert f"jobscheduler templates list -n {namespace}" in err
    assert len(jobs_in(cluster, namespace)) == 1  # jobs made from it stay


# -- the server's address ----------------------------------------------------------------------------


def test_a_malformed_server_address_is_a_usage_error_about_the_address() -> None:
    out = cli("localhost:notaport", "status", "job-x")
    from_env = cli(None, "status", "job-x", env={"JOBSCHEDULER_SERVER": "localhost:99999"})

    assert out.returncode == from_env.returncode == 2
    assert out.stderr.splitlines()[0] == (
        "jobscheduler: --server localhost:notaport: the port 'notaport' is not a number from 1 to 65535"
    )
    assert "$JOBSCHEDULER_SERVER localhost:99999" in from_env.stderr
    assert "Kubernetes" not in out.stderr + from_env.stderr


def test_a_host_that_does_not_resolve_gets_a_hint_about_the_address() -> None:
    out = cli("nosuchhost.invalid:50054", "status", "job-x")

    assert out.returncode == 5
    assert "cannot resolve the address nosuchhost.invalid:50054" in out.stderr
    assert "Kubernetes" not in out.stderr
