/* The ACME test infrastructure itself, against the real Pebble (Debian's
 * pebble 2.4) and pebble-challtestsrv on loopback: the directory over
 * HTTPS verified with the CA made at start, new-nonce, the mock DNS
 * answering 127.0.0.1 for any name and no AAAA, both daemons listening on
 * 127.0.0.1 only, the management interface's root and intermediate,
 * certificates really issued over http-01 and tls-alpn-01 (validation
 * connecting to 127.0.0.1 on the ports given), external account binding,
 * PEBBLE_WFE_NONCEREJECT, and acme_shim.py in front of Pebble: the
 * directory rewritten with renewalInfo, ARI windows from the control
 * file, 429 rateLimited with Retry-After and a nonce that keeps the
 * client's chain valid, then requests passing through again.
 *
 * The ACME requests come from a minimal client in Python (standard
 * library and the openssl command: ES256 JWS, HS256 for EAB), written to
 * the scratch directory at start: see client_py below. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"
#include "pebble.h"

/* One Pebble and one shim for the whole suite, started before the tests
 * (their processes outlive each forked test). Nonce rejection and
 * authorization reuse off: every run takes the same path. */
static struct h_pebble pb;
static struct h_acme_shim shim;
/* The validation ports: the python responders take them in turn. */
static int http_port, tls_port;
static char client_path[600];

/* The client (see its docstring). Kept here as text so that the test is
 * one file; it is written to the scratch dir at start. */
static const char client_py[] =
    "\"\"\"A minimal ACME client for testing the test CA itself: Python 3 standard\n"
    "library plus the openssl command (ES256 account key, JWS signed by\n"
    "openssl dgst).\n"
    "\n"
    "usage: acme_client.py CAFILE DIRECTORY KEYFILE STEP...\n"
    "  account                 newAccount (terms agreed); the key is made if\n"
    "                          KEYFILE does not exist\n"
    "  account-eab KID HMAC    the same with external account binding (HS256,\n"
    "                          HMAC the base64url key)\n"
    "  order NAME              newOrder for the DNS name NAME\n"
    "  order-replacing NAME ID the same with \"replaces\": ID (RFC 9773)\n"
    "  fresh-nonce             the next POST takes a fresh nonce from newNonce\n"
    "                          instead of the last answer's Replay-Nonce\n"
    "  issue NAME TYPE PORT OUT  order NAME, answer TYPE (http-01 or\n"
    "                          tls-alpn-01) with a responder on 127.0.0.1:PORT,\n"
    "                          finalize and download: OUT.pem (chain), OUT.key\n"
    "Each POST prints \"post LABEL STATUS TYPE retry-after=R nonce=yes|no\n"
    "location=L\" (TYPE: the problem type or -); responders print \"hit TYPE\n"
    "PEER [alpn=... sni=...]\"; issue ends with \"issued OUT.pem\".\n"
    "\n"
    "Two more tools for the tests, without a CA:\n"
    "  acme_client.py dns PORT NAME TYPE   one query (TYPE 1: A, 28: AAAA) to\n"
    "      127.0.0.1:PORT over UDP: prints \"rcode=R\" then \"A ADDR\" / \"AAAA ADDR\"\n"
    "      per answer\n"
    "  acme_client.py sockets PID...       the local address of every TCP\n"
    "      listener and UDP socket of the processes: \"tcp|udp ADDR:PORT\"\n"
    "\"\"\"\n"
    "import base64\n"
    "import hashlib\n"
    "import hmac\n"
    "import http.server\n"
    "import json\n"
    "import os\n"
    "import socket\n"
    "import socketserver\n"
    "import struct\n"
    "import ssl\n"
    "import subprocess\n"
    "import sys\n"
    "import threading\n"
    "import time\n"
    "import urllib.error\n"
    "import urllib.request\n"
    "\n"
    "\n"
    "PRINT_LOCK = threading.Lock()\n"
    "\n"
    "\n"
    "def say(line):\n"
    "    \"\"\"Prints |line| whole: responders answer from several threads.\"\"\"\n"
    "    with PRINT_LOCK:\n"
    "        sys.stdout.write(line + \"\\n\")\n"
    "        sys.stdout.flush()\n"
    "\n"
    "\n"
    "def b64(b):\n"
    "    return base64.urlsafe_b64encode(b).rstrip(b\"=\").decode()\n"
    "\n"
    "\n"
    "def openssl(*args, data=None):\n"
    "    return subprocess.run((\"openssl\",) + args, input=data,\n"
    "                          capture_output=True, check=True).stdout\n"
    "\n"
    "\n"
    "def raw_sig(der):\n"
    "    \"\"\"An ECDSA DER signature as JWS wants it: r and s, 32 bytes each.\"\"\"\n"
    "    i = 2 + (der[1] & 0x7f if der[1] & 0x80 else 0)\n"
    "    out = b\"\"\n"
    "    for _ in range(2):\n"
    "        n = der[i + 1]\n"
    "        out += der[i + 2:i + 2 + n].lstrip(b\"\\0\").rjust(32, b\"\\0\")\n"
    "        i += 2 + n\n"
    "    return out\n"
    "\n"
    "\n"
    "class Client:\n"
    "    def __init__(self, cafile, directory, keyfile):\n"
    "        self.ctx = ssl.create_default_context(cafile=cafile)\n"
    "        self.key, self.kid, self.nonce = keyfile, None, None\n"
    "        self.dir = json.loads(self.http(\"GET\", directory)[2])\n"
    "        if not os.path.exists(keyfile):\n"
    "            openssl(\"ecparam\", \"-name\", \"prime256v1\", \"-genkey\", \"-noout\",\n"
    "                    \"-out\", keyfile)\n"
    "        point = openssl(\"ec\", \"-in\", keyfile, \"-pubout\", \"-outform\",\n"
    "                        \"DER\")[-65:]\n"
    "        self.jwk = {\"crv\": \"P-256\", \"kty\": \"EC\", \"x\": b64(point[1:33]),\n"
    "                    \"y\": b64(point[33:])}\n"
    "        self.thumb = b64(hashlib.sha256(json.dumps(\n"
    "            self.jwk, sort_keys=True, separators=(\",\", \":\")).encode())\n"
    "            .digest())\n"
    "\n"
    "    def http(self, method, url, body=None, ctype=None):\n"
    "        req = urllib.request.Request(url, data=body, method=method)\n"
    "        if ctype:\n"
    "            req.add_header(\"Content-Type\", ctype)\n"
    "        try:\n"
    "            with urllib.request.urlopen(req, context=self.ctx,\n"
    "                                        timeout=30) as r:\n"
    "                status, headers, data = r.status, r.headers, r.read()\n"
    "        except urllib.error.HTTPError as e:\n"
    "            status, headers, data = e.code, e.headers, e.read()\n"
    "        if headers.get(\"Replay-Nonce\"):\n"
    "            self.nonce = headers[\"Replay-Nonce\"]\n"
    "        return status, headers, data\n"
    "\n"
    "    def post(self, label, url, payload):\n"
    "        if self.nonce is None:\n"
    "            self.http(\"HEAD\", self.dir[\"newNonce\"])\n"
    "        prot = {\"alg\": \"ES256\", \"nonce\": self.nonce, \"url\": url}\n"
    "        if self.kid:\n"
    "            prot[\"kid\"] = self.kid\n"
    "        else:\n"
    "            prot[\"jwk\"] = self.jwk\n"
    "        self.nonce = None\n"
    "        p64 = b64(json.dumps(prot).encode())\n"
    "        pl64 = \"\" if payload is None else b64(json.dumps(payload).encode())\n"
    "        sig = raw_sig(openssl(\"dgst\", \"-sha256\", \"-sign\", self.key,\n"
    "                              data=(p64 + \".\" + pl64).encode()))\n"
    "        body = json.dumps({\"protected\": p64, \"payload\": pl64,\n"
    "                           \"signature\": b64(sig)}).encode()\n"
    "        status, h, data = self.http(\"POST\", url, body,\n"
    "                                    \"application/jose+json\")\n"
    "        ptype = \"-\"\n"
    "        if \"problem+json\" in (h.get(\"Content-Type\") or \"\"):\n"
    "            ptype = json.loads(data).get(\"type\", \"-\")\n"
    "        say(\"post %s %d %s retry-after=%s nonce=%s location=%s\" % (\n"
    "            label, status, ptype, h.get(\"Retry-After\", \"-\"),\n"
    "            \"yes\" if h.get(\"Replay-Nonce\") else \"no\",\n"
    "            h.get(\"Location\", \"-\")))\n"
    "        return status, h, data\n"
    "\n"
    "    def account(self, eab=None):\n"
    "        payload = {\"termsOfServiceAgreed\": True}\n"
    "        if eab is not None:\n"
    "            # RFC 8555 7.3.4: the account key signed by the MAC key.\n"
    "            kid, key = eab\n"
    "            key = base64.urlsafe_b64decode(key + \"=\" * (-len(key) % 4))\n"
    "            p64 = b64(json.dumps({\"alg\": \"HS256\", \"kid\": kid,\n"
    "                                  \"url\": self.dir[\"newAccount\"]}).encode())\n"
    "            pl64 = b64(json.dumps(self.jwk).encode())\n"
    "            mac = hmac.new(key, (p64 + \".\" + pl64).encode(),\n"
    "                           hashlib.sha256).digest()\n"
    "            payload[\"externalAccountBinding\"] = {\n"
    "                \"protected\": p64, \"payload\": pl64, \"signature\": b64(mac)}\n"
    "        status, h, data = self.post(\"newAccount\", self.dir[\"newAccount\"],\n"
    "                                    payload)\n"
    "        if status in (200, 201):\n"
    "            self.kid = h[\"Location\"]\n"
    "        return status, h, data\n"
    "\n"
    "    def poll(self, label, url, until, timeout=20):\n"
    "        end = time.time() + timeout\n"
    "        while True:\n"
    "            obj = json.loads(self.post(label, url, None)[2])\n"
    "            if obj.get(\"status\") not in until or time.time() > end:\n"
    "                return obj\n"
    "            time.sleep(0.2)\n"
    "\n"
    "    def issue(self, name, ctype, port, out):\n"
    "        status, h, data = self.post(\"newOrder\", self.dir[\"newOrder\"], {\n"
    "            \"identifiers\": [{\"type\": \"dns\", \"value\": name}]})\n"
    "        if status != 201:\n"
    "            sys.exit(\"newOrder: %d %s\" % (status, data.decode()))\n"
    "        order_url, order = h[\"Location\"], json.loads(data)\n"
    "        for url in order[\"authorizations\"]:\n"
    "            authz = json.loads(self.post(\"authz\", url, None)[2])\n"
    "            if authz[\"status\"] == \"valid\":\n"
    "                say(\"reused authz %s\" % url)\n"
    "                continue\n"
    "            chall = [c for c in authz[\"challenges\"] if c[\"type\"] == ctype][0]\n"
    "            keyauth = chall[\"token\"] + \".\" + self.thumb\n"
    "            stop = responder(ctype, port, name, chall[\"token\"], keyauth,\n"
    "                             out)\n"
    "            try:\n"
    "                self.post(\"chall\", chall[\"url\"], {})\n"
    "                authz = self.poll(\"authz\", url, (\"pending\",))\n"
    "            finally:\n"
    "                stop()\n"
    "            if authz[\"status\"] != \"valid\":\n"
    "                sys.exit(\"authz: %s\" % json.dumps(authz))\n"
    "        openssl(\"req\", \"-new\", \"-newkey\", \"ec\", \"-pkeyopt\",\n"
    "                \"ec_paramgen_curve:P-256\", \"-nodes\", \"-keyout\", out + \".key\",\n"
    "                \"-subj\", \"/CN=\" + name, \"-addext\",\n"
    "                \"subjectAltName=DNS:\" + name, \"-outform\", \"DER\", \"-out\",\n"
    "                out + \".csr\")\n"
    "        with open(out + \".csr\", \"rb\") as f:\n"
    "            csr = f.read()\n"
    "        self.post(\"finalize\", order[\"finalize\"], {\"csr\": b64(csr)})\n"
    "        order = self.poll(\"order\", order_url, (\"pending\", \"ready\",\n"
    "                                               \"processing\"))\n"
    "        if order[\"status\"] != \"valid\":\n"
    "            sys.exit(\"order: %s\" % json.dumps(order))\n"
    "        status, h, data = self.post(\"cert\", order[\"certificate\"], None)\n"
    "        with open(out + \".pem\", \"wb\") as f:\n"
    "            f.write(data)\n"
    "        say(\"issued %s.pem\" % out)\n"
    "\n"
    "\n"
    "def responder(ctype, port, name, token, keyauth, out):\n"
    "    \"\"\"Answers the challenge on 127.0.0.1:|port|; returns a stop function.\"\"\"\n"
    "    if ctype == \"http-01\":\n"
    "        class H(http.server.BaseHTTPRequestHandler):\n"
    "            def do_GET(self):\n"
    "                ok = self.path == \"/.well-known/acme-challenge/\" + token\n"
    "                say(\"hit http-01 %s path-ok=%s\" % (\n"
    "                    self.client_address[0], ok))\n"
    "                body = keyauth.encode() if ok else b\"no\"\n"
    "                self.send_response(200 if ok else 404)\n"
    "                self.send_header(\"Content-Length\", str(len(body)))\n"
    "                self.end_headers()\n"
    "                self.wfile.write(body)\n"
    "\n"
    "            def log_message(self, *args):\n"
    "                pass\n"
    "        class S(http.server.ThreadingHTTPServer):\n"
    "            def server_bind(self):  # without HTTPServer's getfqdn\n"
    "                socketserver.TCPServer.server_bind(self)\n"
    "                self.server_name, self.server_port = self.server_address\n"
    "        srv = S((\"127.0.0.1\", port), H)\n"
    "        threading.Thread(target=srv.serve_forever, args=(0.05,),\n"
    "                         daemon=True).start()\n"
    "\n"
    "        def stop():\n"
    "            srv.shutdown()\n"
    "            srv.server_close()\n"
    "        return stop\n"
    "    # tls-alpn-01 (RFC 8737): a certificate for |name| alone with the\n"
    "    # critical acmeIdentifier extension holding SHA-256(keyauth).\n"
    "    digest = hashlib.sha256(keyauth.encode()).digest()\n"
    "    ext = \"DER:04:20:\" + \":\".join(\"%02x\" % b for b in digest)\n"
    "    openssl(\"req\", \"-x509\", \"-newkey\", \"ec\", \"-pkeyopt\",\n"
    "            \"ec_paramgen_curve:P-256\", \"-nodes\", \"-keyout\",\n"
    "            out + \".alpn.key\", \"-out\", out + \".alpn.pem\", \"-days\", \"1\",\n"
    "            \"-subj\", \"/CN=\" + name, \"-addext\", \"subjectAltName=DNS:\" + name,\n"
    "            \"-addext\", \"1.3.6.1.5.5.7.1.31=critical,\" + ext)\n"
    "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "    ctx.load_cert_chain(out + \".alpn.pem\", out + \".alpn.key\")\n"
    "    ctx.set_alpn_protocols([\"acme-tls/1\"])\n"
    "    sni = {}\n"
    "    ctx.sni_callback = lambda sock, server_name, c: sni.update(\n"
    "        last=server_name)\n"
    "    lsock = socket.socket()\n"
    "    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    lsock.bind((\"127.0.0.1\", port))\n"
    "    lsock.listen(16)\n"
    "    running = [True]\n"
    "\n"
    "    def serve():\n"
    "        while running[0]:\n"
    "            try:\n"
    "                conn, peer = lsock.accept()\n"
    "            except OSError:\n"
    "                return\n"
    "            try:\n"
    "                conn.settimeout(10)\n"
    "                tls = ctx.wrap_socket(conn, server_side=True)\n"
    "                say(\"hit tls-alpn-01 %s alpn=%s sni=%s\" % (\n"
    "                    peer[0], tls.selected_alpn_protocol(),\n"
    "                    sni.get(\"last\", \"-\")))\n"
    "                tls.close()\n"
    "            except (OSError, ssl.SSLError) as e:\n"
    "                say(\"hit tls-alpn-01 %s error=%s\" % (peer[0], e))\n"
    "                conn.close()\n"
    "    threading.Thread(target=serve, daemon=True).start()\n"
    "\n"
    "    def stop():\n"
    "        running[0] = False\n"
    "        lsock.close()\n"
    "    return stop\n"
    "\n"
    "\n"
    "def dns(port, name, qtype):\n"
    "    q = struct.pack(\"!HHHHHH\", 7, 0x100, 1, 0, 0, 0) + b\"\".join(\n"
    "        bytes([len(label)]) + label.encode() for label in name.split(\".\")\n"
    "        if label) + b\"\\0\" + struct.pack(\"!HH\", qtype, 1)\n"
    "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "    s.settimeout(3)\n"
    "    s.sendto(q, (\"127.0.0.1\", port))\n"
    "    r = s.recv(4096)\n"
    "    print(\"rcode=%d\" % (r[3] & 15))\n"
    "\n"
    "    def skip_name(pos):\n"
    "        while r[pos] != 0:\n"
    "            if r[pos] >= 0xc0:\n"
    "                return pos + 2\n"
    "            pos += 1 + r[pos]\n"
    "        return pos + 1\n"
    "    pos = skip_name(12) + 4\n"
    "    for _ in range(struct.unpack(\"!H\", r[6:8])[0]):\n"
    "        pos = skip_name(pos)\n"
    "        rtype, _, _, n = struct.unpack(\"!HHIH\", r[pos:pos + 10])\n"
    "        rdata = r[pos + 10:pos + 10 + n]\n"
    "        pos += 10 + n\n"
    "        if rtype == 1:\n"
    "            print(\"A %s\" % socket.inet_ntop(socket.AF_INET, rdata))\n"
    "        elif rtype == 28:\n"
    "            print(\"AAAA %s\" % socket.inet_ntop(socket.AF_INET6, rdata))\n"
    "\n"
    "\n"
    "def sockets(pids):\n"
    "    inodes = set()\n"
    "    for pid in pids:\n"
    "        for fd in os.listdir(\"/proc/%s/fd\" % pid):\n"
    "            try:\n"
    "                link = os.readlink(\"/proc/%s/fd/%s\" % (pid, fd))\n"
    "            except OSError:\n"
    "                continue\n"
    "            if link.startswith(\"socket:[\"):\n"
    "                inodes.add(link[8:-1])\n"
    "    for proto in (\"tcp\", \"tcp6\", \"udp\", \"udp6\"):\n"
    "        with open(\"/proc/net/\" + proto) as f:\n"
    "            for line in f.readlines()[1:]:\n"
    "                fields = line.split()\n"
    "                local, state, inode = fields[1], fields[3], fields[9]\n"
    "                if inode not in inodes:\n"
    "                    continue\n"
    "                if proto.startswith(\"tcp\") and state != \"0A\":\n"
    "                    continue  # not a listener\n"
    "                addr, port = local.split(\":\")\n"
    "                raw = bytes.fromhex(addr)\n"
    "                if len(raw) == 4:\n"
    "                    host = socket.inet_ntop(socket.AF_INET, raw[::-1])\n"
    "                else:\n"
    "                    host = \"[%s]\" % socket.inet_ntop(\n"
    "                        socket.AF_INET6, b\"\".join(\n"
    "                            raw[i:i + 4][::-1] for i in range(0, 16, 4)))\n"
    "                print(\"%s %s:%d\" % (proto[:3], host, int(port, 16)))\n"
    "\n"
    "\n"
    "def main():\n"
    "    if len(sys.argv) >= 2 and sys.argv[1] == \"dns\":\n"
    "        return dns(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))\n"
    "    if len(sys.argv) >= 2 and sys.argv[1] == \"sockets\":\n"
    "        return sockets(sys.argv[2:])\n"
    "    if len(sys.argv) < 5:\n"
    "        sys.exit(__doc__)\n"
    "    c = Client(*sys.argv[1:4])\n"
    "    steps = sys.argv[4:]\n"
    "    while steps:\n"
    "        step = steps.pop(0)\n"
    "        if step == \"account\":\n"
    "            c.account()\n"
    "        elif step == \"account-eab\":\n"
    "            c.account((steps.pop(0), steps.pop(0)))\n"
    "        elif step == \"order\":\n"
    "            c.post(\"newOrder\", c.dir[\"newOrder\"], {\n"
    "                \"identifiers\": [{\"type\": \"dns\", \"value\": steps.pop(0)}]})\n"
    "        elif step == \"order-replacing\":\n"
    "            c.post(\"newOrder\", c.dir[\"newOrder\"], {\n"
    "                \"identifiers\": [{\"type\": \"dns\", \"value\": steps.pop(0)}],\n"
    "                \"replaces\": steps.pop(0)})\n"
    "        elif step == \"fresh-nonce\":\n"
    "            c.nonce = None\n"
    "        elif step == \"issue\":\n"
    "            c.issue(steps[0], steps[1], int(steps[2]), steps[3])\n"
    "            del steps[:4]\n"
    "        else:\n"
    "            sys.exit(\"unknown step %s\" % step)\n"
    "\n"
    "\n"
    "if __name__ == \"__main__\":\n"
    "    main()\n";

/* client runs the python client with |steps| against |directory| with
 * the account key |key| (a name in the scratch dir; made if missing) and
 * returns its output (stderr included). */
static char *
client(const char *directory, const char *key, const char *steps)
{
	return h_run(NULL, "cd '%s' && python3 '%s' '%s' '%s' '%s/%s' %s 2>&1",
	    h_dir(), client_path, pb.ca, directory, h_dir(), key, steps);
}

/* count_lines counts lines of |text| that contain |needle|. */
static int
count_lines(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; p != NULL && *p != '\0';) {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		char *line = strndup(p, len);

		if (strstr(line, needle) != NULL)
			n++;
		free(line);
		p = nl != NULL ? nl + 1 : NULL;
	}
	return n;
}

/* ---- Pebble. */

START_TEST(directory_over_https_with_the_generated_ca)
{
	char prefix[64];
	char *out;
	int st;

	snprintf(prefix, sizeof(prefix), "https://127.0.0.1:%d/", pb.port);
	/* Every URL on Pebble's base; 2.4 has no renewalInfo. */
	out = h_run(&st, "curl -sS --max-time 10 --cacert '%s' '%s' | "
	    "python3 -c 'import json, sys; d = json.load(sys.stdin); "
	    "print(sorted(k for k, v in d.items() if isinstance(v, str) and "
	    "v.startswith(sys.argv[1])), sorted(d))' '%s' 2>&1", pb.ca,
	    pb.directory, prefix);
	ck_assert_msg(st == 0 && strstr(out, "['keyChange', 'newAccount', "
	    "'newNonce', 'newOrder', 'revokeCert'] ['keyChange', 'meta', "
	    "'newAccount', 'newNonce', 'newOrder', 'revokeCert']") != NULL,
	    "directory: %s", out);
	free(out);
	/* Another CA does not verify it: the certificate is the one made
	 * for this Pebble. */
	out = h_run(&st, "curl -sS --max-time 10 --cacert '%s/ca.pem' '%s' "
	    "2>&1", h_dir(), pb.directory);
	ck_assert_msg(st == 60, "verified with the wrong CA (%d): %s", st,
	    out);
	free(out);
}
END_TEST

START_TEST(new_nonce_answers_with_replay_nonce)
{
	char *a, *b, *code;
	const char *cmd = "curl -sS -I --max-time 10 --cacert '%s' '%s' | "
	    "tr -d '\\r' | sed -n 's/^[Rr]eplay-[Nn]once: //p'";
	char *url;
	int st;

	url = h_run(&st, "curl -sS --max-time 10 --cacert '%s' '%s' | "
	    "python3 -c 'import json, sys; "
	    "print(json.load(sys.stdin)[\"newNonce\"], end=\"\")'", pb.ca,
	    pb.directory);
	ck_assert_msg(st == 0 && strncmp(url, "https://127.0.0.1:", 18) == 0,
	    "newNonce: %s", url);
	a = h_run(&st, cmd, pb.ca, url);
	b = h_run(NULL, cmd, pb.ca, url);
	ck_assert_msg(st == 0 && strlen(a) > 10, "HEAD new-nonce: '%s'", a);
	ck_assert_msg(strcmp(a, b) != 0, "the same nonce twice: %s", a);
	free(a);
	free(b);
	/* GET answers 204 No Content, HEAD 200 (RFC 8555 7.2). */
	code = h_run(&st, "curl -sS -o /dev/null -w '%%{http_code}' "
	    "--max-time 10 --cacert '%s' '%s'", pb.ca, url);
	ck_assert_str_eq(code, "204");
	free(code);
	free(url);
}
END_TEST

START_TEST(dns_answers_loopback_for_any_name_and_no_aaaa)
{
	char name[64];
	char *a, *aaaa;

	snprintf(name, sizeof(name), "anything-%d.example.test", (int)getpid());
	a = h_run(NULL, "python3 '%s' dns %d %s 1 2>&1", client_path,
	    pb.dns_port, name);
	ck_assert_msg(strcmp(a, "rcode=0\nA 127.0.0.1\n") == 0, "A %s: %s",
	    name, a);
	/* No AAAA: Pebble asks AAAA first and dials the first address. */
	aaaa = h_run(NULL, "python3 '%s' dns %d %s 28 2>&1", client_path,
	    pb.dns_port, name);
	ck_assert_msg(strcmp(aaaa, "rcode=0\n") == 0, "AAAA %s: %s", name,
	    aaaa);
	free(a);
	free(aaaa);
}
END_TEST

START_TEST(daemons_listen_on_loopback_only)
{
	char *out = h_run(NULL, "python3 '%s' sockets %d %d %d 2>&1",
	    client_path, (int)pb.pid, (int)pb.dns_pid, (int)shim.pid);
	char want[64];
	int n = count_lines(out, " ");

	/* Pebble: ACME and management; challtestsrv: DNS over UDP and TCP,
	 * management; the shim. */
	ck_assert_msg(n == 6, "%d sockets: %s", n, out);
	ck_assert_msg(count_lines(out, " 127.0.0.1:") == n,
	    "not all on 127.0.0.1: %s", out);
	snprintf(want, sizeof(want), "udp 127.0.0.1:%d\n", pb.dns_port);
	ck_assert_msg(strstr(out, want) != NULL, "no %s in %s", want, out);
	free(out);
}
END_TEST

START_TEST(management_root_and_intermediate_are_pem)
{
	char *root = h_pebble_root(&pb), *inter = h_pebble_intermediate(&pb);
	char *out;
	int st;

	ck_assert_ptr_nonnull(root);
	ck_assert_ptr_nonnull(inter);
	h_write("pebble-root.pem", root);
	h_write("pebble-inter.pem", inter);
	out = h_run(&st, "cd '%s' && openssl x509 -in pebble-root.pem -noout "
	    "-subject -ext basicConstraints 2>&1 && openssl verify -CAfile "
	    "pebble-root.pem pebble-inter.pem 2>&1", h_dir());
	ck_assert_msg(st == 0 && strstr(out, "CA:TRUE") != NULL &&
	    strstr(out, "pebble-inter.pem: OK") != NULL, "%s", out);
	free(out);
	free(root);
	free(inter);
}
END_TEST

/* issue gets a certificate for |name| over |type| on |port| with a fresh
 * account and checks it: the chain verifies against the management
 * root, every validation request came from 127.0.0.1. */
static void
issue(const char *name, const char *type, int port)
{
	char key[64], steps[512], *out, *root, *v;
	long long t0 = h_now_ms(), ms;
	int st;

	snprintf(key, sizeof(key), "acct-%s.key", type);
	snprintf(steps, sizeof(steps), "account issue %s %s %d %s/%s", name,
	    type, port, h_dir(), name);
	out = client(pb.directory, key, steps);
	ms = h_now_ms() - t0;
	ck_assert_msg(strstr(out, "issued ") != NULL, "%s", out);
	/* Pebble 2.4 validates from 3 goroutines at once, and all 3 must
	 * succeed. */
	ck_assert_msg(count_lines(out, "hit ") == 3 &&
	    count_lines(out, "hit ") == count_lines(out, "hit http-01 "
	    "127.0.0.1 path-ok=True") + count_lines(out, "hit tls-alpn-01 "
	    "127.0.0.1 alpn=acme-tls/1 sni="), "%s", out);
	fprintf(stderr, "# %s for %s: %d validation requests, issued in "
	    "%lld ms\n", type, name, count_lines(out, "hit "), ms);
	root = h_pebble_root(&pb);
	ck_assert_ptr_nonnull(root);
	h_write("pebble-root-now.pem", root);
	v = h_run(&st, "cd '%s' && openssl verify -CAfile pebble-root-now.pem "
	    "-untrusted %s.pem %s.pem 2>&1 && openssl x509 -in %s.pem -noout "
	    "-ext subjectAltName 2>&1", h_dir(), name, name, name);
	ck_assert_msg(st == 0 && strstr(v, ": OK") != NULL &&
	    strstr(v, name) != NULL, "%s", v);
	free(v);
	free(root);
	free(out);
}

START_TEST(issues_over_http01_on_the_given_port)
{
	issue("http.example.test", "http-01", http_port);
}
END_TEST

START_TEST(issues_over_tls_alpn01_on_the_given_port)
{
	issue("alpn.example.test", "tls-alpn-01", tls_port);
}
END_TEST

/* Pebble says so when PEBBLE_VA_NOSLEEP=1 took. */
START_TEST(vanosleep_honoured)
{
	char *out = h_run(NULL, "grep -c 'Disabling random VA sleeps' '%s'",
	    pb.log);

	ck_assert_msg(atoi(out) == 1, "%s: %s", pb.log, out);
	free(out);
}
END_TEST

START_TEST(external_account_binding)
{
	/* The key of Pebble's example config: 48 bytes, base64url. */
	const char *kid = "kid-1";
	const char *hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3"
	    "MUAsUDkMTQ12W";
	struct h_pebble_opts o = { .env = "PEBBLE_WFE_NONCEREJECT=0",
		.eab_kid = kid, .eab_hmac_b64url = hmac, .validity_s = 3600 };
	struct h_pebble e;
	char steps[256], *out;

	ck_assert_int_eq(h_pebble_start_opts(&e, http_port, tls_port, &o), 0);
	out = h_run(NULL, "curl -sS --max-time 10 --cacert '%s' '%s'", e.ca,
	    e.directory);
	ck_assert_msg(strstr(out, "\"externalAccountRequired\": true") != NULL,
	    "%s", out);
	free(out);
	out = h_run(NULL, "cd '%s' && python3 '%s' '%s' '%s' '%s/eab1.key' "
	    "account 2>&1", h_dir(), client_path, e.ca, e.directory, h_dir());
	ck_assert_msg(strstr(out, "post newAccount 403 "
	    "urn:ietf:params:acme:error:externalAccountRequired ") != NULL,
	    "%s", out);
	free(out);
	/* With the binding: an account, and a certificate that lives an
	 * hour as configured. */
	snprintf(steps, sizeof(steps), "account-eab %s %s issue "
	    "eab.example.test http-01 %d %s/eab.example.test", kid, hmac,
	    http_port, h_dir());
	out = h_run(NULL, "cd '%s' && python3 '%s' '%s' '%s' '%s/eab2.key' "
	    "%s 2>&1", h_dir(), client_path, e.ca, e.directory, h_dir(),
	    steps);
	ck_assert_msg(strstr(out, "post newAccount 201 ") != NULL &&
	    strstr(out, "issued ") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "cd '%s' && openssl x509 -in eab.example.test.pem "
	    "-noout -checkend 3500 && ! openssl x509 -in eab.example.test.pem "
	    "-noout -checkend 3700 && echo lifetime-ok", h_dir());
	ck_assert_msg(strstr(out, "lifetime-ok") != NULL, "%s", out);
	free(out);
	h_pebble_stop(&e);
}
END_TEST

START_TEST(nonce_reject_100_fails_a_fresh_nonce)
{
	struct h_pebble r;
	pid_t pid, dns_pid;
	char *out;

	ck_assert_int_eq(h_pebble_start(&r, http_port, tls_port,
	    "PEBBLE_WFE_NONCEREJECT=100"), 0);
	out = h_run(NULL, "cd '%s' && python3 '%s' '%s' '%s' '%s/nr.key' "
	    "account fresh-nonce account fresh-nonce account 2>&1", h_dir(),
	    client_path, r.ca, r.directory, h_dir());
	ck_assert_msg(count_lines(out, "post newAccount 400 "
	    "urn:ietf:params:acme:error:badNonce ") == 3, "%s", out);
	free(out);
	/* Stopping reaps both. */
	pid = r.pid;
	dns_pid = r.dns_pid;
	h_pebble_stop(&r);
	ck_assert_int_eq(r.pid, 0);
	ck_assert_int_eq(r.dns_pid, 0);
	ck_assert(kill(pid, 0) != 0 && errno == ESRCH);
	ck_assert(kill(dns_pid, 0) != 0 && errno == ESRCH);
	h_pebble_stop(&r);
}
END_TEST

START_TEST(always_valid_refused)
{
	struct h_pebble r;

	ck_assert_int_eq(h_pebble_start(&r, http_port, tls_port,
	    "PEBBLE_VA_ALWAYS_VALID=1"), -1);
	ck_assert_int_eq(r.pid, 0);
	ck_assert_int_eq(r.dns_pid, 0);
}
END_TEST

/* ---- The shim. */

START_TEST(shim_directory_has_renewal_info_and_its_own_urls)
{
	char pebble_base[64];
	int before = h_acme_shim_count(&shim, "directory", 200);
	char *out;
	int st;

	ck_assert_int_eq(h_acme_shim_control(&shim, "{}"), 0);
	snprintf(pebble_base, sizeof(pebble_base), "127.0.0.1:%d", pb.port);
	out = h_run(&st, "curl -sS --max-time 10 --cacert '%s' '%s' | "
	    "python3 -c 'import json, sys; t = sys.stdin.read(); "
	    "d = json.loads(t); "
	    "print(d[\"renewalInfo\"], sys.argv[2] in t, sorted(k for k, v in "
	    "d.items() if isinstance(v, str) and v.startswith(sys.argv[1] + "
	    "\"/\")))' '%s' '%s' 2>&1", pb.ca, shim.directory, shim.base,
	    pebble_base);
	ck_assert_msg(st == 0, "%s", out);
	{
		char want[512];

		snprintf(want, sizeof(want), "%s/renewal-info False "
		    "['keyChange', 'newAccount', 'newNonce', 'newOrder', "
		    "'renewalInfo', 'revokeCert']\n", shim.base);
		ck_assert_str_eq(out, want);
	}
	free(out);
	ck_assert_int_eq(h_acme_shim_count(&shim, "directory", 200),
	    before + 1);
}
END_TEST

START_TEST(shim_answers_renewal_info_from_the_control_file)
{
	const char *fmt = "curl -sS -i --max-time 10 --cacert '%s' "
	    "'%s/renewal-info/%s' | tr -d '\\r'";
	int before = h_acme_shim_count(&shim, "renewalInfo", 0);
	char *out;

	ck_assert_int_eq(h_acme_shim_control(&shim, "{\"renewalInfo\": {"
	    "\"default\": {\"start\": \"2026-01-01T00:00:00Z\", "
	    "\"end\": \"2026-01-02T00:00:00Z\"}, "
	    "\"aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE\": {"
	    "\"start\": \"2026-03-01T00:00:00Z\", "
	    "\"end\": \"2026-03-01T12:00:00Z\", "
	    "\"explanationURL\": \"https://example.test/why\", "
	    "\"retryAfter\": 120}}}"), 0);
	out = h_run(NULL, fmt, pb.ca, shim.base,
	    "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
	ck_assert_msg(strstr(out, " 200") != NULL &&
	    strstr(out, "\"start\": \"2026-03-01T00:00:00Z\"") != NULL &&
	    strstr(out, "\"end\": \"2026-03-01T12:00:00Z\"") != NULL &&
	    strstr(out, "\"explanationURL\": \"https://example.test/why\"") !=
	    NULL && strcasestr(out, "\nretry-after: 120\n") != NULL &&
	    strcasestr(out, "\ncontent-type: application/json") != NULL,
	    "%s", out);
	free(out);
	out = h_run(NULL, fmt, pb.ca, shim.base, "b3RoZXI.AQ");
	ck_assert_msg(strstr(out, " 200") != NULL &&
	    strstr(out, "\"suggestedWindow\": {\n    \"start\": "
	    "\"2026-01-01T00:00:00Z\",\n    \"end\": \"2026-01-02T00:00:00Z\"")
	    != NULL && strcasestr(out, "\nretry-after: 21600\n") != NULL,
	    "%s", out);
	free(out);
	ck_assert_int_eq(h_acme_shim_control(&shim, "{}"), 0);
	out = h_run(NULL, fmt, pb.ca, shim.base, "b3RoZXI.AQ");
	ck_assert_msg(strstr(out, " 404") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_acme_shim_count(&shim, "renewalInfo", 0),
	    before + 3);
}
END_TEST

START_TEST(shim_rate_limits_the_next_n_then_passes)
{
	int o429 = h_acme_shim_count(&shim, "newOrder", 429);
	int o201 = h_acme_shim_count(&shim, "newOrder", 201);
	char want[256], *out;

	ck_assert_int_eq(h_acme_shim_control(&shim, "{\"rateLimit\": [{"
	    "\"match\": \"newOrder\", \"count\": 2, \"retryAfter\": 30, "
	    "\"detail\": \"too many new orders\"}]}"), 0);
	/* The nonce of each 429 signs the next request: the chain holds. */
	out = client(shim.directory, "rl.key", "account order rl.example.test "
	    "order rl.example.test order rl.example.test");
	snprintf(want, sizeof(want), "post newAccount 201 - retry-after=- "
	    "nonce=yes location=%s/my-account/", shim.base);
	ck_assert_msg(strstr(out, want) != NULL, "want %s: %s", want, out);
	ck_assert_msg(count_lines(out, "post newOrder 429 "
	    "urn:ietf:params:acme:error:rateLimited retry-after=30 "
	    "nonce=yes") == 2, "%s", out);
	snprintf(want, sizeof(want), "post newOrder 201 - retry-after=- "
	    "nonce=yes location=%s/my-order/", shim.base);
	ck_assert_msg(strstr(out, want) != NULL, "want %s: %s", want, out);
	free(out);
	ck_assert_int_eq(h_acme_shim_count(&shim, "newOrder", 429), o429 + 2);
	ck_assert_int_eq(h_acme_shim_count(&shim, "newOrder", 201), o201 + 1);

	/* A rule on a path pattern; rewriting the file starts afresh. */
	ck_assert_int_eq(h_acme_shim_control(&shim, "{\"rateLimit\": [{"
	    "\"path\": \"^/sign-me-up$\", \"method\": \"POST\", \"count\": 1, "
	    "\"retryAfter\": 5}]}"), 0);
	out = client(shim.directory, "rl2.key", "account account");
	ck_assert_msg(strstr(out, "post newAccount 429 "
	    "urn:ietf:params:acme:error:rateLimited retry-after=5 nonce=yes "
	    "location=-\npost newAccount 201 ") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_acme_shim_control(&shim, "{}"), 0);
}
END_TEST

START_TEST(shim_passes_a_whole_issuance_through)
{
	int authz = h_acme_shim_count(&shim, "authz", 200);
	int chall = h_acme_shim_count(&shim, "chall", 200);
	int fin = h_acme_shim_count(&shim, "finalize", 200);
	int cert = h_acme_shim_count(&shim, "cert", 200);
	char steps[512], want[256], *out, *log;

	ck_assert_int_eq(h_acme_shim_control(&shim, "{}"), 0);
	snprintf(steps, sizeof(steps), "account order-replacing "
	    "r.example.test aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE issue "
	    "shim.example.test http-01 %d %s/shim.example.test", http_port,
	    h_dir());
	out = client(shim.directory, "through.key", steps);
	ck_assert_msg(strstr(out, "issued ") != NULL, "%s", out);
	/* Every URL Pebble gave out was the shim's. */
	snprintf(want, sizeof(want), "location=https://127.0.0.1:%d/",
	    pb.port);
	ck_assert_msg(strstr(out, want) == NULL, "%s", out);
	free(out);
	ck_assert_int_ge(h_acme_shim_count(&shim, "authz", 200), authz + 2);
	ck_assert_int_eq(h_acme_shim_count(&shim, "chall", 200), chall + 1);
	ck_assert_int_eq(h_acme_shim_count(&shim, "finalize", 200), fin + 1);
	ck_assert_int_eq(h_acme_shim_count(&shim, "cert", 200), cert + 1);
	/* The shim shows what Pebble ignores: the order's "replaces". */
	log = h_run(NULL, "cat '%s'", shim.log);
	ck_assert_msg(strstr(log, "req POST /order-plz 201 newOrder "
	    "replaces=aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE\n") != NULL, "%s",
	    log);
	free(log);
}
END_TEST

/* ---- Setup. */

static void
write_client(void)
{
	FILE *f;

	snprintf(client_path, sizeof(client_path), "%s/acme_client.py",
	    h_dir());
	f = fopen(client_path, "w");
	if (f == NULL || fputs(client_py, f) < 0 || fclose(f) != 0) {
		fprintf(stderr, "test_pebble setup: cannot write %s\n",
		    client_path);
		exit(1);
	}
}

static void
start_all(void)
{
	http_port = h_pebble_free_port();
	tls_port = h_pebble_free_port();
	if (http_port < 0 || tls_port < 0 ||
	    h_pebble_start(&pb, http_port, tls_port,
	    "PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0") != 0) {
		fprintf(stderr, "test_pebble setup: pebble did not start\n");
		exit(1);
	}
	fprintf(stderr, "# pebble and challtestsrv up in %lld ms\n",
	    pb.start_ms);
	if (h_acme_shim_start(&shim, &pb) != 0) {
		h_pebble_stop(&pb);
		fprintf(stderr, "test_pebble setup: the shim did not start\n");
		exit(1);
	}
}

static void
stop_all(void)
{
	h_acme_shim_stop(&shim);
	h_pebble_stop(&pb);
}

int
main(void)
{
	Suite *s = suite_create("pebble");
	TCase *tc = tcase_create("pebble");

	h_setup("pebble");
	write_client();
	tcase_add_unchecked_fixture(tc, start_all, stop_all);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, directory_over_https_with_the_generated_ca);
	tcase_add_test(tc, new_nonce_answers_with_replay_nonce);
	tcase_add_test(tc, dns_answers_loopback_for_any_name_and_no_aaaa);
	tcase_add_test(tc, daemons_listen_on_loopback_only);
	tcase_add_test(tc, management_root_and_intermediate_are_pem);
	tcase_add_test(tc, issues_over_http01_on_the_given_port);
	tcase_add_test(tc, issues_over_tls_alpn01_on_the_given_port);
	tcase_add_test(tc, vanosleep_honoured);
	tcase_add_test(tc, external_account_binding);
	tcase_add_test(tc, nonce_reject_100_fails_a_fresh_nonce);
	tcase_add_test(tc, always_valid_refused);
	tcase_add_test(tc, shim_directory_has_renewal_info_and_its_own_urls);
	tcase_add_test(tc, shim_answers_renewal_info_from_the_control_file);
	tcase_add_test(tc, shim_rate_limits_the_next_n_then_passes);
	tcase_add_test(tc, shim_passes_a_whole_issuance_through);
	suite_add_tcase(s, tc);
	return check_run(s);
}
