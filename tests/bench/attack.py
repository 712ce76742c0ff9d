#!/usr/bin/env python3
"""tests/bench/attack.py -- a well-behaved client's latency while mx2d is attacked.

    python3 tests/bench/attack.py [--bin DIR] [--seconds N] [--json FILE]
                                  [--slowloris N] [--tmpdir DIR]

Starts the built mx2d (from --bin, default /work/main/build/bin) on 127.0.0.1
with a primary that is down (nothing listens on its port: every message just
queues), then measures a well-behaved client -- sequential smtplib sessions,
each sending one 2 KiB message -- first alone (the baseline), then while the
whole attack set runs at once from a second process:

  slowloris        hundreds of connections sending one byte per second, half
                   dribbling a command line, half dribbling a DATA body
                   (10 per source address, below max_connections_per_ip)
  flood-per-ip     bursts of 100 connections from one address (limit 20)
  flood-global     bursts that take the server past max_connections
  rcpt-10000       sessions pipelining 10,000 RCPT TO to unknown users
  huge-header      messages with one 12 MiB header line (max_message_size 10 MiB)
  garbage          NUL/8-bit garbage as commands, and messages whose headers
                   and body are full of NUL and 8-bit octets (accepted: queued)
  broken-tls       STARTTLS followed by broken handshakes (truncated
                   ClientHello then silence, wrong record version, TLS 1.0
                   only, plaintext, garbage key exchange, close mid-handshake)
  renegotiation    openssl s_client -starttls smtp -tls1_2, then "R"

Attackers use their own loopback source addresses (127.0.1.x ... 127.0.7.x),
so per-IP limits hit them and not the good client (127.0.0.1); only the
global flood can refuse the good client, by design of max_connections: such a
refusal (421 4.7.0 at connect) is counted and the same message is tried again
after 0.2 s. A message "failed" only if it was never accepted (10 tries).

Prints a table (median/p90/p99/max of end-of-data->250 and whole-session
latency, baseline vs attack; failures; mx2d's peak RSS (VmHWM) and RSS at the
end; CPU seconds; per-attack counters) and writes JSON to
tests/bench/results/attack-<date>.json. It measures and reports; it asserts
no timing. Exit 0 when the run completed and mx2d exited 0 on SIGTERM, 1
otherwise.

Everything it starts (mx2d, the attacker process, openssl) is stopped by PID;
it listens and connects on loopback only; runtime is bounded by --seconds
(default 60) plus a few seconds of start and stop.
"""
import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import resource
import shutil
import signal
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
HOST = "127.0.0.1"

# The daemon's limits during the bench (written into its config).
MAX_CONNECTIONS = 400
MAX_PER_IP = 20
SMTP_TIMEOUT_S = 10
MAX_MESSAGE = 10 * 1024 * 1024


# ---------------------------------------------------------------- helpers

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def conf_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(conf_value(x) for x in v) + " ]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def proc_status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_s(pid):
    """utime + stime of pid in seconds, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def percentile(vals, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(vals)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summarize(ms):
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "median_ms": statistics.median(ms), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms), "min_ms": min(ms)}


def client_hello():
    """A real TLS 1.2 ClientHello record, from Python's ssl without a socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="mx2.test")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


# ---------------------------------------------------------------- the daemon

class Daemon:
    def __init__(self, bindir, workdir):
        self.bindir = bindir
        self.dir = workdir
        self.port = free_port()
        self.dead_port = free_port()         # the primary: nothing listens here
        self.conf = os.path.join(workdir, "mx2.conf")
        self.log = os.path.join(workdir, "mx2d.log")
        self.cert = os.path.join(workdir, "cert.pem")
        self.key = os.path.join(workdir, "key.pem")
        self.proc = None
        self.pid = None

    def prepare(self):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", self.key, "-out", self.cert, "-days", "2",
                        "-subj", "/CN=mx2.test"], check=True, capture_output=True)
        lst = os.path.join(self.dir, "users.list")
        with open(lst, "w") as f:
            f.write("good\nvictim\n")
        mapfile = os.path.join(self.dir, "recipients.mdb")
        subprocess.run([os.path.join(self.bindir, "mx2map"), "build", "-o", mapfile,
                        "--domain", "example.jp", "--list", lst],
                       check=True, capture_output=True)
        settings = {
            "hostname": "mx2.test",
            "listen": ["%s:%d" % (HOST, self.port)],
            "relay_domains": ["example.jp"],
            "recipient_map": mapfile,
            "primary": ["[%s]:%d" % (HOST, self.dead_port)],
            "spool_dir": os.path.join(self.dir, "spool"),
            "control_socket": "/tmp/mx2-attack-%d-%d.sock" % (os.getpid(), self.port),
            "http_listen": "",
            "max_connections": MAX_CONNECTIONS,
            "max_connections_per_ip": MAX_PER_IP,
            "smtp_timeout": "%ds" % SMTP_TIMEOUT_S,
            "max_message_size": MAX_MESSAGE,
            "max_recipients": 1000,
            "tls_cert": self.cert,
            "tls_key": self.key,
        }
        self.settings = settings
        with open(self.conf, "w") as f:
            for k, v in settings.items():
                f.write("%s = %s;\n" % (k, conf_value(v)))

    def start(self):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([os.path.join(self.bindir, "mx2d"), "-c", self.conf],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mx2d exited with %s:\n%s" % (self.proc.returncode,
                                                               self.tail()))
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(100).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        while s.recv(100):
                            pass
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mx2d did not come up:\n" + self.tail())

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n=4000):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM by PID; SIGKILL after 20 s. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


# ---------------------------------------------------------------- the good client

BODY = ("From: good@sender.test\r\nTo: good@example.jp\r\nSubject: bench\r\n\r\n" +
        "".join("%-63s\r\n" % ("line %d of a well-behaved message" % i) for i in range(30)))
BODY = BODY[:2048 - 2] + "\r\n"                     # 2 KiB exactly, CRLF-ended


def good_session(port, timeout=30):
    """One session, one 2 KiB message. Returns (eod_ms, session_ms) or raises."""
    t0 = time.perf_counter()
    c = smtplib.SMTP(HOST, port, local_hostname="good.test", timeout=timeout)
    try:
        # Without this, Nagle's algorithm holds the small ".\r\n" segment
        # until the server's delayed ACK (40 ms): a client artefact.
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.ehlo("good.test")
        code, text = c.mail("good@sender.test")
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        code, text = c.rcpt("good@example.jp")
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        code, text = c.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPResponseException(code, text)
        c.send(BODY)
        t1 = time.perf_counter()
        c.send(".\r\n")
        code, text = c.getreply()
        t2 = time.perf_counter()
        if code != 250:
            raise smtplib.SMTPResponseException(code, text)
        c.quit()
    finally:
        c.close()
    t3 = time.perf_counter()
    return (t2 - t1) * 1000.0, (t3 - t0) * 1000.0


def classify(e):
    if isinstance(e, smtplib.SMTPConnectError):
        return "refused at connect: %d %s" % (e.smtp_code, e.smtp_error.decode("ascii", "replace")[:40])
    if isinstance(e, smtplib.SMTPResponseException):
        return "reply %d %s" % (e.smtp_code, (e.smtp_error.decode("ascii", "replace")
                                              if isinstance(e.smtp_error, bytes)
                                              else str(e.smtp_error))[:40])
    return "%s: %s" % (type(e).__name__, str(e)[:60])


def measure(daemon, seconds, pace_s=0.0, tries=10):
    """Sequential good-client sessions for `seconds`, `pace_s` apart. A
    message is retried (0.2 s later) on failure, up to `tries` sessions."""
    eod, sess = [], []
    refused, errors, failed_msgs = {}, 0, []
    end = time.time() + seconds
    sent = 0
    while time.time() < end:
        sent += 1
        why = []
        for _ in range(tries):
            try:
                a, b = good_session(daemon.port)
                eod.append(a)
                sess.append(b)
                why = None
                break
            except (OSError, smtplib.SMTPException) as e:
                reason = classify(e)
                refused[reason] = refused.get(reason, 0) + 1
                errors += 1
                why.append(reason)
                time.sleep(0.2)
        if why:
            failed_msgs.append(why)
        if pace_s > 0:
            time.sleep(pace_s)
    return {"messages": sent, "accepted": len(eod), "failed_messages": len(failed_msgs),
            "failed_detail": failed_msgs[:20], "failed_sessions": errors,
            "failed_session_reasons": refused, "eod_to_250": summarize(eod),
            "session": summarize(sess), "eod_ms": eod, "session_ms": sess}


# ---------------------------------------------------------------- the attackers (child process)

class Stats(dict):
    def inc(self, key, n=1):
        self[key] = self.get(key, 0) + n


async def connect(port, src, timeout=10):
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, port, local_addr=(src, 0), limit=1 << 20), timeout)


async def read_reply(reader, timeout=30):
    """One (multi-line) reply: (code, text) or (None, b"") at EOF."""
    text = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return None, text
        text += line
        if len(line) < 4 or line[3:4] != b"-":
            try:
                return int(line[:3]), text
            except ValueError:
                return None, text


def close_writer(w):
    try:
        w.close()
    except Exception:
        pass


async def greet(port, src, st, kind):
    """Connect and read the greeting: (reader, writer), or None when the
    server refused us (421 at connect: a limit) -- counted, not an error."""
    r, w = await connect(port, src)
    code, _ = await read_reply(r)
    if code != 220:
        st.inc("%s_refused_at_connect" % kind)
        close_writer(w)
        await asyncio.sleep(0.5)
        return None
    return r, w


async def slowloris(port, src, mode, deadline, st):
    """Keep one connection dribbling one byte per second; reconnect when cut."""
    while time.time() < deadline:
        try:
            r, w = await connect(port, src)
        except (OSError, asyncio.TimeoutError):
            st.inc("slowloris_connect_failed")
            await asyncio.sleep(1)
            continue
        st.inc("slowloris_%s_connections" % mode)
        t0 = time.time()
        try:
            code, _ = await read_reply(r)
            if code != 220:
                st.inc("slowloris_refused")
                await asyncio.sleep(1)
                continue
            if mode == "data":
                for line in (b"EHLO slow.test\r\n", b"MAIL FROM:<slow@slow.test>\r\n",
                             b"RCPT TO:<victim@example.jp>\r\n", b"DATA\r\n"):
                    w.write(line)
                    await w.drain()
                    code, _ = await read_reply(r)
                if code != 354:
                    st.inc("slowloris_data_not_354")
                    await asyncio.sleep(1)
                    continue
                payload = b"Subject: " + b"z" * 100000
            else:
                payload = b"NOOP " + b"y" * 100000
            i = 0
            cut = False
            while time.time() < deadline:
                w.write(payload[i:i + 1])
                i += 1
                await w.drain()
                try:
                    await asyncio.wait_for(r.read(4096), 1.0)
                    # Any reply here is the 421 timeout, or EOF: cut off.
                    cut = True
                    break
                except asyncio.TimeoutError:
                    pass
            if cut:
                st.inc("slowloris_%s_cut_off" % mode)
                st.inc("slowloris_%s_held_s" % mode, time.time() - t0)
            else:
                # Still connected when the attack ended: never timed out.
                st.inc("slowloris_%s_open_at_end" % mode)
                key = "slowloris_%s_longest_open_s" % mode
                st[key] = round(max(st.get(key, 0.0), time.time() - t0), 1)
                st.inc("slowloris_%s_bytes_sent_by_survivors" % mode, i)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            st.inc("slowloris_%s_cut_off" % mode)
            st.inc("slowloris_%s_held_s" % mode, time.time() - t0)
        finally:
            close_writer(w)


async def flood(port, srcs, count, hold, period, deadline, st, key):
    """Every `period` s open `count` connections (round-robin over srcs),
    read their first reply, hold them `hold` s, close them."""
    while time.time() < deadline:
        t0 = time.time()
        conns = []

        async def one(i):
            try:
                r, w = await connect(port, srcs[i % len(srcs)])
            except (OSError, asyncio.TimeoutError):
                st.inc(key + "_connect_failed")
                return
            conns.append(w)
            try:
                code, _ = await read_reply(r, 10)
            except (OSError, asyncio.TimeoutError):
                code = None
            st.inc("%s_%s" % (key, code if code else "eof"))

        await asyncio.gather(*(one(i) for i in range(count)))
        st.inc(key + "_bursts")
        await asyncio.sleep(hold)
        for w in conns:
            close_writer(w)
        await asyncio.sleep(max(0.0, period - (time.time() - t0)))


async def rcpt_storm(port, src, deadline, st):
    """A dictionary attack: 10,000 pipelined RCPT TO to unknown users. The
    server answers ~20 of them and cuts the session off with 421 (its error
    limit), closing with most of our lines unread (so the kernel may reset
    the connection: that is counted as the cut-off too)."""
    lines = b"".join(b"RCPT TO:<user%d@example.jp>\r\n" % i for i in range(10000))
    while time.time() < deadline:
        w = None
        replies, last = 0, None
        try:
            rw = await greet(port, src, st, "rcpt")
            if rw is None:
                continue
            r, w = rw
            w.write(b"EHLO dict.test\r\nMAIL FROM:<dict@dict.test>\r\n")
            await read_reply(r)
            await read_reply(r)
            w.write(lines)            # not drained: the server stops reading
            while True:
                code, _ = await read_reply(r)
                if code is None:
                    break
                replies += 1
                last = code
            st.inc("rcpt_closed_by_server")
        except (OSError, ConnectionError) as e:
            st.inc("rcpt_reset_by_server_" + type(e).__name__)
        except asyncio.TimeoutError:
            st.inc("rcpt_timeout")
        finally:
            if w is not None:
                close_writer(w)
        st.inc("rcpt_sessions")
        st.inc("rcpt_replies", replies)
        if last == 421:
            st.inc("rcpt_last_reply_421")
        await asyncio.sleep(0.2)


async def huge_header(port, src, deadline, st):
    chunk = b"X" * (1 << 20)
    while time.time() < deadline:
        try:
            rw = await greet(port, src, st, "huge")
            if rw is None:
                continue
            r, w = rw
            for line in (b"EHLO big.test\r\n", b"MAIL FROM:<big@big.test>\r\n",
                         b"RCPT TO:<victim@example.jp>\r\n", b"DATA\r\n"):
                w.write(line)
                code, _ = await read_reply(r)
            if code != 354:
                st.inc("huge_not_354")
                close_writer(w)
                await asyncio.sleep(1)
                continue
            w.write(b"Subject: ")
            for _ in range(12):                      # one 12 MiB header line
                w.write(chunk)
                await w.drain()
            w.write(b"\r\n\r\nbody\r\n.\r\n")
            code, _ = await read_reply(r, 60)
            st.inc("huge_header_%s" % code)
            w.write(b"QUIT\r\n")
            close_writer(w)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            st.inc("huge_errors_" + type(e).__name__)
        await asyncio.sleep(0.2)


async def garbage(port, src, deadline, st, rnd):
    alphabet = bytes(range(256)) + b"\r\n\x00" * 8
    while time.time() < deadline:
        try:
            # 1. garbage as commands, until the error limit's 421
            rw = await greet(port, src, st, "garbage")
            if rw is None:
                continue
            r, w = rw
            w.write(bytes(rnd.choice(alphabet) for _ in range(8192)))
            codes = []
            while True:
                code, _ = await read_reply(r)
                if code is None:
                    break
                codes.append(code)
            st.inc("garbage_cmd_sessions")
            if codes and codes[-1] == 421:
                st.inc("garbage_cmd_cut_off_421")
            close_writer(w)
            # 2. a message full of NUL and 8-bit octets (accepted and queued)
            rw = await greet(port, src, st, "garbage")
            if rw is None:
                continue
            r, w = rw
            body = bytes(rnd.choice(alphabet) for _ in range(4096))
            body = body.replace(b"\r\n.\r\n", b"\r\n,\r\n")
            w.write(b"EHLO bin.test\r\nMAIL FROM:<bin@bin.test> BODY=8BITMIME\r\n"
                    b"RCPT TO:<victim@example.jp>\r\nDATA\r\n")
            for _ in range(4):
                code, _ = await read_reply(r)
            if code == 354:
                w.write(b"X-Bin: \x00\xff\x1b[31m\x80\r\nSubject: \xe9\x00\r\n" + body +
                        b"\r\n.\r\nQUIT\r\n")
                code, _ = await read_reply(r)
                st.inc("garbage_msg_%s" % code)
            close_writer(w)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            st.inc("garbage_errors_" + type(e).__name__)
        await asyncio.sleep(0.5)


TLS_KINDS = ["truncated-then-silence", "record-version-2.0", "tls1.0-only", "plaintext",
             "garbage-key-exchange", "close-mid-handshake", "record-length-65535"]


async def broken_tls_one(port, src, kind, hello, st):
    rw = await greet(port, src, st, "tls")
    if rw is None:
        return
    r, w = rw
    try:
        w.write(b"EHLO tls.test\r\n")
        await read_reply(r)
        w.write(b"STARTTLS\r\n")
        code, _ = await read_reply(r)
        if code != 220:
            st.inc("tls_no_220")
            return
        if kind == "truncated-then-silence":
            w.write(hello[:40])
        elif kind == "record-version-2.0":
            w.write(hello[:1] + b"\x02\x00" + hello[3:])
        elif kind == "tls1.0-only":
            w.write(hello[:9] + b"\x03\x01" + hello[11:])
        elif kind == "plaintext":
            w.write(b"EHLO again\r\nMAIL FROM:<x@evil.test>\r\n")
        elif kind == "record-length-65535":
            w.write(b"\x16\x03\x01\xff\xff" + b"\x01" * 2000)
        else:
            w.write(hello)
            await asyncio.wait_for(r.read(65536), 10)       # the server's flight
            if kind == "close-mid-handshake":
                st.inc("tls_" + kind)
                return
            w.write(b"\x16\x03\x03\x00\x10" + b"G" * 16)
        t0 = time.time()
        while await asyncio.wait_for(r.read(65536), SMTP_TIMEOUT_S + 10):
            pass
        st.inc("tls_" + kind)
        key = "tls_%s_max_close_s" % kind
        st[key] = round(max(st.get(key, 0.0), time.time() - t0), 2)
    finally:
        close_writer(w)


async def broken_tls(port, src, kind, deadline, st):
    """One kind of broken handshake, again and again."""
    hello = client_hello()
    while time.time() < deadline:
        try:
            await broken_tls_one(port, src, kind, hello, st)
        except (OSError, ConnectionError) as e:
            # The server closed while we still wrote: it refused the handshake.
            st.inc("tls_%s_reset_by_server_%s" % (kind, type(e).__name__))
        except asyncio.TimeoutError:
            st.inc("tls_%s_timeout" % kind)
        await asyncio.sleep(0.5)


async def renegotiation(port, deadline, st, children):
    while time.time() < deadline:
        await asyncio.sleep(0.3)
        p = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-starttls", "smtp", "-tls1_2", "-crlf", "-msg",
            "-connect", "%s:%d" % (HOST, port), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        children.add(p.pid)
        out = b""
        try:
            async def until(text, limit, count=1):
                nonlocal out
                end = time.time() + limit
                while out.count(text) < count and time.time() < end:
                    try:
                        chunk = await asyncio.wait_for(p.stdout.read(65536), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if not chunk:
                        break
                    out += chunk
                return out.count(text) >= count
            if await until(b"Verify return code", 10):
                try:
                    p.stdin.write(b"EHLO reneg.test\n")
                    await p.stdin.drain()
                    # The first one ends the EHLO reply s_client got before
                    # STARTTLS; the second is the reply to ours, over TLS.
                    await until(b"250 SMTPUTF8", 5, count=2)
                    await asyncio.sleep(0.2)
                    p.stdin.write(b"R\n")
                    await p.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass        # s_client already gave up (after the alert)
                await until(b"no renegotiation", 5)
            if b"Verify return code" not in out:
                # No TLS session to renegotiate: refused at connect (the
                # global flood shares 127.0.0.1's count) or similar.
                st.inc("reneg_no_tls_session" + ("_421_at_connect" if b"421 " in out else ""))
                continue
            if b"RENEGOTIATING" not in out:
                st.inc("reneg_R_not_taken_by_s_client")
                continue
            st.inc("reneg_attempts")
            tail = out.split(b"RENEGOTIATING", 1)[-1]
            if b"warning no_renegotiation" in tail:
                st.inc("reneg_refused_no_renegotiation_alert")
            if b"ServerHello" in tail:
                st.inc("reneg_server_hello_seen")
        except (OSError, ConnectionError) as e:
            st.inc("reneg_errors_" + type(e).__name__)
        finally:
            if p.returncode is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
            await p.wait()
            children.discard(p.pid)


async def attack_main(port, seconds, nslow, out_file):
    st = Stats()
    deadline = time.time() + seconds
    rnd = random.Random(1)
    children = set()

    def ip(net, host):
        return "127.0.%d.%d" % (net, host)

    per_ip = 10
    tasks = []
    for i in range(nslow):
        mode = "cmd" if i % 2 == 0 else "data"
        tasks.append(slowloris(port, ip(1 + (i // per_ip) // 250, 1 + (i // per_ip) % 250),
                               mode, deadline, st))
    tasks.append(flood(port, [ip(2, 1)], 100, 1.0, 3.0, deadline, st, "flood_per_ip"))
    global_srcs = [ip(3, h) for h in range(1, 251)]
    tasks.append(flood(port, global_srcs, MAX_CONNECTIONS, 1.0, 5.0, deadline, st,
                       "flood_global"))
    tasks.append(rcpt_storm(port, ip(4, 1), deadline, st))
    tasks.append(rcpt_storm(port, ip(4, 2), deadline, st))
    tasks.append(huge_header(port, ip(5, 1), deadline, st))
    tasks.append(garbage(port, ip(6, 1), deadline, st, rnd))
    for h, kind in enumerate(TLS_KINDS):
        tasks.append(broken_tls(port, ip(7, h + 1), kind, deadline, st))
    tasks.append(renegotiation(port, deadline, st, children))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    main = asyncio.gather(*tasks, return_exceptions=True)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([main, stopper], timeout=seconds + 3,
                       return_when=asyncio.FIRST_COMPLETED)
    main.cancel()
    stopper.cancel()
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        res = await asyncio.wait_for(asyncio.shield(main), 2)
    except (asyncio.CancelledError, asyncio.TimeoutError):
        res = []
    st["task_exceptions"] = [repr(x)[:200] for x in res if isinstance(x, BaseException)
                             and not isinstance(x, asyncio.CancelledError)]
    with open(out_file, "w") as f:
        json.dump(st, f, indent=1, sort_keys=True)


def attacker_entry(args):
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    asyncio.run(attack_main(args.port, args.seconds, args.slowloris, args.out))


# ---------------------------------------------------------------- the run

class Sampler:
    """mx2d's RSS every 0.5 s (from the main thread, between sessions)."""

    def __init__(self, pid):
        self.pid = pid
        self.max_rss = 0
        self.last = 0.0

    def poll(self):
        if time.time() - self.last >= 0.5:
            self.last = time.time()
            v = proc_status_kb(self.pid, "VmRSS")
            if v:
                self.max_rss = max(self.max_rss, v)


def fmt(v):
    return "-" if v is None else ("%.1f" % v if isinstance(v, float) else str(v))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="/work/main/build/bin",
                    help="directory with mx2d and mx2map (default /work/main/build/bin)")
    ap.add_argument("--seconds", type=float, default=55,
                    help="baseline + ramp-up + attack time (default 55; start and "
                    "stop add about 5 s)")
    ap.add_argument("--slowloris", type=int, default=240,
                    help="slowloris connections (default 240: half command, half DATA)")
    ap.add_argument("--pace-ms", type=float, default=25,
                    help="pause between good-client sessions (default 25 ms; every "
                    "message stays queued, and the queue costs memory)")
    ap.add_argument("--json", default=None, help="output JSON (default "
                    "tests/bench/results/attack-<date>.json)")
    ap.add_argument("--tmpdir", default=None, help="where the spool goes (default $TMPDIR)")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "attacker":
        attacker_entry(args)
        return 0

    bindir = os.path.abspath(args.bin)
    for prog in ("mx2d", "mx2map"):
        if not os.access(os.path.join(bindir, prog), os.X_OK):
            print("attack.py: %s/%s not found (build first, or pass --bin DIR)" % (bindir, prog),
                  file=sys.stderr)
            return 2
    baseline_s = max(3.0, min(10.0, args.seconds / 6.0))
    ramp_s = 3.0
    attack_s = max(5.0, args.seconds - baseline_s - ramp_s)
    when = datetime.datetime.now()
    out_json = args.json or os.path.join(HERE, "results",
                                         "attack-%s.json" % when.strftime("%Y%m%d-%H%M%S"))
    work = tempfile.mkdtemp(prefix="mx2-attack-", dir=args.tmpdir)
    d = Daemon(bindir, work)
    attacker = None
    rc = 1
    result = {"date": when.isoformat(timespec="seconds"), "bin": bindir,
              "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                          "python": platform.python_version()},
              "limits": {"max_connections": MAX_CONNECTIONS, "max_connections_per_ip": MAX_PER_IP,
                         "smtp_timeout_s": SMTP_TIMEOUT_S, "max_message_size": MAX_MESSAGE},
              "slowloris_connections": args.slowloris, "pace_ms": args.pace_ms,
              "baseline_s": baseline_s, "attack_s": attack_s, "ramp_s": ramp_s}
    try:
        d.prepare()
        d.start()
        sampler = Sampler(d.pid)
        result["mx2d_rss_kb_start"] = proc_status_kb(d.pid, "VmRSS")
        print("mx2d pid %d on %s:%d (primary down: %d), spool in %s" % (
            d.pid, HOST, d.port, d.dead_port, work), flush=True)

        # 1. baseline
        cpu0 = proc_cpu_s(d.pid)
        t0 = time.time()
        base = measure(d, baseline_s, args.pace_ms / 1000.0)
        base["wall_s"] = time.time() - t0
        base["mx2d_cpu_s"] = proc_cpu_s(d.pid) - cpu0
        base["rss_kb_after"] = proc_status_kb(d.pid, "VmRSS")
        base["hwm_kb_after"] = proc_status_kb(d.pid, "VmHWM")
        print("baseline: %d messages in %.1f s" % (base["accepted"], base["wall_s"]), flush=True)

        # 2. under attack
        stats_file = os.path.join(work, "attacker.json")
        attacker = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role",
                                     "attacker", "--port", str(d.port), "--seconds",
                                     str(attack_s + ramp_s), "--slowloris", str(args.slowloris),
                                     "--out", stats_file],
                                    stdout=subprocess.DEVNULL, stderr=open(
                                        os.path.join(work, "attacker.err"), "wb"))
        time.sleep(ramp_s)
        cpu1 = proc_cpu_s(d.pid)
        t1 = time.time()
        end = t1 + attack_s
        att = {"eod_ms": [], "session_ms": [], "messages": 0, "accepted": 0,
               "failed_messages": 0, "failed_detail": [], "failed_sessions": 0,
               "failed_session_reasons": {}}
        while time.time() < end and d.alive():
            part = measure(d, min(1.0, end - time.time()), args.pace_ms / 1000.0)
            for k in ("eod_ms", "session_ms", "failed_detail"):
                att[k] += part[k]
            for k in ("messages", "accepted", "failed_messages", "failed_sessions"):
                att[k] += part[k]
            for k, v in part["failed_session_reasons"].items():
                att["failed_session_reasons"][k] = att["failed_session_reasons"].get(k, 0) + v
            sampler.poll()
        att["wall_s"] = time.time() - t1
        att["mx2d_cpu_s"] = (proc_cpu_s(d.pid) or cpu1) - cpu1
        att["eod_to_250"] = summarize(att["eod_ms"])
        att["session"] = summarize(att["session_ms"])
        att["rss_kb_max_sampled"] = sampler.max_rss
        print("attack: %d messages in %.1f s" % (att["accepted"], att["wall_s"]), flush=True)
        try:
            attacker.wait(15)
        except subprocess.TimeoutExpired:
            attacker.send_signal(signal.SIGTERM)
            try:
                attacker.wait(5)
            except subprocess.TimeoutExpired:
                attacker.kill()
                attacker.wait()
        try:
            with open(stats_file) as f:
                astats = json.load(f)
        except (OSError, ValueError):
            astats = {"error": "the attacker wrote no statistics"}
        for k in [k for k in astats if k.endswith("_held_s")]:
            n = astats.get(k.replace("_held_s", "_cut_off"), 0)
            astats[k.replace("_held_s", "_mean_held_s")] = round(astats[k] / n, 2) if n else None
        # 3. after: one more good session, memory now
        time.sleep(1.0)
        after_ok = True
        try:
            good_session(d.port)
        except (OSError, smtplib.SMTPException) as e:
            after_ok = classify(e)
        result.update({
            "baseline": {k: v for k, v in base.items() if not k.endswith("_ms")},
            "attack": {k: v for k, v in att.items() if not k.endswith("_ms")},
            "attackers": astats,
            "mx2d": {"alive_after_attack": d.alive(), "good_session_after": after_ok,
                     "vmhwm_kb": proc_status_kb(d.pid, "VmHWM"),
                     "vmrss_kb_now": proc_status_kb(d.pid, "VmRSS")},
            "raw": {"baseline_eod_ms": base["eod_ms"], "attack_eod_ms": att["eod_ms"],
                    "baseline_session_ms": base["session_ms"],
                    "attack_session_ms": att["session_ms"]},
        })
        status = d.stop()
        result["mx2d"]["exit_status"] = status
        rc = 0 if status == 0 and result["mx2d"]["alive_after_attack"] else 1
        report(result)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
            attacker.wait()
        if d.alive():
            d.stop()
        log_tail = d.tail(3000)
        shutil.rmtree(work, ignore_errors=True)
    result["mx2d_log_tail"] = log_tail
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
    print("JSON: %s" % out_json)
    return rc


def report(r):
    b, a = r["baseline"], r["attack"]
    print()
    print("%-34s %12s %12s" % ("good client (2 KiB, sequential)", "baseline", "attack"))
    print("%-34s %12.1f %12.1f" % ("measured for (s)", b["wall_s"], a["wall_s"]))
    print("%-34s %12d %12d" % ("messages accepted", b["accepted"], a["accepted"]))
    for title, key in (("end-of-data -> 250 (ms)", "eod_to_250"), ("whole session (ms)", "session")):
        for stat in ("median_ms", "p90_ms", "p99_ms", "max_ms"):
            print("%-34s %12s %12s" % ("%s %s" % (title, stat.replace("_ms", "")),
                                       fmt(b[key].get(stat)), fmt(a[key].get(stat))))
    print("%-34s %12d %12d" % ("messages failed (never accepted)", b["failed_messages"],
                               a["failed_messages"]))
    print("%-34s %12d %12d" % ("sessions failed (then retried)", b["failed_sessions"],
                               a["failed_sessions"]))
    for k, v in sorted(a["failed_session_reasons"].items()):
        print("    %-60s %d" % (k, v))
    print("%-34s %12.1f %12.1f" % ("mx2d CPU seconds", b["mx2d_cpu_s"], a["mx2d_cpu_s"]))
    m = r["mx2d"]
    print("%-34s %12s" % ("mx2d peak RSS, VmHWM (KiB)", fmt(m["vmhwm_kb"])))
    print("%-34s %12s" % ("mx2d RSS now, VmRSS (KiB)", fmt(m["vmrss_kb_now"])))
    print("%-34s %12s" % ("mx2d alive / session after", "%s / %s" % (
        m["alive_after_attack"], m["good_session_after"])))
    print("%-34s %12s" % ("mx2d exit status on SIGTERM", fmt(m.get("exit_status"))))
    print()
    print("attackers:")
    for k, v in sorted(r["attackers"].items()):
        if k.endswith("_held_s"):
            continue
        print("    %-50s %s" % (k, round(v, 2) if isinstance(v, float) else v))


if __name__ == "__main__":
    sys.exit(main())
