"""The engine's listener: accepted connections get TCP_NODELAY (no Nagle + delayed-ACK stall)."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

from chimera_ops.paper.__main__ import _bind


def test_accepted_connections_have_tcp_nodelay() -> None:
    cfg: Any = SimpleNamespace(host="127.0.0.1", port=0)
    listener = _bind(cfg)
    port = listener.getsockname()[1]

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Grab(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Grab, sock=listener)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(accepted, 5)
            writer.close()
            return value
        finally:
            server.close()

    assert asyncio.run(accept_one()) != 0
