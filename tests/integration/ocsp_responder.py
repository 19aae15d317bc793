#!/usr/bin/env python3
"""An OCSP responder for tests: HTTP on 127.0.0.1 only, answering each
request (POST body, or GET with the base64 request in the path) with
`openssl ocsp` in responder mode over a CA index file.

usage: ocsp_responder.py PORT INDEX CA SIGNER_CERT SIGNER_KEY [VALIDITY]
                         [--answer-for CERT] [--expired] [--endless MODE]
VALIDITY: days (default 1), or "Nm" for N minutes.
--answer-for CERT answers every request as if it asked about CERT (a
response for another certificate). --expired backdates every response by
two days and re-signs it, so its nextUpdate has passed.
--endless MODE answers with a response that does not end: "chunked" (chunks
for ever), "no-length" (a body without Content-Length, until the connection
closes), "headers" (header lines for ever) or "chunk-line" (a chunk-size
line that never ends). Each stops after 128 MiB, to spare the machine when
a client does not.
Prints "listening PORT" once it accepts connections."""
import argparse
import base64
import datetime
import http.server
import re
import subprocess
import sys
import tempfile
import urllib.parse

ap = argparse.ArgumentParser()
for name in ("port", "index", "ca", "signer", "key"):
    ap.add_argument(name)
ap.add_argument("validity", nargs="?", default="1")
ap.add_argument("--answer-for")
ap.add_argument("--expired", action="store_true")
ap.add_argument("--endless",
                choices=("chunked", "no-length", "headers", "chunk-line"))
opt = ap.parse_args()
port, index, ca, signer, key = opt.port, opt.index, opt.ca, opt.signer, opt.key
validity, expired, answer_for = opt.validity, opt.expired, opt.answer_for
period = (["-nmin", validity[:-1]] if validity.endswith("m")
          else ["-ndays", validity])


def der_read(buf, pos):
    """One DER element at pos: (tag, content start, end)."""
    tag, n = buf[pos], buf[pos + 1]
    pos += 2
    if n & 0x80:
        size = n & 0x7f
        n = int.from_bytes(buf[pos:pos + size], "big")
        pos += size
    return tag, pos, pos + n


def der(tag, content):
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def children(buf, start, end):
    out = []
    while start < end:
        tag, cs, ce = der_read(buf, start)
        out.append((tag, buf[start:ce], buf[cs:ce]))
        start = ce
    return out


def backdate(resp):
    """Moves every GeneralizedTime of the signed data two days back and
    signs it again with the responder's key."""
    _, s, e = der_read(resp, 0)
    status, explicit = children(resp, s, e)
    seq = children(explicit[2], 0, len(explicit[2]))[0][2]
    oid, octets = children(seq, 0, len(seq))
    basic = octets[2]
    _, bs, be = der_read(basic, 0)
    parts = children(basic, bs, be)
    tbs = parts[0][1]

    def shift(m):
        t = datetime.datetime.strptime(m.group(1).decode(), "%Y%m%d%H%M%S")
        t -= datetime.timedelta(days=2)
        return b"\x18\x0f" + t.strftime("%Y%m%d%H%M%S").encode() + b"Z"
    tbs = re.sub(rb"\x18\x0f(\d{14})Z", shift, tbs)
    with tempfile.NamedTemporaryFile() as f:
        f.write(tbs)
        f.flush()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key,
                              f.name], check=True,
                             capture_output=True).stdout
    basic = der(0x30, tbs + parts[1][1] + der(0x03, b"\x00" + sig) +
                b"".join(p[1] for p in parts[3:]))
    inner = der(0x30, oid[1] + der(0x04, basic))
    return der(0x30, status[1] + der(0xa0, inner))


def answer(request):
    with tempfile.NamedTemporaryFile() as req, tempfile.NamedTemporaryFile() as resp:
        if answer_for:
            subprocess.run(["openssl", "ocsp", "-issuer", ca, "-cert",
                            answer_for, "-no_nonce", "-reqout", req.name],
                           check=True, capture_output=True)
        else:
            req.write(request)
            req.flush()
        subprocess.run(["openssl", "ocsp", "-index", index, "-CA", ca,
                        "-rsigner", signer, "-rkey", key, *period,
                        "-reqin", req.name, "-respout", resp.name],
                       check=True, capture_output=True)
        body = open(resp.name, "rb").read()
        return backdate(body) if expired else body


ENDLESS_LIMIT = 128 << 20


def endless(handler, mode):
    """Streams mode's endless answer until the client goes away."""
    w = handler.wfile
    head = {"chunked": b"Transfer-Encoding: chunked\r\n\r\n",
            "no-length": b"Connection: close\r\n\r\n",
            "headers": b"",
            "chunk-line": b"Transfer-Encoding: chunked\r\n\r\n"}[mode]
    piece = {"chunked": b"4000\r\n" + b"x" * 0x4000 + b"\r\n",
             "no-length": b"x" * 0x4000,
             "headers": b"X-Filler: " + b"x" * 1000 + b"\r\n",
             "chunk-line": b"0" * 0x4000}[mode]
    sent = 0
    try:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                b"application/ocsp-response\r\n" + head)
        while sent < ENDLESS_LIMIT:
            w.write(piece)
            sent += len(piece)
        w.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass
    handler.close_connection = True
    sys.stderr.write("ocsp responder: endless %s answer ended after %d "
                     "bytes\n" % (mode, sent))


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, request):
        if opt.endless:
            endless(self, opt.endless)
            return
        body = answer(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.reply(self.rfile.read(n))

    def do_GET(self):
        b64 = urllib.parse.unquote(self.path.rsplit("/", 1)[-1])
        self.reply(base64.b64decode(b64))

    def log_message(self, fmt, *args):
        sys.stderr.write("ocsp responder: " + (fmt % args) + "\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
server.daemon_threads = True
print("listening", port, flush=True)
server.serve_forever()
