#!/usr/bin/env python3
"""A stand-in for Microsoft Entra ID and the managed-identity endpoint, for tests/auth.rs.

Usage: fake_entra.py STATE_DIR CERT KEY. Serves HTTPS on a free loopback port (written to
STATE_DIR/port) and answers:
  POST /<tenant>/oauth2/v2.0/token   (client secret, client certificate, workload identity)
  GET  /msi/token                    (App Service-style managed identity: IDENTITY_ENDPOINT)
with a JWT that Azurite's `--oauth basic` accepts (aud https://storage.azure.com, iss
https://sts.windows.net/<tenant>/; the signature is not checked). Each token's JWT expires after
STATE_DIR/jwt_life seconds (default 3600) while the answer announces STATE_DIR/expires_in
(default 3600): a test makes tokens that Azurite refuses before the client expects. While
STATE_DIR/fail exists, every request is refused; while STATE_DIR/delay holds N, every answer
waits N seconds. Each token issued appends its kind to
STATE_DIR/issued.
"""
import base64
import http.server
import json
import os
import ssl
import sys
import time
import urllib.parse

STATE, CERT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def setting(name, default):
    try:
        with open(os.path.join(STATE, name)) as f:
            return int(f.read().strip())
    except OSError:
        return default


def jwt():
    now = int(time.time())
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    claims = {
        "aud": "https://storage.azure.com",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "nbf": now - 60,
        "iat": now - 60,
        "exp": now + setting("jwt_life", 3600),
        "oid": "00000000-0000-0000-0000-000000000042",
    }
    return enc({"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + ".c2lnbmF0dXJl"


def record(kind):
    with open(os.path.join(STATE, "issued"), "a") as f:
        f.write(kind + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def refused(self):
        time.sleep(setting("delay", 0))
        return os.path.exists(os.path.join(STATE, "fail"))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        parts = self.path.strip("/").split("/")
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return self.reply(404, {"error": "not_found", "error_description": "no such path"})
        if self.refused() or "client_id" not in form:
            return self.reply(401, {"error": "invalid_client", "error_description": "refused by the test", "error_codes": [7000215]})
        if "client_secret" in form:
            if form["client_secret"] != ["test-client-secret"]:
                return self.reply(401, {"error": "invalid_client", "error_description": "wrong secret", "error_codes": [7000215]})
            kind = "secret"
        elif "client_assertion" in form:
            kind = "assertion"
        else:
            return self.reply(400, {"error": "invalid_request", "error_description": "no credential", "error_codes": [900144]})
        record(kind)
        expires_in = setting("expires_in", 3600)
        self.reply(200, {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": jwt()})

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if url.path != "/msi/token":
            return self.reply(404, {"error": "not_found"})
        if self.refused() or self.headers.get("x-identity-header") != "test-identity-header":
            return self.reply(401, {"error": "refused by the test"})
        query = urllib.parse.parse_qs(url.query)
        record("msi:" + ",".join(f"{k}={v[0]}" for k, v in sorted(query.items()) if k != "api-version"))
        expires_on = int(time.time()) + setting("expires_in", 3600)
        self.reply(200, {"access_token": jwt(), "expires_on": str(expires_on), "resource": query.get("resource", [""])[0], "token_type": "Bearer"})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(os.path.join(STATE, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(STATE, "port.tmp"), os.path.join(STATE, "port"))
server.serve_forever()
