"""The checker catches real bugs: plant one (send the signature before persisting the
state), trigger it with a targeted crash point, and the invariants report it."""
from __future__ import annotations

import pytest

from emulator import invariants
from emulator.network import PeerPlan
from emulator.rpc import RpcError, RpcTimeout
from emulator.waiting import wait_for
from tests.lnhelpers import open_channel

pytestmark = pytest.mark.process
PAIR = [PeerPlan("alice", 2_000_000, ("bob",)), PeerPlan("bob", 1_000_000)]


@pytest.mark.parametrize("planted", [True, False], ids=["bug-planted", "no-bug"])
def test_checker_reports_the_planted_persistence_bug(network_factory, planted):
    net = network_factory(PAIR)
    net.wait_connected()
    open_channel(net, "alice", "bob", 500_000)
    if planted:
        net.rpc("alice").call("dev_plant_bug", name="sign_before_persist")
    # the crash falls between sending the signature and persisting it (bug planted),
    # or, without the bug, after the state is safely on disk
    net.rpc("alice").call("dev_crashat", point="before_recv:revoke_and_ack")
    inv = net.rpc("bob").call("invoice", amount_msat=10_000_000, description="bug")
    try:
        net.rpc("alice").call("pay", bolt11=inv["bolt11"], wait=False, reply_timeout=3)
    except (RpcError, RpcTimeout):
        pass
    assert net.wait_dead("alice") == 137
    net.restart("alice", died_on_purpose=True)
    net.wait_connected()
    def violations():
        checks = [invariants.no_data_loss(net), invariants.no_channel_failures(net)]
        return [c for c in checks if not c.ok]
    if planted:
        found = wait_for(violations, 20, what="the checker to report the planted bug")
        assert "alice" in " ".join(c.detail for c in found)
    else:
        wait_for(lambda: all(ch["quiescent"] for n in ("alice", "bob")
                             for ch in net.rpc(n).call("listchannels")), 20, what="quiet")
        assert not violations()
