#!/usr/bin/env python3
"""A DNS server for tests: UDP on 127.0.0.1 only.

usage: dns_responder.py PORT answer NAME ADDR
       dns_responder.py PORT silent

answer: an A query for NAME gets ADDR (an IPv4 address); any other query
for NAME (AAAA among them) gets an answer with no records, so a resolver
asking for both families does not wait for the second; queries for other
names get NXDOMAIN.
silent: reads every query and answers none, like a server that is down
but whose port is open (no ICMP error tells the client to give up).
Prints "listening PORT" once it reads queries, then "query NAME TYPE"
for each one."""
import socket
import struct
import sys

TYPE_A = 1


def question(packet):
    """The first question of a query: (name, type, end offset)."""
    labels, pos = [], 12
    while packet[pos] != 0:
        n = packet[pos]
        labels.append(packet[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    qtype, = struct.unpack("!H", packet[pos + 1:pos + 3])
    return ".".join(labels), qtype, pos + 5


def reply(packet, name, addr):
    qname, qtype, end = question(packet)
    ident, flags = struct.unpack("!HH", packet[:4])
    # QR, the query's opcode and RD, RA; rcode 3 (NXDOMAIN) for other names.
    rflags = 0x8000 | (flags & 0x7900) | 0x0080
    records = b""
    if qname.lower() != name.lower():
        rflags |= 3
    elif qtype == TYPE_A:
        # The name as a pointer to the question, class IN, TTL 5 s.
        records = struct.pack("!HHHIH", 0xC00C, TYPE_A, 1, 5, 4) + \
            socket.inet_aton(addr)
    count = 1 if records else 0
    header = struct.pack("!HHHHHH", ident, rflags, 1, count, 0, 0)
    return header + packet[12:end] + records, qname, qtype


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("answer", "silent") or \
            (sys.argv[2] == "answer" and len(sys.argv) != 5):
        sys.exit(__doc__)
    port, mode = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print("listening %d" % sock.getsockname()[1], flush=True)
    while True:
        packet, peer = sock.recvfrom(4096)
        try:
            out, qname, qtype = reply(packet, *sys.argv[3:5]) \
                if mode == "answer" else (None, *question(packet)[:2])
        except (IndexError, struct.error):
            continue
        print("query %s %d" % (qname, qtype), flush=True)
        if out is not None:
            sock.sendto(out, peer)


if __name__ == "__main__":
    main()
