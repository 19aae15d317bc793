#!/usr/bin/env python3
"""An OCSP responder for tests: HTTP on 127.0.0.1 only, answering each
request (POST body, or GET with the base64 request in the path) with
`openssl ocsp` in responder mode over a CA index file.

usage: ocsp_responder.py PORT INDEX CA SIGNER_CERT SIGNER_KEY [VALIDITY]
VALIDITY: days (default 1), or "Nm" for N minutes.
Prints "listening PORT" once it accepts connections."""
import base64
import http.server
import subprocess
import sys
import tempfile
import urllib.parse

port, index, ca, signer, key = sys.argv[1:6]
validity = sys.argv[6] if len(sys.argv) > 6 else "1"
period = (["-nmin", validity[:-1]] if validity.endswith("m")
          else ["-ndays", validity])


def answer(request):
    with tempfile.NamedTemporaryFile() as req, tempfile.NamedTemporaryFile() as resp:
        req.write(request)
        req.flush()
        subprocess.run(["openssl", "ocsp", "-index", index, "-CA", ca,
                        "-rsigner", signer, "-rkey", key, *period,
                        "-reqin", req.name, "-respout", resp.name],
                       check=True, capture_output=True)
        return open(resp.name, "rb").read()


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, request):
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


server = http.server.HTTPServer(("127.0.0.1", int(port)), Handler)
print("listening", port, flush=True)
server.serve_forever()
