"""How the OPC UA driver reaches its server: asyncua's own socket, or a connection a link
factory makes (tests join the client's protocol to a real asyncua server's in memory).

asyncua's client is an asyncio protocol (``UASocketProtocol``) on a transport that
``UaClient.connect_socket`` opens with ``loop.create_connection``. An
:data:`OpcUaLinkFactory` has that call's signature, ``factory(protocol_factory, host, port)``,
so a test can hand back a transport joined in memory to the server's ``OPCUAProtocol``
(:func:`daq.transport.join`): the real client and server code run, only the socket is
replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncua.client.client import Client

#: Opens the connection: called as ``factory(protocol_factory, host, port)``, the signature
#: of ``loop.create_connection``; returns ``(transport, protocol)``.
OpcUaLinkFactory = Callable[
    [Callable[[], asyncio.Protocol], str, int], Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]
]


def make_client(
    url: str, timeout_s: float, watchdog_s: float, link_factory: OpcUaLinkFactory | None
) -> Client:
    """An asyncua client for ``url``; its connection comes from ``link_factory`` if given."""
    from asyncua.client.client import Client
    from asyncua.client.ua_client import UaClientState

    if link_factory is None:
        return Client(url, timeout=timeout_s, watchdog_intervall=watchdog_s)
    factory = link_factory

    class LinkedClient(Client):
        async def connect_socket(self) -> None:
            # UaClient.connect_socket of the pinned asyncua, with the connection from the
            # factory: the same protocol, states and timeout.
            ua: Any = self.uaclient
            ua._set_state(UaClientState.CONNECTING)
            try:
                async with asyncio.timeout(timeout_s):
                    await factory(
                        ua._make_protocol, self.server_url.hostname or "", self.server_url.port or 4840
                    )
            except BaseException:
                ua._set_state(UaClientState.DISCONNECTED)
                raise
            ua._set_state(UaClientState.SOCKET_OPEN)

    return LinkedClient(url, timeout=timeout_s, watchdog_intervall=watchdog_s)
