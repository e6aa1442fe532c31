"""LeaseElector against the real API server: who holds the coordination.k8s.io/v1 Lease, when a
replica may take it over (a whole lease duration on its own clock), that of two racing replicas
exactly one wins, and that a leader unable to renew stops acting before anyone may take over.

Each elector gets a fake monotonic clock, so waiting out a lease is a clock step, not a sleep.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobscheduler.control.leader import LEASE_NAME, LeaseElector
from jobscheduler.kube.connection import BackoffPolicy, load_api_client
from jobscheduler.kube.gateway import KubeGateway
from tests.conftest import Cluster

LEASE_SECONDS = 3.0
START = 1000.0  # every fake clock starts here


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class RacingGateway(KubeGateway):
    """A real gateway that, while `barrier` is set, holds every create and patch until all the
    racers have reached theirs: so each has read the same Lease (or its absence) before any
    writes, and only the resourceVersion precondition (or AlreadyExists) decides the winner."""

    barrier: threading.Barrier | None = None

    def create(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.barrier is not None:
            self.barrier.wait()
        return super().create(*args, **kwargs)

    def patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.barrier is not None:
            self.barrier.wait()
        return super().patch(*args, **kwargs)


@pytest.fixture
def gateway(cluster: Cluster) -> Iterator[RacingGateway]:
    api = load_api_client(in_cluster=False, kubeconfig=str(cluster.kubeconfig))
    try:
        yield RacingGateway(api, backoff=BackoffPolicy(default_timeout=5))
    finally:
        api.close()


def elector(gateway: KubeGateway, namespace: str, identity: str) -> tuple[LeaseElector, FakeClock]:
    clock = FakeClock()
    return (
        LeaseElector(
            gateway, namespace=namespace, identity=identity, lease_seconds=LEASE_SECONDS, clock=clock
        ),
        clock,
    )


def lease_spec(gateway: KubeGateway, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = gateway.get("leases", namespace, LEASE_NAME)["spec"]
    return spec


def micro_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def create_foreign_lease(gateway: KubeGateway, namespace: str, holder: str) -> None:
    """A Lease held by a replica outside the test (just renewed), as another process writes it."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    gateway.create(
        "leases",
        namespace,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": namespace},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": int(LEASE_SECONDS),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        },
    )


def test_first_elector_creates_the_lease_and_leads(gateway: RacingGateway, namespace: str) -> None:
    a, _ = elector(gateway, namespace, "replica-a")
    assert not a.leading
    before = datetime.now(UTC)
    assert a.tick() is True
    after = datetime.now(UTC)
    assert a.leading

    spec = lease_spec(gateway, namespace)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == 3
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]
    assert before - timedelta(seconds=1) <= micro_time(spec["acquireTime"]) <= after + timedelta(seconds=1)

    assert a.tick() is True  # a renewal: only renewTime moves
    renewed = lease_spec(gateway, namespace)
    assert renewed["holderIdentity"] == "replica-a"
    assert renewed["acquireTime"] == spec["acquireTime"]
    assert renewed["leaseTransitions"] == 0
    assert micro_time(renewed["renewTime"]) > micro_time(spec["renewTime"])


def test_second_elector_does_not_lead_while_the_first_renews(gateway: RacingGateway, namespace: str) -> None:
    a, _ = elector(gateway, namespace, "replica-a")
    b, clock_b = elector(gateway, namespace, "replica-b")
    assert a.tick()
    for _ in range(4):
        assert b.tick() is False
        # Far more than a lease duration on b's clock, but a renews in between: each renewal
        # restarts b's wait.
        clock_b.now += 10 * LEASE_SECONDS
        assert a.tick() is True
    assert b.tick() is False
    assert not b.leading
    spec = lease_spec(gateway, namespace)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseTransitions"] == 0


def test_takeover_waits_a_whole_lease_duration_on_the_taker_clock(
    gateway: RacingGateway, namespace: str
) -> None:
    a, clock_a = elector(gateway, namespace, "replica-a")
    b, clock_b = elector(gateway, namespace, "replica-b")
    assert a.tick()
    first = lease_spec(gateway, namespace)
    assert b.tick() is False  # b first sees a's record at START on its own clock

    # a stops renewing. Real time barely moves; only b's clock decides.
    clock_b.now = START + 2.999
    assert b.tick() is False
    assert lease_spec(gateway, namespace)["holderIdentity"] == "replica-a"

    clock_b.now = START + LEASE_SECONDS
    assert b.tick() is True
    taken = lease_spec(gateway, namespace)
    assert taken["holderIdentity"] == "replica-b"
    assert taken["leaseTransitions"] == 1
    assert taken["acquireTime"] == taken["renewTime"]
    assert micro_time(taken["acquireTime"]) > micro_time(first["acquireTime"])

    # a, back, sees b holding it and stops leading at once, whatever its own clock says.
    assert a.tick() is False
    assert not a.leading
    assert lease_spec(gateway, namespace)["holderIdentity"] == "replica-b"

    # And back again once b stops renewing: another transition.
    clock_a.now += LEASE_SECONDS
    assert a.tick() is True
    back = lease_spec(gateway, namespace)
    assert back["holderIdentity"] == "replica-a"
    assert back["leaseTransitions"] == 2


def race(gateway: RacingGateway, electors: list[LeaseElector]) -> list[bool]:
    """Ticks every elector at once; each write waits until all of them are about to write."""
    gateway.barrier = threading.Barrier(len(electors), timeout=15)
    try:
        with ThreadPoolExecutor(len(electors)) as pool:
            return list(pool.map(lambda e: e.tick(), electors))
    finally:
        gateway.barrier = None


def assert_one_winner(
    gateway: RacingGateway, namespace: str, electors: list[LeaseElector], won: list[bool]
) -> str:
    assert won.count(True) == 1, won
    winner = electors[won.index(True)]
    assert winner.leading
    assert [e.leading for e in electors].count(True) == 1
    assert lease_spec(gateway, namespace)["holderIdentity"] == winner.identity
    # The losers, looking again, see the winner's fresh record and keep out.
    for loser in electors:
        if loser is not winner:
            assert loser.tick() is False
    return winner.identity


def test_two_electors_racing_for_a_missing_expired_or_released_lease_make_exactly_one_leader(
    gateway: RacingGateway, namespace: str
) -> None:
    a, clock_a = elector(gateway, namespace, "replica-a")
    b, clock_b = elector(gateway, namespace, "replica-b")
    both = [a, b]

    # No Lease yet: both read 404 and both create; AlreadyExists stops one.
    assert_one_winner(gateway, namespace, both, race(gateway, both))
    assert lease_spec(gateway, namespace)["leaseTransitions"] == 0

    # Expired: held by a replica that is gone, seen by both, then waited out by both.
    gateway.delete("leases", namespace, LEASE_NAME)
    create_foreign_lease(gateway, namespace, "replica-gone")
    assert a.tick() is False
    assert b.tick() is False
    clock_a.now += LEASE_SECONDS
    clock_b.now += LEASE_SECONDS
    assert_one_winner(gateway, namespace, both, race(gateway, both))
    assert lease_spec(gateway, namespace)["leaseTransitions"] == 1

    # Released, three rounds: both read the same empty holder; the resourceVersion precondition
    # turns one patch away with 409 Conflict.
    transitions = 1
    for _ in range(3):
        holder = a if a.leading else b
        holder.release()
        assert not lease_spec(gateway, namespace)["holderIdentity"]
        assert_one_winner(gateway, namespace, both, race(gateway, both))
        transitions += 1
        assert lease_spec(gateway, namespace)["leaseTransitions"] == transitions


def test_release_lets_the_other_elector_lead_on_its_very_next_tick(
    gateway: RacingGateway, namespace: str
) -> None:
    a, _ = elector(gateway, namespace, "replica-a")
    b, _ = elector(gateway, namespace, "replica-b")
    assert a.tick()
    assert b.tick() is False

    a.release()
    assert not a.leading
    released = lease_spec(gateway, namespace)
    assert not released.get("holderIdentity")
    assert released["leaseDurationSeconds"] == 1

    assert b.tick() is True  # b's clock has not moved at all
    spec = lease_spec(gateway, namespace)
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1


def test_release_by_a_replica_that_lost_the_lease_leaves_the_new_holder_alone(
    gateway: RacingGateway, namespace: str
) -> None:
    a, _ = elector(gateway, namespace, "replica-a")
    b, clock_b = elector(gateway, namespace, "replica-b")
    assert a.tick()
    assert b.tick() is False
    clock_b.now += LEASE_SECONDS
    assert b.tick() is True  # a has not ticked since: it still believes it leads
    assert a.leading

    a.release()
    spec = lease_spec(gateway, namespace)
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseDurationSeconds"] == 3
    assert spec["leaseTransitions"] == 1


def test_leader_stops_leading_when_the_lease_is_recreated_by_another_holder(
    gateway: RacingGateway, namespace: str
) -> None:
    a, clock_a = elector(gateway, namespace, "replica-a")
    assert a.tick()
    gateway.delete("leases", namespace, LEASE_NAME)
    create_foreign_lease(gateway, namespace, "replica-intruder")

    clock_a.now += 0.5  # well within 2/3 of the duration since a's last renewal
    assert a.tick() is False
    assert not a.leading
    spec = lease_spec(gateway, namespace)
    assert spec["holderIdentity"] == "replica-intruder"  # a did not write over it
    assert spec["leaseTransitions"] == 0


@pytest.fixture
def unreachable_gateway(cluster: Cluster, tmp_path: Path) -> Iterator[KubeGateway]:
    """A real gateway whose API server address has nothing listening: every call fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = tmp_path / "unreachable-kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    api = load_api_client(in_cluster=False, kubeconfig=str(path))
    try:
        yield KubeGateway(api, backoff=BackoffPolicy(default_timeout=0.3))
    finally:
        api.close()


def test_leader_whose_renewals_fail_stops_leading_after_two_thirds_of_the_duration(
    gateway: RacingGateway, namespace: str, unreachable_gateway: KubeGateway
) -> None:
    a, clock_a = elector(gateway, namespace, "replica-a")
    b, clock_b = elector(gateway, namespace, "replica-b")
    assert a.tick()  # renewed at START on a's clock
    assert b.tick() is False  # b starts waiting at START on its clock

    a.gateway = unreachable_gateway
    clock_a.now = START + 1.0
    assert a.tick() is True  # a failed renewal; still within 2/3 of 3 s
    clock_a.now = START + 1.999
    assert a.tick() is True
    clock_a.now = START + 2.0
    assert a.tick() is False
    assert not a.leading

    # a has stopped while the Lease still names it: nobody may take over for another second.
    assert lease_spec(gateway, namespace)["holderIdentity"] == "replica-a"
    clock_b.now = START + 2.0
    assert b.tick() is False
    clock_b.now = START + LEASE_SECONDS
    assert b.tick() is True
