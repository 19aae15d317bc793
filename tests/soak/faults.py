#!/usr/bin/env python3
"""Misbehaving clients for tlsproxy's fault tests (test_faults.c).

  faults.py bytes PORT CASE...   send each case's bytes on its own plain TCP
        connection, read until the daemon closes (or 5 s), and print
        "case=NAME port=LOCALPORT closed_ms=N alert=DESC" per case (alert=-
        when no alert record came back, timeout when it did not close).
  faults.py reset-handshake PORT N   N connections that send part of a real
        ClientHello, then reset (SO_LINGER 0); prints their local ports.
  faults.py chaos PORT N SEED    N clients, 16 at a time, each ending at a
        random point (before its ClientHello, inside it, after the
        handshake, mid-transfer, or at the clean end) with a FIN or a
        reset; prints "done=N failed=N" and the count per kind.
  faults.py slow-reader PORT ALPN DELAY_MS   one TLS connection offering
        ALPN that sends "x", then reads 16 KiB every DELAY_MS until the
        end, and prints "received=N sha256=HEX close_notify=0|1".
  faults.py steady PORT STATUS   one TLS connection that sends 64 bytes
        and reads their echo every 100 ms, writing "rounds=N" to STATUS
        after each round, until its standard input closes; then closes
        with close_notify and prints "ok=1 rounds=N max_rtt_ms=N".

Only the standard library: crafted records are built by hand, real
ClientHellos come from the ssl module over memory BIOs."""
import concurrent.futures
import hashlib
import os
import random
import select
import socket
import ssl
import struct
import sys
import time

ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
          22: "record_overflow", 40: "handshake_failure",
          47: "illegal_parameter", 50: "decode_error",
          70: "protocol_version", 80: "internal_error",
          112: "unrecognized_name"}


def record(body, ctype=0x16, version=0x0301, length=None):
    n = len(body) if length is None else length
    return struct.pack("!BHH", ctype, version, n) + body


def handshake(body, mtype=1, length=None):
    n = len(body) if length is None else length
    return bytes([mtype]) + n.to_bytes(3, "big") + body


def extension(etype, data, length=None):
    n = len(data) if length is None else length
    return struct.pack("!HH", etype, n) + data


def hello_body(exts):
    """A TLS 1.2 ClientHello body around |exts|."""
    suites = [0x1301, 0xC02B, 0xC02F]
    body = struct.pack("!H", 0x0303) + bytes(range(32)) + b"\x00"
    body += struct.pack("!H", 2 * len(suites))
    body += b"".join(struct.pack("!H", s) for s in suites)
    body += b"\x01\x00" + struct.pack("!H", len(exts)) + exts
    return body


def good_extensions():
    groups = extension(10, struct.pack("!HH", 2, 0x0017))
    sigalgs = extension(13, struct.pack("!HH", 2, 0x0403))
    return groups + sigalgs


def cases():
    rng = random.Random(7)
    v2 = struct.pack("!BHHHH", 1, 0x0301, 3, 0, 16) + b"\x00\x00\x2f"
    v2 += bytes(16)
    # Random bytes, but the first must not look like a TLS record type
    # (0x14..0x18) or an SSLv2 header (high bit), or the daemon would wait
    # for more instead of refusing.
    noise = bytes([0x3a]) + bytes(rng.getrandbits(8) for _ in range(2999))
    return {
        # A record header announcing 18 KiB, past the 16 KiB (+2 KiB)
        # any record may have.
        "record_too_long": record(b"\x01" + bytes(64), length=0x4801),
        # A ClientHello whose handshake header claims 16 MiB.
        "length_too_long": record(handshake(hello_body(good_extensions()),
                                            length=0xFFFFFF)),
        # One whose header claims less than the body it carries.
        "length_too_short": record(handshake(hello_body(good_extensions()),
                                             length=40)),
        # An extension whose length runs past the end of the hello.
        "extension_overrun": record(handshake(hello_body(
            good_extensions() + extension(0x0A0A, b"\xff" * 8,
                                          length=0x3000)))),
        # Extensions that are random bytes.
        "extension_garbage": record(handshake(hello_body(
            bytes(rng.getrandbits(8) for _ in range(61))))),
        # A server_name extension whose inner lengths lie.
        "server_name_garbage": record(handshake(hello_body(
            good_extensions() + extension(0, struct.pack("!HBH", 200, 0,
                                                         500) + b"x" * 5)))),
        # An SSLv2-compatible hello (as very old clients sent), for TLS 1.0.
        "sslv2_hello": struct.pack("!H", 0x8000 | len(v2)) + v2,
        "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "ssh": b"SSH-2.0-OpenSSH_9.2p1\r\n",
        "random": noise,
    }


def send_bytes(port, names):
    table = cases()
    for name in names:
        s = socket.create_connection(("127.0.0.1", port))
        local = s.getsockname()[1]
        t0 = time.monotonic()
        s.sendall(table[name])
        reply, closed = b"", False
        s.settimeout(5)
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    closed = True
                    break
                reply += d
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        ms = int((time.monotonic() - t0) * 1000)
        alert = "-"
        if len(reply) >= 7 and reply[0] == 0x15:
            alert = ALERTS.get(reply[6], str(reply[6]))
        print("case=%s port=%d closed_ms=%s alert=%s" % (
            name, local, ms if closed else "timeout", alert), flush=True)
        s.close()


def client_hello():
    """The first flight of a real TLS client: its ClientHello record."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def abort(s):
    """Closes |s| with a reset instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def reset_handshake(port, n):
    hello = client_hello()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        print("port=%d" % s.getsockname()[1], flush=True)
        s.sendall(hello[:len(hello) // 2 + i])
        # Let the daemon read the part before the reset arrives.
        time.sleep(0.02)
        abort(s)


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def chaos_one(port, seed, hello, ctx):
    """Runs one client that gives up at a random point; returns its kind."""
    rng = random.Random(seed)
    kind = rng.choice(["before_hello", "mid_hello", "after_handshake",
                       "mid_transfer", "complete"])
    reset = rng.random() < 0.5
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    end = abort if reset else socket.socket.close
    if kind == "before_hello":
        time.sleep(rng.random() * 0.01)
        end(s)
    elif kind == "mid_hello":
        s.sendall(hello[:rng.randrange(1, len(hello))])
        time.sleep(rng.random() * 0.01)
        end(s)
    else:
        t = ctx.wrap_socket(s, server_hostname="localhost")
        if kind == "after_handshake":
            # Leave without close_notify.
            end(t)
            return kind
        # Small enough that the echo fits the socket buffers while the
        # client is still sending.
        data = rng.randbytes(rng.randrange(1, 60000))
        if kind == "mid_transfer":
            sent = rng.randrange(1, len(data) + 1)
            t.sendall(data[:sent])
            got, want = 0, rng.randrange(0, sent)
            while got < want:
                d = t.recv(65536)
                if not d:
                    break
                got += len(d)
            end(t)
            return kind
        t.sendall(data)
        got = b""
        while len(got) < len(data):
            d = t.recv(65536)
            if not d:
                break
            got += d
        if got != data:
            raise RuntimeError("echo mismatch: %d of %d bytes" %
                               (len(got), len(data)))
        t.unwrap()
        s.close()
    return kind


def chaos(port, n, seed):
    hello, ctx = client_hello(), tls_context()
    counts, failed, first = {}, 0, ""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(chaos_one, port, seed * 100000 + i, hello, ctx)
                   for i in range(n)]
        for f in futures:
            # Leaving early is the client's doing: every step before it,
            # the handshake included, must still work.
            try:
                kind = f.result()
                counts[kind] = counts.get(kind, 0) + 1
            except (OSError, ssl.SSLError, RuntimeError) as e:
                failed += 1
                first = first or repr(e).replace(" ", "_")
    print("done=%d failed=%d %s%s" % (
        sum(counts.values()), failed, " ".join(
            "%s=%d" % kv for kv in sorted(counts.items())),
        " first_error=" + first if first else ""), flush=True)


def slow_reader(port, alpn, delay_ms):
    ctx = tls_context()
    ctx.set_alpn_protocols([alpn])
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port),
                                                 timeout=20),
                        server_hostname="localhost",
                        suppress_ragged_eofs=False)
    t.sendall(b"x")
    digest, received, notify = hashlib.sha256(), 0, 0
    try:
        while True:
            time.sleep(delay_ms / 1000)
            d = t.recv(16384)
            if not d:
                notify = 1
                break
            digest.update(d)
            received += len(d)
    except ssl.SSLEOFError:
        pass  # the end came without close_notify
    print("received=%d sha256=%s close_notify=%d" % (
        received, digest.hexdigest(), notify), flush=True)


def steady(port, status):
    t = tls_context().wrap_socket(socket.create_connection(
        ("127.0.0.1", port), timeout=10), server_hostname="localhost")
    rounds, worst = 0, 0.0
    while True:
        payload = struct.pack("!Q", rounds) * 8
        t0 = time.monotonic()
        t.sendall(payload)
        got = b""
        while len(got) < len(payload):
            d = t.recv(len(payload) - len(got))
            if not d:
                print("ok=0 error=closed rounds=%d" % rounds, flush=True)
                return 1
            got += d
        if got != payload:
            print("ok=0 error=mismatch rounds=%d" % rounds, flush=True)
            return 1
        worst = max(worst, time.monotonic() - t0)
        rounds += 1
        with open(status + ".tmp", "w") as f:
            f.write("rounds=%d\n" % rounds)
        os.replace(status + ".tmp", status)
        r, _, _ = select.select([sys.stdin], [], [], 0.1)
        if r and not os.read(sys.stdin.fileno(), 100):
            break
    t.unwrap()
    print("ok=1 rounds=%d max_rtt_ms=%d" % (rounds, worst * 1000), flush=True)
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "bytes":
        send_bytes(int(argv[2]), argv[3:])
    elif len(argv) == 4 and argv[1] == "reset-handshake":
        reset_handshake(int(argv[2]), int(argv[3]))
    elif len(argv) == 5 and argv[1] == "chaos":
        chaos(int(argv[2]), int(argv[3]), int(argv[4]))
    elif len(argv) == 5 and argv[1] == "slow-reader":
        slow_reader(int(argv[2]), argv[3], int(argv[4]))
    elif len(argv) == 4 and argv[1] == "steady":
        return steady(int(argv[2]), argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
