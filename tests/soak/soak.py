#!/usr/bin/env python3
"""Soak test: tlsproxy under steady mixed traffic for a fixed time.

Starts a backend (tlsproxy-backend echo), tlsproxy (two workers, access log
to a file, admin endpoint) and then, from one asyncio client process:

  - --conns long-lived TLS connections, each sending a random-sized chunk
    every few seconds and checking that the echo is byte for byte what it
    sent;
  - --rate short connections per second, each sending a random amount
    (up to 256 KiB) and checking its echo, then closing;
  - a SIGHUP every --reload-every seconds (a reload that keeps the
    configuration: connections must not notice).

Samples the daemon's RSS and open descriptors every few seconds and fits
a line to the samples after --warmup. Prints TAP: no failed connection,
no corrupted byte, every reload applied, RSS and fd slopes under their
bounds, and a clean exit (the daemon's status on SIGTERM).

usage: soak.py [--duration S] [--conns N] [--rate R] [--reload-every S]
               [--warmup S] [--rss-bound KIB_PER_MIN] [--keep DIR]
Environment: TLSPROXY_BIN, TLSPROXY_BACKEND (set by meson), else build/;
TLSPROXY_SANITIZE (meson's b_sanitize): under AddressSanitizer freed memory
sits in quarantine, so the RSS check is skipped there."""
import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BIN = os.environ.get("TLSPROXY_BIN", os.path.join(HERE, "build/src/tlsproxy"))
BACKEND = os.environ.get("TLSPROXY_BACKEND",
                         os.path.join(HERE, "build/tools/tlsproxy-backend"))

# Bounds after warm-up. Memory may move with allocator caching, but a leak
# of even 100 bytes per short connection would exceed this.
RSS_SLOPE_KIB_PER_MIN = 1024
FD_SLOPE_PER_MIN = 5


class Stats:
    def __init__(self):
        self.long_ok = 0
        self.short_ok = 0
        self.failures = []
        self.corrupt = 0
        self.bytes = 0
        self.open_long = 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(d):
    subprocess.run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        "-nodes -keyout key.pem -out cert.pem -days 2 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost", shell=True, cwd=d, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_backend():
    """tlsproxy-backend in echo mode on a free port: (process, port)."""
    backend = subprocess.Popen([BACKEND, "--port", "0", "echo"],
                               stdout=subprocess.PIPE, text=True)
    return backend, int(backend.stdout.readline().split()[1])


def write_config(d, port, bport, aport, extra_global=""):
    """tlsproxy.conf in |d|: two workers, access log, admin endpoint, one
    listener on |port| to the echo backend on |bport|, the certificate of
    make_pki(). |extra_global| is added to [global]. Returns its path."""
    conf = os.path.join(d, "tlsproxy.conf")
    with open(conf, "w") as f:
        f.write("[global]\nworkers = 2\nlog_level = info\n"
                "access_log = %s/access.log\nadmin = 127.0.0.1:%d\n"
                "idle_timeout = 60s\n%s[listener soak]\n"
                "bind = 127.0.0.1:%d\ncontext = c\nbackend = b\n"
                "[backend b]\naddress = 127.0.0.1:%d\n[context c]\n"
                "cert = %s/cert.pem\nkey = %s/key.pem\n" %
                (d, aport, extra_global, port, bport, d, d))
    return conf


def wait_ready(logf, tries=200):
    """Wait (up to tries * 50 ms) for the daemon's "ready" line in logf."""
    for _ in range(tries):
        if " ready: " in open(logf).read():
            return True
        time.sleep(0.05)
    return False


def proc_sample(pid):
    with open("/proc/%d/status" % pid) as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def slope(points):
    """Least-squares slope of (t, v) points, per second."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


async def echo_exchange(reader, writer, data, st):
    writer.write(data)
    await writer.drain()
    got = await reader.readexactly(len(data))
    if got != data:
        st.corrupt += 1
        raise RuntimeError("echo differs")
    st.bytes += len(data)


async def long_lived(idx, port, ctx, stop, st):
    rnd = random.Random(idx)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    except Exception as e:  # noqa: BLE001 - every failure is reported
        st.failures.append("long %d connect: %r" % (idx, e))
        return
    st.open_long += 1
    try:
        while not stop.is_set():
            await echo_exchange(reader, writer,
                                rnd.randbytes(rnd.randint(1, 4096)), st)
            try:
                await asyncio.wait_for(stop.wait(), rnd.uniform(1.0, 4.0))
            except asyncio.TimeoutError:
                pass
        writer.close()
        await writer.wait_closed()
        st.long_ok += 1
    except Exception as e:  # noqa: BLE001
        st.failures.append("long %d: %r" % (idx, e))
    finally:
        st.open_long -= 1


async def short_one(idx, port, ctx, st):
    rnd = random.Random(1_000_000 + idx)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost")
        await echo_exchange(reader, writer,
                            rnd.randbytes(rnd.randint(1, 262144)), st)
        writer.close()
        await writer.wait_closed()
        st.short_ok += 1
    except Exception as e:  # noqa: BLE001
        st.failures.append("short %d: %r" % (idx, e))


async def run(args, port, pid, logf):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    st = Stats()
    stop = asyncio.Event()
    samples = []
    reloads = 0
    t0 = time.monotonic()
    longs = []
    # Open the long-lived connections in batches, not all at once.
    for i in range(args.conns):
        longs.append(asyncio.create_task(long_lived(i, port, ctx, stop, st)))
        if i % 200 == 199:
            await asyncio.sleep(0.2)
    shorts = set()
    n_short = 0
    next_reload = time.monotonic() + args.reload_every
    next_sample = time.monotonic()
    end = t0 + args.duration
    while time.monotonic() < end:
        now = time.monotonic()
        for _ in range(max(1, int(args.rate / 10))):
            task = asyncio.create_task(short_one(n_short, port, ctx, st))
            shorts.add(task)
            task.add_done_callback(shorts.discard)
            n_short += 1
        if now >= next_reload:
            os.kill(pid, signal.SIGHUP)
            reloads += 1
            next_reload += args.reload_every
        if now >= next_sample:
            rss, fds = proc_sample(pid)
            samples.append((now - t0, rss, fds, st.open_long))
            next_sample += 2.0
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*longs, *list(shorts))
    return st, samples, reloads, n_short


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--conns", type=int, default=4000)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--reload-every", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--rss-bound", type=float, default=RSS_SLOPE_KIB_PER_MIN,
                    help="largest RSS slope after warm-up, KiB/min")
    ap.add_argument("--keep", default=None,
                    help="keep the scratch directory (logs) here")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else \
        min(60.0, args.duration / 3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.conns * 2 + 2000
    if hard < need:
        print("1..0 # SKIP open-file limit %d is below %d" % (hard, need))
        return 0
    d = args.keep or tempfile.mkdtemp(prefix="tlsproxy-soak.")
    os.makedirs(d, exist_ok=True)
    procs = []
    tap = []
    try:
        make_pki(d)
        backend, bport = start_backend()
        procs.append(backend)
        port, aport = free_port(), free_port()
        conf = write_config(d, port, bport, aport)
        logf = os.path.join(d, "tlsproxy.log")
        daemon = subprocess.Popen([BIN, "-c", conf],
                                  stderr=open(logf, "w"))
        procs.append(daemon)
        wait_ready(logf)
        st, samples, reloads, n_short = asyncio.run(
            run(args, port, daemon.pid, logf))
        daemon.send_signal(signal.SIGTERM)
        status = daemon.wait(60)
        log = open(logf).read()
        published = len(re.findall(r"reload: generation \d+ published", log))
        after = [s for s in samples if s[0] >= warmup]
        rss_slope = slope([(t, r) for t, r, _, _ in after]) * 60
        fd_slope = slope([(t, f) for t, _, f, _ in after]) * 60
        print("# %d long-lived and %d short connections, %.1f MiB echoed, "
              "%d reloads, %.0f s" % (args.conns, n_short,
                                      st.bytes / 1048576, reloads,
                                      args.duration))
        for t, r, f, o in samples:
            print("# t=%5.0fs rss=%7d KiB fds=%5d long_open=%d" % (t, r, f,
                                                                  o))
        print("# after %.0fs warm-up: RSS slope %.1f KiB/min, fd slope "
              "%.2f/min" % (warmup, rss_slope, fd_slope))
        for f in st.failures[:20]:
            print("# failure: " + f)
        tap.append((not st.failures, "no failed connection (%d failed)" %
                    len(st.failures)))
        tap.append((st.long_ok == args.conns, "every long-lived connection "
                    "lasted to the end (%d of %d)" % (st.long_ok,
                                                      args.conns)))
        tap.append((st.short_ok == n_short, "every short connection was "
                    "served (%d of %d)" % (st.short_ok, n_short)))
        tap.append((st.corrupt == 0, "no corrupted byte"))
        tap.append((published == reloads, "every reload was applied (%d of "
                    "%d)" % (published, reloads)))
        if os.environ.get("TLSPROXY_SANITIZE", "none") in ("", "none"):
            tap.append((rss_slope < args.rss_bound, "RSS flat after "
                        "warm-up (%.1f KiB/min, bound %.0f)" %
                        (rss_slope, args.rss_bound)))
        else:
            tap.append((True, "RSS flat after warm-up # SKIP sanitizer "
                        "build"))
        tap.append((fd_slope < FD_SLOPE_PER_MIN and
                    (not after or after[-1][2] <= after[0][2] + 8),
                    "descriptors flat after warm-up (%.2f/min)" % fd_slope))
        tap.append((status == 0, "clean exit on SIGTERM (status %d)" %
                    status))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    print("1..%d" % len(tap))
    for i, (ok, what) in enumerate(tap, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, what))
    return 0 if all(ok for ok, _ in tap) else 1


if __name__ == "__main__":
    sys.exit(main())
