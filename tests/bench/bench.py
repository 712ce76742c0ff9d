#!/usr/bin/env python3
"""mx2 benchmark: mx2d and a private Postfix secondary MX, side by side.

Run it through tests/bench/run (which installs Postfix and builds mx2 first):

    tests/bench/run [--quick] [--runs N] [--json FILE] [--only TEXT]...

What it does, for every scenario and every run, mx2 first and Postfix second
(interleaved, so drift of the machine hits both alike):

  * starts a FRESH relay (new spool) on 127.0.0.1 on a port chosen at run time:
    - mx2d with relay_domains example.jp, a recipient map of a few users, its
      primary on a dead loopback port (nothing listens there);
    - a private Postfix instance (own config/queue/data directory under the
      temp dir, `postfix -c DIR start`) set up as a secondary MX the same way:
      relay_domains, relay_recipient_maps (LMDB, the same keys as mx2's map),
      relay_transport to the same kind of dead port, no local delivery;
  * measures the scenario, checks that every message was really queued,
  * stops the relay by PID (also on Ctrl-C or an exception) and removes its
    spool.

Then it prints a table of medians [min-max] and the mx2/Postfix ratio and
writes every raw number as JSON (default tests/bench/results/latest.json).

Adding a scenario: subclass Scenario, fill in `rows` (what the table shows)
and `run_once` (one measurement against one relay, returning a dict of
metrics), and append it to make_scenarios(). A scenario that cannot run yet
sets `unavailable` to the reason; it then appears only as a table line.
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402  (the e2e helpers: free_port, build_map, Mx2d)

CLK_TCK = os.sysconf("SC_CLK_TCK")
DOMAIN = "example.jp"
USERS = ["user1", "user2", "user3", "user4", "user5"]
SENDER = "bench@sender.test"
RCPT = "user1@" + DOMAIN
HELO = "bench.test"
POSTFIX_SBIN = "/usr/sbin"


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- /proc

def proc_stat(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def proc_cpu(pid, with_children=False):
    """CPU seconds (user + system, all threads) of a live process."""
    st = proc_stat(pid)
    ticks = int(st[11]) + int(st[12])          # utime, stime
    if with_children:
        ticks += int(st[13]) + int(st[14])     # cutime, cstime (reaped children)
    return ticks / CLK_TCK


def proc_status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def proc_children(ppid):
    """PIDs whose parent is ppid (a scan of /proc: Postfix daemons are all
    children of master)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if int(proc_stat(int(name))[1]) == ppid:
                out.append(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def pid_alive(pid):
    try:
        st = proc_stat(pid)
    except OSError:
        return False
    return st[0] != "Z"


def kill_pid(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- relays

class Relay:
    """One relay under test. start() / stop() are idempotent; stop() is
    called from finally blocks and must leave no process behind."""
    name = "?"

    def __init__(self, workdir, opts):
        self.dir = workdir
        self.opts = opts
        self.port = None

    def pids(self):
        raise NotImplementedError

    def cpu_seconds(self):
        raise NotImplementedError

    def rss(self):
        """(sum of RSS KiB, sum of PSS KiB) over the relay's processes."""
        rss = pss = 0
        for p in self.pids():
            rss += proc_status_kb(p, "VmRSS") or 0
            pss += proc_pss_kb(p) or 0
        return rss, pss

    def peak_rss_kb(self):
        return None

    def settle(self, expected, timeout):
        """Wait (bounded) until the relay has finished the work caused by the
        last batch of mail, so CPU samples include it."""

    def queue_count(self):
        raise NotImplementedError


class Mx2Relay(Relay):
    name = "mx2"

    class Daemon(harness.Mx2d):
        def start(self, wait=True):
            # Own session: a Ctrl-C on the terminal reaches the bench, which
            # then stops mx2d itself (by PID) in its finally blocks.
            self.logf = open(self.log, "ab")
            self.proc = subprocess.Popen([harness.binpath("mx2d"), "-c", self.conf],
                                         stdout=self.logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            if wait:
                self.wait_ready()
            return self

    def start(self):
        conns = int(self.opts.get("max_connections", 1000))
        conf = dict(max_connections=conns, max_connections_per_ip=conns,
                    smtp_timeout="5m",
                    # inside our (short) temp dir: removed with it
                    control_socket=os.path.join(self.dir, "ctl.sock"))
        conf.update(self.opts.get("mx2_conf", {}))      # a scenario's own keys
        self.d = self.Daemon(self.dir, users=USERS, **conf)
        try:
            self.d.start()
        except RuntimeError as e:          # harness: "mx2d exited / did not come up"
            raise BenchError(str(e)) from None
        self.port = self.d.port
        self.pid = self.d.proc.pid
        return self

    def stop(self):
        d = getattr(self, "d", None)
        if d is None:
            return
        try:
            d.close()
        except Exception:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        self.d = None

    def primary_port(self):
        """The port of the (first) primary in mx2d's config."""
        return int(self.d.settings["primary"][0].rsplit(":", 1)[1])

    def ctl(self, *args, timeout=300):
        return subprocess.run([harness.binpath("mx2ctl"), "-c", self.d.conf] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def pids(self):
        return [self.pid] if pid_alive(self.pid) else []

    def cpu_seconds(self):
        return proc_cpu(self.pid)

    def peak_rss_kb(self):
        return proc_status_kb(self.pid, "VmHWM")

    def log_count(self):
        """(queue active) lines so far. Read incrementally: the log of a
        100,000-message fill is tens of MB, too much to rescan every 50 ms
        on a 2-core machine that also runs the relay and the generator."""
        tail = getattr(self, "_qa_tail", None)
        if tail is None or tail.path != self.d.log:
            tail = self._qa_tail = LogTail(self.d.log, {"qa": r": from=<.*\(queue active\)$"})
        tail.poll()
        return tail.counts["qa"]

    def settle(self, expected, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline and self.log_count() < expected:
            time.sleep(0.05)

    def queue_count(self):
        """(count, method): mx2ctl queue --json when mx2ctl exists (one JSON
        object per message and line), else the per-message log lines."""
        ctl = harness.binpath("mx2ctl")
        if os.access(ctl, os.X_OK):
            r = subprocess.run([ctl, "-c", self.d.conf, "queue", "--json"],
                               capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                n = 0
                for line in r.stdout.splitlines():
                    try:
                        if isinstance(json.loads(line), dict):
                            n += 1
                    except ValueError:
                        pass
                return n, "mx2ctl queue --json"
        return self.log_count(), "mx2d log (queue active) lines"


POSTFIX_MASTER_CF = """\
# Private bench instance: every service unchrooted (nothing is copied into the
# queue directory), no local/virtual/pipe delivery agents at all.
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# Everything not listed stays at Postfix's defaults: in particular nothing here
# touches how cleanup(8) and bounce(8) fsync the queue file and the defer log.
POSTFIX_MAIN_CF = {
    "compatibility_level": "3.6",
    "queue_directory": "{dir}/queue",
    "data_directory": "{dir}/data",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "myhostname": "postfix.bench.test",
    "mydomain": "bench.test",
    "myorigin": "$myhostname",
    "mydestination": "",
    "local_recipient_maps": "",
    "local_transport": "error:5.1.1 local delivery is disabled",
    "alias_maps": "",
    "alias_database": "",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "relay_domains": DOMAIN,
    "relay_recipient_maps": "lmdb:{dir}/etc/relay_recipients",
    "relay_transport": "smtp:[127.0.0.1]:{deadport}",
    "smtpd_recipient_restrictions": "reject_unauth_destination",
    "maillog_file": "{dir}/postfix.log",
    "maillog_file_prefixes": "{dir}",
    "biff": "no",
}


class PostfixRelay(Relay):
    name = "postfix"

    def start(self):
        d = self.dir
        os.chmod(d, 0o755)          # the postfix user must reach its queue
        self.etc = os.path.join(d, "etc")
        self.queue = os.path.join(d, "queue")
        for sub in ("etc", "queue", "data"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        shutil.chown(os.path.join(d, "data"), user="postfix")
        self.port = harness.free_port()
        self.deadport = harness.free_port()
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            for k, v in POSTFIX_MAIN_CF.items():
                f.write("%s = %s\n" % (k, v.format(dir=d, deadport=self.deadport)))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(POSTFIX_MASTER_CF.format(port=self.port))
        with open(os.path.join(self.etc, "relay_recipients"), "w") as f:
            for key in self.opts["map_keys"]:
                f.write("%s x\n" % key)
        self.pf("postmap", "-c", self.etc, "lmdb:" + os.path.join(self.etc, "relay_recipients"))
        self.master = None
        self.pf("postfix", "-c", self.etc, "check")
        self.pf("postfix", "-c", self.etc, "start")
        self.master = self.read_master_pid(timeout=10)
        self.wait_ready()
        return self

    def pf(self, prog, *args, timeout=60):
        r = subprocess.run([os.path.join(POSTFIX_SBIN, prog)] + list(args),
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise BenchError("%s %s failed (%d): %s%s" % (prog, " ".join(args), r.returncode,
                                                         r.stdout, r.stderr))
        return r.stdout

    def read_master_pid(self, timeout):
        path = os.path.join(self.queue, "pid", "master.pid")
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(path) as f:
                    pid = int(f.read().strip())
                if pid_alive(pid):
                    return pid
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise BenchError("postfix master did not start:\n" + self.read_log())

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(100).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        while s.recv(100):
                            pass
                        return
            except OSError:
                time.sleep(0.05)
        raise BenchError("postfix did not greet on port %d:\n%s" % (self.port, self.read_log()))

    def read_log(self):
        try:
            with open(os.path.join(self.dir, "postfix.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def instance_pids(self):
        """Every live process that belongs to this instance: MAIL_CONFIG in
        its environment names our private config directory."""
        want = ("MAIL_CONFIG=" + self.etc).encode()
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    if want in f.read().split(b"\0"):
                        out.append(int(name))
            except OSError:
                pass
        return [p for p in out if pid_alive(p)]

    def stop(self):
        if getattr(self, "etc", None) is None:
            return
        master = getattr(self, "master", None)
        try:
            subprocess.run([os.path.join(POSTFIX_SBIN, "postfix"), "-c", self.etc, "stop"],
                           capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            pass
        # `postfix stop` only signals master: wait for it and its children,
        # then kill by PID whatever of this instance is left.
        deadline = time.time() + 15
        while time.time() < deadline and self.instance_pids():
            time.sleep(0.1)
        left = self.instance_pids()
        if master and pid_alive(master) and master not in left:
            left.append(master)
        for p in left:
            kill_pid(p, signal.SIGKILL)
        deadline = time.time() + 5
        while time.time() < deadline and any(pid_alive(p) for p in left):
            time.sleep(0.05)
        if any(pid_alive(p) for p in left):
            log("WARNING: postfix processes survived SIGKILL: %s" % left)
        self.etc = None

    def pids(self):
        if not self.master or not pid_alive(self.master):
            return []
        return [self.master] + [p for p in proc_children(self.master) if pid_alive(p)]

    def cpu_seconds(self):
        # master's cutime/cstime hold every daemon it has reaped; the live
        # daemons count their own time (and their reaped children's).
        total = proc_cpu(self.master, with_children=True)
        for p in proc_children(self.master):
            try:
                total += proc_cpu(p, with_children=True)
            except OSError:
                pass
        return total

    def queue_files(self, names):
        n = 0
        for q in names:
            for _, _, files in os.walk(os.path.join(self.queue, q)):
                n += len(files)
        return n

    def settle(self, expected, timeout):
        # Accepted mail is first in incoming/, then qmgr moves it to active/
        # and defers it (the primary is down): settled when both are empty.
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.queue_files(("incoming", "active", "maildrop")) == 0:
                return
            time.sleep(0.1)

    def queue_count(self):
        try:
            out = self.pf("postqueue", "-c", self.etc, "-j", timeout=120)
            return sum(1 for line in out.splitlines() if line.startswith("{")), "postqueue -j"
        except BenchError:
            return (self.queue_files(("incoming", "active", "deferred", "hold", "maildrop")),
                    "queue files")


def map_keys(workdir):
    """The keys of mx2's bench map (mx2map dump), so Postfix's
    relay_recipient_maps holds exactly the same addresses."""
    path = os.path.join(workdir, "keys.mdb")
    harness.build_map(path, USERS, domain=DOMAIN)
    r = subprocess.run([harness.binpath("mx2map"), "dump", path], capture_output=True, text=True)
    keys = [k.strip() for k in r.stdout.splitlines() if k.strip()] if r.returncode == 0 else []
    if not keys:
        keys = ["%s@%s" % (u, DOMAIN) for u in USERS + ["postmaster", "abuse"]]
    return keys


LIVE = []     # relays started and not yet stopped: main() stops them at the end


def make_relay(name, workdir, opts):
    r = {"mx2": Mx2Relay, "postfix": PostfixRelay}[name](workdir, opts)
    LIVE.append(r)
    return r


def stop_relay(relay):
    """Stop a relay with SIGINT/SIGTERM held off, so a second Ctrl-C cannot
    leave a daemon half-stopped."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        relay.stop()
    except Exception as e:
        log("WARNING: stopping %s: %s" % (relay.name, e))
    finally:
        if relay in LIVE:
            LIVE.remove(relay)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


# ---------------------------------------------------------------- load

def smtp_source(port, messages, sessions, size, timeout):
    """Run smtp-source; returns wall seconds, its CPU seconds, exit code and
    the last line of its output."""
    args = [os.path.join(POSTFIX_SBIN, "smtp-source"), "-4", "-c",
            "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", SENDER, "-t", RCPT, "-M", HELO, "127.0.0.1:%d" % port]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += b"\n(killed after %ds)" % timeout
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    counter = out.decode(errors="replace").replace("\r", "\n").split()
    return {"wall_s": wall, "gen_cpu_s": cpu, "rc": p.returncode,
            "last_counter": int(counter[-1]) if counter and counter[-1].isdigit() else None,
            "stderr": err.decode(errors="replace").strip()[-500:]}


class RssSampler(threading.Thread):
    """Samples the relay's summed RSS/PSS every `interval` s until stopped."""

    def __init__(self, relay, interval=0.1):
        super().__init__(daemon=True)
        self.relay, self.interval = relay, interval
        self.max_rss = self.max_pss = self.max_procs = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                pids = self.relay.pids()
                rss = pss = 0
                for p in pids:
                    rss += proc_status_kb(p, "VmRSS") or 0
                    pss += proc_pss_kb(p) or 0
                self.max_rss = max(self.max_rss, rss)
                self.max_pss = max(self.max_pss, pss)
                self.max_procs = max(self.max_procs, len(pids))
                self.samples += 1
            except Exception:
                pass
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(5)


def hold_idle(port, n, window, connect_batch=200):
    """Open n connections, wait up to `window` s for their greetings, keep
    them open. Returns (sockets, stats); the caller closes the sockets."""
    sel = selectors.DefaultSelector()
    socks, greeted, failed = [], 0, 0
    bufs = {}
    t0 = time.monotonic()
    last_greet = None
    deadline = t0 + window

    def pump(timeout):
        nonlocal greeted, failed, last_greet
        for key, _ in sel.select(timeout):
            s = key.fileobj
            try:
                data = s.recv(512)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                failed += 1
                sel.unregister(s)
                continue
            bufs[s] = bufs.get(s, b"") + data
            if b"\r\n" in bufs[s]:
                if bufs[s].startswith(b"220"):
                    greeted += 1
                    last_greet = time.monotonic()
                else:
                    failed += 1
                sel.unregister(s)

    try:
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            err = s.connect_ex(("127.0.0.1", port))
            if err not in (0, 115):         # EINPROGRESS
                failed += 1
                continue
            sel.register(s, selectors.EVENT_READ)
            if i % connect_batch == connect_batch - 1:
                pump(0)
            if time.monotonic() > deadline:
                break
        while greeted + failed < n and time.monotonic() < deadline:
            pump(min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        sel.close()
    stats = {"connections": n, "greeted": greeted, "failed": failed,
             "all_greeted_s": (last_greet - t0) if greeted == n and last_greet else None,
             "window_s": window}
    return socks, stats


def disk_probe(directory, seconds=1.0):
    """Appends of 2 KiB + fdatasync from one writer, for the README's
    'what bounds it' (bounded to `seconds`)."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        buf = b"x" * 2048
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds and n < 100000:
            os.write(fd, buf)
            os.fdatasync(fd)
            n += 1
        return n / (time.monotonic() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


# ---------------------------------------------------------------- scenarios

class Scenario:
    name = "?"
    title = "?"
    relays = ("mx2", "postfix")
    unavailable = None
    start_relay = True      # False: run_once gets an unstarted relay (its dir only)
    # (metric key, label, format) — one table line each
    rows = ()

    def relay_opts(self, relay):
        return {}

    def run_once(self, relay, ctx):
        raise NotImplementedError


class AcceptScenario(Scenario):
    """Durable accept: smtp-source sends `messages` messages of `size` bytes
    over `sessions` parallel sessions (a new connection per message, as
    smtp-source does by default); messages/s = messages / its wall time."""

    def __init__(self, size, sessions, messages, sample_rss=False, ceiling=False):
        self.size, self.sessions, self.messages = size, sessions, messages
        self.sample_rss = sample_rss
        self.ceiling = ceiling
        self.name = "accept-%s-x%d" % (human_size(size), sessions)
        self.title = "accept %s, %d session%s" % (human_size(size), sessions,
                                                  "" if sessions == 1 else "s")
        self.rows = [("msgs_per_s", "msg/s", "%.0f"),
                     ("srv_cpu_ms_per_msg", "relay CPU ms/msg", "%.3f"),
                     ("gen_cpu_ms_per_msg", "smtp-source CPU ms/msg", "%.3f")]
        if ceiling:
            # What the same load reaches against a server that stores
            # nothing (smtp-sink), measured in each relay's run just before
            # it: the bound the generator and the kernel set on this machine.
            # (Small messages only: smtp-sink reads a 1 MiB body slower than
            # mx2 stores it, about 225 msg/s at 10 sessions here.)
            self.rows += [("ceiling_msgs_per_s", "ceiling: same load into smtp-sink msg/s", "%.0f"),
                          ("of_ceiling_pct", "relay msg/s as % of that ceiling", "%.0f")]
        if sample_rss:
            self.rows += [("rss_mib", "relay peak RSS MiB", "%.1f"),
                          ("pss_mib", "relay peak PSS MiB", "%.1f")]

    def params(self):
        return {"size": self.size, "sessions": self.sessions, "messages": self.messages}

    def measure_ceiling(self, workdir, timeout):
        sink = Sink(harness.free_port(), workdir)
        try:
            sink.start()
            src = smtp_source(sink.port, self.messages, self.sessions, self.size, timeout)
        finally:
            sink.stop()
        if src["rc"] != 0:
            return None
        return self.messages / src["wall_s"]

    def run_once(self, relay, ctx):
        timeout = int(60 + self.messages * max(1, self.size // 65536) / 20)
        ceiling = self.measure_ceiling(relay.dir, timeout) if self.ceiling else None
        sampler = RssSampler(relay) if self.sample_rss else None
        cpu0 = relay.cpu_seconds()
        if sampler:
            sampler.start()
        try:
            src = smtp_source(relay.port, self.messages, self.sessions, self.size, timeout)
            relay.settle(self.messages, timeout=120)
        finally:
            if sampler:
                sampler.stop()
        cpu1 = relay.cpu_seconds()
        count, method = relay.queue_count()
        m = dict(src)
        m.update({
            "messages": self.messages, "queued": count, "count_method": method,
            "msgs_per_s": self.messages / src["wall_s"],
            "srv_cpu_s": cpu1 - cpu0,
            "srv_cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / self.messages,
            "gen_cpu_ms_per_msg": src["gen_cpu_s"] * 1000 / self.messages,
        })
        if ceiling:
            m["ceiling_msgs_per_s"] = ceiling
            m["of_ceiling_pct"] = 100.0 * m["msgs_per_s"] / ceiling
        if sampler:
            m["sampled_rss_kib"] = sampler.max_rss
            m["sampled_pss_kib"] = sampler.max_pss
            m["max_procs"] = sampler.max_procs
            m["rss_samples"] = sampler.samples
            peak = relay.peak_rss_kb()          # mx2d: VmHWM is exact
            m["peak_rss_kib"] = max(peak or 0, sampler.max_rss)
            m["rss_mib"] = m["peak_rss_kib"] / 1024
            m["pss_mib"] = sampler.max_pss / 1024
        problems = []
        if src["rc"] != 0:
            problems.append("smtp-source exit %s: %s" % (src["rc"], src["stderr"]))
        if count != self.messages:
            problems.append("queued %d of %d messages (%s)" % (count, self.messages, method))
        if problems:
            m["error"] = "; ".join(problems)
        return m


class IdleScenario(Scenario):
    """N idle connections: how many get their 220 greeting within the window,
    how long until the last one, and the relay's RSS while holding them."""

    def __init__(self, conns, relays=("mx2", "postfix"), window=10.0):
        self.conns, self.relays, self.window = conns, relays, window
        self.name = "idle-%d" % conns
        self.title = "%d idle connections%s" % (conns, "" if "postfix" in relays
                                                else " (mx2 only)")
        self.rows = [("greeted", "greeted within %gs" % window, "%.0f"),
                     ("all_greeted_s", "s until all greeted", "%.2f"),
                     ("rss_mib", "relay RSS MiB holding them", "%.1f"),
                     ("pss_mib", "relay PSS MiB holding them", "%.1f")]

    def params(self):
        return {"connections": self.conns, "window_s": self.window}

    def relay_opts(self, relay):
        return {"max_connections": self.conns + 100}

    def run_once(self, relay, ctx):
        socks, stats = hold_idle(relay.port, self.conns, self.window)
        try:
            time.sleep(0.2)
            rss, pss = relay.rss()
            m = dict(stats)
            m.update({"rss_kib": rss, "pss_kib": pss, "rss_mib": rss / 1024,
                      "pss_mib": pss / 1024, "procs": len(relay.pids())})
            if m["all_greeted_s"] is None:
                m.pop("all_greeted_s")          # not a number: left out of the medians
        finally:
            for s in socks:
                s.close()
        return m


class Sink:
    """Postfix's smtp-sink as the recovered primary: answers 250 at once,
    throws the mail away and counts it (-c prints "sess=N quit=N mesg=N"
    after every message). Started and stopped by PID."""

    def __init__(self, port, outdir):
        self.port = port
        self.out = os.path.join(outdir, "sink-%d.out" % port)
        self.proc = None

    def start(self, timeout=10):
        self.outf = open(self.out, "wb")
        # -u postfix: it refuses to run as root; backlog 1000; up to 256
        # sessions at once (its default -m), far above both relays' 10-20.
        self.proc = subprocess.Popen([os.path.join(POSTFIX_SBIN, "smtp-sink"), "-4", "-c",
                                      "-u", "postfix", "127.0.0.1:%d" % self.port, "1000"],
                                     stdout=self.outf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("smtp-sink on port %d exited: %s" % (self.port, self.tail()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return time.monotonic()     # listening (the probe sent no mail)
            except OSError:
                time.sleep(0.005)
        raise BenchError("smtp-sink did not listen on port %d" % self.port)

    def tail(self):
        try:
            with open(self.out, "rb") as f:
                return f.read()[-300:].decode(errors="replace")
        except OSError:
            return ""

    def count(self):
        m = re.findall(r"mesg=(\d+)", self.tail())
        return int(m[-1]) if m else 0

    def cpu_seconds(self):
        """smtp-sink is one process (no fork): its own utime + stime."""
        try:
            return proc_cpu(self.proc.pid)
        except OSError:
            return None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            kill_pid(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                kill_pid(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "outf", None):
            self.outf.close()
            self.outf = None


class LogTail:
    """Reads a growing log file incrementally (complete lines only) and
    counts the lines matching each named regex, remembering when (monotonic)
    the first match of each was seen."""

    def __init__(self, path, patterns, offset=0):
        self.path, self.offset = path, offset
        self.pats = {k: re.compile(v) for k, v in patterns.items()}
        self.counts = {k: 0 for k in patterns}
        self.first = {}
        self.last = {}
        self.rest = b""

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        if not cut:
            return
        now = time.monotonic()
        for line in data[:cut].decode("utf-8", "replace").splitlines():
            for k, pat in self.pats.items():
                if pat.search(line):
                    self.counts[k] += 1
                    self.first.setdefault(k, now)
                    self.last[k] = now
                    self.match = line


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def fill_queue(relay, messages, sessions, problems):
    """Queue `messages` 2 KiB messages with smtp-source while the primary is
    down, wait until the relay has settled, check the count."""
    src = smtp_source(relay.port, messages, sessions, 2048, int(120 + messages / 20))
    if src["rc"] != 0:
        problems.append("fill: smtp-source exit %s: %s" % (src["rc"], src["stderr"]))
    relay.settle(messages, timeout=300)
    return src


class DrainScenario(Scenario):
    """Issue 4 bench / issue 6 target 4: `messages` queued 2 KiB messages
    delivered to smtp-sink as the recovered primary.

    mx2: primary = the sink's port while nothing listens there, probe_interval
    1s, retry_min 1h (so only a probe, or a flush, recovers it). Fill, check
    `mx2ctl queue --json` == N, start smtp-sink, and time from the moment it
    listens until the log holds N "<ID>: removed" lines. Three variants per
    run, each on a fresh spool: recovery by the probe at primary_concurrency
    10 (the default) and at 20, and `mx2ctl flush` sent as soon as the sink
    listens at concurrency 10 and at 20 (Postfix's default concurrency). The probe wait (sink listening -> "primary is
    UP again") is reported separately and NOT subtracted from msg/s.

    Postfix: relay_transport at the dead port; fill, settle, start smtp-sink
    there, `postqueue -c DIR -f` at once, time until no queue file is left
    (checked with `postqueue -j`). Postfix's figure is repeated on every
    msg/s line so each mx2 variant gets its ratio.
    """
    name = "drain"

    def __init__(self, messages, fill_sessions=10):
        self.messages, self.fill_sessions = messages, fill_sessions
        self.title = "drain %d queued 2KiB msgs" % messages
        self.rows = [("msgs_per_s", "msg/s probe recovery, c=10", "%.0f"),
                     ("probe_wait_s", "  of which s: sink up -> probe UP", "%.2f"),
                     ("msgs_per_s_after_up", "  msg/s after the primary is UP", "%.0f"),
                     ("flush_msgs_per_s", "msg/s mx2ctl flush, c=10", "%.0f"),
                     ("flush20_msgs_per_s", "msg/s mx2ctl flush, c=20 (as Postfix)", "%.0f"),
                     ("c20_msgs_per_s", "msg/s probe recovery, c=20", "%.0f"),
                     ("srv_cpu_ms_per_msg", "relay CPU ms/msg (c=10)", "%.3f"),
                     ("sink_cpu_ms_per_msg", "smtp-sink CPU ms/msg (c=10)", "%.3f"),
                     ("drain_s", "s sink up -> queue empty (c=10)", "%.2f")]

    def params(self):
        return {"messages": self.messages, "size": 2048, "fill_sessions": self.fill_sessions,
                "mx2": {"probe_interval": "1s", "retry_min": "1h",
                        "primary_concurrency": [10, 20]},
                "postfix": "postqueue -f; relay_destination_concurrency_limit default (20)"}

    def relay_opts(self, relay):
        return {"mx2_conf": {"probe_interval": "1s", "retry_min": "1h",
                             "primary_concurrency": 10}}

    def timeout(self):
        return 60 + self.messages / 50

    def run_once(self, relay, ctx):
        if relay.name == "postfix":
            m = self.postfix_drain(relay)
            for k in ("flush_msgs_per_s", "flush20_msgs_per_s", "c20_msgs_per_s"):
                if "msgs_per_s" in m:
                    m[k] = m["msgs_per_s"]
            return m
        m = self.mx2_drain(relay, flush=False)
        errors = [m["error"]] if "error" in m else []
        for key, conc, flush in (("flush", 10, True), ("flush20", 20, True), ("c20", 20, False)):
            wd = tempfile.mkdtemp(prefix="%s%d." % (key[0], ctx["run"]), dir=ctx["workroot"])
            opts = {"map_keys": ctx["keys"],
                    "mx2_conf": dict(self.relay_opts("mx2")["mx2_conf"],
                                     primary_concurrency=conc)}
            other = make_relay("mx2", wd, opts)
            try:
                other.start()
                v = self.mx2_drain(other, flush=flush)
            except (BenchError, OSError, subprocess.SubprocessError) as e:
                v = {"error": "%s: %s" % (type(e).__name__, e)}
            finally:
                stop_relay(other)
                shutil.rmtree(wd, ignore_errors=True)
            m[key] = v
            if "msgs_per_s" in v:
                m[key + "_msgs_per_s"] = v["msgs_per_s"]
            if "error" in v:
                errors.append("%s: %s" % (key, v["error"]))
        if errors:
            m["error"] = "; ".join(errors)
        return m

    def mx2_drain(self, relay, flush):
        n, problems = self.messages, []
        m = {"messages": n, "variant": "flush" if flush else "probe",
             "primary_concurrency": relay.d.settings.get("primary_concurrency")}
        src = fill_queue(relay, n, self.fill_sessions, problems)
        m["fill_msgs_per_s"] = n / src["wall_s"]
        # Every message deferred (the primary is down) before the sink starts.
        deadline = time.monotonic() + 120
        while True:
            r = relay.ctl("queue", "--json")
            states = {}
            for line in r.stdout.splitlines():
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                states[o.get("state")] = states.get(o.get("state"), 0) + 1
            queued = sum(states.values())
            if (queued == n and not states.get("active")) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        m["queued"], m["queued_states"] = queued, states
        if queued != n:
            problems.append("queued %d of %d before the drain (mx2ctl queue --json)" % (queued, n))
            m["error"] = "; ".join(problems)
            return m
        tail = LogTail(relay.d.log, {"removed": r": removed$", "sent": r"status=sent",
                                     "up": r"primary is UP again"},
                       offset=file_size(relay.d.log))
        sink = Sink(relay.primary_port(), relay.dir)
        try:
            cpu0 = relay.cpu_seconds()
            t0 = sink.start()
            if flush:
                r = relay.ctl("flush", timeout=30)
                m["flush_rc"] = r.returncode
                if r.returncode != 0:
                    problems.append("mx2ctl flush exit %d: %s" % (r.returncode,
                                                                  r.stderr.strip()))
            deadline = t0 + self.timeout()
            while tail.counts["removed"] < n and time.monotonic() < deadline:
                time.sleep(0.01)
                tail.poll()
            t1 = tail.last.get("removed", time.monotonic())
            cpu1 = relay.cpu_seconds()
            m["sink_count"] = sink.count()
            sink_cpu = sink.cpu_seconds()
        finally:
            sink.stop()
        if sink_cpu is not None:
            m["sink_cpu_ms_per_msg"] = sink_cpu * 1000 / n
        m.update({"removed": tail.counts["removed"], "sent": tail.counts["sent"],
                  "drain_s": t1 - t0, "msgs_per_s": n / (t1 - t0),
                  "srv_cpu_s": cpu1 - cpu0, "srv_cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n})
        if "up" in tail.first:
            m["probe_wait_s"] = tail.first["up"] - t0
            m["msgs_per_s_after_up"] = n / max(1e-6, t1 - tail.first["up"])
        left, _ = relay.queue_count()
        m["left"] = left
        if tail.counts["removed"] != n or left != 0:
            problems.append("drained %d of %d in %.0fs (%d left in mx2ctl queue)"
                            % (tail.counts["removed"], n, self.timeout(), left))
        if m["sink_count"] < n:
            problems.append("smtp-sink counted %d of %d messages" % (m["sink_count"], n))
        if problems:
            m["error"] = "; ".join(problems)
        return m

    def postfix_drain(self, relay):
        n, problems = self.messages, []
        m = {"messages": n, "variant": "postqueue -f"}
        src = fill_queue(relay, n, self.fill_sessions, problems)
        m["fill_msgs_per_s"] = n / src["wall_s"]
        queued, method = relay.queue_count()
        m["queued"], m["count_method"] = queued, method
        if queued != n:
            problems.append("queued %d of %d before the drain (%s)" % (queued, n, method))
            m["error"] = "; ".join(problems)
            return m
        dirs = ("incoming", "active", "deferred", "maildrop")
        plog = os.path.join(relay.dir, "postfix.log")
        tail = LogTail(plog, {"removed": r": removed$", "sent": r"status=sent"},
                       offset=file_size(plog))
        sink = Sink(relay.deadport, relay.dir)
        try:
            cpu0 = relay.cpu_seconds()
            t0 = sink.start()
            relay.pf("postqueue", "-c", relay.etc, "-f")
            deadline = t0 + self.timeout()
            # The queue is empty when no queue file is left. A walk of the
            # queue directories costs ~9 ms of CPU at 20,000 files, so it
            # runs every 20 ms only once the log (read incrementally, as
            # for mx2) shows N "removed" lines, else once a second in case
            # postlogd dropped lines.
            last_walk = 0.0
            while time.monotonic() < deadline:
                tail.poll()
                now = time.monotonic()
                if tail.counts["removed"] >= n or now - last_walk >= 1.0:
                    last_walk = now
                    if relay.queue_files(dirs) == 0:
                        break
                time.sleep(0.02)
            t1 = time.monotonic()
            m["log_removed"], m["log_sent"] = tail.counts["removed"], tail.counts["sent"]
            cpu1 = relay.cpu_seconds()
            m["sink_count"] = sink.count()
            sink_cpu = sink.cpu_seconds()
        finally:
            sink.stop()
        if sink_cpu is not None:
            m["sink_cpu_ms_per_msg"] = sink_cpu * 1000 / n
        left, method = relay.queue_count()
        m.update({"drain_s": t1 - t0, "msgs_per_s": n / (t1 - t0), "left": left,
                  "srv_cpu_s": cpu1 - cpu0, "srv_cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n})
        if left != 0:
            problems.append("%d messages left after %.0fs (%s)" % (left, self.timeout(), method))
        if m["sink_count"] < n:
            problems.append("smtp-sink counted %d of %d messages" % (m["sink_count"], n))
        if problems:
            m["error"] = "; ".join(problems)
        return m


def percentile(vals, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(vals)
    return s[max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))]


class LatencyScenario(Scenario):
    """Issue 6 target 2: end-of-data -> 250 latency at one session. One
    connection, EHLO once, then per message MAIL/RCPT/DATA pipelined in one
    write, the 2 KiB message, and the clock runs from sending the final
    "\\r\\n.\\r\\n" (TCP_NODELAY) to receiving the complete 250 reply: the
    relay's durable commit, nothing of the generator."""
    name = "latency-x1"

    def __init__(self, messages):
        self.messages = messages
        self.title = "end-of-data->250, 1 session"
        self.rows = [("median_ms", "median ms", "%.3f"),
                     ("p90_ms", "p90 ms", "%.3f"),
                     ("msgs_per_s", "msg/s (one reused session)", "%.0f")]

    def params(self):
        return {"messages": self.messages, "size": 2048}

    @staticmethod
    def body(size=2048):
        head = ("From: <%s>\r\nTo: <%s>\r\nSubject: latency\r\n\r\n" % (SENDER, RCPT)).encode()
        line = b"x" * 76 + b"\r\n"
        out = head
        while len(out) + len(line) <= size:
            out += line
        return out[:-2]             # the final CRLF is the start of "\r\n.\r\n"

    def run_once(self, relay, ctx):
        n, lat, problems = self.messages, [], []
        body = self.body()
        c = harness.Raw(relay.port, timeout=30)
        c.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t_start = time.monotonic()
        try:
            code, _ = c.reply()
            code, text = c.cmd("EHLO " + HELO)
            if code != 250 or "PIPELINING" not in text.upper():
                raise BenchError("EHLO: %r (PIPELINING needed)" % text)
            env = ("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (SENDER, RCPT)).encode()
            for i in range(n):
                c.send(env)
                codes = [c.reply()[0] for _ in range(3)]
                if codes != [250, 250, 354]:
                    raise BenchError("message %d: MAIL/RCPT/DATA answered %s" % (i, codes))
                c.send(body)
                t0 = time.perf_counter()
                c.send(b"\r\n.\r\n")
                code, text = c.reply()
                lat.append(time.perf_counter() - t0)
                if code != 250:
                    raise BenchError("message %d: end of data answered %r" % (i, text))
            c.cmd("QUIT")
        finally:
            c.close()
        wall = time.monotonic() - t_start
        relay.settle(n, timeout=120)
        count, method = relay.queue_count()
        ms = [x * 1000 for x in lat]
        m = {"messages": n, "queued": count, "count_method": method,
             "median_ms": statistics.median(ms), "p90_ms": percentile(ms, 90),
             "p99_ms": percentile(ms, 99), "max_ms": max(ms), "min_ms": min(ms),
             "msgs_per_s": n / wall}
        if count != n:
            problems.append("queued %d of %d messages (%s)" % (count, n, method))
        if problems:
            m["error"] = "; ".join(problems)
        return m


class RecoveryScenario(Scenario):
    """Issue 6 target 7 (mx2 only: Postfix has no startup recovery step, its
    queue is plain files that qmgr scans lazily). Fill the spool with N
    messages (smtp-source, 50 sessions, primary down), SIGTERM mx2d, start it
    again on the same spool and time (from exec) until it greets a
    connection and until it logs "flusher: N messages queued"; then time
    `mx2ctl queue` and `mx2ctl queue --json` over that spool (daemon
    running)."""
    name = "recovery"
    relays = ("mx2",)

    def __init__(self, messages):
        self.messages = messages
        self.title = "restart over %d queued msgs (mx2 only)" % messages
        self.rows = [("listen_s", "s exec -> greets (220)", "%.3f"),
                     ("loaded_s", "s exec -> 'N messages queued'", "%.3f"),
                     ("queue_s", "s mx2ctl queue", "%.2f"),
                     ("queue_json_s", "s mx2ctl queue --json", "%.2f"),
                     ("stop_s", "s SIGTERM -> exit", "%.2f"),
                     ("fill_msgs_per_s", "fill msg/s (50 sessions)", "%.0f")]

    def params(self):
        return {"messages": self.messages, "size": 2048, "fill_sessions": 50}

    def relay_opts(self, relay):
        return {"max_connections": 200, "mx2_conf": {"retry_min": "1h", "probe_interval": "1h"}}

    def run_once(self, relay, ctx):
        n, problems = self.messages, []
        src = fill_queue(relay, n, 50, problems)
        m = {"messages": n, "fill_msgs_per_s": n / src["wall_s"]}
        d = relay.d
        t = time.monotonic()
        rc = d.stop(signal.SIGTERM, timeout=120)
        m["stop_s"] = time.monotonic() - t
        if rc != 0:
            problems.append("mx2d exited %s on SIGTERM" % rc)
        d.logf.close()
        offset = file_size(d.log)
        tail = LogTail(d.log, {"loaded": r"flusher: \d+ messages queued"}, offset=offset)
        t0 = time.monotonic()
        d.start(wait=False)
        relay.pid = d.proc.pid
        listen = None
        deadline = t0 + 120
        while time.monotonic() < deadline and (listen is None or "loaded" not in tail.first):
            if d.proc.poll() is not None:
                raise BenchError("mx2d exited %s on restart:\n%s" % (d.proc.returncode,
                                                                    d.read_log()[-2000:]))
            if listen is None:
                try:
                    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
                        s.settimeout(10)
                        if s.recv(100).startswith(b"220"):
                            listen = time.monotonic()
                            s.sendall(b"QUIT\r\n")
                except OSError:
                    pass
            tail.poll()
            time.sleep(0.005)
        if listen is not None:
            m["listen_s"] = listen - t0
        if "loaded" in tail.first:
            m["loaded_s"] = tail.first["loaded"] - t0
            got = int(re.search(r"flusher: (\d+) messages", tail.match).group(1))
            m["loaded_messages"] = got
            if got != n:
                problems.append("flusher loaded %d of %d messages" % (got, n))
        else:
            problems.append("no 'flusher: N messages queued' line within 120s")
        if listen is None:
            problems.append("not greeting within 120s of the restart")
        for key, args in (("queue_s", ["queue"]), ("queue_json_s", ["queue", "--json"])):
            t = time.monotonic()
            r = relay.ctl(*args)
            m[key] = time.monotonic() - t
            if r.returncode != 0:
                problems.append("mx2ctl %s exit %d" % (" ".join(args), r.returncode))
            if "--json" in args:
                got = sum(1 for line in r.stdout.splitlines() if line.startswith("{"))
            else:
                mm = re.search(r"in (\d+) Requests?\.", r.stdout)
                got = int(mm.group(1)) if mm else -1
            m[key.replace("_s", "_count")] = got
            if got != n:
                problems.append("mx2ctl %s listed %d of %d" % (" ".join(args), got, n))
        if problems:
            m["error"] = "; ".join(problems)
        return m


MAP_DOMAIN = DOMAIN


class MapScenario(Scenario):
    """Issue 6 target 8: a recipient map of `entries` addresses
    (u0000000@example.jp ...; one list file with a dummy second column, which
    both mx2map --list and postmap read). mx2: `mx2map build` wall time, and
    the lookup microbenchmark tests/bench/maplookup.c (rcptmap_lookup in a
    loop, random half present / half absent keys, median ns per lookup over 5
    batches of 1,000,000). Postfix: `postmap -c DIR lmdb:FILE` wall time for
    the same list (its lookup is not measured: n/a)."""
    name = "map"
    start_relay = False

    def __init__(self, entries, maplookup=None):
        self.entries, self.maplookup = entries, maplookup
        self.title = "recipient map, %s entries" % format(entries, ",")
        self.rows = [("build_s", "build s", "%.2f"),
                     ("lookup_ns", "lookup ns (median of 5 x 1M)", "%.0f")]

    def params(self):
        return {"entries": self.entries, "maplookup": self.maplookup,
                "lookups": "5 batches x 1000000, half present"}

    def list_file(self, ctx):
        path = os.path.join(ctx["workroot"], "map%d.list" % self.entries)
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as f:
                for i in range(0, self.entries, 10000):
                    f.write("".join("u%07d@%s x\n" % (j, MAP_DOMAIN)
                                    for j in range(i, min(self.entries, i + 10000))))
            os.rename(path + ".tmp", path)
        return path

    def run_once(self, relay, ctx):
        lst = self.list_file(ctx)
        os.makedirs(relay.dir, exist_ok=True)
        return self.mx2(relay.dir, lst) if relay.name == "mx2" else self.postfix(relay.dir, lst)

    def mx2(self, wd, lst):
        out, problems = os.path.join(wd, "big.mdb"), []
        t = time.monotonic()
        r = subprocess.run([harness.binpath("mx2map"), "build", "-o", out, "--domain",
                            MAP_DOMAIN, "--list", lst], capture_output=True, text=True,
                           timeout=600)
        m = {"build_s": time.monotonic() - t, "entries": self.entries,
             "map_bytes": file_size(out), "summary": (r.stdout + r.stderr).strip()[-300:]}
        if r.returncode != 0 or ("wrote %d keys" % (self.entries + 2)) not in r.stdout:
            problems.append("mx2map build exit %d: %s" % (r.returncode, m["summary"]))
        q = subprocess.run([harness.binpath("mx2map"), "query", out,
                            "U%07d@Example.JP" % (self.entries - 1)], capture_output=True)
        if q.returncode != 0:
            problems.append("mx2map query of the last key failed")
        if self.maplookup and not problems:
            r = subprocess.run([self.maplookup, out, str(self.entries), "1000000", "5"],
                               capture_output=True, text=True, timeout=600)
            try:
                res = json.loads(r.stdout)
                m["lookup"] = res
                m["lookup_ns"] = res["median_ns"]
            except ValueError:
                res = None
            if r.returncode != 0 or res is None:
                problems.append("maplookup exit %d: %s" % (r.returncode, r.stderr.strip()))
        elif not self.maplookup:
            m["lookup_note"] = "maplookup not built (tests/bench/run compiles it)"
        if problems:
            m["error"] = "; ".join(problems)
        return m

    def postfix(self, wd, lst):
        etc = os.path.join(wd, "etc")
        os.makedirs(etc, exist_ok=True)
        with open(os.path.join(etc, "main.cf"), "w") as f:
            f.write("compatibility_level = 3.6\n")
        table = os.path.join(etc, "big")
        shutil.copyfile(lst, table)
        t = time.monotonic()
        r = subprocess.run([os.path.join(POSTFIX_SBIN, "postmap"), "-c", etc, "lmdb:" + table],
                           capture_output=True, text=True, timeout=600)
        m = {"build_s": time.monotonic() - t, "entries": self.entries,
             "map_bytes": file_size(table + ".lmdb")}
        problems = []
        if r.returncode != 0:
            problems.append("postmap exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
        q = subprocess.run([os.path.join(POSTFIX_SBIN, "postmap"), "-c", etc, "-q",
                            "u%07d@%s" % (self.entries - 1, MAP_DOMAIN), "lmdb:" + table],
                           capture_output=True, text=True)
        if q.returncode != 0 or q.stdout.strip() != "x":
            problems.append("postmap -q of the last key: exit %d %r" % (q.returncode, q.stdout))
        if problems:
            m["error"] = "; ".join(problems)
        return m


def human_size(n):
    if n % (1 << 20) == 0:
        return "%dMiB" % (n >> 20)
    if n % 1024 == 0:
        return "%dKiB" % (n >> 10)
    return "%dB" % n


def make_scenarios(quick, maplookup=None):
    q = quick
    return [
        # Counts: at mx2's rates each run lasts at least about half a
        # second (--quick) or two (default), so that start-up, the first
        # journal checkpoint and 10 ms CPU ticks do not decide the figure.
        AcceptScenario(2048, 1, 1000 if q else 3000, ceiling=True),
        AcceptScenario(2048, 10, 3000 if q else 10000, ceiling=True),
        AcceptScenario(2048, 50, 3000 if q else 10000, sample_rss=True),
        AcceptScenario(100 * 1024, 10, 1000 if q else 3000),
        AcceptScenario(1 << 20, 10, 300 if q else 1000),
        IdleScenario(500),
        IdleScenario(10000, relays=("mx2",)),
        DrainScenario(5000 if q else 20000),
        LatencyScenario(300 if q else 1000),
        RecoveryScenario(20000 if q else 100000),
        MapScenario(1000000, maplookup),
    ]


# ---------------------------------------------------------------- checks

def count_syncs(relay, messages=40, sessions=5):
    """strace every sync call of the relay's processes while it accepts
    `messages` messages and settles; returns {syscall: calls}."""
    strace = shutil.which("strace")
    if not strace:
        return None
    out = os.path.join(relay.dir, "strace.out")
    args = [strace, "-f", "-qq", "-c", "-o", out,
            "-e", "trace=fsync,fdatasync,sync_file_range,syncfs,msync"]
    for p in relay.pids():
        args += ["-p", str(p)]
    st = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)                         # attach
        src = smtp_source(relay.port, messages, sessions, 2048, 60)
        relay.settle(messages, timeout=30)
        time.sleep(0.5)
    finally:
        st.send_signal(signal.SIGINT)
        try:
            st.wait(10)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    calls = {}
    try:
        with open(out) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "sync_file_range",
                                                     "syncfs", "msync"):
                    calls[parts[-1]] = int(parts[3])
    except OSError:
        return None
    return {"messages": messages, "smtp_source_rc": src["rc"], "calls": calls,
            "per_message": sum(calls.values()) / messages}


def smtp_probe(port, rcpt):
    """The reply code to RCPT TO:<rcpt> (one plain session)."""
    c = harness.Raw(port)
    try:
        c.reply()
        c.cmd("EHLO " + HELO)
        c.cmd("MAIL FROM:<%s>" % SENDER)
        code, text = c.cmd("RCPT TO:<%s>" % rcpt)
        c.cmd("QUIT")
        return code, text.splitlines()[-1]
    finally:
        c.close()


def preflight(workroot, keys, results):
    """Before measuring: both relays must refuse unknown users and foreign
    domains and accept listed users; Postfix's private config must be what we
    wrote (postconf -c) and its defer path must fsync as usual."""
    checks = {}
    for name in ("mx2", "postfix"):
        wd = tempfile.mkdtemp(prefix="c%s." % name[0], dir=workroot)
        relay = make_relay(name, wd, {"map_keys": keys})
        try:
            relay.start()
            c = {"policy": {}}
            for rcpt, want in ((RCPT, 250), ("nobody@" + DOMAIN, 550),
                               ("user1@elsewhere.test", 554)):
                code, text = smtp_probe(relay.port, rcpt)
                c["policy"][rcpt] = text
                if code != want:
                    raise BenchError("%s answered %r to RCPT %s (expected %d)"
                                     % (name, text, rcpt, want))
            if name == "postfix":
                conf = relay.pf("postconf", "-c", relay.etc, "-n")
                got = dict(l.split(" = ", 1) for l in conf.splitlines() if " = " in l)
                for k in ("relay_domains", "relay_recipient_maps", "relay_transport",
                          "queue_directory", "smtpd_recipient_restrictions"):
                    if got.get(k) != POSTFIX_MAIN_CF[k].format(dir=wd, deadport=relay.deadport):
                        raise BenchError("postconf -c %s: %s = %r" % (relay.etc, k, got.get(k)))
                c["postconf_n"] = conf.splitlines()
                c["mail_version"] = relay.pf("postconf", "-c", relay.etc, "-h",
                                             "mail_version").strip()
            syncs = count_syncs(relay)
            c["syncs"] = syncs
            if syncs is None:
                log("%s: strace not available, sync calls not counted" % name)
            else:
                log("%s: %.2f sync calls per accepted message %s"
                    % (name, syncs["per_message"], syncs["calls"]))
                if name == "postfix" and syncs["per_message"] < 1.5:
                    raise BenchError("postfix made only %.2f fsyncs per message; its queue "
                                     "file + defer log path should make 2" % syncs["per_message"])
            checks[name] = c
        finally:
            stop_relay(relay)
            shutil.rmtree(wd, ignore_errors=True)
    results["checks"] = checks


# ---------------------------------------------------------------- report

def summarize(values):
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize_scenario(sc, res):
    """Medians/min/max over the runs that passed their checks (a run whose
    relay did not queue every message is reported, never averaged in)."""
    res["summary"], res["failed_runs"] = {}, {}
    for name in sc.relays:
        ok = [e[name] for e in res["runs"] if name in e and "error" not in e[name]]
        res["failed_runs"][name] = sum(1 for e in res["runs"] if name in e) - len(ok)
        for key, _, _ in sc.rows:
            res["summary"].setdefault(key, {})[name] = summarize([m.get(key) for m in ok])


def fmt_cell(s, f):
    if s is None:
        return "-"
    if s["min"] == s["max"]:
        return f % s["median"]
    return "%s [%s-%s]" % (f % s["median"], f % s["min"], f % s["max"])


def render_table(scenarios, results):
    head = ("scenario", "metric", "mx2 median [min-max]", "postfix median [min-max]",
            "mx2/postfix")
    lines = []
    checks = results.get("checks", {})
    syncs = {n: (c.get("syncs") or {}).get("per_message") for n, c in checks.items()}
    if any(v is not None for v in syncs.values()):
        a, b = syncs.get("mx2"), syncs.get("postfix")
        lines.append(("check: durable accept", "sync calls/msg (strace)",
                      "-" if a is None else "%.2f" % a, "-" if b is None else "%.2f" % b,
                      "%.2f" % (a / b) if a is not None and b else "-"))
    for sc in scenarios:
        if sc.unavailable:
            lines.append((sc.title, sc.unavailable, "", "", ""))
            continue
        r = results["scenarios"].get(sc.name)
        if r is None:
            continue
        first = True
        for key, label, f in sc.rows:
            sm = r["summary"].get(key, {})
            a, b = sm.get("mx2"), sm.get("postfix")
            if a is None and b is None:
                continue
            ratio = "-"
            if a and b and b["median"]:
                x = a["median"] / b["median"]
                ratio = ("%.2f" if x >= 0.1 else "%.3f" if x >= 0.001 else "%.1e") % x
            cb = fmt_cell(b, f) if "postfix" in sc.relays else "n/a"
            lines.append((sc.title if first else "", label, fmt_cell(a, f), cb, ratio))
            first = False
        fails = {n: c for n, c in r.get("failed_runs", {}).items() if c}
        if fails:
            lines.append(("", "FAILED runs (excluded)", str(fails.get("mx2", 0)),
                          str(fails.get("postfix", 0)), ""))
    widths = [max(len(x[i]) for x in lines + [head]) for i in range(5)]
    out = []
    for i, row in enumerate([head] + lines):
        out.append("  ".join(c.ljust(widths[j]) if j < 4 else c for j, c in enumerate(row))
                   .rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine_info(tmp):
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "kernel": platform.release(),
            "loadavg_start": os.getloadavg()[0]}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            info["cpu"] = m.group(1) if m else "?"
        with open("/proc/meminfo") as f:
            info["mem_kib"] = int(f.readline().split()[1])
    except OSError:
        pass
    r = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", tmp],
                       capture_output=True, text=True)
    info["disk"] = " ".join(r.stdout.split())
    r = subprocess.run(["df", "-h", "--output=size,avail", tmp], capture_output=True, text=True)
    info["disk_space"] = " ".join(r.stdout.split()[2:])
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    info["git"] = r.stdout.strip()
    return info


# ---------------------------------------------------------------- main

def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))   # root may
            return want
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def on_sigterm(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    ap = argparse.ArgumentParser(description="mx2 vs Postfix secondary-MX benchmark")
    ap.add_argument("--quick", action="store_true", help="3 runs, fewer messages")
    ap.add_argument("--runs", type=int, help="runs per scenario (default 5, --quick 3)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"),
                    help="raw results file (default tests/bench/results/latest.json)")
    ap.add_argument("--bin", help="directory with mx2d and mx2map (tests/bench/run sets it)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only scenarios whose name contains this text (repeatable)")
    ap.add_argument("--tmpdir", default=None, help="where spools go (default: $TMPDIR or /tmp)")
    ap.add_argument("--skip-checks", action="store_true", help="skip the preflight checks")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--maplookup", help="the compiled tests/bench/maplookup.c (run builds it)")
    a = ap.parse_args()
    runs = a.runs or (3 if a.quick else 5)
    if runs < 1:
        ap.error("--runs must be at least 1")
    scenarios = make_scenarios(a.quick, a.maplookup and os.path.abspath(a.maplookup))
    if a.only:
        scenarios = [s for s in scenarios if any(o in s.name for o in a.only)]
    if a.list:
        for s in scenarios:
            print("%-22s %s%s" % (s.name, s.title,
                                  "  (" + s.unavailable + ")" if s.unavailable else ""))
        return 0
    if a.bin:
        harness.BIN = os.path.abspath(a.bin)
    for prog in ("mx2d", "mx2map"):
        if not os.access(harness.binpath(prog), os.X_OK):
            log("missing %s (build mx2 first, or pass --bin)" % harness.binpath(prog))
            return 1
    for prog in ("postfix", "postconf", "postmap", "postqueue", "smtp-source", "smtp-sink"):
        if not os.access(os.path.join(POSTFIX_SBIN, prog), os.X_OK):
            log("missing %s/%s (tests/bench/run installs postfix)" % (POSTFIX_SBIN, prog))
            return 1
    if os.geteuid() != 0:
        log("must run as root (a private Postfix instance needs root to start)")
        return 1
    signal.signal(signal.SIGTERM, on_sigterm)
    # The client's sockets and mx2d's are in different processes: each needs
    # one descriptor per idle connection plus its own.
    nofile = raise_nofile(max([s.conns for s in scenarios if isinstance(s, IdleScenario)]
                              + [1024]) + 2000)

    workroot = tempfile.mkdtemp(prefix="mx2bench.", dir=a.tmpdir)
    os.chmod(workroot, 0o755)
    results = {"meta": machine_info(workroot), "scenarios": {}}
    results["meta"].update({"runs": runs, "quick": a.quick, "bin": harness.BIN,
                            "nofile": nofile, "order": "interleaved: mx2, postfix per run"})
    try:
        results["meta"]["mx2_version"] = subprocess.run(
            [harness.binpath("mx2d"), "--version"], capture_output=True, text=True).stdout.strip()
        results["meta"]["disk_fdatasync_2k_per_s"] = round(disk_probe(workroot))
        log("machine: %(nproc)s cpus, disk %(disk)s, %(disk_fdatasync_2k_per_s)s "
            "appends+fdatasync/s" % results["meta"])
        keys = map_keys(workroot)
        if not a.skip_checks:
            preflight(workroot, keys, results)
        for sc in scenarios:
            if sc.unavailable:
                continue
            log("scenario %s (%s), %d runs" % (sc.name, sc.title, runs))
            res = {"title": sc.title, "params": sc.params(), "runs": [],
                   "summary": {}, "failed_runs": {}}
            results["scenarios"][sc.name] = res
            for i in range(runs):
                entry = {"run": i + 1}
                res["runs"].append(entry)
                for name in sc.relays:
                    # Short paths: mx2d's control socket must fit sun_path (108).
                    wd = tempfile.mkdtemp(prefix="%s%d." % (name[0], i), dir=workroot)
                    opts = dict(sc.relay_opts(name), map_keys=keys)
                    relay = make_relay(name, wd, opts)
                    ctx = {"results": results, "workroot": workroot, "keys": keys,
                           "run": i + 1}
                    try:
                        if sc.start_relay:
                            relay.start()
                        m = sc.run_once(relay, ctx)
                    except (BenchError, OSError, subprocess.SubprocessError) as e:
                        m = {"error": "%s: %s" % (type(e).__name__, e)}
                    finally:
                        stop_relay(relay)
                        shutil.rmtree(wd, ignore_errors=True)
                        # Write back what this relay left dirty (Postfix
                        # removes thousands of queue files) now, not during
                        # the next relay's measurement.
                        os.sync()
                    entry[name] = m
                    summarize_scenario(sc, res)
                    short = {k: (round(v, 3) if isinstance(v, float) else v)
                             for k, v in m.items() if k in [r[0] for r in sc.rows] + ["error"]}
                    log("  run %d %-7s %s" % (i + 1, name, short))
                summarize_scenario(sc, res)
    except KeyboardInterrupt:
        log("interrupted: relays stopped, partial results follow")
        results["interrupted"] = True
    except BenchError as e:
        log("FAILED: %s" % e)
        results["error"] = str(e)
    finally:
        for relay in list(LIVE):
            stop_relay(relay)
        shutil.rmtree(workroot, ignore_errors=True)
        results["meta"]["loadavg_end"] = os.getloadavg()[0]
        if a.json:
            os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1, sort_keys=True)

    m = results["meta"]
    print("mx2 bench %s: %d run(s) per scenario, interleaved; %s cpus (%s), disk %s; "
          "loadavg %.2f -> %.2f; git %s"
          % (m["date"], runs, m["nproc"], m.get("cpu", "?"), m.get("disk", "?"),
             m["loadavg_start"], m["loadavg_end"], m["git"]))
    print(render_table(scenarios, results))
    if a.json:
        print("raw results: %s" % a.json)
    failed = any(sum(r.get("failed_runs", {}).values()) for r in results["scenarios"].values())
    return 1 if results.get("interrupted") or results.get("error") or failed else 0


if __name__ == "__main__":
    sys.exit(main())
