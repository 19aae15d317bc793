#!/usr/bin/env python3
"""A TLS client for what the other clients cannot do: wait for session
tickets without sending anything, or after a request sent with its
Finished; hold a connection open silently; or keep sending until the
server closes. Prints key=value results on one line."""
import socket
import ssl
import sys
import time


def connect(port, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    raw = socket.create_connection(("127.0.0.1", port))
    return ctx.wrap_socket(raw)


def wait_ticket(s, wait_ms):
    """Reads (which makes OpenSSL process NewSessionTicket) until a ticket
    came or |wait_ms| passed, sending nothing."""
    start = time.monotonic()
    deadline = start + wait_ms / 1000
    s.setblocking(False)
    while not s.session.has_ticket and time.monotonic() < deadline:
        try:
            if s.recv(1) == b"":
                break
        except ssl.SSLWantReadError:
            time.sleep(0.001)
    ms = (time.monotonic() - start) * 1000
    print("ticket=%d ms=%.1f version=%s" % (s.session.has_ticket, ms,
                                            s.version()))


def ticket_with_request(port, version, wait_ms):
    """Sends its Finished and a request in one segment, as a client that
    speaks at once does, then waits for a ticket as wait_ticket does. The
    handshake runs over memory buffers so that the two leave together."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = version
    raw = socket.create_connection(("127.0.0.1", port))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(out.read())
            data = raw.recv(65536)
            if not data:
                raise SystemExit("closed during the handshake")
            inc.write(data)
    obj.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    raw.sendall(out.read())
    start = time.monotonic()
    deadline = start + wait_ms / 1000
    raw.settimeout(0.001)
    while not obj.session.has_ticket and time.monotonic() < deadline:
        try:
            data = raw.recv(65536)
            if not data:
                break
            inc.write(data)
        except (TimeoutError, socket.timeout):
            pass
        try:
            obj.read(1)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
    ms = (time.monotonic() - start) * 1000
    print("ticket=%d ms=%.1f version=%s" % (obj.session.has_ticket, ms,
                                            obj.version()))


def hold(s, secs):
    """Stays connected without sending, then reports what came."""
    time.sleep(secs)
    print("held=1")


def flood(s, secs):
    """Sends until the server ends the connection or |secs| pass."""
    start = time.monotonic()
    sent = 0
    chunk = b"x" * 16384
    s.settimeout(1)
    err = "none"
    while time.monotonic() - start < secs:
        try:
            sent += s.send(chunk)
        except (TimeoutError, socket.timeout):
            continue
        except OSError as e:
            err = type(e).__name__
            break
    print("sent=%d ms=%.0f error=%s" % (sent, (time.monotonic() - start)
                                        * 1000, err))


def main():
    mode, port, ver, arg = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
        float(sys.argv[4])
    version = {"1.2": ssl.TLSVersion.TLSv1_2,
               "1.3": ssl.TLSVersion.TLSv1_3}[ver]
    if mode == "ticket-request":
        ticket_with_request(port, version, arg)
    else:
        s = connect(port, version)
        {"ticket": wait_ticket, "hold": hold, "flood": flood}[mode](s, arg)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
