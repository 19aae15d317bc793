#!/usr/bin/env python3
"""A TLS backend that waits before its handshake: 127.0.0.1 only.

usage: slow_tls_backend.py PORT CERT KEY DELAY_MS

Each connection waits
DELAY_MS after the accept, so that the proxy's backend handshake is still
running when other timers of the connection fire, then completes TLS,
reads one HTTP request and answers "slow backend" with Connection: close."""
import socket
import ssl
import sys
import threading
import time


def serve(conn, ctx, delay):
    try:
        time.sleep(delay)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    return
                data += chunk
            body = b"slow backend\n"
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                        b"Connection: close\r\n\r\n%s" % (len(body), body))
            # Take the client's close_notify before closing: unread bytes
            # would turn the close into a reset that can beat the answer.
            tls.unwrap()
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()


def main():
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    delay = int(sys.argv[4]) / 1000.0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, ctx, delay),
                         daemon=True).start()


if __name__ == "__main__":
    main()
