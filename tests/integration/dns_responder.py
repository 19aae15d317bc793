#!/usr/bin/env python3
"""A DNS server for tests: UDP on 127.0.0.1 only, answering A queries for
the names it is given and nothing else.

usage: dns_responder.py NAME=IPV4 [NAME=IPV4 ...]
It binds a free port and prints "listening PORT". Every query is logged
to stderr as "dns responder: query NAME type N". A query for a listed name
gets its address (type A) or an empty answer (other types); any other name
gets NXDOMAIN. The question is echoed as it came, letter case included,
since resolvers that randomize the case check it."""
import socket
import struct
import sys

names = {}
for arg in sys.argv[1:]:
    name, ip = arg.split("=", 1)
    names[name.lower().rstrip(".")] = socket.inet_aton(ip)

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print("listening", sock.getsockname()[1], flush=True)

while True:
    data, peer = sock.recvfrom(4096)
    if len(data) < 12:
        continue
    qid, flags, qdcount = struct.unpack(">HHH", data[:6])
    pos, labels = 12, []
    try:
        while data[pos] != 0:
            n = data[pos]
            labels.append(data[pos + 1:pos + 1 + n])
            pos += 1 + n
        pos += 1
        qtype, _ = struct.unpack(">HH", data[pos:pos + 4])
    except (IndexError, struct.error):
        continue
    pos += 4
    name = b".".join(labels).decode("ascii", "replace").lower()
    sys.stderr.write("dns responder: query %s type %d\n" % (name, qtype))
    sys.stderr.flush()
    addr = names.get(name)
    answer = b""
    if addr is not None and qtype == 1:
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + addr
    rcode = 0 if addr is not None else 3
    header = struct.pack(">HHHHHH", qid, 0x8080 | (flags & 0x0100) | rcode,
                         1, 1 if answer else 0, 0, 0)
    sock.sendto(header + data[12:pos] + answer, peer)
