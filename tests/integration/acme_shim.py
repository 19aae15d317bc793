#!/usr/bin/env python3
"""An HTTPS reverse proxy in front of Pebble's ACME API for the tests of
what Pebble 2.4 lacks: rate limits and ACME Renewal Information (ARI,
RFC 9773). Python 3 standard library only.

usage: acme_shim.py --listen 127.0.0.1:PORT --upstream https://127.0.0.1:P
           --cert CERT --key KEY --cafile CA --control FILE

  --listen   where to listen (PORT 0: any free port)
  --upstream Pebble's ACME listener (scheme, address, port)
  --cert/--key  the shim's HTTPS certificate: Pebble's own, so the CA
             that verifies Pebble verifies the shim
  --cafile   the CA that signed Pebble's certificate (the shim verifies
             Pebble with it)
  --control  a JSON file read on every request (missing or empty: {})

Every request is forwarded to Pebble unchanged (method, path, headers,
Host included, and body) and Pebble's answer returned unchanged, except:

  - Pebble's base URL (https://127.0.0.1:P or https://localhost:P) is
    rewritten to the shim's (https:// + the request's Host) in bodies and
    in Location and Link headers. The Host header goes to Pebble as the
    client sent it, so Pebble itself builds its URLs on the shim's base
    and checks each JWS "url" against it: clients keep talking through
    the shim and their signatures stay valid.
  - The directory gets "renewalInfo": "<shim>/renewal-info".
  - GET /renewal-info/<certID> is answered by the shim from the control
    file (Pebble never sees it): the entry for certID, else "default",
    else 404.
  - Requests matching a rate-limit rule of the control file are answered
    by the shim with 429 (rateLimited) while the rule has some left.

The control file:

  {
    "renewalInfo": {
      "default": {"start": "2026-01-01T00:00:00Z",
                  "end": "2026-01-02T00:00:00Z"},
      "<certID>": {"start": "...", "end": "...",
                   "explanationURL": "https://...",   (optional)
                   "retryAfter": 60,                   (optional, s; 21600)
                   "status": 500}                      (optional: answer
                                                        this error instead)
    },
    "rateLimit": [
      {"match": "newOrder",          (a resource name, see below) or
       "path": "^/order-plz$",       (a regular expression on the path)
       "method": "POST",             (optional)
       "count": 2,                   (the next 2 matching requests)
       "retryAfter": 30,             (Retry-After, seconds)
       "detail": "too many orders"}  (optional)
    ]
  }

A 429 carries Content-Type application/problem+json, the body
{"type": "urn:ietf:params:acme:error:rateLimited", "detail": ...,
"status": 429}, Retry-After, a Link to the directory, and a fresh
Replay-Nonce fetched from Pebble (HEAD newNonce) so that the client's
nonce chain stays valid. Rule counts start afresh whenever the control
file is replaced (a new inode or modification time): write it to a
temporary name and rename it over.

Output, on stdout: "listening PORT" once ready, then one line per request
as it is answered:

  req METHOD PATH STATUS RESOURCE [shim=rateLimited|renewalInfo]
      [replaces=CERTID]

RESOURCE is the directory name of the path (newNonce, newAccount,
newOrder, revokeCert, keyChange, renewalInfo), or one of directory,
account, order, orders, authz, chall, finalize, cert, or "-".
replaces= is the "replaces" field of a newOrder payload (RFC 9773), which
Pebble 2.4 ignores."""
import argparse
import base64
import http.client
import http.server
import json
import os
import re
import socketserver
import ssl
import sys
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "content-length",
              "accept-encoding"}
# Pebble 2.4's own paths for what the directory does not name.
PREFIXES = [("/my-account/", "account"), ("/list-orderz/", "orders"),
            ("/my-order/", "order"), ("/finalize-order/", "finalize"),
            ("/authZ/", "authz"), ("/chalZ/", "chall"),
            ("/certZ/", "cert"), ("/renewal-info/", "renewalInfo")]
ARI_PATH = "/renewal-info"


class Shim:
    def __init__(self, args):
        up = urllib.parse.urlsplit(args.upstream)
        self.up_host, self.up_port = up.hostname, up.port or 443
        self.up_bases = [("https://%s:%d" % (h, self.up_port)).encode()
                         for h in ("127.0.0.1", "localhost", "[::1]")]
        self.up_ctx = ssl.create_default_context(cafile=args.cafile)
        self.control_path = args.control
        self.lock = threading.Lock()
        self.used = {}
        self.paths = None  # directory path -> name, from Pebble

    def upstream(self, method, path, headers=None, body=None):
        conn = http.client.HTTPSConnection(self.up_host, self.up_port,
                                           context=self.up_ctx, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def directory_paths(self):
        if self.paths is None:
            _, _, body = self.upstream("GET", "/dir")
            paths = {"/dir": "directory"}
            for name, url in json.loads(body).items():
                if isinstance(url, str) and "://" in url:
                    paths[urllib.parse.urlsplit(url).path] = name
            self.paths = paths
        return self.paths

    def resource(self, path):
        path = path.split("?", 1)[0]
        name = self.directory_paths().get(path)
        if name is not None:
            return name
        if path == ARI_PATH:
            return "renewalInfo"
        for prefix, name in PREFIXES:
            if path.startswith(prefix):
                return name
        return "-"

    def fresh_nonce(self):
        nonce_path = next((p for p, n in self.directory_paths().items()
                           if n == "newNonce"), "/nonce-plz")
        _, headers, _ = self.upstream("HEAD", nonce_path)
        for k, v in headers:
            if k.lower() == "replay-nonce":
                return v
        return None

    def control(self):
        """The control file's content and its identity (inode, mtime)."""
        try:
            st = os.stat(self.control_path)
            with open(self.control_path, "rb") as f:
                text = f.read()
            data = json.loads(text) if text.strip() else {}
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data, (st.st_ino, st.st_mtime_ns)
        except FileNotFoundError:
            return {}, None
        except ValueError as e:
            log("control file %s: %s" % (self.control_path, e))
            return {}, None

    def take_rate_limit(self, control, ident, method, path, resource):
        """The first rate-limit rule that matches and has some left, with
        its use counted; or None."""
        for i, rule in enumerate(control.get("rateLimit") or []):
            if not isinstance(rule, dict):
                continue
            if "method" in rule and rule["method"].upper() != method:
                continue
            if "match" in rule and rule["match"] != resource:
                continue
            if "path" in rule and not re.search(rule["path"], path):
                continue
            if "match" not in rule and "path" not in rule:
                continue
            with self.lock:
                key = (ident, i)
                if self.used.get(key, 0) >= int(rule.get("count", 1)):
                    continue
                self.used[key] = self.used.get(key, 0) + 1
            return rule
        return None


def log(line):
    with LOG_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


LOG_LOCK = threading.Lock()


def b64url_json(s):
    s += "=" * (-len(s) % 4)
    return json.loads(base64.urlsafe_b64decode(s))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "acme-shim"
    shim = None  # set in main

    def log_message(self, fmt, *args):
        pass

    def do_any(self):
        shim = self.shim
        method, path = self.command, self.path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else None
        host = self.headers.get("Host") or "127.0.0.1:%d" % \
            self.server.server_address[1]
        base = ("https://" + host).encode()
        extra, resource = "", "-"
        try:
            resource = shim.resource(path)
            if resource == "newOrder" and body:
                try:
                    payload = b64url_json(json.loads(body)["payload"])
                    if "replaces" in payload:
                        extra += " replaces=%s" % payload["replaces"]
                except (ValueError, KeyError, TypeError):
                    pass
            control, ident = shim.control()
            rule = shim.take_rate_limit(control, ident, method,
                                        path.split("?", 1)[0], resource)
            if rule is not None:
                status = self.rate_limited(rule, base)
                extra = " shim=rateLimited" + extra
            elif resource == "renewalInfo" and \
                    path.startswith(ARI_PATH + "/"):
                status = self.renewal_info(control, path, base)
                extra = " shim=renewalInfo" + extra
            else:
                status = self.forward(method, path, body, base)
        except (OSError, http.client.HTTPException, ValueError) as e:
            status = self.reply(502, [], json.dumps({
                "type": "urn:ietf:params:acme:error:serverInternal",
                "detail": "acme shim: upstream: %s" % e,
                "status": 502}).encode(), "application/problem+json")
        log("req %s %s %d %s%s" % (method, path, status, resource, extra))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_any

    def reply(self, status, headers, data, ctype=None):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(data)
        return status

    def forward(self, method, path, body, base):
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP}
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        status, rheaders, data = self.shim.upstream(method, path, headers,
                                                    body)
        out, ctype = [], ""
        for k, v in rheaders:
            kl = k.lower()
            if kl in HOP_BY_HOP or kl in ("date", "server"):
                continue
            if kl in ("location", "link"):
                v = rewrite(v.encode("latin-1"), self.shim.up_bases,
                            base).decode("latin-1")
            if kl == "content-type":
                ctype = v
            out.append((k, v))
        if "json" in ctype or ctype.startswith("text/"):
            data = rewrite(data, self.shim.up_bases, base)
        if self.shim.resource(path) == "directory" and status == 200:
            d = json.loads(data)
            d["renewalInfo"] = base.decode() + ARI_PATH
            data = json.dumps(d, indent=2).encode()
        return self.reply(status, out, data)

    def rate_limited(self, rule, base):
        retry = int(rule.get("retryAfter", 60))
        headers = [("Retry-After", str(retry)),
                   ("Link", '<%s/dir>;rel="index"' % base.decode()),
                   ("Cache-Control", "public, max-age=0, no-cache")]
        nonce = self.shim.fresh_nonce()
        if nonce is not None:
            headers.append(("Replay-Nonce", nonce))
        data = json.dumps({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": rule.get("detail",
                               "acme shim: rate limit for %s" % self.path),
            "status": 429}, indent=2).encode()
        return self.reply(429, headers, data, "application/problem+json")

    def renewal_info(self, control, path, base):
        if self.command not in ("GET", "HEAD"):
            return self.reply(405, [("Allow", "GET, HEAD")], json.dumps({
                "type": "urn:ietf:params:acme:error:malformed",
                "detail": "renewalInfo takes GET", "status": 405}).encode(),
                "application/problem+json")
        cert_id = urllib.parse.unquote(
            path.split("?", 1)[0][len(ARI_PATH) + 1:])
        table = control.get("renewalInfo") or {}
        entry = table.get(cert_id, table.get("default"))
        if not isinstance(entry, dict):
            return self.reply(404, [], json.dumps({
                "type": "urn:ietf:params:acme:error:malformed",
                "detail": "no renewal information for %r" % cert_id,
                "status": 404}).encode(), "application/problem+json")
        if "status" in entry:
            status = int(entry["status"])
            return self.reply(status, [], json.dumps({
                "type": "urn:ietf:params:acme:error:serverInternal",
                "detail": "acme shim: configured failure",
                "status": status}).encode(), "application/problem+json")
        info = {"suggestedWindow": {"start": entry["start"],
                                    "end": entry["end"]}}
        if "explanationURL" in entry:
            info["explanationURL"] = entry["explanationURL"]
        headers = [("Retry-After", str(int(entry.get("retryAfter", 21600)))),
                   ("Link", '<%s/dir>;rel="index"' % base.decode())]
        return self.reply(200, headers, json.dumps(info, indent=2).encode(),
                          "application/json")


def rewrite(data, olds, new):
    for old in olds:
        data = data.replace(old, new)
    return data


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    ctx = None

    def finish_request(self, request, client_address):
        # The handshake in the connection's own thread: a stalled client
        # does not hold up the others.
        request.settimeout(60)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log("tls %s: %s" % (client_address[0], e))
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()

    def server_bind(self):
        # HTTPServer's own looks the name up (getfqdn): not needed here,
        # and slow where DNS is not answered.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        log("error %s: %s" % (client_address[0], sys.exc_info()[1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--control", required=True)
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    Handler.shim = Shim(args)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    Server.ctx = ctx
    server = Server((host.strip("[]"), int(port)), Handler)
    log("listening %d" % server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
