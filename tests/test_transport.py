"""Socket factories (emulator/transport.py): a socket that could not be set up is closed."""
from __future__ import annotations

import threading

import pytest
import zmq

from emulator import transport


@pytest.mark.parametrize("make", [
    lambda ctx, endpoint: transport.dealer(ctx, endpoint),
    lambda ctx, endpoint: transport.subscriber(ctx, endpoint),
    lambda ctx, endpoint: transport.pusher(ctx, endpoint),
    lambda ctx, endpoint: transport.router(ctx, endpoint),
    lambda ctx, endpoint: transport.publisher(ctx, endpoint),
], ids=["dealer", "subscriber", "pusher", "router", "publisher"])
def test_a_bad_endpoint_is_refused_by_name_and_leaves_no_socket_open(make):
    """The error names the endpoint, and the context still terminates: no socket was
    left open behind the error (an open one blocks ctx.term() for good)."""
    ctx = zmq.Context()
    with pytest.raises(transport.EndpointError, match="udp://nowhere"):
        make(ctx, "udp://nowhere")
    terminated = threading.Thread(target=ctx.term, daemon=True)
    terminated.start()
    terminated.join(5.0)
    assert not terminated.is_alive(), "ctx.term() blocked: a socket was left open"
