"""jobscheduler.transport.tokens and .tls without a cluster: the tokens file (both forms, and
every way it can be wrong), scope decisions, the constant-time lookup that checks every entry,
reloading tokens and certificates when their files change (keeping the old ones when the new
ones are broken), the security settings, log redaction, and the authorizer on a real grpc
server and channel.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
import yaml

from jobscheduler.api import scheduler_pb2 as pb
from jobscheduler.api import scheduler_pb2_grpc as pb_grpc
from jobscheduler.cli.channel import BearerToken, ClientOptions
from jobscheduler.cli.main import build_parser, main
from jobscheduler.domain.config import SecuritySettings
from jobscheduler.domain.errors import ConfigError, NotFoundError
from jobscheduler.domain.registry import Registry
from jobscheduler.obs import logs
from jobscheduler.transport import tokens as security
from jobscheduler.transport.rpcs import JobSchedulerServicer
from jobscheduler.transport.server import rpc_server
from jobscheduler.transport.tls import ServerCertificates
from jobscheduler.transport.tokens import (
    RPC_VERBS,
    Authorizer,
    Grant,
    TokenStore,
    bearer_token,
    find_grant,
    parse_tokens,
)


@pytest.fixture(autouse=True)
def _grpc_verbosity(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() sets GRPC_VERBOSITY for client commands; keep that out of the other tests' processes.
    monkeypatch.setenv("GRPC_VERBOSITY", os.environ.get("GRPC_VERBOSITY", "ERROR"))


ADMIN_TOKEN = "admin-" + "a" * 26
READER_TOKEN = "reader-" + "r" * 25


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = f"""\
- name: admin
  token: {ADMIN_TOKEN}
  namespaces: ["*"]
  verbs: [schedule, read, cancel]
- name: reader
  token_sha256: {sha256(READER_TOKEN)}
  namespaces: [team-a, team-b]
  verbs: [read]
"""


class Clock:
    """A monotonic clock the test moves by hand, for the once-a-second file checks."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


_mtime = iter(range(1_700_000_000, 1_800_000_000))


def rewrite(path: Path, data: str | bytes) -> None:
    """Replaces the file the way a Secret volume update does (a new file, then a rename), with a
    modification time of its own: two writes in one clock tick must still count as a change."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    stamp = next(_mtime) * 1_000_000_000
    os.utime(tmp, ns=(stamp, stamp))
    tmp.replace(path)


# -- the tokens file -------------------------------------------------------------------------------


def test_a_token_and_its_sha256_give_the_same_grant() -> None:
    plain, hashed = parse_tokens(
        f"- {{name: a, token: {ADMIN_TOKEN}, namespaces: ['*'], verbs: [read]}}\n"
        f"- {{name: b, token_sha256: '{sha256(READER_TOKEN).upper()}', namespaces: [x], verbs: [read]}}\n"
    )

    assert plain.digest == hashlib.sha256(ADMIN_TOKEN.encode()).digest()
    assert hashed.digest == hashlib.sha256(READER_TOKEN.encode()).digest()


def test_the_documented_example_parses_into_names_scopes_and_digests() -> None:
    admin, reader = parse_tokens(TOKENS)

    assert (admin.name, admin.namespaces, admin.verbs) == (
        "admin",
        frozenset({"*"}),
        frozenset({"schedule", "read", "cancel"}),
    )
    assert (reader.name, reader.namespaces, reader.verbs) == (
        "reader",
        frozenset({"team-a", "team-b"}),
        frozenset({"read"}),
    )
    assert ADMIN_TOKEN not in repr(admin)


def test_an_empty_list_is_valid_and_lets_nobody_in() -> None:
    assert parse_tokens("[]") == ()
    assert find_grant(parse_tokens("[]"), ADMIN_TOKEN) is None


def _entry(**fields: Any) -> str:
    entry = {"name": "ci", "token": ADMIN_TOKEN, "namespaces": ["team-a"], "verbs": ["read"], **fields}
    return "- " + "\n  ".join(f"{k}: {v!r}" if v is not ... else f"{k}:" for k, v in entry.items()) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a YAML list of tokens"),
        ("name: ci\n", "expected a YAML list of tokens"),
        ("- [a, b]\n", "entry 0: expected a mapping"),
        ("- {name: ci, token: [unclosed\n", "not valid YAML at line"),
        (_entry(name=""), "entry 0: name: expected letters"),
        (_entry(name="has space"), "entry 0: name: expected letters"),
        (_entry(namespace=["team-a"]), "entry 0 (ci): unknown field 'namespace'"),
        (
            _entry(token_sha256=sha256(ADMIN_TOKEN)),
            "entry 0 (ci): expected exactly one of token, token_sha256",
        ),
        ("- {name: ci, namespaces: [a], verbs: [read]}\n", "expected exactly one of token, token_sha256"),
        (_entry(token="short"), "token: expected at least 16 printable characters"),
        (_entry(token=" " + ADMIN_TOKEN), "token: expected at least 16 printable characters"),
        ("- {name: ci, token: 12345678901234567890, namespaces: [a], verbs: [read]}\n", "quote it"),
        (
            "- {name: ci, token_sha256: abc, namespaces: [a], verbs: [read]}\n",
            "token_sha256: expected 64 hex",
        ),
        ("- {name: ci, token_sha256: " + "g" * 64 + ", namespaces: [a], verbs: [read]}\n", "64 hex digits"),
        (_entry(namespaces=[]), "entry 0 (ci): namespaces: expected a non-empty list of strings"),
        (_entry(namespaces="team-a"), "namespaces: expected a non-empty list of strings"),
        (_entry(namespaces=["Team_A"]), "namespaces: 'Team_A' is not a namespace name or '*'"),
        (_entry(verbs=["read", "write"]), "verbs: 'write' is not one of schedule, read, cancel"),
        (_entry(verbs=...), "verbs: expected a non-empty list of strings"),
        (_entry() + _entry(token=READER_TOKEN), "entry 1 (ci): name: given twice"),
        (_entry() + _entry(name="other"), "entry 1 (other): the same token as 'ci'"),
    ],
    ids=lambda v: v if len(v) < 40 else None,
)
def test_a_bad_tokens_file_is_refused_naming_the_entry_and_field_never_the_token(
    text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=r".*") as err:
        parse_tokens(text)

    assert message in str(err.value)
    assert ADMIN_TOKEN not in str(err.value)
    assert READER_TOKEN not in str(err.value)


def test_load_tokens_names_the_variable_and_file(tmp_path: Path) -> None:
    missing, broken = tmp_path / "missing.yaml", tmp_path / "broken.yaml"
    broken.write_text(_entry(verbs=["write"]))

    with pytest.raises(ConfigError) as gone:
        security.load_tokens(missing)
    with pytest.raises(ConfigError) as bad:
        security.load_tokens(broken)

    assert str(gone.value) == f"AUTH_TOKENS_FILE={str(missing)!r}: cannot read: No such file or directory"
    assert str(bad.value).startswith(f"AUTH_TOKENS_FILE={str(broken)!r}: entry 0 (ci): verbs: 'write'")


# -- decisions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verbs", "namespaces", "verb", "namespace", "allowed"),
    [
        ({"read"}, {"team-a"}, "read", "team-a", True),
        ({"read"}, {"team-a"}, "schedule", "team-a", False),
        ({"read"}, {"team-a"}, "cancel", "team-a", False),
        ({"read"}, {"team-a"}, "read", "team-b", False),
        ({"schedule", "cancel"}, {"team-a", "team-b"}, "cancel", "team-b", True),
        ({"schedule", "cancel"}, {"team-a", "team-b"}, "read", "team-b", False),
        ({"read"}, {"*"}, "read", "anything", True),
        ({"read"}, {"*"}, "schedule", "anything", False),
        ({"schedule", "read", "cancel"}, {"team-a"}, "schedule", "team-ab", False),
    ],
)
def test_a_grant_allows_exactly_its_verbs_in_its_namespaces(
    verbs: set[str], namespaces: set[str], verb: str, namespace: str, allowed: bool
) -> None:
    grant = Grant(name="g", digest=b"", namespaces=frozenset(namespaces), verbs=frozenset(verbs))

    assert grant.allows(verb, namespace) is allowed


def test_every_rpc_of_the_service_needs_a_verb() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["JobScheduler"].methods}

    assert set(RPC_VERBS) == methods
    assert set(RPC_VERBS.values()) == set(security.VERBS)


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ((("authorization", f"Bearer {ADMIN_TOKEN}"),), ADMIN_TOKEN),
        ((("authorization", f"bearer  {ADMIN_TOKEN} "),), ADMIN_TOKEN),
        ((("x-other", "1"), ("authorization", f"BEARER {ADMIN_TOKEN}")), ADMIN_TOKEN),
        ((), None),
        (None, None),
        ((("authorization", ADMIN_TOKEN),), None),
        ((("authorization", f"Basic {ADMIN_TOKEN}"),), None),
        ((("authorization", "Bearer "),), None),
        ((("authorization", f"Bearer {ADMIN_TOKEN}"), ("authorization", f"Bearer {ADMIN_TOKEN}")), None),
    ],
    ids=[
        "plain",
        "any-case-padded",
        "among-others",
        "none",
        "no-metadata",
        "no-scheme",
        "basic",
        "empty",
        "twice",
    ],  # fmt: skip
)
def test_the_bearer_token_comes_from_exactly_one_authorization_header(
    metadata: tuple[tuple[str, str], ...] | None, token: str | None
) -> None:
    assert bearer_token(metadata) == token


def test_the_lookup_compares_against_every_entry_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    grants = parse_tokens(
        "".join(_entry(name=f"t{i}", token=f"token-number-{i:04d}-xxxxxxxx") for i in range(5))
    )
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)

    first = find_grant(grants, "token-number-0000-xxxxxxxx")
    after_first = len(compared)
    unknown = find_grant(grants, "not-a-token-of-the-file")

    assert first is grants[0]
    assert unknown is None
    # No early exit on the first match, none on the first mismatch: every entry, every time.
    assert after_first == len(compared) - after_first == len(grants)
    # What is compared are SHA-256 digests, never the tokens themselves.
    assert {len(a) for pair in compared for a in pair} == {32}


# -- reloading the tokens --------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yaml"
    rewrite(path, TOKENS)
    return path


def test_the_tokens_file_is_reread_when_it_changes_at_most_once_a_second(
    tokens_file: Path, clock: Clock
) -> None:
    store = TokenStore(tokens_file, clock=clock)
    new_token = "new-" + "n" * 28
    rewrite(tokens_file, TOKENS + _entry(name="new", token=new_token))

    clock.advance(0.5)
    before = find_grant(store.grants(), new_token)
    clock.advance(0.5)
    after = find_grant(store.grants(), new_token)

    assert before is None
    assert after is not None
    assert after.name == "new"


def test_a_broken_tokens_file_keeps_the_previous_tokens_with_one_warning(
    tokens_file: Path, clock: Clock
) -> None:
    store = TokenStore(tokens_file, clock=clock)
    loaded = store.grants()

    with structlog.testing.capture_logs() as captured:
        rewrite(tokens_file, "- name: admin\n  verbs: [write]\n")
        clock.advance()
        broken = store.grants()
        clock.advance()
        still = store.grants()
        tokens_file.unlink()
        clock.advance()
        gone = store.grants()
        rewrite(tokens_file, _entry(name="fixed"))
        clock.advance()
        fixed = store.grants()

    assert broken == still == gone == loaded
    assert [g.name for g in fixed] == ["fixed"]
    warnings = [e for e in captured if e["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == [
        "tokens file not reloaded; keeping the previous tokens",
        "tokens file unreadable; keeping the previous tokens",
    ]
    assert all(w["file"] == str(tokens_file) for w in warnings)
    assert "entry 0 (admin)" in warnings[0]["error"]


def test_reloading_is_thread_safe_every_caller_sees_a_whole_file(tokens_file: Path) -> None:
    store = TokenStore(tokens_file, interval=0)
    files = [TOKENS, _entry(name="x") + _entry(name="y", token=READER_TOKEN)]

    def read_many() -> set[tuple[str, ...]]:
        return {tuple(g.name for g in store.grants()) for _ in range(300)}

    with futures.ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read_many) for _ in range(4)]
        for i in range(30):
            rewrite(tokens_file, files[i % 2])
        seen = set().union(*(r.result() for r in readers))

    assert seen <= {("admin", "reader"), ("x", "y")}


# -- the authorizer on a real server ---------------------------------------------------------------


class NotFoundService:
    """Stands in for JobService: every use case that is reached (jobs.cancel(...), and through
    its parts, jobs.submission.schedule(...)) answers NOT_FOUND, so a call that ends NOT_FOUND
    got past the authorizer."""

    def __init__(self, path: str = "jobs") -> None:
        self._path = path

    def __getattr__(self, name: str) -> NotFoundService:
        return NotFoundService(f"{self._path}.{name}")

    def __call__(self, *_: Any, **__: Any) -> Any:
        raise NotFoundError(f"{self._path}: stand-in")


@pytest.fixture
def authorized_stub(tokens_file: Path) -> Iterator[Callable[[str | None], pb_grpc.JobSchedulerStub]]:
    servicer = JobSchedulerServicer(
        NotFoundService(),  # type: ignore[arg-type]
        Registry.from_entry_points(),
    )
    server = rpc_server(
        servicer, max_streams=4, authorizer=Authorizer(TokenStore(tokens_file), default_namespace="team-a")
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channels: list[grpc.Channel] = []

    def stub(token: str | None) -> pb_grpc.JobSchedulerStub:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return pb_grpc.JobSchedulerStub(
            grpc.intercept_channel(channel, BearerToken(token)) if token else channel
        )

    yield stub
    for channel in channels:
        channel.close()
    server.stop(0)


TIMER = pb.TimerJob(duration_seconds=5, timer_name="t", control_plane_endpoint="http://cp:1")
CALLS: dict[str, Callable[[pb_grpc.JobSchedulerStub, str], Any]] = {
    "ScheduleJob": lambda s, ns: s.ScheduleJob(
        pb.ScheduleJobRequest(namespace=ns, timer_job=TIMER), timeout=5
    ),
    "ResumeJob": lambda s, ns: s.ResumeJob(pb.ResumeJobRequest(namespace=ns, job_id="job-x"), timeout=5),
    "GetJobStatus": lambda s, ns: s.GetJobStatus(
        pb.GetJobStatusRequest(namespace=ns, job_id="job-x"), timeout=5
    ),
    "ListJobs": lambda s, ns: s.ListJobs(pb.ListJobsRequest(namespace=ns), timeout=5),
    "WatchJob": lambda s, ns: next(s.WatchJob(pb.WatchJobRequest(namespace=ns, job_id="job-x"), timeout=5)),
    "WatchJobs": lambda s, ns: next(s.WatchJobs(pb.WatchJobsRequest(namespace=ns), timeout=5)),
    "CancelJob": lambda s, ns: s.CancelJob(pb.CancelJobRequest(namespace=ns, job_id="job-x"), timeout=5),
}


def code_of(stub: pb_grpc.JobSchedulerStub, method: str, namespace: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        CALLS[method](stub, namespace)
    return err.value.code(), err.value.details() or ""


@pytest.mark.parametrize("method", sorted(CALLS))
def test_without_a_known_token_every_rpc_is_unauthenticated(
    authorized_stub: Callable[[str | None], pb_grpc.JobSchedulerStub], method: str
) -> None:
    for token in (None, "wrong-" + "w" * 26):
        assert code_of(authorized_stub(token), method, "team-a") == (
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or invalid bearer token",
        )


@pytest.mark.parametrize(
    ("method", "namespace", "expected"),
    [
        ("GetJobStatus", "team-a", grpc.StatusCode.NOT_FOUND),
        ("GetJobStatus", "", grpc.StatusCode.NOT_FOUND),  # "": K8S_NAMESPACE, team-a here
        ("ListJobs", "team-b", grpc.StatusCode.NOT_FOUND),
        ("WatchJob", "team-a", grpc.StatusCode.NOT_FOUND),
        ("WatchJobs", "team-b", grpc.StatusCode.NOT_FOUND),
        ("GetJobStatus", "team-c", grpc.StatusCode.PERMISSION_DENIED),
        ("ScheduleJob", "team-a", grpc.StatusCode.PERMISSION_DENIED),
        ("ResumeJob", "team-a", grpc.StatusCode.PERMISSION_DENIED),
        ("CancelJob", "", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_a_read_only_token_reads_in_its_namespaces_and_nothing_else(
    authorized_stub: Callable[[str | None], pb_grpc.JobSchedulerStub],
    method: str,
    namespace: str,
    expected: grpc.StatusCode,
) -> None:
    code, details = code_of(authorized_stub(READER_TOKEN), method, namespace)

    assert code == expected, details
    if expected == grpc.StatusCode.PERMISSION_DENIED:
        assert details == (
            f"token 'reader' does not allow {RPC_VERBS[method]!r} in namespace {namespace or 'team-a'!r}"
        )
        assert READER_TOKEN not in details


@pytest.mark.parametrize("method", sorted(CALLS))
def test_a_token_for_every_namespace_and_verb_reaches_every_rpc(
    authorized_stub: Callable[[str | None], pb_grpc.JobSchedulerStub], method: str
) -> None:
    code, details = code_of(authorized_stub(ADMIN_TOKEN), method, "anywhere")

    assert code == grpc.StatusCode.NOT_FOUND, details


def test_the_callers_token_name_is_bound_to_the_log_context_never_the_token(
    authorized_stub: Callable[[str | None], pb_grpc.JobSchedulerStub],
) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
        code_of(authorized_stub(READER_TOKEN), "ScheduleJob", "team-a")

    [failed] = [e for e in captured if e["event"] == "rpc failed"]
    assert failed["caller"] == "reader"
    assert failed["code"] == "PERMISSION_DENIED"
    assert READER_TOKEN not in repr(captured)


# -- certificates ----------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


class Pki:
    """A throwaway CA (EC P-256) in `directory` that issues server and client certificates."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.dir = directory
        self.name = name
        self.ca = directory / f"{name}.pem"
        self.ca_key = directory / f"{name}.key"
        openssl(
            "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", self.ca_key.name, cwd=directory
        )
        openssl(
            "req", "-x509", "-new", "-key", self.ca_key.name, "-subj", f"/CN=jobscheduler test {name}",
            "-days", "1", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", self.ca.name,
            cwd=directory,
        )  # fmt: skip

    def issue(self, cn: str, *, client: bool = False) -> tuple[Path, Path]:
        """(certificate, key) for CN=cn with a random serial: for 127.0.0.1 and localhost, or a
        client certificate."""
        stem = f"{self.name}-{cn}"
        ext = self.dir / f"{stem}.ext"
        ext.write_text(
            "extendedKeyUsage=clientAuth\n"
            if client
            else "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        )
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{stem}.key", cwd=self.dir)
        openssl(
            "req", "-new", "-key", f"{stem}.key", "-subj", f"/CN={cn}", "-out", f"{stem}.csr", cwd=self.dir
        )
        openssl(
            "x509", "-req", "-in", f"{stem}.csr", "-CA", self.ca.name, "-CAkey", self.ca_key.name,
            "-set_serial", str(secrets.randbits(63)), "-days", "1", "-sha256", "-extfile", ext.name,
            "-out", f"{stem}.pem",
            cwd=self.dir,
        )  # fmt: skip
        return self.dir / f"{stem}.pem", self.dir / f"{stem}.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def served(pki: Pki, tmp_path: Path) -> tuple[Path, Path]:
    """The paths TLS_CERT_FILE and TLS_KEY_FILE name, holding the certificate of CN=one."""
    cert, key = pki.issue("one")
    paths = tmp_path / "tls.crt", tmp_path / "tls.key"
    rewrite(paths[0], cert.read_bytes())
    rewrite(paths[1], key.read_bytes())
    return paths


def test_the_certificate_is_reread_when_its_files_change(
    pki: Pki, served: tuple[Path, Path], clock: Clock
) -> None:
    certificates = ServerCertificates(*served, clock=clock)
    first = certificates.certificate_chain
    cert, key = pki.issue("two")

    unchanged = certificates.fetch()
    rewrite(served[0], cert.read_bytes())
    rewrite(served[1], key.read_bytes())
    too_soon = certificates.fetch()
    clock.advance()
    rotated = certificates.fetch()
    clock.advance()
    after = certificates.fetch()

    assert first != cert.read_bytes()
    assert unchanged is None
    assert too_soon is None
    assert isinstance(rotated, grpc.ServerCertificateConfiguration)
    assert certificates.certificate_chain == cert.read_bytes()
    assert after is None  # switched once; nothing new since


@pytest.mark.parametrize(
    ("breakage", "variable"),
    [
        ("garbage certificate", "TLS_CERT_FILE"),
        ("key of another certificate", "TLS_KEY_FILE"),
        ("certificate removed", "TLS_CERT_FILE"),
        ("key that is a certificate", "TLS_KEY_FILE"),
    ],
)
def test_broken_new_files_keep_the_served_certificate_and_warn_naming_the_file(
    pki: Pki, served: tuple[Path, Path], clock: Clock, breakage: str, variable: str
) -> None:
    certificates = ServerCertificates(*served, clock=clock)
    before = certificates.certificate_chain
    other_cert, other_key = pki.issue("other")

    with structlog.testing.capture_logs() as captured:
        if breakage == "garbage certificate":
            rewrite(served[0], "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        elif breakage == "key of another certificate":
            rewrite(served[1], other_key.read_bytes())
        elif breakage == "certificate removed":
            served[0].unlink()
        else:
            rewrite(served[1], other_cert.read_bytes())
        for _ in range(3):
            clock.advance()
            assert certificates.fetch() is None

    assert certificates.certificate_chain == before
    [warning] = [e for e in captured if e["log_level"] == "warning"]
    path = served[0] if variable == "TLS_CERT_FILE" else served[1]
    assert warning["error"].startswith(f"{variable}={str(path)!r}: ")


def test_a_fixed_rotation_after_a_broken_one_is_served(
    pki: Pki, served: tuple[Path, Path], clock: Clock
) -> None:
    certificates = ServerCertificates(*served, clock=clock)
    cert, key = pki.issue("fixed")
    rewrite(served[0], cert.read_bytes())  # the key is still the old one: a half-done rotation
    clock.advance()
    half = certificates.fetch()
    rewrite(served[1], key.read_bytes())
    clock.advance()
    done = certificates.fetch()

    assert half is None
    assert done is not None
    assert certificates.certificate_chain == cert.read_bytes()


BAD_PEM = b"-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
ENCRYPTED_KEY = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n-----END ENCRYPTED PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("cert", None, "TLS_CERT_FILE={cert!r}: cannot read: No such file or directory"),
        ("key", None, "TLS_KEY_FILE={key!r}: cannot read: No such file or directory"),
        ("ca", None, "TLS_CLIENT_CA_FILE={ca!r}: cannot read: No such file or directory"),
        ("cert", b"hello", "TLS_CERT_FILE={cert!r}: not a PEM file"),
        ("key", b"\xff\xfe", "TLS_KEY_FILE={key!r}: not a PEM file"),
        ("ca", BAD_PEM, "TLS_CLIENT_CA_FILE={ca!r}: no readable PEM certificate"),
        ("key", "other", "TLS_KEY_FILE={key!r}: not the private key of TLS_CERT_FILE {cert!r}"),
        ("key", ENCRYPTED_KEY, "TLS_KEY_FILE={key!r}: encrypted keys are not supported"),
    ],
)  # fmt: skip
def test_unusable_files_at_start_up_are_a_config_error_naming_the_variable(
    pki: Pki, served: tuple[Path, Path], tmp_path: Path, which: str, content: bytes | str | None, message: str
) -> None:
    paths = {"cert": served[0], "key": served[1], "ca": tmp_path / "ca.crt"}
    rewrite(paths["ca"], pki.ca.read_bytes())
    if content is None:
        paths[which].unlink()
    elif content == "other":
        rewrite(paths[which], pki.issue("mismatch")[1].read_bytes())
    else:
        rewrite(paths[which], content)

    with pytest.raises(ConfigError) as err:
        ServerCertificates(paths["cert"], paths["key"], paths["ca"])

    assert str(err.value).startswith(message.format(**{k: str(v) for k, v in paths.items()}))
    assert "\n" not in str(err.value)


# -- settings ----------------------------------------------------------------------------------------


def test_security_is_off_without_its_variables() -> None:
    assert SecuritySettings.from_env({}) == SecuritySettings()
    assert SecuritySettings() == SecuritySettings(None, None, None, None, reflection=True)


def test_security_variables_become_paths_and_a_flag() -> None:
    settings = SecuritySettings.from_env(
        {
            "TLS_CERT_FILE": "/tls/tls.crt",
            "TLS_KEY_FILE": " /tls/tls.key ",
            "TLS_CLIENT_CA_FILE": "/tls/ca.crt",
            "AUTH_TOKENS_FILE": "/auth/tokens.yaml",
            "REFLECTION": "False",
        }
    )

    assert settings == SecuritySettings(
        tls_cert_file=Path("/tls/tls.crt"),
        tls_key_file=Path("/tls/tls.key"),
        tls_client_ca_file=Path("/tls/ca.crt"),
        auth_tokens_file=Path("/auth/tokens.yaml"),
        reflection=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TLS_CERT_FILE": "/c"}, "TLS_CERT_FILE is set but TLS_KEY_FILE is not: TLS needs both"),
        ({"TLS_KEY_FILE": "/k"}, "TLS_KEY_FILE is set but TLS_CERT_FILE is not"),
        ({"TLS_CLIENT_CA_FILE": "/ca"}, "TLS_CLIENT_CA_FILE='/ca': mutual TLS needs TLS_CERT_FILE"),
        ({"REFLECTION": "maybe"}, "REFLECTION='maybe': expected true or false"),
    ],
)  # fmt: skip
def test_inconsistent_security_variables_are_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SecuritySettings.from_env(env)

    assert str(err.value).startswith(message)


# -- logs and the client ---------------------------------------------------------------------------


def test_tokens_and_authorization_values_are_redacted_from_log_lines() -> None:
    event = logs.redact(
        None,
        "info",
        {
            "event": "call",
            "authorization": f"Bearer {ADMIN_TOKEN}",
            "token": ADMIN_TOKEN,
            "auth_token": ADMIN_TOKEN,
            "invocation_metadata": [("authorization", f"Bearer {ADMIN_TOKEN}")],
            "error": f"upstream said: header authorization: Bearer {ADMIN_TOKEN}, rejected",
            "exception": f"Traceback ...\nValueError: ('Bearer {ADMIN_TOKEN}')",
            "caller": "admin",
            "message": "missing or invalid bearer token",
        },
    )

    assert ADMIN_TOKEN not in repr(event)
    assert event["caller"] == "admin"
    assert event["message"] == "missing or invalid bearer token"
    assert event["error"] == "upstream said: header authorization: Bearer [redacted], rejected"


def test_the_client_token_comes_from_the_flag_or_the_environment() -> None:
    parser = build_parser()
    env = {"JOBSCHEDULER_TOKEN": READER_TOKEN}

    from_env = ClientOptions.from_args(parser.parse_args(["health"]), env)
    from_flag = ClientOptions.from_args(parser.parse_args(["health", "--token", ADMIN_TOKEN]), env)
    before = ClientOptions.from_args(parser.parse_args(["--token", ADMIN_TOKEN, "health"]), {})
    none = ClientOptions.from_args(parser.parse_args(["health"]), {})

    assert (from_env.token, from_flag.token, before.token, none.token) == (
        READER_TOKEN,
        ADMIN_TOKEN,
        ADMIN_TOKEN,
        "",
    )
    assert ADMIN_TOKEN not in repr(from_flag)


def test_a_token_with_spaces_is_a_usage_error_that_does_not_echo_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--server", "127.0.0.1:1", "health", "--token", "two words here"]) == 2
    err = capsys.readouterr().err

    assert "--token (or $JOBSCHEDULER_TOKEN): expected printable ASCII without spaces" in err
    assert "two words" not in err


def test_token_is_a_client_flag_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--token", ADMIN_TOKEN, "version"])

    assert exit_.value.code == 2
    assert "--token: only for the client commands" in capsys.readouterr().err


def test_the_shipped_manifests_mount_a_valid_tokens_file_where_auth_tokens_file_points() -> None:
    k8s = Path(__file__).resolve().parents[2] / "k8s"
    secret = yaml.safe_load((k8s / "secret.yaml").read_text())
    config = yaml.safe_load((k8s / "configmap.yaml").read_text())
    pod = yaml.safe_load((k8s / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    name = secret["metadata"]["name"]
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == name]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]

    assert parse_tokens(secret["stringData"]["tokens.yaml"]) == ()  # nobody until the operator adds entries
    assert config["data"]["AUTH_TOKENS_FILE"] == f"{mount['mountPath']}/tokens.yaml"
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees the Secret's updates


def test_the_readme_example_tokens_file_is_valid() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = guide.split("\n## Bearer tokens\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]

    ci, dashboard = parse_tokens(example)

    assert (ci.name, ci.verbs, ci.namespaces) == ("ci", set(security.VERBS), {"team-a", "team-b"})
    assert (dashboard.name, dashboard.verbs, dashboard.namespaces) == ("dashboard", {"read"}, {"*"})
