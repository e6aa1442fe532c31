"""Settings.from_env: the documented defaults, how each variable is parsed, and that a bad value
fails start-up with a message naming both the variable and the value; docs/configuration.md,
generated from the fields' docstrings, lists every variable the service reads."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from jobscheduler.domain.config import SecuritySettings, Settings, parse_bool, parse_number
from jobscheduler.domain.errors import ConfigError
from tests.conftest import ROOT

# Every variable from_env reads; cleared before the test that reads the real environment.
VARIABLES = (
    "GRPC_PORT",
    "GRPC_HOST",
    "K8S_NAMESPACE",
    "IN_CLUSTER",
    "KUBECONFIG",
    "POD_NAME",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TIMER_IMAGE",
    "TIMER_COMMAND",
    "WORKER_IMAGE",
    "DEFAULT_CPU_REQUEST",
    "DEFAULT_MEMORY_REQUEST",
    "MAX_TIMER_DURATION_SECONDS",
    "DEFAULT_TTL_SECONDS_AFTER_FINISHED",
    "METRICS_PORT",
    "SHUTDOWN_GRACE_SECONDS",
    "HEALTH_INTERVAL_SECONDS",
    "KUBE_TIMEOUT_SECONDS",
    "WATCH_NAMESPACES",
    "MAX_WATCH_STREAMS",
)


DOCUMENTED_DEFAULTS: dict[str, Any] = {
    "grpc_port": 50054,
    "grpc_host": "[::]",
    "namespace": "default",
    "in_cluster": True,
    "kubeconfig": None,
    "pod_name": None,  # the host name names the replica
    "log_level": "info",
    "log_format": "json",
    "timer_image": "timer-service:latest",
    "timer_command": ("jobscheduler-timer",),
    "worker_image": "jobscheduler:latest",
    "default_cpu_request": "100m",
    "default_memory_request": "64Mi",
    "max_timer_duration_seconds": 86400,
    "default_ttl_seconds_after_finished": 86400,
    "metrics_port": 8080,
    "shutdown_grace_seconds": 20.0,
    "health_interval_seconds": 2.0,
    "kube_timeout_seconds": 10.0,
    "kube_startup_wait_seconds": 60.0,
    "watch_namespaces": ("default",),  # follows K8S_NAMESPACE
    "max_watch_streams": 128,
    "allowed_images": (),
    "allowed_notify_urls": (),
    "notify_give_up_seconds": 3600.0,
    "allowed_namespaces": (),
    "default_queue": "",
    "schedule_rate_per_caller": 0.0,
    "schedule_burst_per_caller": 0,
    "max_active_jobs_per_caller": 0,
    "min_schedule_interval_seconds": 60,
    "schedule_loop": True,
    "schedule_tick_seconds": 1.0,
    "backfill_max_runs": 100,
    "leader_lease_seconds": 15.0,
    "default_pending_timeout_seconds": 0,  # off: Kubernetes itself never fails a pending pod
    "template_history_limit": 20,
    "audit_log": "stdout",
    "otel_exporter_otlp_endpoint": None,  # tracing off
    "otel_service_name": "jobscheduler",
    "otel_traces_sampler": "parentbased_always_on",
    "otel_traces_sampler_arg": 1.0,
}


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [pytest.param(attribute, expected, id=attribute) for attribute, expected in DOCUMENTED_DEFAULTS.items()],
)
def test_empty_environment_gives_documented_default(attribute: str, expected: Any) -> None:
    assert getattr(Settings.from_env({}), attribute) == expected


def test_every_setting_has_a_documented_default_checked_here() -> None:
    assert set(DOCUMENTED_DEFAULTS) == {f.name for f in dataclasses.fields(Settings)}


def test_empty_environment_equals_class_defaults() -> None:
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        pytest.param({"GRPC_PORT": "6000"}, "grpc_port", 6000, id="grpc-port"),
        pytest.param(
            {"ALLOWED_IMAGES": " ghcr.io/acme/ , docker.io/library/busybox:*,"},
            "allowed_images",
            ("ghcr.io/acme/", "docker.io/library/busybox:*"),
            id="allowed-images-trimmed",
        ),
        pytest.param(
            {"ALLOWED_NOTIFY_URLS": "https://hooks.example.com/, http://*.svc:8080/*"},
            "allowed_notify_urls",
            ("https://hooks.example.com/", "http://*.svc:8080/*"),
            id="allowed-notify-urls",
        ),
        pytest.param({"NOTIFY_GIVE_UP_SECONDS": "30"}, "notify_give_up_seconds", 30.0, id="notify-give-up"),
        pytest.param({"ALLOWED_NAMESPACES": "team-*,ops"}, "allowed_namespaces", ("team-*", "ops"), id="ns"),
        pytest.param({"DEFAULT_QUEUE": " team-a "}, "default_queue", "team-a", id="default-queue"),
        pytest.param({"SCHEDULE_RATE_PER_CALLER": "2.5"}, "schedule_rate_per_caller", 2.5, id="rate"),
        pytest.param({"SCHEDULE_BURST_PER_CALLER": "10"}, "schedule_burst_per_caller", 10, id="burst"),
        pytest.param({"MAX_ACTIVE_JOBS_PER_CALLER": "3"}, "max_active_jobs_per_caller", 3, id="max-active"),
        pytest.param(
            {"DEFAULT_PENDING_TIMEOUT_SECONDS": "600"}, "default_pending_timeout_seconds", 600, id="pending"
        ),
        pytest.param({"TEMPLATE_HISTORY_LIMIT": "5"}, "template_history_limit", 5, id="template-history"),
        pytest.param({"BACKFILL_MAX_RUNS": "250"}, "backfill_max_runs", 250, id="backfill-max-runs"),
        pytest.param({"AUDIT_LOG": "off"}, "audit_log", "off", id="audit-off"),
        pytest.param({"AUDIT_LOG": "STDERR"}, "audit_log", "stderr", id="audit-stderr"),
        pytest.param(
            {"AUDIT_LOG": "/var/log/audit.jsonl"}, "audit_log", "/var/log/audit.jsonl", id="audit-file"
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"},
            "otel_exporter_otlp_endpoint",
            "http://jaeger:4317",
            id="otlp-endpoint",
        ),
        pytest.param({"OTEL_SERVICE_NAME": "jobs-eu"}, "otel_service_name", "jobs-eu", id="otel-service"),
        pytest.param(
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"},
            "otel_traces_sampler",
            "parentbased_traceidratio",
            id="otel-sampler",
        ),
        pytest.param({"OTEL_TRACES_SAMPLER_ARG": "0.25"}, "otel_traces_sampler_arg", 0.25, id="otel-ratio"),
        pytest.param({"GRPC_PORT": " 0 "}, "grpc_port", 0, id="grpc-port-0-free-port-whitespace-stripped"),
        pytest.param({"GRPC_PORT": "65535"}, "grpc_port", 65535, id="grpc-port-max"),
        pytest.param({"GRPC_HOST": "127.0.0.1"}, "grpc_host", "127.0.0.1", id="grpc-host"),
        pytest.param({"K8S_NAMESPACE": "team-a"}, "namespace", "team-a", id="namespace"),
        pytest.param({"IN_CLUSTER": "false"}, "in_cluster", False, id="in-cluster-false"),
        pytest.param({"IN_CLUSTER": "FALSE"}, "in_cluster", False, id="in-cluster-FALSE-upper"),
        pytest.param({"IN_CLUSTER": "0"}, "in_cluster", False, id="in-cluster-0"),
        pytest.param({"IN_CLUSTER": " no "}, "in_cluster", False, id="in-cluster-no-padded"),
        pytest.param({"IN_CLUSTER": "off"}, "in_cluster", False, id="in-cluster-off"),
        pytest.param({"IN_CLUSTER": "true"}, "in_cluster", True, id="in-cluster-true"),
        pytest.param({"IN_CLUSTER": "1"}, "in_cluster", True, id="in-cluster-1"),
        pytest.param({"IN_CLUSTER": "Yes"}, "in_cluster", True, id="in-cluster-Yes"),
        pytest.param({"IN_CLUSTER": "on"}, "in_cluster", True, id="in-cluster-on"),
        pytest.param({"KUBECONFIG": "/etc/kube/config"}, "kubeconfig", "/etc/kube/config", id="kubeconfig"),
        pytest.param({"KUBECONFIG": ""}, "kubeconfig", None, id="kubeconfig-empty-is-none"),
        pytest.param(
            {"POD_NAME": "jobscheduler-7d9f-x2v9k"}, "pod_name", "jobscheduler-7d9f-x2v9k", id="pod"
        ),
        pytest.param({"POD_NAME": " "}, "pod_name", None, id="pod-name-blank-is-none"),
        pytest.param({"LOG_LEVEL": "debug"}, "log_level", "debug", id="log-level-debug"),
        pytest.param({"LOG_LEVEL": "ERROR"}, "log_level", "error", id="log-level-upper-lowered"),
        pytest.param({"LOG_LEVEL": "warning"}, "log_level", "warn", id="log-level-warning-is-warn"),
        pytest.param({"LOG_LEVEL": "WARNING"}, "log_level", "warn", id="log-level-WARNING-is-warn"),
        pytest.param({"LOG_FORMAT": "Console"}, "log_format", "console", id="log-format-console"),
        pytest.param(
            {"TIMER_IMAGE": "reg.example/timer:1.2"}, "timer_image", "reg.example/timer:1.2", id="timer-image"
        ),
        pytest.param(
            {"WORKER_IMAGE": "reg.example/js:0.2"}, "worker_image", "reg.example/js:0.2", id="worker-image"
        ),
        pytest.param(
            {"TIMER_COMMAND": "python -m jobscheduler.workloads.timer"},
            "timer_command",
            ("python", "-m", "jobscheduler.workloads.timer"),
            id="timer-command-split-on-spaces",
        ),
        pytest.param(
            {"TIMER_COMMAND": "  run   --fast "},
            "timer_command",
            ("run", "--fast"),
            id="timer-command-repeated-spaces",
        ),
        pytest.param(
            {"TIMER_COMMAND": ""}, "timer_command", (), id="timer-command-empty-keeps-image-entrypoint"
        ),
        pytest.param({"DEFAULT_CPU_REQUEST": "250m"}, "default_cpu_request", "250m", id="cpu-request"),
        pytest.param({"DEFAULT_MEMORY_REQUEST": "1Gi"}, "default_memory_request", "1Gi", id="memory-request"),
        pytest.param(
            {"MAX_TIMER_DURATION_SECONDS": "60"}, "max_timer_duration_seconds", 60, id="max-duration"
        ),
        pytest.param(
            {"DEFAULT_TTL_SECONDS_AFTER_FINISHED": "600"}, "default_ttl_seconds_after_finished", 600, id="ttl"
        ),
        pytest.param(
            {"DEFAULT_TTL_SECONDS_AFTER_FINISHED": "0"},
            "default_ttl_seconds_after_finished",
            0,
            id="ttl-zero-deletes-at-once",
        ),
        pytest.param(
            {"DEFAULT_TTL_SECONDS_AFTER_FINISHED": ""},
            "default_ttl_seconds_after_finished",
            None,
            id="ttl-empty-keeps-forever",
        ),
        pytest.param(
            {"DEFAULT_TTL_SECONDS_AFTER_FINISHED": "  "},
            "default_ttl_seconds_after_finished",
            None,
            id="ttl-blank-keeps-forever",
        ),
        pytest.param({"METRICS_PORT": "0"}, "metrics_port", 0, id="metrics-port-0-disables"),
        pytest.param({"SHUTDOWN_GRACE_SECONDS": "2.5"}, "shutdown_grace_seconds", 2.5, id="shutdown-grace"),
        pytest.param(
            {"HEALTH_INTERVAL_SECONDS": "0.5"}, "health_interval_seconds", 0.5, id="health-interval"
        ),
        pytest.param({"KUBE_TIMEOUT_SECONDS": "30"}, "kube_timeout_seconds", 30.0, id="kube-timeout"),
        pytest.param({"KUBE_STARTUP_WAIT_SECONDS": "5"}, "kube_startup_wait_seconds", 5.0, id="startup-wait"),
    ],
)
def test_variable_is_parsed(env: dict[str, str], attribute: str, expected: Any) -> None:
    assert getattr(Settings.from_env(env), attribute) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("GRPC_PORT", "abc", id="grpc-port-not-integer"),
        pytest.param("GRPC_PORT", "70000", id="grpc-port-above-65535"),
        pytest.param("GRPC_PORT", "-1", id="grpc-port-negative"),
        pytest.param("GRPC_PORT", "50054.0", id="grpc-port-float"),
        pytest.param("METRICS_PORT", "65536", id="metrics-port-above-65535"),
        pytest.param("LOG_LEVEL", "loud", id="log-level-unknown"),
        pytest.param("LOG_FORMAT", "xml", id="log-format-unknown"),
        pytest.param("IN_CLUSTER", "maybe", id="in-cluster-not-boolean"),
        pytest.param("IN_CLUSTER", "", id="in-cluster-empty"),
        pytest.param("DEFAULT_CPU_REQUEST", "100x", id="cpu-request-bad-suffix"),
        pytest.param("DEFAULT_CPU_REQUEST", "", id="cpu-request-empty"),
        pytest.param("DEFAULT_MEMORY_REQUEST", "64 Mi", id="memory-request-inner-space"),
        pytest.param("K8S_NAMESPACE", "Bad_NS", id="namespace-not-dns-label"),
        pytest.param("K8S_NAMESPACE", "", id="namespace-empty"),
        pytest.param("K8S_NAMESPACE", "a" * 64, id="namespace-64-chars"),
        pytest.param("MAX_TIMER_DURATION_SECONDS", "0", id="max-duration-zero"),
        pytest.param("MAX_TIMER_DURATION_SECONDS", "2147483648", id="max-duration-above-int32"),
        pytest.param("DEFAULT_TTL_SECONDS_AFTER_FINISHED", "-5", id="ttl-negative"),
        pytest.param("DEFAULT_TTL_SECONDS_AFTER_FINISHED", "1d", id="ttl-not-integer"),
        pytest.param("SHUTDOWN_GRACE_SECONDS", "-1", id="shutdown-grace-negative"),
        pytest.param("SHUTDOWN_GRACE_SECONDS", "0", id="shutdown-grace-zero"),
        pytest.param("SHUTDOWN_GRACE_SECONDS", "soon", id="shutdown-grace-not-number"),
        pytest.param("HEALTH_INTERVAL_SECONDS", "0", id="health-interval-zero"),
        pytest.param("KUBE_TIMEOUT_SECONDS", "-3", id="kube-timeout-negative"),
        pytest.param("TIMER_IMAGE", "timer service:latest", id="timer-image-with-space"),
        pytest.param("TIMER_IMAGE", "timer-service:\tlatest", id="timer-image-with-tab"),
        pytest.param("TIMER_IMAGE", "", id="timer-image-empty"),
        pytest.param("WORKER_IMAGE", "js :1", id="worker-image-with-space"),
        pytest.param("WORKER_IMAGE", "", id="worker-image-empty"),
        pytest.param("SCHEDULE_RATE_PER_CALLER", "-1", id="rate-negative"),
        pytest.param("SCHEDULE_RATE_PER_CALLER", "fast", id="rate-not-a-number"),
        pytest.param("SCHEDULE_RATE_PER_CALLER", "inf", id="rate-infinite"),
        pytest.param("SCHEDULE_BURST_PER_CALLER", "-2", id="burst-negative"),
        pytest.param("MAX_ACTIVE_JOBS_PER_CALLER", "ten", id="max-active-not-an-integer"),
        pytest.param("DEFAULT_PENDING_TIMEOUT_SECONDS", "-1", id="pending-timeout-negative"),
        pytest.param("DEFAULT_PENDING_TIMEOUT_SECONDS", "10m", id="pending-timeout-not-seconds"),
        pytest.param("TEMPLATE_HISTORY_LIMIT", "0", id="template-history-zero"),
        pytest.param("BACKFILL_MAX_RUNS", "0", id="backfill-max-runs-zero"),
        pytest.param("BACKFILL_MAX_RUNS", "10001", id="backfill-max-runs-too-many"),
        pytest.param("AUDIT_LOG", "audit.log", id="audit-relative-path"),
        pytest.param("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4317", id="otlp-no-scheme"),
        pytest.param("OTEL_TRACES_SAMPLER", "sometimes", id="otel-sampler-unknown"),
        pytest.param("OTEL_TRACES_SAMPLER_ARG", "2", id="otel-ratio-above-one"),
        pytest.param("ALLOWED_IMAGES", "ghcr.io/acme/ docker.io/*", id="images-space-separated"),
        pytest.param("DEFAULT_QUEUE", "Team_A", id="default-queue-not-a-name"),
    ],
)
def test_bad_value_raises_config_error_naming_variable_and_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert variable in message
    assert repr(value) in message


def test_from_env_without_argument_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRPC_PORT", "12345")
    monkeypatch.setenv("K8S_NAMESPACE", "from-os-environ")

    settings = Settings.from_env()

    assert (settings.grpc_port, settings.namespace) == (12345, "from-os-environ")


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.grpc_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEFAULT_MEMORY_REQUEST", "0"),
        ("DEFAULT_MEMORY_REQUEST", "-1"),
        ("DEFAULT_CPU_REQUEST", "0m"),
        ("SHUTDOWN_GRACE_SECONDS", "nan"),
        ("HEALTH_INTERVAL_SECONDS", "inf"),
        ("KUBE_TIMEOUT_SECONDS", "-inf"),
    ],
)
def test_zero_negative_and_non_finite_values_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({variable: value})
    assert variable in str(err.value)
    assert value in str(err.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"K8S_NAMESPACE": "team-a"}, ("team-a",), id="follows-k8s-namespace"),
        pytest.param({"WATCH_NAMESPACES": "b, a,a"}, ("a", "b"), id="list-deduplicated-sorted"),
        pytest.param({"WATCH_NAMESPACES": "*"}, ("",), id="all-namespaces"),
        pytest.param({"WATCH_NAMESPACES": "-"}, None, id="no-cache"),
    ],
)
def test_watch_namespaces(env: dict[str, str], expected: tuple[str, ...] | None) -> None:
    assert Settings.from_env(env).watch_namespaces == expected


@pytest.mark.parametrize("value", ["Bad_NS", ",", "a,,B"])
def test_bad_watch_namespaces_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="WATCH_NAMESPACES"):
        Settings.from_env({"WATCH_NAMESPACES": value})


# -- the one boolean and the one number parser ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        (" Yes ", True),
        ("ON", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("off", False),
    ],
)
def test_parse_bool_takes_the_usual_words_in_any_case(raw: str, expected: bool) -> None:
    assert parse_bool("X", raw) is expected


@pytest.mark.parametrize("raw", ["", "maybe", "2", "y"])
def test_parse_bool_refuses_anything_else_naming_variable_and_value(raw: str) -> None:
    with pytest.raises(
        ConfigError, match=re.escape(f"SOME_FLAG={raw.strip().lower()!r}: expected true or false")
    ):
        parse_bool("SOME_FLAG", raw)


@pytest.mark.parametrize(
    ("raw", "kind", "bounds", "expected"),
    [
        pytest.param(" 7 ", int, {"low": 0, "high": 10}, 7, id="int-stripped"),
        pytest.param("0", int, {"low": 0, "high": 10}, 0, id="int-low-inclusive"),
        pytest.param("10", int, {"low": 0, "high": 10}, 10, id="int-high-inclusive"),
        pytest.param("0.5", float, {"low": 0.0, "above_low": True}, 0.5, id="float-above-zero"),
        pytest.param("0", float, {"low": 0.0}, 0.0, id="float-zero-allowed"),
        pytest.param("1e3", float, {"low": 0.0}, 1000.0, id="float-exponent"),
    ],
)
def test_parse_number_accepts_values_in_range(
    raw: str, kind: type[Any], bounds: dict[str, Any], expected: float
) -> None:
    value = parse_number("N", raw, kind, **bounds)
    assert (value, type(value)) == (expected, kind)


@pytest.mark.parametrize(
    ("raw", "kind", "bounds", "message"),
    [
        pytest.param("1.5", int, {"low": 0, "high": 10}, "N='1.5': not an integer", id="int-fraction"),
        pytest.param("11", int, {"low": 0, "high": 10}, "N='11': must be between 0 and 10", id="int-high"),
        pytest.param("-1", int, {"low": 0, "high": 10}, "N='-1': must be between 0 and 10", id="int-low"),
        pytest.param("soon", float, {"low": 0.0}, "N='soon': not a number", id="float-word"),
        pytest.param(
            "0",
            float,
            {"low": 0.0, "above_low": True},
            "N='0': must be a finite number greater than 0",
            id="zero",
        ),
        pytest.param(
            "-0.1", float, {"low": 0.0}, "N='-0.1': must be a finite number of at least 0", id="neg"
        ),
        pytest.param("nan", float, {"low": 0.0}, "N='nan': must be a finite number of at least 0", id="nan"),
        pytest.param("inf", float, {"low": 0.0}, "N='inf': must be a finite number of at least 0", id="inf"),
    ],
)
def test_parse_number_refuses_naming_variable_value_and_range(
    raw: str, kind: type[Any], bounds: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_number("N", raw, kind, **bounds)
    assert str(caught.value) == message


def test_config_has_one_boolean_and_one_number_parser() -> None:
    """Every boolean and number variable goes through parse_bool / parse_number: no other
    int(), float() or true/false word list in config.py."""
    tree = ast.parse((ROOT / "jobscheduler/domain/config.py").read_text())
    parsers = {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("parse_bool", "parse_number")
    }
    converters = [
        (node.lineno, node.func.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("int", "float")
    ]
    words = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in ("yes", "off")
    ]
    assert set(parsers) == {"parse_bool", "parse_number"}
    assert converters == []  # parse_number converts with `kind(text)`
    # "yes" in TRUE_WORDS, "off" in FALSE_WORDS, and "off" in AUDIT_STREAMS (not a boolean there:
    # AUDIT_LOG=off), nowhere else
    assert len(words) == 3


# -- docs/configuration.md ----------------------------------------------------------------------------


def configdoc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("configdoc", ROOT / "hack" / "configdoc.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["configdoc"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]+")
# Read by code that is not the service: the pod-side workloads (docs/workloads.md) and the
# command-line client (its own flags and JOBSCHEDULER_SERVER / JOBSCHEDULER_TOKEN).
NOT_THE_SERVICE = ("api", "workloads", "cli")


def variables_read_by_the_service() -> dict[str, str]:
    """Every environment variable named in jobscheduler/ outside NOT_THE_SERVICE, found in the
    code: os.environ.get/[]/setdefault, os.getenv, env.get, and in config.py any helper called
    with a variable's name first. Returns variable -> where."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "jobscheduler").rglob("*.py")):
        relative = path.relative_to(ROOT / "jobscheduler")
        if relative.parts[0] in NOT_THE_SERVICE:
            continue
        is_config = relative == Path("domain/config.py")
        for node in ast.walk(ast.parse(path.read_text())):
            name: object = None
            if isinstance(node, ast.Call) and node.args:
                func = ast.unparse(node.func)
                environ_call = re.fullmatch(r"(os\.)?(environ|env)\.(get|setdefault|pop)|(os\.)?getenv", func)
                if environ_call or is_config:
                    arg = node.args[0]
                    name = arg.value if isinstance(arg, ast.Constant) else None
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                name = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if isinstance(name, str) and ENV_NAME.fullmatch(name):
                found.setdefault(name, f"{relative}:{node.lineno}")
    return found


def documented_variables() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.M))


def test_the_scan_finds_variables_read_outside_the_settings_and_in_helpers() -> None:
    read = variables_read_by_the_service()
    # POD_NAME is read in transport/server.py; the others through config.py's helpers.
    assert {"GRPC_HOST", "KUBECONFIG", "POD_NAME", "GRPC_PORT", "REFLECTION", "TLS_CERT_FILE"} <= read.keys()
    assert "JOBSCHEDULER_SERVER" not in read  # the CLI's, documented with the CLI


def test_every_variable_the_service_reads_is_in_the_configuration_doc() -> None:
    documented = documented_variables()
    missing = {
        name: where for name, where in variables_read_by_the_service().items() if name not in documented
    }
    assert missing == {}, "add a field with a docstring to config.py, then run hack/configdoc.py"


def test_the_configuration_doc_lists_exactly_the_settings_fields() -> None:
    doc = configdoc()
    parsed = doc.variables()
    for cls in (Settings, SecuritySettings):
        assert [v.field for v in parsed[cls.__name__]] == [f.name for f in dataclasses.fields(cls)]
    assert documented_variables() == {v.name for fields in parsed.values() for v in fields}


def test_the_configuration_doc_is_what_configdoc_generates() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == configdoc().render()


def test_a_docstring_without_its_default_is_refused() -> None:
    source = 'class Settings:\n    port: int = 1\n    """PORT: the port."""\n'
    with pytest.raises(SystemExit, match="Settings.port"):
        configdoc().variables(source)


def test_every_seconds_setting_says_seconds() -> None:
    for fields in configdoc().variables().values():
        for v in fields:
            if v.field.endswith("_seconds"):
                assert "seconds" in v.meaning, v


@pytest.mark.parametrize(
    ("cls", "variable", "default"),
    [
        pytest.param(cls, v.name, v.default.strip("`"), id=v.name)
        for cls_name, cls in (("Settings", Settings), ("SecuritySettings", SecuritySettings))
        for v in configdoc().variables()[cls_name]
        if re.fullmatch(r"`[^`]*`", v.default)
    ],
)
def test_a_documented_default_set_explicitly_changes_nothing(cls: Any, variable: str, default: str) -> None:
    assert cls.from_env({variable: default}) == cls.from_env({})


def test_documented_unset_defaults_are_unset() -> None:
    for cls_name, cls in (("Settings", Settings), ("SecuritySettings", SecuritySettings)):
        defaults = cls()
        for v in configdoc().variables()[cls_name]:
            if v.default.startswith("unset"):
                assert getattr(defaults, v.field) in (None, ()), v
