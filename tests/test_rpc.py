"""The control-RPC client: every keyword but ``reply_timeout`` is the verb's own, and a
verb's own ``timeout`` (a payment's budget) makes the client wait long enough for it."""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from emulator import envelope, transport
from emulator.rpc import RpcClient, RpcTimeout


class SlowVerb:
    """A control socket whose one verb answers with the arguments it got, ``delay``
    seconds after the request (a verb that takes its time, like a payment)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, delay: float) -> None:
        self.delay = delay
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            identity, data = self.sock.recv_multipart()
            request = envelope.unpack_control(data, "request")
            self.seen.append(request["args"])
            if self.stop.wait(self.delay):  # the verb works; a stopping test cuts it short
                break
            self.sock.send_multipart([identity, envelope.pack_reply(request["rid"],
                                                                    request["args"])])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(linger=0)


@pytest.fixture
def rpc() -> Iterator[tuple[RpcClient, Any]]:
    sock_dir = transport.short_socket_dir("lnemu-rpc-")
    endpoint = transport.ipc_endpoint(sock_dir, "ctl")
    ctx = zmq.Context()
    servers: list[SlowVerb] = []
    client = RpcClient(endpoint, timeout=0.3, ctx=ctx)

    def serve(delay: float) -> SlowVerb:
        servers.append(SlowVerb(ctx, endpoint, delay))
        return servers[-1]
    try:
        yield client, serve
    finally:
        for server in servers:
            server.close()
        client.close()
        ctx.term()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_a_verbs_own_timeout_reaches_it_and_the_client_waits_for_it(rpc):
    client, serve = rpc
    verb = serve(delay=0.8)  # longer than the client's own 0.3 s
    assert client.call("pay", bolt11="lnbc1", timeout=1.0) == {"bolt11": "lnbc1",
                                                                 "timeout": 1.0}
    assert verb.seen == [{"bolt11": "lnbc1", "timeout": 1.0}]


def test_reply_timeout_is_the_clients_alone(rpc):
    client, serve = rpc
    verb = serve(delay=0.8)
    with pytest.raises(RpcTimeout, match="within 0.2s"):
        client.call("pay", bolt11="lnbc1", reply_timeout=0.2, timeout=30)
    assert verb.seen == [{"bolt11": "lnbc1", "timeout": 30}]


def test_a_timeout_that_is_not_a_number_is_the_verbs_to_refuse(rpc):
    client, serve = rpc
    verb = serve(delay=0.0)
    assert client.call("pay", timeout="soon") == {"timeout": "soon"}  # the client's 0.3 s
    assert verb.seen == [{"timeout": "soon"}]
