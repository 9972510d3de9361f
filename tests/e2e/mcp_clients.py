"""End-to-end: the official MCP Python SDK client drives the official server-everything
through the real gateway, over Streamable HTTP and over legacy HTTP+SSE.

Run by tests/e2e/run, which installs both into .cache/. Every process started here dies with
this script (PR_SET_PDEATHSIG) and is stopped by its own id at the end.
"""

import argparse
import asyncio
import base64
import ctypes
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

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


class MockIdentityProvider:
    """Serves a JWKS for an RSA key made here and mints access tokens signed with it."""

    ISSUER = "https://idp.portcullis.e2e"
    CLIENT_ID = "portcullis-e2e"
    CLIENT_SECRET = "e2e:secret+with/odd%chars"
    SERVICE_TOKEN = "e2e-service-token-3f9a"

    def __init__(self):
        self.token_requests = 0
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()

        def b64(n):
            return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

        jwks = json.dumps({"keys": [{"kty": "RSA", "use": "sig", "kid": "e2e", "alg": "RS256", "n": b64(numbers.n), "e": b64(numbers.e)}]}).encode()

        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def reply(self, status, body):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.reply(200, jwks)

            def do_POST(self):
                # Client credentials for the gateway's service account, HTTP Basic client auth.
                length = int(self.headers.get("content-length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                expected = "Basic " + base64.b64encode(f"{idp.CLIENT_ID}:{urllib.parse.quote_plus(idp.CLIENT_SECRET)}".encode()).decode()
                if form.get("grant_type") != "client_credentials" or self.headers.get("authorization") != expected:
                    self.reply(401, b'{"error":"invalid_client"}')
                    return
                idp.token_requests += 1
                self.reply(200, json.dumps({"access_token": idp.SERVICE_TOKEN, "token_type": "Bearer", "expires_in": 3600}).encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def token_url(self):
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def jwks_url(self):
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def token(self, audience, scope="mcp:tools"):
        now = int(time.time())
        claims = {"iss": self.ISSUER, "aud": audience, "sub": "e2e-user", "iat": now, "exp": now + 600, "scope": scope}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "e2e"})

    def stop(self):
        self.server.shutdown()


def challenge_without_token(url, token=None):
    """POSTs an initialize (with `token` as the bearer, if given); returns the status and challenge."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url,
        data=b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}',
        headers=headers,
    )
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")
    return 200, ""


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


async def streamable_http(url, headers=None):
    async with streamablehttp_client(url, headers=headers) as (read, write, _session_id):
        async with ClientSession(read, write) as session:
            return await exercise(session)


async def legacy_sse(url, headers=None):
    async with sse_client(url, headers=headers) as (read, write):
        async with ClientSession(read, write) as session:
            return await exercise(session)


async def locked_mcp(url, headers):
    async with streamablehttp_client(url, headers=headers) as (read, write, _session_id):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            assert [t.name for t in tools.tools] == ["echo"], tools
            result = await session.call_tool("echo", {"message": "credential injected"})
            assert [c.text for c in result.content] == ["Echo: credential injected"], result
            return len(tools.tools)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--everything", required=True, help="server-everything's dist/index.js")
    parser.add_argument("--mock-mcp", required=True, help="the repository's mock MCP server binary")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="portcullis-e2e-")
    procs = Processes(workdir)
    idp = MockIdentityProvider()
    results = []
    try:
        http_port, sse_port = free_port(), free_port()
        procs.start("everything-http", ["node", args.everything, "streamableHttp"], {"PORT": str(http_port)}, http_port)
        procs.start("everything-sse", ["node", args.everything, "sse"], {"PORT": str(sse_port)}, sse_port)
        # An upstream that refuses anything without the gateway's service token.
        locked_port = free_port()
        procs.start("locked-mcp", [args.mock_mcp, f"127.0.0.1:{locked_port}"], {"MOCK_MCP_REQUIRE_BEARER": MockIdentityProvider.SERVICE_TOKEN}, locked_port)

        gw_port, admin_port = free_port(), free_port()
        audience = f"http://127.0.0.1:{gw_port}/secure"
        config = os.path.join(workdir, "portcullis.yaml")
        with open(config, "w") as f:
            f.write(
                f"""listen: ["127.0.0.1:{gw_port}"]
public_url: http://127.0.0.1:{gw_port}
admin: {{listen: "127.0.0.1:{admin_port}"}}
identity_providers:
  e2e:
    issuer: "{MockIdentityProvider.ISSUER}"
    jwks_url: "{idp.jwks_url}"
    algorithms: [RS256]
agent_auth: {{mode: none, allow_unauthenticated: true}}
servers:
  - name: everything
    path: /everything
    upstream: "http://127.0.0.1:{http_port}/mcp"
  - name: everything-sse
    path: /legacy
    upstream: "http://127.0.0.1:{sse_port}"
  - name: secure
    path: /secure
    upstream: "http://127.0.0.1:{http_port}/mcp"
    agent_auth: {{mode: jwt, provider: e2e, scopes: ["mcp:tools"]}}
  - name: secure-legacy
    path: /secure-legacy
    upstream: "http://127.0.0.1:{sse_port}"
    agent_auth: {{mode: jwt, provider: e2e, scopes: ["mcp:tools"]}}
  - name: locked
    path: /locked
    upstream: "http://127.0.0.1:{locked_port}/mcp"
    agent_auth: {{mode: jwt, provider: e2e}}
    app_auth:
      type: oauth2_client_credentials
      token_url: "{idp.token_url}"
      client_id: "{MockIdentityProvider.CLIENT_ID}"
      client_secret: "${{env:E2E_CLIENT_SECRET}}"
"""
            )
        gateway_log = procs.start(
            "gateway",
            [args.gateway, "run", "-c", config],
            {"PORTCULLIS_LOG": "info", "E2E_CLIENT_SECRET": MockIdentityProvider.CLIENT_SECRET},
            gw_port,
        )
        wait_port(admin_port, procs.procs[-1], gateway_log)

        base = f"http://127.0.0.1:{gw_port}"
        bearer = {"Authorization": f"Bearer {idp.token(audience)}"}
        legacy_bearer = {"Authorization": f"Bearer {idp.token(f'{base}/secure-legacy')}"}
        cases = [
            ("streamable HTTP at the prefix", streamable_http, f"{base}/everything", None),
            ("streamable HTTP at the alias", streamable_http, f"{base}/servers/everything/mcp", None),
            ("legacy HTTP+SSE", legacy_sse, f"{base}/legacy/sse", None),
            ("streamable HTTP with a bearer token", streamable_http, f"{base}/secure", bearer),
            ("legacy HTTP+SSE with a bearer token", legacy_sse, f"{base}/secure-legacy/sse", legacy_bearer),
            (
                "an upstream that needs the gateway's client-credentials token",
                locked_mcp,
                f"{base}/locked",
                {"Authorization": f"Bearer {idp.token(f'{base}/locked')}"},
            ),
        ]

        try:
            status, _ = challenge_without_token(f"http://127.0.0.1:{locked_port}/mcp")
            assert status == 401, f"the locked upstream answered {status} without a credential"
            print("ok: the locked upstream refuses a request without the service token")
            results.append(True)
        except Exception:
            print("FAILED: the locked upstream check")
            traceback.print_exc()
            results.append(False)

        try:
            status, challenge = challenge_without_token(f"{base}/secure")
            expected = f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/secure", scope="mcp:tools"'
            assert status == 401, status
            assert challenge == expected, challenge
            with urllib.request.urlopen(f"{base}/.well-known/oauth-protected-resource/secure", timeout=10) as r:
                metadata = json.load(r)
            assert metadata["resource"] == audience, metadata
            assert metadata["authorization_servers"] == [MockIdentityProvider.ISSUER], metadata
            print(f"ok: no token: 401 with {challenge}; metadata names {metadata['resource']}")
            results.append(True)
        except Exception:
            print("FAILED: the challenge without a token")
            traceback.print_exc()
            results.append(False)

        try:
            # Each server accepts only tokens issued for it (their `aud` is its resource URL).
            for_secure = idp.token(audience)
            status, challenge = challenge_without_token(f"{base}/locked", for_secure)
            assert status == 401, f"a token for /secure opened /locked ({status})"
            assert challenge.startswith('Bearer error="invalid_token"'), challenge
            status, _ = challenge_without_token(f"{base}/servers/secure/mcp", for_secure)
            assert status != 401, f"the alias of /secure refused its token ({status})"
            print("ok: a token issued for /secure opens /secure and its alias, and not /locked")
            results.append(True)
        except Exception:
            print("FAILED: a token for one server on another")
            traceback.print_exc()
            results.append(False)

        for name, run, url, headers in cases:
            try:
                tool_count = asyncio.run(asyncio.wait_for(run(url, headers), timeout=60))
                print(f"ok: {name} ({url}): initialize, tools/list ({tool_count} tools), tools/call echo")
                results.append(True)
            except Exception:
                print(f"FAILED: {name} ({url})")
                traceback.print_exc()
                results.append(False)
        if idp.token_requests != 1:
            print(f"FAILED: the gateway asked for the service token {idp.token_requests} times, expected once (cached)")
            results.append(False)
        if not all(results):
            print(f"--- gateway log ---\n{open(gateway_log).read()[-4000:]}")
    finally:
        procs.stop()
        idp.stop()

    passed = sum(results)
    failed = len(results) - passed
    print(f"e2e: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
