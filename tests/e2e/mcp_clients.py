"""End-to-end: the official MCP Python SDK client drives the official server-everything
through the real gateway, over Streamable HTTP and over legacy HTTP+SSE.

Run by tests/e2e/run, which installs both into .cache/. Every process started here dies with
this script (PR_SET_PDEATHSIG) and is stopped by its own id at the end.
"""

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client

PR_SET_PDEATHSIG = 1


def die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log_path, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{open(log_path).read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open:\n{open(log_path).read()}")


class Processes:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, env=None, port=None):
        log_path = os.path.join(self.workdir, f"{name}.log")
        log = open(log_path, "w")
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.procs.append(proc)
        if port is not None:
            wait_port(port, proc, log_path)
        return log_path

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


async def exercise(session):
    init = await session.initialize()
    assert init.serverInfo.name, "initialize returned no server info"
    tools = await session.list_tools()
    names = {tool.name for tool in tools.tools}
    assert "echo" in names, f"echo missing from tools/list: {sorted(names)}"
    result = await session.call_tool("echo", {"message": "through the gateway"})
    texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
    assert texts == ["Echo: through the gateway"], texts
    return len(names)


async def streamable_http(url):
    async with streamablehttp_client(url) as (read, write, _session_id):
        async with ClientSession(read, write) as session:
            return await exercise(session)


async def legacy_sse(url):
    async with sse_client(url) as (read, write):
        async with ClientSession(read, write) as session:
            return await exercise(session)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--everything", required=True, help="server-everything's dist/index.js")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="portcullis-e2e-")
    procs = Processes(workdir)
    results = []
    try:
        http_port, sse_port = free_port(), free_port()
        procs.start("everything-http", ["node", args.everything, "streamableHttp"], {"PORT": str(http_port)}, http_port)
        procs.start("everything-sse", ["node", args.everything, "sse"], {"PORT": str(sse_port)}, sse_port)

        gw_port, admin_port = free_port(), free_port()
        config = os.path.join(workdir, "portcullis.yaml")
        with open(config, "w") as f:
            f.write(
                f"""listen: ["127.0.0.1:{gw_port}"]
public_url: http://127.0.0.1:{gw_port}
admin: {{listen: "127.0.0.1:{admin_port}"}}
agent_auth: {{mode: none, allow_unauthenticated: true}}
servers:
  - name: everything
    path: /everything
    upstream: "http://127.0.0.1:{http_port}/mcp"
  - name: everything-sse
    path: /legacy
    upstream: "http://127.0.0.1:{sse_port}"
"""
            )
        gateway_log = procs.start("gateway", [args.gateway, "run", "-c", config], {"PORTCULLIS_LOG": "info"}, gw_port)
        wait_port(admin_port, procs.procs[-1], gateway_log)

        base = f"http://127.0.0.1:{gw_port}"
        cases = [
            ("streamable HTTP at the prefix", streamable_http, f"{base}/everything"),
            ("streamable HTTP at the alias", streamable_http, f"{base}/servers/everything/mcp"),
            ("legacy HTTP+SSE", legacy_sse, f"{base}/legacy/sse"),
        ]
        for name, run, url in cases:
            try:
                tool_count = asyncio.run(asyncio.wait_for(run(url), timeout=60))
                print(f"ok: {name} ({url}): initialize, tools/list ({tool_count} tools), tools/call echo")
                results.append(True)
            except Exception:
                print(f"FAILED: {name} ({url})")
                traceback.print_exc()
                results.append(False)
        if not all(results):
            print(f"--- gateway log ---\n{open(gateway_log).read()[-4000:]}")
    finally:
        procs.stop()

    passed = sum(results)
    failed = len(results) - passed
    print(f"e2e: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
