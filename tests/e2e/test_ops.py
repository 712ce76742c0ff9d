"""End-to-end tests of the operations side (issue 5 "Tests"): every mx2ctl
command with the daemon running and stopped, the control socket under
hostile input, ETRN allowed and refused, /healthz and /metrics, SIGHUP under
open sessions, SIGTERM during DATA, and the privilege drop.

Each test runs the real mx2d on loopback with its own spool; a sink.Sink
plays the primary where delivery matters. A primary that must stay "down"
is a Sink created but not started (its port refuses connections), with
retry_min/probe_interval long enough that nothing is retried unless the
test asks for it.
"""
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from harness import Mx2d, Raw, binpath, build_map, free_port
from sink import Sink

SENDER = "sender@sender.test"
ALICE = "alice@example.jp"
BOB = "bob@example.jp"
QID = r"[0-9A-V]{13}"
NOT_RUNNING = "mx2d is not running (cannot connect to "
# Nothing is retried by itself during a test: only the operator acts.
QUIET = dict(retry_min="1h", retry_max="2h", probe_interval="1h", connect_timeout="2s")


class Env:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.sinks = []
        self.daemons = []

    def sink(self, start=True, **kw):
        s = Sink(port=free_port(), lifetime=150, **kw)
        self.sinks.append(s)
        if start:
            s.start()
        return s

    def mx2(self, primary, start=True, tmp=None, **kw):
        if tmp is not None:
            os.makedirs(str(tmp), exist_ok=True)
        cfg = dict(QUIET)
        cfg["primary"] = ["[127.0.0.1]:%d" % primary.port]
        cfg.update(kw)
        d = Mx2d(tmp or self.tmp, **cfg)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def close(self):
        for d in self.daemons:
            try:
                d.close()
            except Exception:
                pass
        for s in self.sinks:
            s.close()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def send(d, rcpts=(ALICE,), body="Subject: test\r\n\r\nhello\r\n", sender=SENDER):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail(sender, list(rcpts), body)


def queue(d):
    r = d.ctl("queue", "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.splitlines()]


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


TRY_LATER = "450 4.2.0 try later"
OK = "250 2.1.5 Ok"


def deferred_by_live_primary(env, **kw):
    """A primary that is up but answers 450 to every RCPT (until the test
    sets rcpt_default = OK): mail is deferred with the primary known up, so
    what the operator triggers next is a real delivery attempt."""
    prim = env.sink(rcpt_default=TRY_LATER)
    d = env.mx2(prim, **kw)
    return prim, d


def ctl_raw(path, data, shut=True, timeout=10):
    """Send raw bytes to the control socket; return everything read until
    the server closes (or times out)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out.decode("latin-1")


def http(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def metric(text, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, "no %s in\n%s" % (name, text)
    return int(m.group(1))


def http_raw(port, data, timeout=15):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out.decode("latin-1")


# ---- mx2ctl with the daemon stopped ----

def test_daemon_commands_exit_1_when_stopped(env):
    d = env.mx2(env.sink(start=False), start=False)
    sock = d.settings["control_socket"]
    for args in (["flush"], ["flush", "--wait"], ["delete", "0000000000000"], ["delete", "--all"],
                 ["hold", "0000000000000"], ["release", "0000000000000"], ["stats"],
                 ["stats", "--json"]):
        r = d.ctl(*args)
        assert r.returncode == 1, (args, r)
        assert r.stderr == "mx2ctl: %s%s)\n" % (NOT_RUNNING, sock), (args, r.stderr)
        assert r.stdout == ""


def test_stale_socket_is_replaced_and_removed_at_stop(env):
    d = env.mx2(env.sink(start=False), start=False)
    sock = d.settings["control_socket"]
    # A socket left by a kill -9: nobody listens on it.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock)
    s.close()
    d.start()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert d.ctl("stats").returncode == 0
    # A second daemon on the same socket refuses to steal it.
    os.makedirs(str(env.tmp / "second"))
    d2 = Mx2d(env.tmp / "second", **dict(QUIET, control_socket=sock,
                                        primary=d.settings["primary"]))
    env.daemons.append(d2)
    with pytest.raises(RuntimeError):
        d2.start()
    assert "another mx2d answers there" in d2.read_log()
    assert d.ctl("stats").returncode == 0
    assert d.stop() == 0
    assert not os.path.exists(sock)


def test_queue_show_export_work_stopped(env, tmp_path):
    d = env.mx2(env.sink(start=False))
    send(d, body="Subject: one\r\n\r\nFrom the start\r\n>From quoted\r\n..dot\r\n")
    send(d, rcpts=(BOB,), body="Subject: two\r\n\r\nbody two\r\n")
    ids = [m["id"] for m in queue(d)]
    assert len(ids) == 2
    assert d.stop() == 0

    assert len(queue(d)) == 2
    r = d.ctl("mailq")
    assert r.returncode == 0 and "-- 1 Kbytes in 2 Requests." in r.stdout
    r = d.ctl("show", ids[0])
    assert r.returncode == 0 and "Subject: one" in r.stdout

    mbox = str(tmp_path / "out.mbox")
    r = d.ctl("export", "--mbox", mbox)
    assert r.returncode == 0, r.stderr
    assert "exported 2 messages" in r.stdout
    text = open(mbox).read()
    assert len(re.findall(r"^From %s [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}$"
                          % re.escape(SENDER), text, re.M)) == 2
    # smtplib sent "..dot" as "...dot"; unstuffed it is "..dot" again.
    assert "\n>From the start\n>>From quoted\n..dot\n" in text
    assert "Return-Path: <%s>\nX-Original-To: %s\n" % (SENDER, ALICE) in text
    assert "\r" not in text
    assert text.endswith("\n\n")

    md = str(tmp_path / "Maildir")
    r = d.ctl("export", "--maildir", md, ids[1].lower(), "0000000000000", "junk")
    assert r.returncode == 1
    assert "mx2ctl: 0000000000000: no such message" in r.stderr
    assert "mx2ctl: junk: no such message" in r.stderr
    assert "exported 1 message to Maildir" in r.stdout
    assert sorted(os.listdir(md)) == ["cur", "new", "tmp"]
    files = os.listdir(os.path.join(md, "new"))
    assert len(files) == 1 and re.match(r"^\d+\.%s\.[^/:]+$" % ids[1], files[0]), files
    assert os.listdir(os.path.join(md, "tmp")) == []
    body = open(os.path.join(md, "new", files[0])).read()
    assert "Subject: two\n" in body and "X-Original-To: %s\n" % BOB in body

    # Usage errors exit 2.
    assert d.ctl("export").returncode == 2
    assert d.ctl("export", "--mbox", mbox, "--maildir", md).returncode == 2
    assert d.ctl("export", "--mbox").returncode == 2
    assert d.ctl("export", "--bogus", "x").returncode == 2


# ---- mx2ctl with the daemon running ----

def test_flush_wait_delivers_and_counts(env):
    prim, d = deferred_by_live_primary(env)
    send(d)
    send(d, rcpts=(ALICE, BOB))
    assert wait_for(lambda: len(queue(d)) == 2 and
                    all(m["state"] == "deferred" for m in queue(d)))
    # One round: three recipient attempts, all 450.
    r = d.ctl("flush", "--wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "delivered 0, deferred 3, bounced 0\n"
    assert prim.messages == []
    prim.rcpt_default = OK
    r = d.ctl("flush", "--wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "delivered 3, deferred 0, bounced 0\n"
    assert len(prim.messages) == 2
    assert wait_for(lambda: queue(d) == [])
    # Nothing queued: the round ends at once.
    r = d.ctl("flush", "--wait")
    assert r.stdout == "delivered 0, deferred 0, bounced 0\n"
    assert d.ctl("flush", "--bogus").returncode == 2


def test_flush_wait_with_primary_down(env):
    d = env.mx2(env.sink(start=False))
    send(d)
    send(d, rcpts=(ALICE, BOB))
    assert wait_for(lambda: len(queue(d)) == 2)
    r = d.ctl("flush", "--wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "delivered 0, deferred 3, bounced 0\n"
    assert len(queue(d)) == 2


def test_flush_without_wait(env):
    prim, d = deferred_by_live_primary(env)
    send(d)
    assert wait_for(lambda: queue(d) and queue(d)[0]["state"] == "deferred")
    time.sleep(0.3)
    assert prim.messages == []
    prim.rcpt_default = OK
    r = d.ctl("flush")
    assert r.returncode == 0 and r.stdout == "flush started\n"
    assert prim.wait_for(lambda: len(prim.messages) == 1, 10)
    assert wait_for(lambda: queue(d) == [])


def test_hold_release_delete(env):
    d = env.mx2(env.sink(start=False))
    for _ in range(4):
        send(d)
    ids = [m["id"] for m in queue(d)]
    assert len(ids) == 4
    a, b, c, e = ids

    r = d.ctl("hold", a, "0000000000000", b.lower())
    assert r.returncode == 1
    assert r.stdout == "%s: held\n%s: held\n" % (a, b)
    assert r.stderr == "mx2ctl: 0000000000000: no such message\n"
    states = {m["id"]: m["state"] for m in queue(d)}
    assert states[a] == "hold" and states[b] == "hold" and states[c] != "hold"
    # Held mail is not delivered by a flush.
    r = d.ctl("flush", "--wait")
    assert r.stdout == "delivered 0, deferred 2, bounced 0\n"

    r = d.ctl("release", a)
    assert r.returncode == 0 and r.stdout == "%s: released\n" % a
    assert {m["id"]: m["state"] for m in queue(d)}[a] != "hold"

    r = d.ctl("delete", c, "not-an-id")
    assert r.returncode == 1
    assert r.stdout == "%s: deleted\n" % c
    assert "mx2ctl: not-an-id: no such message" in r.stderr
    assert c not in [m["id"] for m in queue(d)]
    r = d.ctl("delete", c)
    assert r.returncode == 1 and "mx2ctl: %s: no such message" % c in r.stderr

    r = d.ctl("delete", "--all")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()[:-1]) == sorted("%s: deleted" % i for i in (a, b, e))
    assert r.stdout.splitlines()[-1] == "deleted 3 messages"
    assert queue(d) == []
    assert "Mail queue is empty" in d.ctl("queue").stdout
    r = d.ctl("delete", "--all")
    assert r.returncode == 0 and r.stdout == "deleted 0 messages\n"

    # Usage errors.
    for args in (["delete"], ["hold"], ["release"], ["delete", "--all", a], ["hold", "--all"]):
        assert d.ctl(*args).returncode == 2, args
    # Deletions are durable: a restart does not bring anything back.
    assert d.stop() == 0
    assert queue(d) == []


def test_stats_and_metrics_move_with_mail(env):
    prim = env.sink()
    hport = free_port()
    d = env.mx2(prim, http_listen="127.0.0.1:%d" % hport, retry_min="1s", probe_interval="1s")
    st, text, hdrs = http(hport, "/metrics")
    assert st == 200
    assert hdrs["Content-Type"].startswith("text/plain; version=0.0.4")
    assert metric(text, "mx2_accepted_total") == 0
    assert "# TYPE mx2_accepted_total counter" in text
    assert "# TYPE mx2_queue_messages gauge" in text

    send(d, rcpts=(ALICE, BOB))
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo()
        s.mail(SENDER)
        assert s.rcpt("x@other.test")[0] == 554
        assert s.rcpt("nobody-here@example.jp")[0] == 550
        # This connection is open while we look.
        _, text, _ = http(hport, "/metrics")
        assert metric(text, "mx2_connections_open") >= 1
    assert prim.wait_for(lambda: len(prim.messages) == 1, 10)

    def delivered():
        _, t, _ = http(hport, "/metrics")
        return t if metric(t, "mx2_delivered_total") == 2 and \
            metric(t, "mx2_queue_messages") == 0 else None
    text = wait_for(delivered)
    assert text, "delivered never reached 2"
    assert metric(text, "mx2_accepted_total") == 1
    assert metric(text, 'mx2_rejected_total{reason="relay"}') == 1
    assert metric(text, 'mx2_rejected_total{reason="unknown_user"}') == 1
    assert metric(text, 'mx2_rejected_total{reason="map_unavailable"}') == 0
    assert metric(text, "mx2_bounced_total") == 0
    assert metric(text, "mx2_queue_messages") == 0
    assert metric(text, "mx2_queue_bytes") == 0
    assert metric(text, "mx2_primary_up") == 1

    r = d.ctl("stats", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["accepted"] == 1 and st["delivered"] == 2
    assert st["rejected_relay"] == 1 and st["rejected_unknown_user"] == 1
    assert st["queue_messages"] == 0 and st["primary_up"] == 1
    for key in ("deferred", "bounced", "expired", "queue_bytes", "queue_oldest_age_seconds",
                "connections_open"):
        assert key in st
    r = d.ctl("stats")
    assert r.returncode == 0
    assert re.search(r"^accepted\s+1$", r.stdout, re.M)
    assert re.search(r"^primary_up\s+1$", r.stdout, re.M)
    assert d.ctl("stats", "--xml").returncode == 2

    # Primary goes away: deferrals, queue figures and primary_up follow.
    prim.stop()
    send(d)
    def queued():
        _, t, _ = http(hport, "/metrics")
        return t if metric(t, "mx2_primary_up") == 0 and metric(t, "mx2_deferred_total") >= 1 \
            else None
    text = wait_for(queued)
    assert text
    assert metric(text, "mx2_queue_messages") == 1
    assert metric(text, "mx2_queue_bytes") > 0
    time.sleep(1.1)
    _, text, _ = http(hport, "/metrics")
    assert metric(text, "mx2_queue_oldest_age_seconds") >= 1


# ---- control socket under hostile input ----

def test_control_socket_malformed_requests(env):
    d = env.mx2(env.sink(start=False))
    sock = d.settings["control_socket"]
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660

    out = ctl_raw(sock, b"PING\n")
    assert out == "OK pong\n.\n"
    out = ctl_raw(sock, b"\x00\xff garbage\nPING\r\n")
    assert out.startswith("ERR 400 ") and out.endswith("OK pong\n.\n"), out
    out = ctl_raw(sock, b"ETRN example.jp\nFROB\n\nDELETE ../../etc/passwd\nDELETE\n"
                        b"FLUSH NOW\nDELETE ALL 0000000000000\nPING\n")
    lines = out.splitlines()
    assert [l.split()[:2] for l in lines if l.startswith("ERR")] == [["ERR", "400"]] * 7, out
    assert lines[-2:] == ["OK pong", "."]
    # An overlong line: one 413, the rest of it skipped, the next request served.
    out = ctl_raw(sock, b"DELETE " + b"A" * 20000 + b"\nPING\n")
    assert out.startswith("ERR 413 ") and out.endswith("OK pong\n.\n"), out[:200]
    assert out.count("ERR") == 1
    # Unknown and bad IDs are answered per ID.
    out = ctl_raw(sock, b"delete 0000000000000 0000000000001\n")
    assert out == ("ERR 404 0000000000000 no such message\n"
                   "ERR 404 0000000000001 no such message\n.\n")
    # A silent client is left alone until the idle timeout, without blocking
    # anyone else meanwhile.
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(sock)
    assert ctl_raw(sock, b"STATS\n").endswith("OK\n.\n")
    idle.close()
    # The daemon still works for mx2ctl and for mail.
    assert d.ctl("stats").returncode == 0
    send(d)
    assert len(queue(d)) == 1
    assert d.proc.poll() is None


def test_control_socket_id_budget(env):
    d = env.mx2(env.sink(start=False))
    sock = d.settings["control_socket"]
    ids = " ".join("%013d" % i for i in range(256)).encode()
    req = b"HOLD " + ids + b"\n"
    # 39 x 256 = 9984 IDs fit in one connection's budget of 10000; the 40th
    # line does not.
    out = ctl_raw(sock, req * 40 + b"PING\n", timeout=120)
    assert out.count("ERR 404 ") == 39 * 256
    assert out.count("ERR 429 ") == 1
    assert out.endswith("OK pong\n.\n")
    assert d.ctl("stats").returncode == 0


def test_permission_denied_on_socket(env):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("this test needs root and setpriv (util-linux)")
    # A directory and config the unprivileged user can read.
    pub = tempfile.mkdtemp(prefix="mx2-perm-", dir="/tmp")
    try:
        os.chmod(pub, 0o755)
        d = env.mx2(env.sink(start=False), tmp=pub)
        os.chmod(d.conf, 0o644)
        nobody = pwd.getpwnam("nobody")
        r = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                            "--clear-groups", binpath("mx2ctl"), "-c", d.conf, "stats"],
                           capture_output=True, text=True)
        assert r.returncode == 1, r
        assert r.stderr == "mx2ctl: %s: permission denied\n" % d.settings["control_socket"]
    finally:
        for dd in env.daemons:
            dd.close()
        shutil.rmtree(pub, ignore_errors=True)


# ---- ETRN ----

def test_etrn_allowed(env):
    prim, d = deferred_by_live_primary(env, etrn_clients=["127.0.0.1"],
                                       relay_domains=["example.jp", "example.net"])
    send(d)
    assert wait_for(lambda: queue(d) and queue(d)[0]["state"] == "deferred")
    time.sleep(0.3)
    assert prim.messages == [] and len(queue(d)) == 1
    prim.rcpt_default = OK
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        assert s.docmd("ETRN", "example.jp")[0] == 503  # before EHLO
        code, msg = s.ehlo()
        assert "ETRN" in msg.decode()
        code, msg = s.docmd("ETRN", "example.jp")
        assert (code, msg) == (250, b"2.0.0 Queuing for node example.jp started")
        assert prim.wait_for(lambda: len(prim.messages) == 1, 10)
        # Nothing waiting (other relay domain, or all delivered): 251.
        assert s.docmd("ETRN", "@example.net")[0] == 251
        assert s.docmd("ETRN", "EXAMPLE.NET.")[0] == 251
        code, msg = s.docmd("ETRN", "other.test")
        assert code == 459 and msg.startswith(b"4.7.1 <other.test>")
        assert s.docmd("ETRN", "#queue")[0] == 458
        assert s.docmd("ETRN")[0] == 501
        assert s.docmd("ETRN", "exa mple.jp")[0] == 501
        assert s.docmd("ETRN", "[127.0.0.1]")[0] == 501
        s.mail(SENDER)
        assert s.docmd("ETRN", "example.jp")[0] == 503  # inside a transaction
    assert wait_for(lambda: queue(d) == [])


def test_etrn_refused(env):
    prim, d = deferred_by_live_primary(env, etrn_clients=["192.0.2.1", "::1"])
    send(d)
    assert wait_for(lambda: queue(d) and queue(d)[0]["state"] == "deferred")
    prim.rcpt_default = OK
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.ehlo()
        code, msg = s.docmd("ETRN", "example.jp")
        assert code == 459 and msg == b"4.7.1 <example.jp>: client not authorized", msg
    time.sleep(1)
    assert prim.messages == []
    assert len(queue(d)) == 1
    assert "client not in etrn_clients" in d.read_log()
    d.close()

    # Without etrn_clients ETRN is not offered at all.
    d2 = env.mx2(prim, tmp=env.tmp / "noetrn")
    with smtplib.SMTP("127.0.0.1", d2.port, timeout=10) as s:
        code, msg = s.ehlo()
        assert "ETRN" not in msg.decode()
        assert s.docmd("ETRN", "example.jp")[0] == 502


# ---- HTTP ----

def test_healthz_good(env):
    hport = free_port()
    d = env.mx2(env.sink(start=False), http_listen="127.0.0.1:%d" % hport)
    log_before = d.read_log()
    st, body, hdrs = http(hport, "/healthz")
    assert (st, body) == (200, "ok")  # SPEC: `ok`, exactly
    assert hdrs["Connection"] == "close"
    assert http(hport, "/healthz?probe=lb")[0] == 200
    assert http(hport, "/nope")[0] == 404
    st, _, hdrs = http(hport, "/healthz", method="POST")
    assert st == 405 and hdrs["Allow"] == "GET"
    assert http(hport, "/metrics", method="DELETE")[0] == 405
    # Health checks never touch the mail log.
    assert d.read_log() == log_before


def test_healthz_bad_when_spool_is_short_of_space(env, monkeypatch):
    # A 4 MiB spool map (root ignores file modes, so space is the lever):
    # below 2 x max_message_size of free room, /healthz must say 503.
    monkeypatch.setenv("MX2_SPOOL_MAPSIZE", str(4 << 20))
    hport = free_port()
    d = env.mx2(env.sink(start=False), http_listen="127.0.0.1:%d" % hport,
                max_message_size=10 << 20)

    def bad():
        st, body, _ = http(hport, "/healthz")
        return (st, body) if st == 503 else None
    res = wait_for(bad, 15)
    assert res, "healthz stayed 200 with a 4 MiB spool"
    assert "spool low on space" in res[1]
    _, text, _ = http(hport, "/metrics")
    assert metric(text, "mx2_spool_free_bytes") < 20 << 20


def test_healthz_503_while_stopping(env):
    hport = free_port()
    d = env.mx2(env.sink(start=False), http_listen="127.0.0.1:%d" % hport)
    assert http(hport, "/healthz")[0] == 200
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", hport), timeout=2).close()


def test_http_malformed_requests(env):
    hport = free_port()
    d = env.mx2(env.sink(start=False), http_listen="127.0.0.1:%d" % hport)
    cases = [
        (b"\x00\x01\x02garbage\r\n\r\n", "400"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", "505"),
        (b"GET /healthz\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "400"),
        (b"GET /healthz HTTP/1.1\rX: y\r\n\r\n", "400"),
        (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n", "414"),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: 0123456789abcdef\r\n" * 1000 + b"\r\n", "431"),
        (b"GET /healthz HTTP/1.1\r\n" + b"a: b\r\n" * 100 + b"\r\n", "431"),
        (b"PUT /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", "405"),
    ]
    for data, status in cases:
        out = http_raw(hport, data)
        assert out.startswith("HTTP/1.1 %s " % status), (data[:60], out[:100])
        assert "\r\nConnection: close\r\n" in out
    # A second request on the same connection is not served: one per connection.
    out = http_raw(hport, b"GET /healthz HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
    assert out.count("HTTP/1.1 ") == 1 and out.endswith("\r\n\r\nok")
    # A client that never finishes its request is dropped after the timeout.
    t0 = time.time()
    out = http_raw(hport, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", timeout=20)
    assert out == "" and 8 <= time.time() - t0 < 15
    # Many idle connections do not stop the server from answering.
    idle = [socket.create_connection(("127.0.0.1", hport)) for _ in range(10)]
    assert http(hport, "/healthz")[0] == 200
    for s in idle:
        s.close()
    assert d.proc.poll() is None


# ---- signals and privileges ----

def test_sighup_reloads_map_under_open_sessions(env):
    d = env.mx2(env.sink(start=False))
    # Sessions open before the reload, one in the middle of a transaction.
    a = Raw(d.port)
    assert a.reply()[0] == 220
    assert a.cmd("EHLO a.test")[0] == 250
    assert a.cmd("MAIL FROM:<%s>" % SENDER)[0] == 250
    assert a.cmd("RCPT TO:<dave@example.jp>")[0] == 550
    assert a.cmd("RCPT TO:<%s>" % ALICE)[0] == 250
    b = Raw(d.port)
    assert b.reply()[0] == 220
    assert b.cmd("EHLO b.test")[0] == 250

    build_map(d.map, ["alice", "dave"])
    d.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "SIGHUP: recipient map" in d.read_log())
    assert "reopened" in d.read_log()

    # Both sessions survived; they see the new map.
    assert a.cmd("RCPT TO:<dave@example.jp>")[0] == 250
    assert a.cmd("RCPT TO:<%s>" % BOB)[0] == 550
    assert a.cmd("DATA")[0] == 354
    a.send("Subject: after reload\r\n\r\nhi\r\n.\r\n")
    code, text = a.reply()
    assert code == 250 and re.search(QID, text)
    assert b.cmd("MAIL FROM:<%s>" % SENDER)[0] == 250
    assert b.cmd("RCPT TO:<dave@example.jp>")[0] == 250
    a.cmd("QUIT")
    b.cmd("QUIT")
    a.close()
    b.close()
    assert d.proc.poll() is None
    q = queue(d)
    assert len(q) == 1
    assert sorted(r["address"] for r in q[0]["recipients"]) == [ALICE, "dave@example.jp"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_during_data_loses_nothing(env, sig):
    # SPEC: SIGTERM and SIGINT alike.
    d = env.mx2(env.sink(start=False))
    c = Raw(d.port)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO c.test")[0] == 250
    assert c.cmd("MAIL FROM:<%s>" % SENDER)[0] == 250
    assert c.cmd("RCPT TO:<%s>" % ALICE)[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send("Subject: in flight\r\n\r\nfirst half\r\n")
    time.sleep(0.3)
    d.proc.send_signal(sig)
    time.sleep(0.5)
    # New clients are no longer served while the old one finishes.
    assert d.proc.poll() is None
    try:
        n = Raw(d.port, timeout=3)
        code, _ = n.reply()
        assert code == 421
        n.close()
    except (OSError, EOFError):
        pass
    c.send("second half\r\n.\r\n")
    code, text = c.reply()
    assert code == 250, text
    qid = re.search(QID, text).group(0)
    c.close()
    assert d.proc.wait(timeout=20) == 0
    # Stopped: the message is on disk.
    q = queue(d)
    assert [m["id"] for m in q] == [qid]
    r = d.ctl("show", qid)
    assert "first half\nsecond half\n" in r.stdout
    # And after a restart the daemon has it too.
    d.start()
    assert [m["id"] for m in queue(d)] == [qid]
    st = json.loads(d.ctl("stats", "--json").stdout)
    assert st["queue_messages"] == 1


def test_privilege_drop_to_nobody(env):
    if os.geteuid() != 0:
        pytest.fail("the privilege-drop test needs root")
    nobody = pwd.getpwnam("nobody")
    # The spool's parent must be traversable by nobody (pytest's tmp is 0700).
    pub = tempfile.mkdtemp(prefix="mx2-priv-", dir="/tmp")
    try:
        os.chmod(pub, 0o755)
        d = env.mx2(env.sink(start=False), tmp=pub, user="nobody")
        os.chmod(d.map, 0o644)
        with open("/proc/%d/status" % d.proc.pid) as f:
            status = f.read()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups()
        gids = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups()
        assert set(int(u) for u in uids) == {nobody.pw_uid}
        assert set(int(g) for g in gids) == {nobody.pw_gid}
        assert os.stat(d.spool).st_uid == nobody.pw_uid
        sock = d.settings["control_socket"]
        st = os.stat(sock)
        assert st.st_uid == nobody.pw_uid and stat.S_IMODE(st.st_mode) == 0o660
        # Mail is accepted (the spool is writable by nobody) and operable.
        send(d)
        assert len(queue(d)) == 1
        r = d.ctl("hold", queue(d)[0]["id"])
        assert r.returncode == 0, r.stderr
        assert d.ctl("stats").returncode == 0
        assert "running as user nobody" in d.read_log()
        assert d.stop() == 0
    finally:
        for dd in env.daemons:
            dd.close()
        shutil.rmtree(pub, ignore_errors=True)


def test_flush_right_after_primary_returns_delivers(env):
    # The primary is down long enough for mx2 to mark it so and defer the
    # mail with its failure; it comes back; `flush --wait` at once must
    # deliver (the flush's probe finds it up), not re-defer with the old error.
    prim = env.sink(start=False)
    d = env.mx2(prim, retry_min="1h", retry_max="1h", probe_interval="1h")
    send(d)
    assert wait_for(lambda: len(queue(d)) == 1 and queue(d)[0]["state"] == "deferred")
    prim.start()
    r = d.ctl("flush", "--wait")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "delivered 1, deferred 0, bounced 0\n", d.read_log()
    assert wait_for(lambda: queue(d) == [])
