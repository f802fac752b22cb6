"""A small real MCP server (the official `mcp` SDK's MCPServer, formerly FastMCP) for the SDK
tests: `python mcp_server.py streamable-http|sse`. It listens on an ephemeral loopback port and
prints `listening on http://HOST:PORT`.

It stands for an MCP server that needs its own credentials: every request must carry
`X-Upstream-Token` equal to $MCP_UPSTREAM_TOKEN (which only the gateway has), and must not
carry an `Authorization` header (the client's gateway key must never reach a backend)."""

import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

TOKEN = os.environ["MCP_UPSTREAM_TOKEN"]

server = MCPServer("aigw-test-tools")
calls_per_session = {}


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def session_calls(ctx: Context) -> int:
    """How many times this tool was called in this MCP session (by the session id the server
    handed out), this call included."""
    key = (ctx.headers or {}).get("mcp-session-id")
    calls_per_session[key] = calls_per_session.get(key, 0) + 1
    return calls_per_session[key]


def require_gateway_credentials(app):
    """ASGI middleware: 401 unless the gateway's injected token is there, 400 if the client's
    Authorization leaked through."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            problem = None
            if headers.get("x-upstream-token") != TOKEN:
                problem = (401, b"missing or wrong X-Upstream-Token")
            elif "authorization" in headers:
                problem = (400, b"the client's Authorization reached the MCP server")
            if problem:
                status, text = problem
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": text})
                return
        await app(scope, receive, send)

    return guarded


def main():
    transport = sys.argv[1] if len(sys.argv) > 1 else "streamable-http"
    if transport == "sse":
        app = server.sse_app()
    else:
        app = server.streamable_http_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    print(f"listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(require_gateway_credentials(app), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
