"""The gateway's writes to an API server it cannot reach: the gateway talks to the real API
server through a TCP relay the test cuts (open connections closed, new ones closed as soon as
they are accepted) and restores. Activity noted while it was cut is written once the API server
is back, and the writer goes on writing after it; a write that gets no answer times out and is
tried again; a per-user instance that cannot be created answers "starting, retry later" instead
of failing the call; a watch whose connection went silent is given up and listed again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client, config

from corral.gateway.activity import StatusWriter, Target
from corral.gateway.authn import Principal
from corral.gateway.instances import InstanceStarting
from corral.gateway.kubedirectory import KubernetesDirectory, KubernetesInstances
from tests.fixtures.operator import OperatorHarness
from tests.gateway.test_routing_kubernetes import eventually
from tests.gateway.test_wake_kubernetes import watching
from tests.operator.test_servers_cluster import SERVERS, server

pytestmark = pytest.mark.cluster

REMOTE = {"remote": {"url": "https://mcp.example.com/mcp"}}


class Relay:
    """Relays TCP connections to ``host:port``. ``cut`` closes open connections and closes new
    ones as soon as they are accepted; ``freeze`` keeps every connection open but passes no
    byte either way; ``restore`` relays again."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.is_cut = False
        self.refused = 0
        self.accepted = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def cut(self) -> None:
        self.is_cut = True
        for writer in self._writers:
            writer.close()

    def freeze(self) -> None:
        self.flowing.clear()

    def restore(self) -> None:
        self.is_cut = False
        self.flowing.set()

    async def close(self) -> None:
        self.cut()
        self.flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        try:
            if self.is_cut:
                self.refused += 1
                return
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
            self._writers.update((writer, up_writer))
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._writers.difference_update((writer, up_writer))
                up_writer.close()
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
            await self.flowing.wait()  # a frozen relay does not pass on a close either
        writer.close()


def status_of(h: OperatorHarness, name: str) -> dict[str, Any]:
    return (h.get(SERVERS, name) or {}).get("status") or {}


@pytest.fixture
async def relay(operator_harness: OperatorHarness) -> AsyncIterator[tuple[Relay, client.ApiClient]]:
    """A relay to the harness's API server and a client that goes through it."""
    api_server = urlsplit(operator_harness.cluster.server)
    assert api_server.hostname is not None
    assert api_server.port is not None
    relay = Relay(api_server.hostname, api_server.port)
    port = await relay.start()
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(operator_harness.cluster.kubeconfig), client_configuration=configuration
    )
    configuration.host = f"https://{api_server.hostname}:{port}"
    api = client.ApiClient(configuration)
    try:
        yield relay, api
    finally:
        await relay.close()
        api.close()


def remote_servers(h: OperatorHarness, *names: str) -> list[Target]:
    """Create remote MCPServers; the activity targets that stand for them."""
    for name in names:
        h.create(SERVERS, server(name, runtime=REMOTE))
    return [Target(SERVERS, h.namespace, name) for name in names]


@contextlib.asynccontextmanager
async def status_writer(api: client.ApiClient, **options: Any) -> AsyncIterator[StatusWriter]:
    writer = StatusWriter(api, interval=0.05, **options)
    try:
        yield writer
    finally:
        await writer.aclose()


async def test_activity_noted_while_the_api_server_is_unreachable_is_written_when_it_is_back(
    operator_harness: OperatorHarness, relay: tuple[Relay, client.ApiClient]
) -> None:
    h = operator_harness
    cut, api = relay
    everything, notes = remote_servers(h, "everything", "notes")

    def status(name: str) -> dict[str, Any]:
        return status_of(h, name)

    async with status_writer(api) as writer:
        writer.note(everything, ["echo"])
        await eventually(lambda: status("everything").get("tools") == ["echo"])

        cut.cut()
        writer.note(everything, ["add", "echo"])
        await eventually(lambda: cut.refused >= 3)
        writer.note(notes)
        await eventually(lambda: cut.refused >= 6)
        assert writer.pending == 2
        assert status("everything").get("tools") == ["echo"]
        assert "lastActivity" not in status("notes")

        cut.restore()
        await eventually(
            lambda: (
                status("everything").get("tools") == ["add", "echo"]
                and "lastActivity" in status("notes")
            )
        )
        await eventually(lambda: writer.pending == 0)

        writer.note(notes, ["ping"])
        await eventually(lambda: status("notes").get("tools") == ["ping"])


async def test_a_write_the_api_server_does_not_answer_times_out_and_is_tried_again(
    operator_harness: OperatorHarness, relay: tuple[Relay, client.ApiClient]
) -> None:
    h = operator_harness
    frozen, api = relay
    (everything,) = remote_servers(h, "everything")

    def tools() -> Any:
        return status_of(h, "everything").get("tools")

    async with status_writer(api, request_timeout=(0.5, 0.5)) as writer:
        writer.note(everything, ["echo"])
        await eventually(lambda: tools() == ["echo"])
        await eventually(lambda: writer.pending == 0)

        frozen.freeze()
        accepted = frozen.accepted
        writer.note(everything, ["add", "echo"])
        await eventually(lambda: frozen.accepted >= accepted + 2)
        assert writer.pending == 1
        assert tools() == ["echo"]

        frozen.restore()
        await eventually(lambda: tools() == ["add", "echo"])
        await eventually(lambda: writer.pending == 0)


async def test_an_instance_that_cannot_be_created_is_starting_not_a_failure(
    operator_harness: OperatorHarness, relay: tuple[Relay, client.ApiClient]
) -> None:
    h = operator_harness
    cut, api = relay
    h.create(SERVERS, server("notes", tenancy="perUser"))
    directory = await watching(h)
    instances = KubernetesInstances(api, directory, activity_interval=0.05)
    try:
        await eventually(lambda: directory.lookup(h.namespace, "notes") is not None)
        entry = directory.lookup(h.namespace, "notes")
        assert entry is not None
        cut.cut()
        with pytest.raises(InstanceStarting) as starting:
            await instances.ensure_running(entry, Principal("alice"))
        assert starting.value.retry_after > 0
        assert cut.refused > 0
        assert (
            h.custom.list_namespaced_custom_object(
                "corral.dev", "v1alpha1", h.namespace, "mcpserverinstances"
            )["items"]
            == []
        )
    finally:
        await instances.aclose()
        await asyncio.to_thread(directory.stop)


async def test_a_watch_whose_connection_went_silent_is_listed_again(
    operator_harness: OperatorHarness, relay: tuple[Relay, client.ApiClient]
) -> None:
    h = operator_harness
    frozen, api = relay
    directory = KubernetesDirectory(api, namespace=h.namespace, retry_delay=0.2, watch_timeout=1)

    def listed() -> set[str]:
        return {entry.name for entry in directory.servers()}

    directory.start()
    try:
        assert await asyncio.to_thread(directory.wait_synced, 60.0)
        frozen.freeze()
        accepted = frozen.accepted
        h.create(SERVERS, server("later", runtime=REMOTE))
        await eventually(lambda: frozen.accepted > accepted)
        assert "later" not in listed()
        frozen.restore()
        await eventually(lambda: "later" in listed())
    finally:
        frozen.restore()
        await asyncio.to_thread(directory.stop)
