#!/usr/bin/env python3
"""Binary upgrade under load: tlsproxy replaces itself --upgrades times in a
row (SIGUSR2) while clients keep connecting, and no client may notice.

Starts a backend (tlsproxy-backend echo) and tlsproxy (two workers, admin
endpoint, shutdown_timeout 30s, session tickets with automatic keys, the
TLS 1.2 session cache), makes itself a child subreaper so that every
tlsproxy process, the orphaned old ones included, is reaped here with its
exit status, and then, from one asyncio client process:

  - takes a pool of TLS 1.3 tickets and of TLS 1.2 sessions (by session ID:
    no ticket offered) from the first process, before any upgrade;
  - keeps --conns long-lived TLS connections open, each sending random-sized
    chunks at random intervals and checking the echo byte for byte (and the
    SHA-256 of everything sent against everything received), living a
    random time between --life-min and --life-max seconds (shorter than
    shutdown_timeout), then closing with close_notify both ways; each is
    replaced at once, so that connections accepted by every process
    overlap the upgrades;
  - opens --rate new connections per second: full handshakes (TLS 1.3 and
    1.2), TLS 1.3 resumptions with a ticket of the pool and TLS 1.2
    resumptions by session ID with a session of the pool, each sending a
    little data, checking the echo and closing cleanly;
  - sends SIGUSR2 to the current main process, waits (at most
    --upgrade-timeout seconds) until GET /status answers with another
    "pid", checks that it is a live tlsproxy process running the same
    binary and arguments, waits --interval seconds, and repeats.

Then it stops opening connections, lets the long-lived ones end by
themselves, sends SIGTERM to the last process and waits for every process
to exit. Prints a summary (connections refused and failed, long-lived
connections ended cleanly, handshakes, resumptions attempted and resumed
before and after the first upgrade, upgrades with their times, every
tlsproxy process with its exit status and CPU time, the client's CPU time,
wall time) and TAP: no connection refused, none failed, every long-lived
connection ended cleanly, every resumption of both kinds resumed (and some
were attempted after an upgrade), every upgrade happened and was logged,
every tlsproxy process exited with status 0.

With --reload, each SIGUSR2 becomes a SIGHUP (a reload by the same
process), and an upgrade counts as done when /status shows one more
successful reload: this exercises everything but the upgrade itself.

usage: upgrade.py [--conns N] [--rate R] [--upgrades N] [--interval S]
                  [--life-min S] [--life-max S] [--reload] [--seed N]
                  [--keep DIR]
Environment: TLSPROXY_BIN, TLSPROXY_BACKEND (set by meson), else build/;
TLSPROXY_SANITIZE (meson's b_sanitize) is only reported."""
import argparse
import asyncio
import collections
import ctypes
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ next to the sources
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import (BIN, free_port, make_pki, start_backend,  # noqa: E402
                  wait_ready, write_config)

PR_SET_CHILD_SUBREAPER = 36
SHUTDOWN_TIMEOUT = 30   # seconds; long-lived connections must end before
OP_TIMEOUT = 30         # seconds for a connect, a handshake, an echo, a close


class Refused(Exception):
    """The TCP connection was refused."""


class Run:
    """Everything the load, the upgrades and the summary share."""

    def __init__(self, args, port, aport):
        self.args = args
        self.port = port
        self.aport = aport
        self.t0 = time.monotonic()
        self.main_pid = 0
        self.signals = 0          # SIGUSR2 (or SIGHUP) sent so far
        self.in_upgrade = False   # a signal is sent, the new pid not seen
        self.upgrades = []        # (k, old pid, new pid, seconds)
        self.upgrade_error = None
        self.mains = []           # (t, pid): which process was main when
        self.stop = asyncio.Event()
        self.refused = []
        self.failures = []
        self.failure_kinds = collections.Counter()  # (stage, exception)
        self.long_total = 0
        self.long_clean = 0
        self.long_open = 0
        self.long_open_max = 0
        self.hs = {"full13": 0, "full12": 0, "ticket": 0, "sessid": 0}
        self.hs_ok = 0
        # attempted / resumed, by kind and by phase (before or after the
        # first upgrade signal)
        self.res = {(k, p): [0, 0] for k in ("ticket", "sessid")
                    for p in ("before", "after")}
        self.not_resumed = []
        self.bytes = 0
        self.lag_max = 0.0
        self.admin_errors = 0
        self.pool13 = []
        self.pool12 = []
        self.client_cpu = 0.0
        self.load_wall = 0.0
        self.last_status = {}
        self.word = "reload" if args.reload else "upgrade"

    def now(self):
        return time.monotonic() - self.t0

    def phase(self):
        return "after" if self.signals else "before"

    def where(self):
        """Which process is main and whether an upgrade is under way."""
        return "main pid %d, %d upgrade signal(s) sent%s" % (
            self.main_pid, self.signals,
            ", upgrade in progress" if self.in_upgrade else "")


class TLSConn:
    """A TLS client over an asyncio TCP stream with memory BIOs, so that the
    session to resume can be chosen and the close_notify exchange is seen
    both ways."""

    def __init__(self):
        self.reader = self.writer = self.obj = None
        self.lport = 0

    async def connect(self, port, ctx, session=None):
        try:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", port)
        except ConnectionRefusedError as e:
            raise Refused(str(e)) from e
        self.lport = self.writer.get_extra_info("sockname")[1]
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out,
                                server_hostname="localhost", session=session)
        await self._io(self.obj.do_handshake)

    async def _flush(self):
        data = self.out.read()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _io(self, fn, *a):
        while True:
            try:
                res = fn(*a)
            except ssl.SSLWantReadError:
                await self._flush()
                data = await self.reader.read(65536)
                if data:
                    self.inc.write(data)
                else:
                    self.inc.write_eof()
                continue
            await self._flush()
            return res

    async def exchange(self, data):
        """Send data and read its echo; the echo must be the same bytes."""
        self.obj.write(data)
        await self._flush()
        got = bytearray()
        while len(got) < len(data):
            got += await self._io(self.obj.read, 65536)
        if got != data:
            at = next((i for i, (a, b) in enumerate(zip(got, data))
                       if a != b), min(len(got), len(data)))
            raise RuntimeError("echo differs at byte %d of %d (got %d)" %
                               (at, len(data), len(got)))
        return got

    async def close(self):
        """close_notify both ways: unwrap() sends ours and returns once the
        server's has come; a TCP end without it raises."""
        await self._io(self.obj.unwrap)
        self.writer.close()
        await self.writer.wait_closed()

    def abort(self):
        if self.writer is not None:
            self.writer.transport.abort()


def contexts():
    def base():
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        return c
    c13 = base()
    c13.minimum_version = ssl.TLSVersion.TLSv1_3
    c12 = base()
    c12.maximum_version = ssl.TLSVersion.TLSv1_2
    c12.options |= ssl.OP_NO_TICKET   # resume by session ID only
    return c13, c12


async def timed(coro, what):
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            return await coro
    except TimeoutError:
        raise TimeoutError("%s: no progress in %d s" % (what, OP_TIMEOUT)) \
            from None


def record(r, name, conn, started, stage, e):
    where = "%s at t=%.1fs (connected under main pid %d); now %s" % (
        name, r.now(), started, r.where())
    if conn is not None and conn.lport:
        where += "; local port %d" % conn.lport
    if isinstance(e, Refused):
        r.refused.append("%s: connection refused: %s" % (where, e))
    else:
        r.failures.append("%s: %s: %r" % (where, stage, e))
        r.failure_kinds[(stage.split()[0], type(e).__name__)] += 1


async def long_conn(r, ctx, name, rnd):
    r.long_total += 1
    life = rnd.uniform(r.args.life_min, r.args.life_max)
    conn, stage, started = TLSConn(), "connect", r.main_pid
    sent, got = hashlib.sha256(), hashlib.sha256()
    try:
        await timed(conn.connect(r.port, ctx), "handshake")
        r.long_open += 1
        r.long_open_max = max(r.long_open_max, r.long_open)
        try:
            end = time.monotonic() + life
            n = 0
            while True:
                stage = "echo %d" % n
                data = rnd.randbytes(rnd.randint(1, r.args.chunk))
                sent.update(data)
                got.update(await timed(conn.exchange(data), stage))
                r.bytes += len(data)
                n += 1
                left = end - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, rnd.uniform(0.3, 2.0)))
            stage = "close after %d echoes" % n
            await timed(conn.close(), "close")
        finally:
            r.long_open -= 1
        if sent.digest() != got.digest():
            raise RuntimeError("SHA-256 of the bytes sent and received "
                               "differ")
        r.long_clean += 1
        return True
    except Exception as e:  # noqa: BLE001 - every failure is reported
        conn.abort()
        record(r, name, conn, started, stage, e)
        return False


async def long_slot(r, ctx, slot):
    rnd = random.Random(r.args.seed * 1_000_003 + slot)
    await asyncio.sleep(rnd.uniform(0, r.args.ramp))
    n = 0
    while not r.stop.is_set():
        if not await long_conn(r, ctx, "long %d.%d" % (slot, n), rnd):
            await asyncio.sleep(0.5)
        n += 1


async def short_conn(r, ctx, kind, idx, session=None, sidx=-1):
    """One connection of the handshake stream (or of the session pools,
    idx < 0). Returns the session it ended with, or None on failure."""
    rnd = random.Random(r.args.seed * 7_000_003 + idx)
    name = "%s %d" % (kind, idx) + (" (pool session %d)" % sidx
                                   if sidx >= 0 else "")
    conn, stage, started = TLSConn(), "handshake", r.main_pid
    phase = r.phase()
    try:
        await timed(conn.connect(r.port, ctx, session), "handshake")
        if session is not None:
            a = r.res[(kind, phase)]
            a[0] += 1
            if conn.obj.session_reused:
                a[1] += 1
            else:
                r.not_resumed.append(
                    "%s at t=%.1fs (%s attempt; connected under main pid %d; "
                    "local port %d): full handshake instead of resumption" %
                    (name, r.now(), phase, started, conn.lport))
        stage = "echo"
        await timed(conn.exchange(rnd.randbytes(rnd.randint(1, 2048))),
                    stage)
        sess = conn.obj.session
        stage = "close"
        await timed(conn.close(), stage)
        if idx >= 0:
            r.hs_ok += 1
        return sess
    except Exception as e:  # noqa: BLE001
        conn.abort()
        record(r, name, conn, started, stage, e)
        return None


async def fill_pools(r, c13, c12):
    """Tickets and TLS 1.2 sessions from the first process."""
    n = r.args.pool
    s13 = await asyncio.gather(*[short_conn(r, c13, "pool-ticket", -1 - i)
                                 for i in range(n)])
    s12 = await asyncio.gather(*[short_conn(r, c12, "pool-sessid", -1 - i)
                                 for i in range(n)])
    r.pool13 = [s for s in s13 if s is not None and s.has_ticket]
    r.pool12 = [s for s in s12 if s is not None and s.id and
                not s.has_ticket]


async def handshake_stream(r, c13, c12):
    tasks = set()
    n = 0
    t_start = time.monotonic()
    rnd = random.Random(r.args.seed)
    while not r.stop.is_set():
        due = int((time.monotonic() - t_start) * r.args.rate)
        while n < due:
            kind = ("full13", "ticket", "full12", "sessid")[n % 4]
            session, sidx, ctx = None, -1, c13
            if kind == "ticket" and r.pool13:
                sidx = rnd.randrange(len(r.pool13))
                session = r.pool13[sidx]
            elif kind == "sessid" and r.pool12:
                sidx = rnd.randrange(len(r.pool12))
                session, ctx = r.pool12[sidx], c12
            elif kind == "full12":
                ctx = c12
            r.hs[kind] += 1
            t = asyncio.create_task(short_conn(r, ctx, kind, n, session,
                                               sidx))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
        await asyncio.sleep(0.02)
    await asyncio.gather(*list(tasks))


async def lag_monitor(r):
    """How late the event loop wakes up: the client's own saturation."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(0.1)
        r.lag_max = max(r.lag_max, time.monotonic() - t - 0.1)


async def get_status(r):
    reader, writer = await asyncio.open_connection("127.0.0.1", r.aport)
    try:
        writer.write(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(
            b"\r\n")[0] + b" ":
        raise RuntimeError("admin answered %r" % head[:80])
    return json.loads(body)


def proc_info(pid):
    """(state, ppid, exe, argv) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        exe = os.readlink("/proc/%d/exe" % pid)
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")[:-1]
    except OSError:
        return None
    if exe.endswith(" (deleted)"):
        exe = exe[:-len(" (deleted)")]
    return fields[0], int(fields[1]), exe, argv


def check_tlsproxy(pid, old, argv0):
    """None if pid is a live tlsproxy with the first process's binary and
    arguments, run by the old main process (or by us once it is gone);
    else what is wrong."""
    info = proc_info(pid)
    if info is None:
        return "process %d does not exist" % pid
    state, ppid, exe, argv = info
    if state in ("Z", "X"):
        return "process %d is a zombie" % pid
    if exe != os.path.realpath(BIN):
        return "process %d runs %s, not %s" % (pid, exe, BIN)
    if argv != argv0:
        return "process %d has arguments %r, not %r" % (pid, argv, argv0)
    if ppid not in (old, os.getpid()):
        return "process %d has parent %d, neither the old process %d nor " \
               "this script" % (pid, ppid, old)
    return None


async def upgrades(r, first_status, argv0):
    sig = signal.SIGHUP if r.args.reload else signal.SIGUSR2
    prev = first_status
    for k in range(1, r.args.upgrades + 1):
        old = r.main_pid
        t_sig = time.monotonic()
        r.in_upgrade = True
        r.signals += 1
        try:
            os.kill(old, sig)
        except ProcessLookupError:
            r.upgrade_error = "%s %d: main process %d is gone" % (
                r.word, k, old)
            r.in_upgrade = False
            return
        deadline = t_sig + r.args.upgrade_timeout
        new, st, err = None, None, None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            try:
                st = await get_status(r)
            except Exception as e:  # noqa: BLE001
                r.admin_errors += 1
                err = e
                continue
            pid = st.get("pid")
            if r.args.reload:
                if pid is not None and pid != old:
                    r.upgrade_error = "reload %d: /status pid %d after a " \
                        "reload of %d" % (k, pid, old)
                    r.in_upgrade = False
                    return
                if st.get("reloads_ok", 0) > prev.get("reloads_ok", 0):
                    new = old
                    break
            elif pid is not None and pid != old:
                new = pid
                break
        took = time.monotonic() - t_sig
        if new is None:
            r.upgrade_error = (
                "%s %d: no %s in /status %.0f s after %s to "
                "%d; last /status: %s%s" % (
                    r.word, k, "new process" if r.word == "upgrade" else
                    "new reload", r.args.upgrade_timeout, sig.name, old,
                    json.dumps(st)[:400] if st else "none",
                    "; last admin error: %r" % err if err else ""))
            if st is not None and "pid" not in st and not r.args.reload:
                r.upgrade_error += " (no \"pid\" in /status: this " \
                    "tlsproxy has no binary upgrade)"
            r.in_upgrade = False
            return
        if new != old:
            bad = check_tlsproxy(new, old, argv0)
            if bad:
                r.upgrade_error = "upgrade %d: %s" % (k, bad)
                r.in_upgrade = False
                return
            r.main_pid = new
            r.mains.append((r.now(), new))
        r.upgrades.append((k, old, new, took))
        r.in_upgrade = False
        prev = st
        print("# t=%6.1fs %s %d: %d -> %d in %.2f s; long-lived open "
              "%d, failed %d, refused %d" % (r.now(), r.word, k, old, new,
                                            took,
                                            r.long_open, len(r.failures),
                                            len(r.refused)), flush=True)
        await asyncio.sleep(r.args.interval)


class Reaper:
    """Reaps every child (we are their subreaper) with its status and CPU."""

    def __init__(self):
        self.exited = {}   # pid -> (exit code, CPU seconds)

    def reap(self):
        while True:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited[pid] = (os.waitstatus_to_exitcode(status),
                                ru.ru_utime + ru.ru_stime)

    async def run(self):
        while True:
            self.reap()
            await asyncio.sleep(0.1)


def kill_all(reaper, backend):
    """SIGKILL whatever child is left, the backend included, and reap it
    all, the orphans of killed processes too. Returns the pids of tlsproxy
    processes that were still there."""
    stray = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reaper.reap()
        left = children()
        if not left:
            break
        for p in left:
            if (backend is None or p != backend.pid) and p not in stray:
                stray.append(p)
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return stray


def children():
    me = os.getpid()
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            info = proc_info(int(p))
            if info is not None and info[1] == me:
                out.append(int(p))
    return out


async def run(r, daemon, argv0, reaper):
    args = r.args
    r.main_pid = daemon.pid
    r.mains.append((0.0, daemon.pid))
    reap_task = asyncio.create_task(reaper.run())
    lag_task = asyncio.create_task(lag_monitor(r))
    c13, c12 = contexts()
    first = await get_status(r)
    if "pid" in first and first["pid"] != daemon.pid:
        r.upgrade_error = "/status pid %r is not the daemon's %d" % (
            first["pid"], daemon.pid)
    await fill_pools(r, c13, c12)
    print("# t=%6.1fs pools: %d tickets, %d TLS 1.2 sessions from pid %d" %
          (r.now(), len(r.pool13), len(r.pool12), daemon.pid), flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t_load = time.monotonic()
    longs = [asyncio.create_task(long_slot(r, c13, i))
             for i in range(args.conns)]
    stream = asyncio.create_task(handshake_stream(r, c13, c12))
    await asyncio.sleep(args.ramp + args.warmup)
    print("# t=%6.1fs load: %d long-lived open, %d handshakes so far" %
          (r.now(), r.long_open, sum(r.hs.values())), flush=True)
    if r.upgrade_error is None:
        await upgrades(r, first, argv0)
    print("# t=%6.1fs stopping the load; long-lived connections end by "
          "themselves" % r.now(), flush=True)
    r.stop.set()
    await asyncio.gather(stream, *longs)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    r.client_cpu = (cpu1.ru_utime + cpu1.ru_stime -
                    cpu0.ru_utime - cpu0.ru_stime)
    r.load_wall = time.monotonic() - t_load
    try:
        r.last_status = await get_status(r)
    except Exception as e:  # noqa: BLE001
        r.last_status = {"error": repr(e)}
    lag_task.cancel()
    reap_task.cancel()
    return r


def main():
    ap = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=2000,
                    help="long-lived connections kept open")
    ap.add_argument("--rate", type=float, default=50,
                    help="new handshakes per second besides those")
    ap.add_argument("--upgrades", type=int, default=20)
    ap.add_argument("--interval", type=float, default=3,
                    help="seconds between an upgrade and the next signal")
    ap.add_argument("--upgrade-timeout", type=float, default=30)
    ap.add_argument("--life-min", type=float, default=5)
    ap.add_argument("--life-max", type=float, default=15)
    ap.add_argument("--chunk", type=int, default=4096,
                    help="largest chunk a long-lived connection sends")
    ap.add_argument("--ramp", type=float, default=5,
                    help="seconds over which the long-lived connections "
                    "are first opened")
    ap.add_argument("--warmup", type=float, default=3,
                    help="seconds of full load before the first upgrade")
    ap.add_argument("--pool", type=int, default=32,
                    help="sessions of each kind taken before the upgrades")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reload", action="store_true",
                    help="SIGHUP (reload) instead of SIGUSR2 (upgrade)")
    ap.add_argument("--keep", default=None,
                    help="keep the scratch directory (logs) here")
    args = ap.parse_args()
    if args.life_max >= SHUTDOWN_TIMEOUT:
        ap.error("--life-max must be below shutdown_timeout (%d s)" %
                 SHUTDOWN_TIMEOUT)
    wall0 = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.conns * 2 + args.rate * 10 + 2000
    if hard < need:
        print("1..0 # SKIP open-file limit %d is below %d" % (hard, need))
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("1..0 # SKIP prctl(PR_SET_CHILD_SUBREAPER): %s" %
              os.strerror(ctypes.get_errno()))
        return 0
    d = args.keep or tempfile.mkdtemp(prefix="tlsproxy-upgrade.")
    os.makedirs(d, exist_ok=True)
    reaper = Reaper()
    backend = daemon = None
    r = None
    error = None
    logf = os.path.join(d, "tlsproxy.log")
    known = {}    # tlsproxy main pids -> when it became main
    try:
        make_pki(d)
        backend, bport = start_backend()
        port, aport = free_port(), free_port()
        conf = write_config(
            d, port, bport, aport,
            "shutdown_timeout = %ds\nsession_timeout = 1h\n"
            "session_tickets = yes\nsession_cache_size = 20480\n" %
            SHUTDOWN_TIMEOUT)
        # Appended to by every process: each new one inherits this stderr.
        daemon = subprocess.Popen(
            [BIN, "-c", conf], stderr=open(logf, "a"))
        if not wait_ready(logf):
            raise RuntimeError("tlsproxy is not ready after 10 s")
        argv0 = proc_info(daemon.pid)[3]
        r = Run(args, port, aport)
        asyncio.run(run(r, daemon, argv0, reaper))
        known.update((pid, t) for t, pid in r.mains)
        # The last process: SIGTERM, then every process must be gone.
        try:
            os.kill(r.main_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass    # reaped already: its status tells
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT + 30
        while time.monotonic() < deadline:
            reaper.reap()
            if all(p in reaper.exited for p in known) and \
                    set(children()) <= {backend.pid}:
                break
            time.sleep(0.1)
    except Exception:  # noqa: BLE001 - reported as a failed TAP line
        error = traceback.format_exc()
    finally:
        if r is not None:
            known.update((pid, t) for t, pid in r.mains)
        stray = kill_all(reaper, backend)
        for p in (backend, daemon):
            if p is not None and p.pid in reaper.exited:
                p.returncode = reaper.exited[p.pid][0]
        if backend is not None:
            reaper.exited.pop(backend.pid, None)
    wall = time.monotonic() - wall0
    tap = []
    if error is not None:
        for line in error.splitlines():
            print("# " + line)
        tap.append((False, "the run went to its end (%s)" %
                    error.strip().splitlines()[-1]))
    if r is not None:
        tap += report(r, args, reaper, known, stray, logf, wall)
    failed = not tap or not all(ok for ok, _ in tap)
    if failed and os.path.exists(logf):
        with open(logf, errors="replace") as f:
            lines = f.readlines()
        print("# last lines of %s:" % logf)
        for line in lines[-40:]:
            print("#   " + line.rstrip())
    if not args.keep:
        shutil.rmtree(d, ignore_errors=True)
    print("1..%d" % len(tap))
    for i, (ok, what) in enumerate(tap, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, what))
    return 0 if all(ok for ok, _ in tap) else 1


def report(r, args, reaper, known, stray, logf, wall):
    word = r.word
    with open(logf, errors="replace") as f:
        log = f.read()
    print("# --- summary (%s mode) ---" % word)
    print("# connections refused: %d" % len(r.refused))
    print("# failed connections: %d" % len(r.failures))
    print("# long-lived connections ended cleanly: %d of %d (at most %d "
          "open at once)" % (r.long_clean, r.long_total, r.long_open_max))
    print("# handshakes: %d (full TLS 1.3 %d, full TLS 1.2 %d, ticket %d, "
          "session ID %d), %d ended cleanly" % (
              sum(r.hs.values()), r.hs["full13"], r.hs["full12"],
              r.hs["ticket"], r.hs["sessid"], r.hs_ok))
    for kind, what in (("ticket", "TLS 1.3 ticket resumptions"),
                       ("sessid", "TLS 1.2 session-ID resumptions")):
        b, a = r.res[(kind, "before")], r.res[(kind, "after")]
        print("# %s: attempted %d, resumed %d (before the first %s: %d/%d, "
              "after: %d/%d)" % (what, b[0] + a[0], b[1] + a[1], word,
                                 b[1], b[0], a[1], a[0]))
    print("# %ss done: %d of %d" % (word, len(r.upgrades), args.upgrades))
    if r.upgrades:
        took = sorted(u[3] for u in r.upgrades)
        print("# %s time (signal to /status): min %.2f s, median %.2f s, "
              "max %.2f s" % (word, took[0], took[len(took) // 2],
                              took[-1]))
    print("# MiB echoed: %.1f; admin errors while polling: %d; largest "
          "event-loop lag %.0f ms" % (r.bytes / 1048576, r.admin_errors,
                                      r.lag_max * 1000))
    ls = r.last_status
    print("# last /status: pid %s, upgrades_ok %s, upgrades_failed %s, "
          "reloads_ok %s, connections %s" % tuple(
              ls.get(k, "-") for k in ("pid", "upgrades_ok",
                                       "upgrades_failed", "reloads_ok",
                                       "connections")))
    tlsproxy_cpu = 0.0
    for pid, (code, cpu) in sorted(reaper.exited.items()):
        tlsproxy_cpu += cpu
        when = ("main from t=%.1fs" % known[pid]) if pid in known else \
            "never main"
        print("# tlsproxy pid %d (%s): exit status %d, CPU %.1f s" % (
            pid, when, code, cpu))
    for pid in stray:
        print("# pid %d was still running at the end: killed" % pid)
    print("# wall time %.0f s; CPU: client %.1f s during the load (%.0f "
          "s), tlsproxy %.1f s in all; sanitizer: %s" % (
              wall, r.client_cpu, r.load_wall, tlsproxy_cpu,
              os.environ.get("TLSPROXY_SANITIZE", "none")))
    for (stage, exc), n in r.failure_kinds.most_common():
        print("# failures in %s with %s: %d" % (stage, exc, n))
    for f in r.refused[:20]:
        print("# refused: " + f)
    for f in r.failures[:20]:
        print("# failure: " + f)
    for f in r.not_resumed[:20]:
        print("# not resumed: " + f)
    if r.upgrade_error:
        print("# %s error: %s" % (word, r.upgrade_error))
    for line in log.splitlines():
        if "upgrade failed" in line:
            print("# log: " + line)

    tap = []
    tap.append((not r.refused, "no connection refused (%d)" %
                len(r.refused)))
    tap.append((not r.failures, "no failed connection (%d)" %
                len(r.failures)))
    tap.append((r.long_total > 0 and r.long_clean == r.long_total,
                "every long-lived connection ended cleanly (%d of %d)" %
                (r.long_clean, r.long_total)))
    for kind, what in (("ticket", "TLS 1.3 ticket"),
                       ("sessid", "TLS 1.2 session-ID")):
        b, a = r.res[(kind, "before")], r.res[(kind, "after")]
        tap.append((a[0] > 0 and b[1] + a[1] == b[0] + a[0],
                    "every %s resumption resumed (%d of %d, %d of them "
                    "after the first %s)" % (what, b[1] + a[1], b[0] + a[0],
                                             a[0], word)))
    tap.append((len(r.upgrades) == args.upgrades and not r.upgrade_error,
                "all %d %ss happened (%d)" % (args.upgrades, word,
                                              len(r.upgrades))))
    if args.reload:
        logged = len(re.findall(r"reload: generation \d+ published", log))
        tap.append((logged == len(r.upgrades), "every reload was logged as "
                    "published (%d)" % logged))
    else:
        missing = [new for _, _, new, _ in r.upgrades
                   if "upgrade: process %d is ready" % new not in log]
        failed = log.count("upgrade failed")
        tap.append((not missing and not failed,
                    "every upgrade was logged as ready, none as failed "
                    "(missing %s, %d failed)" % (missing or "none",
                                                 failed)))
    bad = {p: c for p, (c, _) in reaper.exited.items() if c != 0}
    gone = [p for p in known if p not in reaper.exited]
    tap.append((not bad and not gone and not stray and
                len(reaper.exited) >= len(known),
                "every tlsproxy process exited with status 0 (%d processes; "
                "non-zero %s; not reaped %s)" % (
                    len(reaper.exited), bad or "none", gone or "none")))
    return tap


if __name__ == "__main__":
    sys.exit(main())
