"""TLS, mutual TLS and bearer tokens on `jobscheduler serve` run as its own process against the
real cluster, called through real channels (and, to read the certificate a handshake presents,
through the ssl module: gRPC's TLS is plain TLS with ALPN h2). Certificate and token files are
changed on disk while the server runs, the way the kubelet updates a Secret volume."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from kubernetes import client

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.integration.conftest import ServeProcess, free_port, start_serve
from tests.integration.test_cli import cli
from tests.unit.test_security import Pki

TIMER = pb.TimerJob(duration_seconds=60, timer_name="t", control_plane_endpoint="http://cp:50053")
FOREVER = {"sim.jobscheduler.io/duration": "10m"}
UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@contextmanager
def serving(cluster: Cluster, tmp_path: Path, **env: str) -> Iterator[ServeProcess]:
    server = start_serve(cluster, tmp_path, port=free_port(), env=env)
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=30)


def health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def tls_channel(port: int, pki: Pki, client_cert: tuple[Path, Path] | None = None) -> grpc.Channel:
    cert, key = (client_cert[0].read_bytes(), client_cert[1].read_bytes()) if client_cert else (None, None)
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes(), private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def refused(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""


def served_certificate(port: int, pki: Pki) -> tuple[str, int]:
    """(CN, serial) of the certificate a new TLS handshake with the port presents."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    subject = dict(rdn[0] for rdn in cert["subject"])  # type: ignore[misc]
    return str(subject["commonName"]), int(str(cert["serialNumber"]), 16)


class SecretVolume:
    """A directory laid out as the kubelet lays out a mounted Secret: each key is a symlink
    through `..data` into a versioned directory, and an update swaps `..data` atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self._versions = 0

    def path(self, key: str) -> Path:
        return self.root / key

    def update(self, files: dict[str, bytes]) -> None:
        self._versions += 1
        version = self.root / f"..v{self._versions}"
        version.mkdir()
        for key, data in files.items():
            (version / key).write_bytes(data)
        link = self.root / "..data_tmp"
        link.symlink_to(version.name)
        link.replace(self.root / "..data")
        for key in files:
            if not self.path(key).is_symlink():
                self.path(key).symlink_to(f"..data/{key}")


def certificate_files(pki: Pki, cn: str) -> dict[str, bytes]:
    cert, key = pki.issue(cn)
    return {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes(), "ca.crt": pki.ca.read_bytes()}


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_serves_tls_clients_and_refuses_plaintext(
    cluster: Cluster, namespace: str, tmp_path: Path, pki: Pki
) -> None:
    cert, key = pki.issue("tls-server")
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "K8S_NAMESPACE": namespace}
    (tmp_path / "untrusted").mkdir()
    untrusted = Pki(tmp_path / "untrusted", "untrusted")

    with serving(cluster, tmp_path, **env) as server:
        with tls_channel(server.port, pki) as channel:
            assert health(channel) == health_pb2.HealthCheckResponse.SERVING
            listed = pb_grpc.JobSchedulerStub(channel).ListJobs(pb.ListJobsRequest(), timeout=10)
            assert list(listed.jobs) == []
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plaintext:
            assert refused(lambda: health(plaintext))[0] == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, untrusted) as wrong_ca:
            assert refused(lambda: health(wrong_ca))[0] == grpc.StatusCode.UNAVAILABLE
        cli_ok = cli(f"127.0.0.1:{server.port}", "list", "--ca-cert", str(pki.ca), "-n", namespace)
        assert cli_ok.returncode == 0, cli_ok.stderr

    assert '"tls": "on"' in server.output()


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(
    cluster: Cluster, tmp_path: Path, pki: Pki
) -> None:
    cert, key = pki.issue("mtls-server")
    good = pki.issue("good-client", client=True)
    (tmp_path / "rogue").mkdir()
    rogue = Pki(tmp_path / "rogue", "rogue").issue("rogue-client", client=True)
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "TLS_CLIENT_CA_FILE": str(pki.ca)}

    with serving(cluster, tmp_path, **env) as server:
        with tls_channel(server.port, pki) as without:
            assert refused(lambda: health(without))[0] == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, pki, rogue) as other_ca:
            assert refused(lambda: health(other_ca))[0] == grpc.StatusCode.UNAVAILABLE
        with tls_channel(server.port, pki, good) as admitted:
            assert health(admitted) == health_pb2.HealthCheckResponse.SERVING
        tls = ("--ca-cert", str(pki.ca), "--cert", str(good[0]), "--key", str(good[1]))
        cli_ok = cli(f"127.0.0.1:{server.port}", "health", *tls)
        cli_without = cli(f"127.0.0.1:{server.port}", "health", "--ca-cert", str(pki.ca))

    assert (cli_ok.returncode, cli_ok.stdout) == (0, "SERVING\n"), cli_ok.stderr
    assert cli_without.returncode == 5
    assert '"tls": "mutual"' in server.output()


def test_a_rotated_certificate_is_served_to_new_connections_without_a_restart(
    cluster: Cluster, tmp_path: Path, pki: Pki
) -> None:
    volume = SecretVolume(tmp_path / "tls")
    volume.update(certificate_files(pki, "served-1"))
    env = {"TLS_CERT_FILE": str(volume.path("tls.crt")), "TLS_KEY_FILE": str(volume.path("tls.key"))}

    with serving(cluster, tmp_path, **env) as server, tls_channel(server.port, pki) as before:
        first_cn, first_serial = served_certificate(server.port, pki)
        assert health(before) == health_pb2.HealthCheckResponse.SERVING

        volume.update(certificate_files(pki, "served-2"))
        second_cn, second_serial = wait_until(
            "the rotated certificate",
            lambda: (c if (c := served_certificate(server.port, pki))[0] == "served-2" else None),
            timeout=15,
        )
        with tls_channel(server.port, pki) as after:
            assert health(after) == health_pb2.HealthCheckResponse.SERVING
        assert health(before) == health_pb2.HealthCheckResponse.SERVING  # open connections carry on

        # Half-written or broken files: the server keeps presenting the last good certificate.
        broken = certificate_files(pki, "served-broken")
        broken["tls.crt"] = b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"
        volume.update(broken)
        time.sleep(2.5)
        still = served_certificate(server.port, pki)

        volume.update(certificate_files(pki, "served-3"))
        third = wait_until(
            "the certificate after the broken one",
            lambda: (c if (c := served_certificate(server.port, pki))[0] == "served-3" else None),
            timeout=15,
        )
        assert server.proc.poll() is None  # the same process throughout

    assert first_cn == "served-1"
    assert second_cn == "served-2"
    assert second_serial != first_serial
    assert still == (second_cn, second_serial)
    assert third[0] == "served-3"
    log = server.output()
    assert "tls files not reloaded; keeping the current certificate" in log
    assert f"TLS_CERT_FILE={str(volume.path('tls.crt'))!r}" in log


# -- start-up refused --------------------------------------------------------------------------------


def serve_exit(cluster: Cluster, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobscheduler.cli.main", "serve"],
        env={
            **os.environ,
            "IN_CLUSTER": "false",
            "KUBECONFIG": str(cluster.kubeconfig),
            "GRPC_PORT": str(free_port()),
            "METRICS_PORT": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("case", "variable"),
    [
        ("cert file missing", "TLS_CERT_FILE"),
        ("cert without key", "TLS_CERT_FILE"),
        ("key of another cert", "TLS_KEY_FILE"),
        ("client CA not PEM", "TLS_CLIENT_CA_FILE"),
        ("tokens file missing", "AUTH_TOKENS_FILE"),
        ("tokens file with an unknown verb", "AUTH_TOKENS_FILE"),
        ("reflection not a boolean", "REFLECTION"),
    ],
)
def test_unusable_security_settings_stop_start_up_with_exit_2_naming_the_variable(
    cluster: Cluster, tmp_path: Path, pki: Pki, case: str, variable: str
) -> None:
    cert, key = pki.issue("startup")
    _, other_key = pki.issue("startup-other")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("- {name: ci, token: 0123456789abcdefgh, namespaces: ['*'], verbs: [write]}\n")
    env = {
        "cert file missing": {"TLS_CERT_FILE": str(tmp_path / "nope.crt"), "TLS_KEY_FILE": str(key)},
        "cert without key": {"TLS_CERT_FILE": str(cert)},
        "key of another cert": {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(other_key)},
        "client CA not PEM": {
            "TLS_CERT_FILE": str(cert),
            "TLS_KEY_FILE": str(key),
            "TLS_CLIENT_CA_FILE": str(tokens),
        },
        "tokens file missing": {"AUTH_TOKENS_FILE": str(tmp_path / "nope.yaml")},
        "tokens file with an unknown verb": {"AUTH_TOKENS_FILE": str(tokens)},
        "reflection not a boolean": {"REFLECTION": "sometimes"},
    }[case]

    out = serve_exit(cluster, env)

    assert out.returncode == 2, out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"jobscheduler: bad configuration: {variable}"), line
    assert "0123456789abcdefgh" not in out.stderr + out.stdout
    assert '"serving"' not in out.stdout


# -- bearer tokens ---------------------------------------------------------------------------------


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class TokenServer:
    server: ServeProcess
    tokens_file: Path
    tokens: dict[str, str]
    namespace: str
    channel: grpc.Channel

    @property
    def stub(self) -> pb_grpc.JobSchedulerStub:
        return pb_grpc.JobSchedulerStub(self.channel)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def as_(self, name: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.tokens[name])


def tokens_yaml(namespace: str, tokens: dict[str, str]) -> str:
    """admin: everything everywhere (the token itself); reader: read in `namespace` (only the
    SHA-256 of its token); team: everything in `namespace`."""
    scopes = {
        "admin": ('["*"]', "[schedule, read, cancel]"),
        "reader": (f"[{namespace}]", "[read]"),
        "team": (f"[{namespace}]", "[schedule, read, cancel]"),
    }
    entries = []
    for name, token in tokens.items():
        namespaces, verbs = scopes.get(name, (f"[{namespace}]", "[read]"))
        secret = (
            f"token_sha256: {hashlib.sha256(token.encode()).hexdigest()}"
            if name == "reader"
            else f"token: {token}"
        )
        entries.append(f"- name: {name}\n  {secret}\n  namespaces: {namespaces}\n  verbs: {verbs}\n")
    return "".join(entries)


def write_tokens(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextmanager
def token_serving(cluster: Cluster, namespace: str, tmp_path: Path, **env: str) -> Iterator[TokenServer]:
    tokens = {"admin": new_token(), "reader": new_token(), "team": new_token()}
    tokens_file = tmp_path / "tokens.yaml"
    write_tokens(tokens_file, tokens_yaml(namespace, tokens))
    with (
        serving(
            cluster, tmp_path, AUTH_TOKENS_FILE=str(tokens_file), K8S_NAMESPACE=namespace, **env
        ) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        yield TokenServer(server, tokens_file, tokens, namespace, channel)


@pytest.fixture
def secured(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[TokenServer]:
    with token_serving(cluster, namespace, tmp_path) as server:
        yield server


def schedule(stub: pb_grpc.JobSchedulerStub, metadata: Any, namespace: str = "", name: str = "j") -> str:
    request = pb.ScheduleJobRequest(name=name, namespace=namespace, timer_job=TIMER, annotations=FOREVER)
    return stub.ScheduleJob(request, timeout=10, metadata=metadata).job_id


def jobs_in(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items)


def every_rpc(stub: pb_grpc.JobSchedulerStub, namespace: str) -> dict[str, Callable[[Any], Any]]:
    """Each JobScheduler RPC with a request that would be valid, as f(metadata)."""
    return {
        "ScheduleJob": lambda md: stub.ScheduleJob(
            pb.ScheduleJobRequest(namespace=namespace, timer_job=TIMER), timeout=10, metadata=md
        ),
        "GetJobStatus": lambda md: stub.GetJobStatus(
            pb.GetJobStatusRequest(namespace=namespace, job_id="job-x"), timeout=10, metadata=md
        ),
        "ListJobs": lambda md: stub.ListJobs(
            pb.ListJobsRequest(namespace=namespace), timeout=10, metadata=md
        ),
        "CancelJob": lambda md: stub.CancelJob(
            pb.CancelJobRequest(namespace=namespace, job_id="job-x"), timeout=10, metadata=md
        ),
        "ResumeJob": lambda md: stub.ResumeJob(
            pb.ResumeJobRequest(namespace=namespace, job_id="job-x"), timeout=10, metadata=md
        ),
        "WatchJob": lambda md: next(
            stub.WatchJob(pb.WatchJobRequest(namespace=namespace, job_id="job-x"), timeout=10, metadata=md)
        ),
        "WatchJobs": lambda md: next(
            stub.WatchJobs(pb.WatchJobsRequest(namespace=namespace), timeout=10, metadata=md)
        ),
    }


def test_without_a_valid_token_every_rpc_is_unauthenticated_and_nothing_is_created(
    cluster: Cluster, secured: TokenServer
) -> None:
    admin = secured.tokens["admin"]
    bad_headers: list[Any] = [
        None,
        bearer(new_token()),
        bearer(admin[:-1]),
        (("authorization", f"Basic {admin}"),),
        (("authorization", admin),),
        (("x-api-key", admin),),
    ]

    for method, call in every_rpc(secured.stub, secured.namespace).items():
        for metadata in bad_headers:
            assert refused(lambda: call(metadata)) == UNAUTHENTICATED, (method, metadata)  # noqa: B023

    assert jobs_in(cluster, secured.namespace) == []


def test_a_read_only_token_reads_but_cannot_schedule_cancel_or_resume(
    cluster: Cluster, secured: TokenServer
) -> None:
    stub, ns = secured.stub, secured.namespace
    job_id = schedule(stub, secured.as_("admin"), ns, name="by-admin")
    reader = secured.as_("reader")

    status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10, metadata=reader)
    listed = stub.ListJobs(pb.ListJobsRequest(), timeout=10, metadata=reader)
    first = next(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=10, metadata=reader))
    scheduling = refused(lambda: schedule(stub, reader, ns, name="by-reader"))
    cancelling = refused(
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10, metadata=reader)
    )
    resuming = refused(
        lambda: stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id), timeout=10, metadata=reader)
    )

    assert status.status.job_id == job_id
    assert [j.job_id for j in listed.jobs] == [job_id]
    assert first.status.job_id == job_id
    assert scheduling == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"token 'reader' does not allow 'schedule' in namespace {ns!r}",
    )
    assert cancelling == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"token 'reader' does not allow 'cancel' in namespace {ns!r}",
    )
    assert resuming[0] == grpc.StatusCode.PERMISSION_DENIED
    assert [j.metadata.name for j in jobs_in(cluster, ns)] == [job_id]
    again = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10, metadata=reader)
    assert again.status.state != pb.JOB_STATE_CANCELLED


def test_a_namespace_scoped_token_is_refused_in_another_namespace(
    cluster: Cluster, secured: TokenServer
) -> None:
    stub, ns, team = secured.stub, secured.namespace, secured.as_("team")

    mine = schedule(stub, team, ns, name="mine")
    by_default = schedule(stub, team, "", name="defaulted")  # "": K8S_NAMESPACE, which is ns
    elsewhere = refused(lambda: schedule(stub, team, "default", name="elsewhere"))
    reading_elsewhere = refused(
        lambda: stub.ListJobs(pb.ListJobsRequest(namespace="default"), timeout=10, metadata=team)
    )

    assert elsewhere == (
        grpc.StatusCode.PERMISSION_DENIED,
        "token 'team' does not allow 'schedule' in namespace 'default'",
    )
    assert reading_elsewhere[0] == grpc.StatusCode.PERMISSION_DENIED
    assert {j.metadata.name for j in jobs_in(cluster, ns)} == {mine, by_default}
    named = [
        j for j in jobs_in(cluster, "default") if j.metadata.labels.get("jobscheduler.io/name") == "elsewhere"
    ]
    assert named == []


def list_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [response] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    return {s.name for s in response.list_services_response.service}


def test_health_and_reflection_need_no_token(secured: TokenServer) -> None:
    assert health(secured.channel) == health_pb2.HealthCheckResponse.SERVING
    assert "jobscheduler.JobScheduler" in list_services(secured.channel)
    cli_health = cli(secured.address, "health")
    assert (cli_health.returncode, cli_health.stdout) == (0, "SERVING\n")


def test_reflection_false_turns_reflection_off(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    with token_serving(cluster, namespace, tmp_path, REFLECTION="false") as secured:
        code, _ = refused(lambda: list_services(secured.channel))
        assert health(secured.channel) == health_pb2.HealthCheckResponse.SERVING

    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert '"reflection": false' in secured.server.output()


def test_an_edited_tokens_file_takes_effect_without_a_restart(secured: TokenServer) -> None:
    stub = secured.stub

    def read_as(token: str) -> grpc.StatusCode:
        try:
            stub.ListJobs(pb.ListJobsRequest(), timeout=10, metadata=bearer(token))
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    added = new_token()
    assert read_as(added) == grpc.StatusCode.UNAUTHENTICATED
    tokens = {"admin": secured.tokens["admin"], "added": added}  # and the reader is gone
    write_tokens(secured.tokens_file, tokens_yaml(secured.namespace, tokens))

    wait_until("the added token is accepted", lambda: read_as(added) == grpc.StatusCode.OK, timeout=10)
    assert read_as(secured.tokens["reader"]) == grpc.StatusCode.UNAUTHENTICATED

    write_tokens(secured.tokens_file, "- name: broken\n  verbs: [\n")
    time.sleep(2.5)
    assert read_as(added) == grpc.StatusCode.OK  # a broken file keeps the tokens loaded before
    assert secured.server.proc.poll() is None
    log = secured.server.output()
    assert "tokens file reloaded" in log
    assert "tokens file not reloaded; keeping the previous tokens" in log


def test_the_cli_sends_its_token_from_the_flag_or_the_environment(secured: TokenServer) -> None:
    address, ns = secured.address, secured.namespace
    timer = ("--duration", "60", "--timer-name", "t", "--endpoint", "http://cp:50053")

    scheduled = cli(address, "schedule", "timer", *timer, "--token", secured.tokens["team"])
    listed = cli(address, "list", env={"JOBSCHEDULER_TOKEN": secured.tokens["reader"]})
    anonymous = cli(address, "list")
    denied = cli(address, "schedule", "timer", *timer, env={"JOBSCHEDULER_TOKEN": secured.tokens["reader"]})

    assert scheduled.returncode == 0, scheduled.stderr
    assert listed.returncode == 0, listed.stderr
    assert "timer" in listed.stdout
    assert anonymous.returncode == 1
    assert anonymous.stderr.splitlines() == [
        "jobscheduler: UNAUTHENTICATED: missing or invalid bearer token",
        "  hint: the server wants a bearer token: pass --token, or set $JOBSCHEDULER_TOKEN",
    ]
    assert denied.returncode == 1
    assert denied.stderr.startswith(
        f"jobscheduler: PERMISSION_DENIED: token 'reader' does not allow 'schedule' in namespace {ns!r}"
    )
    for out in (scheduled, listed, anonymous, denied):
        assert secured.tokens["team"] not in out.stdout + out.stderr
        assert secured.tokens["reader"] not in out.stdout + out.stderr


def test_tokens_never_reach_the_log_but_the_callers_name_does(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    with token_serving(cluster, namespace, tmp_path) as secured:
        stub = secured.stub
        job_id = schedule(stub, secured.as_("admin"), name="logged")
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=10, metadata=secured.as_("reader"))
        refused(lambda: schedule(stub, secured.as_("reader")))
        refused(lambda: schedule(stub, bearer(secured.tokens["admin"] + "x")))
        refused(lambda: schedule(stub, (("authorization", f"Basic {secured.tokens['team']}"),)))
        stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10, metadata=secured.as_("team"))
        cli(secured.address, "status", job_id, "--token", secured.tokens["team"])

    log = secured.server.output()
    for name, token in secured.tokens.items():
        assert token not in log, name
        assert hashlib.sha256(token.encode()).hexdigest() not in log, name
    assert "Bearer" not in log
    assert "authorization" not in log.lower()
    assert '"caller": "admin"' in log
    assert '"caller": "reader"' in log
    assert '"code": "PERMISSION_DENIED"' in log
