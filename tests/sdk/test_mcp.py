"""The official `mcp` Python SDK, unmodified, through aigw's MCP proxy to a real MCP server
(the same SDK's MCPServer, tests/sdk/mcp_server.py) behind a two-node aigw cluster.

The streamable HTTP session starts on node 1 and continues on node 2: the Mcp-Session-Id the
client holds is the gateway's signed id, which either node turns back into the server's own.
The older SSE transport is checked the same way (stream on node 1, messages through node 2)."""

import concurrent.futures
import os
import random
import subprocess
import sys
import tempfile

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from conftest import BIN_DIR, _spawn

KEY = "sk-sdk-mcp-key-0001"
NO_MCP_KEY = "sk-sdk-no-mcp-key-0002"
UPSTREAM_TOKEN = "mcp-upstream-token-for-tests"
HERE = os.path.dirname(os.path.abspath(__file__))


def _stop(procs):
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def cluster():
    """Two MCP servers (streamable HTTP and SSE) and two aigw nodes of one cluster in front of
    them; yields the nodes' base URLs."""
    env = {"MCP_UPSTREAM_TOKEN": UPSTREAM_TOKEN}
    procs = []
    tmp = tempfile.TemporaryDirectory()
    try:
        for transport in ("streamable-http", "sse"):
            proc, addr = _spawn([sys.executable, os.path.join(HERE, "mcp_server.py"), transport],
                                r"listening on http://(\S+)", "stdout", env=env)
            procs.append(proc)
            if transport == "sse":
                sse_addr = addr
            else:
                http_addr = addr
        # A loopback address per node, so the cluster port cannot clash with another test's.
        ips = [f"127.{random.randint(1, 250)}.{random.randint(0, 250)}.{random.randint(2, 250)}"
               for _ in range(2)]
        members = ", ".join(f'"{i + 1}@{ip}:7001"' for i, ip in enumerate(ips))
        paths = []
        for i, ip in enumerate(ips):
            text = f"""
[node]
id = {i + 1}
api_listen = "{ip}:0"
cluster_listen = "{ip}:7001"
data_dir = "{os.path.join(tmp.name, f'data{i + 1}')}"

[server]
id_secret = "the-sdk-test-cluster-id-secret"

[cluster]
name = "sdk-mcp"
initial_members = [{members}]
heartbeat = "50ms"
election_timeout_min = "300ms"
election_timeout_max = "600ms"

[[bootstrap.mcp_servers]]
name = "tools"
url = "http://{http_addr}/mcp"
headers = {{ "X-Upstream-Token" = "${{MCP_UPSTREAM_TOKEN}}" }}

[[bootstrap.mcp_servers]]
name = "legacy"
url = "http://{sse_addr}"
headers = {{ "X-Upstream-Token" = "${{MCP_UPSTREAM_TOKEN}}" }}

[[bootstrap.keys]]
name = "mcp"
secret = "{KEY}"
mcp_servers = ["tools", "legacy"]

[[bootstrap.keys]]
name = "no-mcp"
secret = "{NO_MCP_KEY}"
mcp_servers = []
"""
            path = os.path.join(tmp.name, f"aigw{i + 1}.toml")
            with open(path, "w") as f:
                f.write(text)
            paths.append(path)
        # Together: a new cluster needs both members before it applies its bootstrap.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            started = list(pool.map(
                lambda path: _spawn([os.path.join(BIN_DIR, "aigw"), "serve", "--config", path],
                                    r"api_addr=(\S+)", "stderr", env=env),
                paths))
        procs.extend(proc for proc, _ in started)
        yield [f"http://{addr}" for _, addr in started]
    finally:
        _stop(procs)
        tmp.cleanup()


class NodeSwitch(httpx2.AsyncBaseTransport):
    """Sends every request to the node `target` names, whatever URL the SDK built, and keeps
    the Mcp-Session-Id values the gateway handed out."""

    def __init__(self, target):
        self.target = target
        self.inner = httpx2.AsyncHTTPTransport()
        self.session_ids = set()
        self.nodes_used = set()

    async def handle_async_request(self, request):
        target = httpx2.URL(self.target)
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        self.nodes_used.add(self.target)
        response = await self.inner.handle_async_request(request)
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.session_ids.add(session_id)
        return response

    async def aclose(self):
        await self.inner.aclose()


def text_of(result):
    assert not result.is_error, result
    return result.content[0].text


def test_a_streamable_http_session_started_on_one_node_continues_on_the_other(cluster):
    node1, node2 = cluster

    async def scenario():
        switch = NodeSwitch(node1)
        http = httpx2.AsyncClient(transport=switch, headers={"Authorization": f"Bearer {KEY}"},
                                  timeout=httpx2.Timeout(30, read=300))
        async with http, streamable_http_client(f"{node1}/v1/mcp/tools", http_client=http) as (
                read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "aigw-test-tools"
            tools = await session.list_tools()
            assert {"add", "session_calls"} <= {tool.name for tool in tools.tools}
            assert text_of(await session.call_tool("add", {"a": 2, "b": 40})) == "42"
            assert text_of(await session.call_tool("session_calls", {})) == "1"
            assert text_of(await session.call_tool("session_calls", {})) == "2"
            switch.target = node2
            # The same session, through the other node: the server counts on.
            assert text_of(await session.call_tool("session_calls", {})) == "3"
            assert text_of(await session.call_tool("add", {"a": 1, "b": 1})) == "2"
        return switch

    switch = anyio.run(scenario)
    assert switch.nodes_used == {node1, node2}
    [session_id] = switch.session_ids
    assert session_id.startswith("mcp_"), session_id


def test_the_sse_transport_streams_on_one_node_and_posts_through_the_other(cluster):
    node1, node2 = cluster

    async def scenario():
        switch = NodeSwitch(node1)

        def client_factory(headers=None, timeout=None, auth=None):
            return httpx2.AsyncClient(transport=switch, headers=headers, timeout=timeout, auth=auth)

        sessions = []
        async with sse_client(f"{node1}/v1/mcp/legacy/sse",
                              headers={"Authorization": f"Bearer {KEY}"},
                              httpx_client_factory=client_factory,
                              on_session_created=sessions.append) as (read, write):
            switch.target = node2
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                assert "add" in {tool.name for tool in tools.tools}
                assert text_of(await session.call_tool("add", {"a": 20, "b": 22})) == "42"
        return sessions, switch.nodes_used

    [session_id], nodes_used = anyio.run(scenario)
    assert nodes_used == {node1, node2}
    # The endpoint the client was given carries the gateway's signed session id.
    assert session_id.startswith("mcp_"), session_id


def openai_error(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and error["type"] and "param" in error
    return error


def test_refusals_are_openai_errors(cluster):
    node1, _ = cluster
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx2.Client(timeout=30) as http:
        no_key = http.post(f"{node1}/v1/mcp/tools", json=body, headers=accept)
        openai_error(no_key, 401, "missing_api_key")
        not_allowed = http.post(f"{node1}/v1/mcp/tools", json=body,
                                headers={**accept, "Authorization": f"Bearer {NO_MCP_KEY}"})
        assert "tools" in openai_error(not_allowed, 403, "permission_denied")["message"]
        unknown = http.post(f"{node1}/v1/mcp/nope", json=body,
                            headers={**accept, "Authorization": f"Bearer {KEY}"})
        openai_error(unknown, 404, "not_found")
        forged = http.post(f"{node1}/v1/mcp/tools", json=body,
                           headers={**accept, "Authorization": f"Bearer {KEY}",
                                    "Mcp-Session-Id": "mcp_6162_00112233445566778899aabbccddeeff"})
        openai_error(forged, 404, "not_found")
