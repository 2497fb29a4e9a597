"""Leader election on a coordination.k8s.io Lease, with client-go's semantics, against
the fake API (resourceVersion compare-and-swap enforced) with deploy/'s RBAC: the
reconciler ServiceAccount's tokens, one per candidate. Clocks are the tests' own, so
expiry is exact; `tests/e2e/test_operable.py` runs two real loops."""

from __future__ import annotations

import threading

import pytest

from reconciler.adapters import kube
from reconciler.loop.leader import LEASE_NAME, LeaderElector
from tests.fixtures.kubeapi import FakeKube
from tests.helpers import deploy_docs

NS = "bootc-gitops"


class Clocks:
    """A wall clock per machine (they may disagree) and one monotonic time."""

    def __init__(self) -> None:
        self.t = 1000.0

    def advance(self, seconds: float) -> None:
        self.t += seconds


def candidate(kubeapi: FakeKube, name: str, clocks: Clocks, skew: float = 0.0) -> LeaderElector:
    api = kube.Kube.connect(kubeapi.kubeconfig_for(NS, "reconciler"))
    return LeaderElector(
        api, NS, name, lease_duration=15, renew_deadline=10, retry_period=2,
        clock=lambda: clocks.t + skew, monotonic=lambda: clocks.t,
    )  # fmt: skip


def test_one_leader_takeover_after_the_lease_and_transitions_counted(kubeapi: FakeKube) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    clocks = Clocks()
    a, b = candidate(kubeapi, "a", clocks), candidate(kubeapi, "b", clocks)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    lease = kubeapi.get("leases", LEASE_NAME, NS)["spec"]
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("a", 0)
    assert lease["acquireTime"] == lease["renewTime"]
    clocks.advance(10)
    assert a.try_acquire_or_renew()  # renews: same holder, new renewTime, no transition
    clocks.advance(14)
    assert not b.try_acquire_or_renew()  # b sees the renewal now: 15 s from here
    clocks.advance(14)
    assert not b.try_acquire_or_renew()
    clocks.advance(2)
    assert b.try_acquire_or_renew()  # 16 s without a change, as b saw it: a is gone
    lease = kubeapi.get("leases", LEASE_NAME, NS)["spec"]
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("b", 1)
    assert not a.try_acquire_or_renew()


def test_expiry_is_judged_on_the_candidates_own_clock_not_the_holders(kubeapi: FakeKube) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    clocks = Clocks()
    holder = candidate(kubeapi, "holder", clocks, skew=-3600)  # its wall clock is an hour late
    eager = candidate(kubeapi, "eager", clocks)
    assert holder.try_acquire_or_renew()
    # renewTime says an hour ago, but eager has only just seen the record: not expired
    assert not eager.try_acquire_or_renew()
    clocks.advance(5)
    assert holder.try_acquire_or_renew()
    clocks.advance(5)
    assert not eager.try_acquire_or_renew()


def test_racing_candidates_never_both_win(kubeapi: FakeKube) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    clocks = Clocks()
    electors = [candidate(kubeapi, f"c{i}", clocks) for i in range(6)]
    wins: list[str] = []
    barrier = threading.Barrier(len(electors))

    def race(e: LeaderElector) -> None:
        barrier.wait()
        if e.try_acquire_or_renew():
            wins.append(e.identity)

    threads = [threading.Thread(target=race, args=(e,)) for e in electors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1  # one create succeeded; the others got 409
    assert kubeapi.get("leases", LEASE_NAME, NS)["spec"]["holderIdentity"] == wins[0]


def test_a_leader_that_cannot_renew_stands_down_and_a_clean_stop_releases(
    kubeapi: FakeKube,
) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    api = kube.Kube.connect(kubeapi.kubeconfig_for(NS, "reconciler"))
    elector = LeaderElector(api, NS, "solo", lease_duration=3, renew_deadline=1, retry_period=0.1)
    changes: list[bool] = []
    elector.on_change = changes.append
    stop = threading.Event()
    thread = threading.Thread(target=elector.run, args=(stop,))
    thread.start()
    try:
        deadline = threading.Event()
        for _ in range(50):
            if elector.leading:
                break
            deadline.wait(0.05)
        assert elector.leading
        # the API starts refusing its writes (say, a network partition): after the renew
        # deadline it stops leading, before its Lease could expire for the others
        kubeapi.add_reactor(
            lambda verb, res, ns, name, body: (503, {"kind": "Status", "code": 503})
            if res == "leases" else None
        )  # fmt: skip
        for _ in range(60):
            if not elector.leading:
                break
            deadline.wait(0.05)
        assert not elector.leading
        assert changes == [True, False]
        kubeapi._reactors.clear()
        for _ in range(60):
            if elector.leading:
                break
            deadline.wait(0.05)
        assert elector.leading  # the Lease was still its own: it leads again
    finally:
        stop.set()
        thread.join(10)
    assert kubeapi.get("leases", LEASE_NAME, NS)["spec"]["holderIdentity"] == ""
    assert kubeapi.get("leases", LEASE_NAME, NS)["spec"]["leaseDurationSeconds"] == 1


def test_the_agents_token_may_not_touch_the_leader_lease(kubeapi: FakeKube) -> None:
    kubeapi.enforce_rbac(deploy_docs())
    clocks = Clocks()
    assert candidate(kubeapi, "reconciler", clocks).try_acquire_or_renew()
    agent = kube.Kube.connect(kubeapi.kubeconfig_for("bootc-gitops-agent", "reconciler-agent"))
    with pytest.raises(kube.KubeError) as refused:
        agent.get_lease(NS, LEASE_NAME)
    assert refused.value.status == 403
