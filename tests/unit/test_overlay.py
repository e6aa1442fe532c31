"""How a template's job and a ScheduleJob request combine (jobscheduler.transport.overlay), and how a
template's versions are kept (jobscheduler.app.templates.retain): pure code, no cluster."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf.json_format import MessageToDict

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.app.templates import TemplateVersion, kept_versions, retain
from jobscheduler.domain.errors import FailedPreconditionError, InvalidArgumentError
from jobscheduler.domain.registry import Registry
from jobscheduler.transport.overlay import (
    apply_template,
    check_not_templated,
    check_template_job,
    fingerprint,
    from_template,
    is_templated,
    job_from_json,
    job_to_json,
)

TIMER = pb.TimerJob(
    duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053", env={"A": "1", "B": "2"}
)


def template_job(**fields: object) -> pb.ScheduleJobRequest:
    job = pb.ScheduleJobRequest(
        name="report",
        labels={"team": "a", "tier": "batch"},
        annotations={"note": "x"},
        resources=pb.Resources(cpu_request="200m", memory_limit="1Gi"),
        backoff_limit=3,
        suspend=True,
        timer_job=TIMER,
    )
    for key, value in fields.items():
        setattr(job, key, value)
    return job


def merged(base: pb.ScheduleJobRequest, **request: object) -> pb.ScheduleJobRequest:
    return apply_template(base, pb.ScheduleJobRequest(template="tpl", **request), template="tpl")  # type: ignore[arg-type]


def as_dict(message: pb.ScheduleJobRequest) -> dict[str, object]:
    return MessageToDict(message, preserving_proto_field_name=True)


def test_a_request_naming_only_the_template_gets_its_job_unchanged() -> None:
    base = template_job()
    assert merged(base) == base


def test_the_template_fields_do_not_reach_the_merged_request() -> None:
    out = merged(template_job(), template_version=2, template_unset=["annotations"])
    assert (out.template, out.template_version, list(out.template_unset)) == ("", 0, [])


def test_maps_merge_key_by_key_and_the_caller_wins() -> None:
    out = merged(template_job(), labels={"tier": "web", "run": "7"})
    assert dict(out.labels) == {"team": "a", "tier": "web", "run": "7"}
    assert dict(out.annotations) == {"note": "x"}


def test_set_scalars_replace_and_unset_ones_keep_the_templates() -> None:
    out = merged(template_job(), name="adhoc", timer_job=pb.TimerJob(duration_seconds=5))
    assert out.name == "adhoc"
    assert out.timer_job.duration_seconds == 5
    # the parameters the caller left alone are the template's
    assert (out.timer_job.timer_name, out.timer_job.control_plane_endpoint) == ("t", "http://cp:50053")
    assert dict(out.timer_job.env) == {"A": "1", "B": "2"}
    assert out.backoff_limit == 3


def test_an_optional_field_set_to_zero_overrides() -> None:
    out = merged(template_job(), backoff_limit=0)
    assert out.HasField("backoff_limit")
    assert out.backoff_limit == 0


def test_nested_messages_merge_field_by_field() -> None:
    out = merged(template_job(), resources=pb.Resources(cpu_limit="1"))
    assert (out.resources.cpu_request, out.resources.cpu_limit, out.resources.memory_limit) == (
        "200m",
        "1",
        "1Gi",
    )


def test_maps_inside_the_job_type_merge() -> None:
    out = merged(template_job(), timer_job=pb.TimerJob(env={"B": "3", "C": "4"}))
    assert dict(out.timer_job.env) == {"A": "1", "B": "3", "C": "4"}


def test_repeated_fields_are_replaced_whole() -> None:
    base = pb.ScheduleJobRequest(
        container_job=pb.ContainerJob(image="busybox", command=["sh", "-c"], args=["a"])
    )
    out = merged(base, container_job=pb.ContainerJob(args=["b", "c"]))
    assert (list(out.container_job.command), list(out.container_job.args)) == (["sh", "-c"], ["b", "c"])


def test_the_job_name_defaults_to_the_templates_name() -> None:
    out = merged(pb.ScheduleJobRequest(timer_job=TIMER))
    assert out.name == "tpl"


def test_another_job_type_is_refused_naming_it() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        merged(template_job(), container_job=pb.ContainerJob(image="busybox"))
    assert caught.value.field == "container_job"
    assert "timer_job" in caught.value.detail


def test_the_same_type_sent_as_generic_job_is_another_member_and_refused() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        merged(template_job(), generic_job=pb.GenericJob(type="timer"))
    assert caught.value.field == "generic_job"


def test_generic_params_merge_objects_recursively_and_replace_the_rest() -> None:
    base = pb.ScheduleJobRequest(generic_job=pb.GenericJob(type="sleep"))
    base.generic_job.params.update({"seconds": 5, "opts": {"a": 1, "b": 2}, "tags": ["x", "y"]})
    override = pb.GenericJob()
    override.params.update({"opts": {"b": 3}, "tags": ["z"], "extra": True})
    out = merged(base, generic_job=override)
    assert out.generic_job.type == "sleep"
    assert MessageToDict(out.generic_job.params) == {
        "seconds": 5,
        "opts": {"a": 1, "b": 3},
        "tags": ["z"],
        "extra": True,
    }


def test_generic_job_type_cannot_be_changed() -> None:
    base = pb.ScheduleJobRequest(generic_job=pb.GenericJob(type="sleep"))
    with pytest.raises(InvalidArgumentError) as caught:
        merged(base, generic_job=pb.GenericJob(type="other"))
    assert caught.value.field == "generic_job.type"
    assert merged(base, generic_job=pb.GenericJob(type="sleep")).generic_job.type == "sleep"


def test_the_template_is_not_changed_by_merging() -> None:
    base = template_job()
    before = base.SerializeToString(deterministic=True)
    merged(base, labels={"z": "1"}, template_unset=["suspend"], timer_job=pb.TimerJob(env={"Q": "1"}))
    assert base.SerializeToString(deterministic=True) == before


@pytest.mark.parametrize(
    ("path", "check"),
    [
        ("suspend", lambda out: not out.suspend),
        ("backoff_limit", lambda out: not out.HasField("backoff_limit")),
        ("labels", lambda out: dict(out.labels) == {}),
        ("labels.team", lambda out: dict(out.labels) == {"tier": "batch"}),
        ("timer_job.env.A", lambda out: dict(out.timer_job.env) == {"B": "2"}),
        ("timer_job.env", lambda out: dict(out.timer_job.env) == {}),
        ("resources.memory_limit", lambda out: out.resources.memory_limit == ""),
        ("labels.not-there", lambda out: dict(out.labels) == {"team": "a", "tier": "batch"}),
    ],
)
def test_template_unset_removes_a_field_or_a_key(path: str, check: object) -> None:
    out = merged(template_job(), template_unset=[path])
    assert check(out)  # type: ignore[operator]


def test_template_unset_map_keys_may_hold_dots_and_slashes() -> None:
    base = template_job()
    base.labels["app.kubernetes.io/name"] = "r"
    out = merged(base, template_unset=["labels.app.kubernetes.io/name"])
    assert dict(out.labels) == {"team": "a", "tier": "batch"}


def test_template_unset_of_a_generic_parameter() -> None:
    base = pb.ScheduleJobRequest(generic_job=pb.GenericJob(type="sleep"))
    base.generic_job.params.update({"seconds": 5, "verbose": True})
    out = merged(base, template_unset=["generic_job.params.verbose"])
    assert MessageToDict(out.generic_job.params) == {"seconds": 5}


def test_template_unset_of_the_job_type_lets_the_caller_pick_another() -> None:
    out = merged(template_job(), template_unset=["timer_job"], container_job=pb.ContainerJob(image="busybox"))
    assert out.WhichOneof("job_type") == "container_job"
    assert dict(out.labels) == {"team": "a", "tier": "batch"}


def test_unset_then_override_sets_the_callers_value() -> None:
    out = merged(template_job(), template_unset=["labels"], labels={"only": "this"})
    assert dict(out.labels) == {"only": "this"}


@pytest.mark.parametrize(
    ("paths", "field", "words"),
    [
        (["nope"], "template_unset[0]", "has no field 'nope'"),
        (["suspend", "timer_job.nope"], "template_unset[1]", "TimerJob has no field 'nope'"),
        (["name.x"], "template_unset[0]", "no fields or keys"),
        (["request_id"], "template_unset[0]", "never sets"),
        ([""], "template_unset[0]", "has no field ''"),
    ],
)
def test_bad_template_unset_paths_are_refused_naming_the_entry(
    paths: list[str], field: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        merged(template_job(), template_unset=paths)
    assert caught.value.field == field
    assert words in caught.value.detail


@pytest.mark.parametrize("name", ["request_id", "dry_run", "secret_env", "template", "template_version"])
def test_a_templates_job_may_not_set(name: str) -> None:
    job = template_job()
    if name == "secret_env":
        job.secret_env["TOKEN"] = "s"
    elif name == "dry_run":
        job.dry_run = True
    elif name == "template_version":
        job.template_version = 1
    else:
        setattr(job, name, "x")
    with pytest.raises(InvalidArgumentError) as caught:
        check_template_job(job)
    assert caught.value.field == name


def test_a_schedules_job_cannot_name_a_template() -> None:
    check_not_templated(template_job())
    with pytest.raises(InvalidArgumentError) as caught:
        check_not_templated(pb.ScheduleJobRequest(template="x"))
    assert caught.value.field == "template"


def test_is_templated() -> None:
    assert not is_templated(template_job())
    assert is_templated(pb.ScheduleJobRequest(template="x"))
    assert is_templated(pb.ScheduleJobRequest(template_version=2))
    assert is_templated(pb.ScheduleJobRequest(template_unset=["suspend"]))


def test_the_fingerprint_is_of_the_request_as_sent() -> None:
    request = pb.ScheduleJobRequest(template="tpl", request_id="r", labels={"a": "1"}, secret_env={"K": "v1"})
    same = pb.ScheduleJobRequest()
    same.CopyFrom(request)
    same.dry_run = True
    same.secret_env["K"] = "v2"  # secret values never count
    assert fingerprint(request) == fingerprint(same)
    for change in ({"labels": {"a": "2"}}, {"template_version": 1}, {"template": "other"}):
        other = pb.ScheduleJobRequest()
        other.CopyFrom(request)
        for key, value in change.items():
            if isinstance(value, dict):
                getattr(other, key).update(value)
            else:
                setattr(other, key, value)
        assert fingerprint(other) != fingerprint(request), change


def stored(body: dict[str, object], *, version: int = 2) -> TemplateVersion:
    return TemplateVersion(
        name="tpl",
        namespace="ns",
        version=version,
        description="",
        body=body,
        job_type="timer",
        updated_at=datetime.now(UTC),
        updated_by="me",
        latest_version=version,
        versions=(version,),
        created_at=None,
    )


def test_from_template_records_the_template_and_its_version() -> None:
    request = pb.ScheduleJobRequest(template="tpl", labels={"x": "y"})
    job = from_template(stored(job_to_json(template_job())), request, registry=Registry.from_entry_points())
    assert (job.template, job.template_version, job.name) == ("tpl", 2, "report")
    assert job.fingerprint == fingerprint(request)
    assert dict(job.labels) == {"team": "a", "tier": "batch", "x": "y"}


def test_a_stored_job_round_trips_through_json() -> None:
    job = template_job(active_deadline_seconds=600)
    assert job_from_json(stored(json.loads(json.dumps(job_to_json(job))))) == job


def test_a_stored_job_with_unknown_fields_is_not_silently_cut() -> None:
    with pytest.raises(FailedPreconditionError) as caught:
        job_from_json(stored({"name": "x", "from_the_future": 1}))
    assert "version 2 of template 'tpl'" in str(caught.value)


# -- versions kept ----------------------------------------------------------------------------------


def test_kept_versions_reads_only_version_keys() -> None:
    assert kept_versions({"v10": "", "v2": "", "v1": "", "x": "", "v": "", "v03": "", "vx": ""}) == [1, 2, 10]


def test_retain_keeps_the_newest_up_to_the_limit() -> None:
    data = {f"v{n}": "{}" for n in range(1, 26)}
    assert kept_versions(retain(data, limit=20)) == list(range(6, 26))
    assert kept_versions(retain(data, limit=1)) == [25]


def test_retain_drops_old_versions_that_would_overflow_the_configmap() -> None:
    data = {"v1": "a" * 400, "v2": "b" * 400, "v3": "c" * 400}
    assert kept_versions(retain(data, limit=20, max_bytes=1000)) == [2, 3]
    # the newest is kept whatever its size
    assert kept_versions(retain(data, limit=20, max_bytes=10)) == [3]
