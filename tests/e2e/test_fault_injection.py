"""Fault injection on the storage side and in DNS (issue 7 item 2).

- An LD_PRELOAD shim (faultshim.c, compiled here at run time) makes fsync,
  fdatasync, rename and writes fail while a trigger file exists. A message
  whose commit cannot be made durable must never be answered 250; what was
  answered 250 survives a restart and kill -9 and reaches the primary byte
  for byte. mx2map must not replace a good map when it cannot make the new
  one durable.
- A real tmpfs spool that fills up: 452 4.3.1 at the end of DATA, the
  flusher's state updates failing while mail is queued, and recovery when
  space returns, with nothing lost, duplicated or corrupted.
- DNS trouble on the bounce route (no bounce_relay: the DSN goes to the
  sender domain's MX): a resolver that cannot be reached keeps the DSN
  queued and retried; it is delivered once the MX resolves. mx2d runs in its
  own mount namespace with a resolv.conf naming a loopback address, so no
  test query ever leaves the machine.
"""
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from harness import Mx2d, Raw, binpath, free_port
from sink import Sink

HERE = os.path.dirname(os.path.abspath(__file__))
ALICE = "alice@example.jp"


# ---- helpers -------------------------------------------------------------

def fast(**kw):
    base = dict(retry_min="1s", retry_max="2s", probe_interval="1s", connect_timeout="1s",
                smtp_timeout="5s")
    base.update(kw)
    return base


class Faults:
    """The shim, its trigger file and its log of injected failures."""

    def __init__(self, tmp_path):
        self.so = str(tmp_path / "faultshim.so")
        r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", self.so,
                            os.path.join(HERE, "faultshim.c"), "-ldl"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.trigger = str(tmp_path / "fault.trigger")
        self.log = str(tmp_path / "fault.log")

    def env(self):
        env = dict(os.environ)
        env["LD_PRELOAD"] = self.so
        env["MX2_FAULT_TRIGGER"] = self.trigger
        env["MX2_FAULT_LOG"] = self.log
        # An ASan binary insists on its runtime coming first in the library
        # list; the shim must come first to interpose. Harmless without ASan.
        asan = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
        return env

    def on(self, *kinds):
        tmp = self.trigger + ".new"
        with open(tmp, "w") as f:
            f.write("\n".join(kinds) + "\n")
        os.rename(tmp, self.trigger)   # the test's own rename: not preloaded

    def off(self):
        if os.path.exists(self.trigger):
            os.unlink(self.trigger)

    def hits(self, kind):
        try:
            with open(self.log) as f:
                return [l.split(" ", 1)[1].strip() for l in f if l.split(" ", 1)[0] == kind]
        except FileNotFoundError:
            return []


def start(d, env=None, prefix=()):
    """Start d like Mx2d.start, with an environment and a command prefix.
    Bodies over 48 KiB go to a temp file (MX2_BODY_POOL=0: no shared
    in-memory pool), so that "spilled" means spilled in these tests."""
    env = dict(os.environ if env is None else env)
    env.setdefault("MX2_BODY_POOL", "0")
    d.logf = open(d.log, "ab")
    d.proc = subprocess.Popen(list(prefix) + [binpath("mx2d"), "-c", d.conf], env=env,
                              stdout=d.logf, stderr=subprocess.STDOUT)
    d.wait_ready()
    return d


def make_body(tag, size):
    """A message of about `size` bytes, CRLF, with a line that needs
    dot-stuffing, unique per tag."""
    rnd = random.Random(tag)
    lines = [b"From: s@sender.test", b"To: alice@example.jp", b"Subject: " + tag.encode(),
             b"Message-ID: <%s@sender.test>" % tag.encode(), b"", b"begin " + tag.encode(),
             b".a line that starts with a dot"]
    n = 0
    while n < size:
        line = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 .,;:-") for _ in range(76))
        lines.append(line)
        n += 78
    lines.append(b"end " + tag.encode())
    return b"\r\n".join(lines) + b"\r\n"


def stuff(body):
    return (b"." + body if body.startswith(b".") else body).replace(b"\r\n.", b"\r\n..")


def open_data(port, sender, rcpts=(ALICE,)):
    """A session standing after 354 (or the failing reply to MAIL/RCPT/DATA)."""
    c = Raw(port, timeout=20)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO client.test")[0] == 250
    code, text = c.cmd("MAIL FROM:<%s>" % sender)
    if code != 250:
        return c, (code, text)
    for r in rcpts:
        code, text = c.cmd("RCPT TO:<%s>" % r)
        if code != 250:
            return c, (code, text)
    code, text = c.cmd("DATA")
    return c, (code, text)


def finish_data(c, body):
    c.send(stuff(body) + b".\r\n")
    return c.reply()


def send(port, sender, body, rcpts=(ALICE,)):
    """One transaction; the reply that ended it as (code, text)."""
    c, (code, text) = open_data(port, sender, rcpts)
    try:
        if code != 354:
            return code, text
        return finish_data(c, body)
    finally:
        try:
            c.cmd("QUIT")
        except (OSError, EOFError):
            pass
        c.close()


def queue(d):
    r = d.ctl("queue", "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    return [json.loads(l) for l in r.stdout.splitlines() if l.strip()]


def queued_senders(d):
    return sorted(e["sender"] for e in queue(d))


def wait_until(pred, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def log_count(d, text):
    return d.read_log().count(text)


def delivered_intact(msg, body):
    """The sink got `body` byte for byte, after mx2's own Received: header."""
    data = msg.data
    if not data.endswith(body):
        return False
    head = data[:len(data) - len(body)]
    # Only the prepended Received: header (folded lines start with blanks).
    lines = head.split(b"\r\n")[:-1]
    return lines and lines[0].startswith(b"Received: ") and all(
        l[:1] in (b" ", b"\t") for l in lines[1:])


# ---- 1a: sync failures never acknowledged --------------------------------

@pytest.mark.parametrize("size", [600, 120 * 1024], ids=["small", "spilled"])
def test_failed_sync_is_never_acknowledged_and_acked_mail_survives(tmp_path, size):
    faults = Faults(tmp_path)
    pport = free_port()
    sink = Sink(port=pport)              # the primary: down until the end
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % pport], **fast())
    start(d, faults.env())
    try:
        bodies = {s: make_body("%s-%d" % (s, size), size) for s in ("a", "b", "b2", "c")}
        code, text = send(d.port, "a@sender.test", bodies["a"])
        assert code == 250, text

        # The durable write: a small message's journal append + fdatasync;
        # a spilled one's LMDB commit (page writes, fdatasync, meta write).
        faults.on("fdatasync", "fsync")
        code, text = send(d.port, "b@sender.test", bodies["b"])
        assert code == 452 and "4.3.1" in text, (code, text)
        target = "/queue/journal" if size < 48 * 1024 else "/queue/data.mdb"
        assert any(p.endswith(target) for p in faults.hits("fdatasync")), \
            ("the fault never reached the spool's durable write", faults.hits("fdatasync"))
        assert d.proc.poll() is None
        assert "NOQUEUE: queue write failed for message from=<b@sender.test>" in d.read_log()
        assert queued_senders(d) == ["a@sender.test"]
        if size > 48 * 1024:
            # A spilled body whose temp file cannot be written: 452 as well.
            faults.on("write /spool/tmp/")
            code, text = send(d.port, "b2@sender.test", bodies["b2"])
            assert code == 452 and "4.3.1" in text, (code, text)
            assert faults.hits("write"), "the spill never hit the fault"
        else:
            # Still failing, still refused: the writer is not wedged.
            code, text = send(d.port, "b2@sender.test", bodies["b2"])
            assert code == 452, (code, text)
        assert queued_senders(d) == ["a@sender.test"]

        faults.off()
        code, text = send(d.port, "c@sender.test", bodies["c"])
        assert code == 250, text
        assert queued_senders(d) == ["a@sender.test", "c@sender.test"]
        # No leftovers of the refused messages in tmp/.
        assert wait_until(lambda: os.listdir(os.path.join(d.spool, "tmp")) == [], 5)

        assert d.stop() == 0
        start(d, faults.env())
        assert queued_senders(d) == ["a@sender.test", "c@sender.test"]
        d.kill9()
        start(d, faults.env())
        assert queued_senders(d) == ["a@sender.test", "c@sender.test"]

        sink.start()
        assert sink.wait_messages(2, 20), d.read_log()[-3000:]
        assert wait_until(lambda: queue(d) == [], 10), queue(d)
        time.sleep(1.5)
        got = {m.mail_from: m for m in sink.messages}
        assert sorted(got) == ["a@sender.test", "c@sender.test"] and len(sink.messages) == 2
        for s in ("a", "c"):
            assert delivered_intact(got[s + "@sender.test"], bodies[s]), s
        assert d.proc.poll() is None
    finally:
        faults.off()
        d.close()
        sink.stop()


def test_failed_meta_page_write_is_not_acked_and_mx2d_restarts_clean(tmp_path):
    # LMDB's last step of a commit is the meta page, written through an
    # O_DSYNC descriptor. When that write fails LMDB marks the environment
    # unusable for this process (MDB_PANIC): mx2d must not acknowledge the
    # message, must not crash, and must stop with exit status 75 (so that
    # systemd's Restart=on-failure brings it back); the new process finds
    # exactly the acknowledged mail.
    # b is spilled (a temp file), so its commit is an LMDB transaction, which
    # also carries a's journal record along (a stays acknowledged: it is
    # replayed from the journal at the restart).
    faults = Faults(tmp_path)
    pport = free_port()
    sink = Sink(port=pport)
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % pport], **fast())
    start(d, faults.env())
    try:
        body_a, body_c = (make_body(t + "-meta", 900) for t in "ac")
        body_b = make_body("b-meta", 120 * 1024)
        assert send(d.port, "a@sender.test", body_a)[0] == 250
        # a's deferral is recorded first: the next LMDB write is b's.
        assert wait_until(lambda: [e for e in queue(d)
                                   if e["recipients"][0]["last_error"]], 10), queue(d)
        faults.on("metawrite /queue/data.mdb")
        code, text = send(d.port, "b@sender.test", body_b)
        assert code in (451, 452) and " 4.3." in text, (code, text)
        assert faults.hits("metawrite"), "the fault never reached the meta page"
        faults.off()
        try:
            rc = d.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError("mx2d kept running on a dead environment:\n" +
                                 d.read_log()[-3000:])
        assert rc == 75, (rc, d.read_log()[-3000:])
        assert "stopping with exit status 75" in d.read_log()
        d.logf.close()
        start(d, faults.env())
        assert queued_senders(d) == ["a@sender.test"]
        assert send(d.port, "c@sender.test", body_c)[0] == 250
        sink.start()
        assert sink.wait_messages(2, 20), d.read_log()[-3000:]
        assert wait_until(lambda: queue(d) == [], 10), queue(d)
        got = {m.mail_from: m for m in sink.messages}
        assert sorted(got) == ["a@sender.test", "c@sender.test"] and len(sink.messages) == 2
        assert delivered_intact(got["a@sender.test"], body_a)
        assert delivered_intact(got["c@sender.test"], body_c)
    finally:
        faults.off()
        d.close()
        sink.stop()


def test_failed_checkpoint_meta_write_loses_nothing_acknowledged(tmp_path):
    # A small message is acknowledged once it is in the journal; the
    # checkpoint that moves it into LMDB (here: the flusher's deferral
    # record, the primary being down) meets a failing meta page write. mx2d
    # stops with 75; the new process replays the journal: both messages are
    # there, and delivered once each.
    faults = Faults(tmp_path)
    pport = free_port()
    sink = Sink(port=pport)
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % pport], **fast())
    start(d, faults.env())
    try:
        body_a, body_b = (make_body(t + "-ckpt", 900) for t in "ab")
        assert send(d.port, "a@sender.test", body_a)[0] == 250
        # a's deferral is recorded (that write checkpointed a as well): the
        # next LMDB write is b's, which the fault is for.
        assert wait_until(lambda: [e for e in queue(d)
                                   if e["recipients"][0]["last_error"]], 10), queue(d)
        faults.on("metawrite /queue/data.mdb")
        assert send(d.port, "b@sender.test", body_b)[0] == 250
        try:
            rc = d.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError("the checkpoint never met the fault:\n" + d.read_log()[-3000:])
        assert rc == 75, (rc, d.read_log()[-3000:])
        assert faults.hits("metawrite")
        faults.off()
        d.logf.close()
        start(d, faults.env())
        assert queued_senders(d) == ["a@sender.test", "b@sender.test"]
        sink.start()
        assert sink.wait_messages(2, 20), d.read_log()[-3000:]
        assert wait_until(lambda: queue(d) == [], 10), queue(d)
        time.sleep(1.0)
        got = {m.mail_from: m for m in sink.messages}
        assert sorted(got) == ["a@sender.test", "b@sender.test"] and len(sink.messages) == 2
        assert delivered_intact(got["b@sender.test"], body_b)
    finally:
        faults.off()
        d.close()
        sink.stop()


def test_flush_round_counts_a_message_whose_record_is_still_being_written(tmp_path):
    # A flush --wait that starts after a message's attempt was decided but
    # before its record reached the disk (a slow sync) must still count that
    # message in its round: once, as deferred (regression: it was dropped
    # from the tally, "deferred 1" for two deferred messages).
    faults = Faults(tmp_path)
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % free_port()], **fast(retry_min="1h",
                                                                          retry_max="1h"))
    start(d, faults.env())
    try:
        assert send(d.port, "a@sender.test", make_body("a-round", 300))[0] == 250
        assert wait_until(lambda: "primary is DOWN" in d.read_log(), 10)
        faults.on("slowsync /queue/data.mdb")
        assert send(d.port, "b@sender.test", make_body("b-round", 300))[0] == 250
        # b's deferral (decided at the next tick) is now being written
        # slowly; the flush round begins meanwhile.
        time.sleep(0.25)
        r = d.ctl("flush", "--wait")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "delivered 0, deferred 2, bounced 0\n", (r.stdout, d.read_log()[-2000:])
        assert faults.hits("slowsync")
    finally:
        faults.off()
        d.close()


# ---- 1b: mx2map cannot make the new map durable --------------------------

def rcpt_code(port, addr):
    c = Raw(port)
    try:
        assert c.reply()[0] == 220
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<s@sender.test>")
        return c.cmd("RCPT TO:<%s>" % addr)[0]
    finally:
        c.close()


@pytest.mark.parametrize("kinds", [("rename",), ("fsync",), ("fdatasync",)])
def test_mx2map_keeps_the_old_map_when_it_cannot_commit(tmp_path, kinds):
    faults = Faults(tmp_path)
    d = Mx2d(tmp_path, users=("alice",)).start()
    try:
        lst = str(tmp_path / "new.list")
        with open(lst, "w") as f:
            f.write("alice\nnewbie\n")
        cmd = [binpath("mx2map"), "build", "-o", d.map, "--domain", "example.jp", "--list", lst]
        before = open(d.map, "rb").read()
        faults.on(*kinds)
        r = subprocess.run(cmd, env=faults.env(), capture_output=True, text=True)
        assert faults.hits(kinds[0]), "the fault was never hit"
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert re.match(r"^mx2map: %s: cannot write the map: Input/output error\n$"
                        % re.escape(d.map), r.stderr), r.stderr
        assert open(d.map, "rb").read() == before
        assert [n for n in os.listdir(tmp_path) if ".tmp." in n] == []
        # A reload (and the automatic check) still serve the old map.
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert rcpt_code(d.port, ALICE) == 250
        assert rcpt_code(d.port, "newbie@example.jp") == 550

        faults.off()
        r = subprocess.run(cmd, env=faults.env(), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        d.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: rcpt_code(d.port, "newbie@example.jp") == 250, 5)
        assert rcpt_code(d.port, ALICE) == 250
        assert d.proc.poll() is None
    finally:
        faults.off()
        d.close()


# ---- 2: the spool file system fills up -----------------------------------

class Tmpfs:
    """A small tmpfs mounted for one test (unmounted in close())."""

    def __init__(self, path, size_kib):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk,mode=0700" % size_kib,
                            "tmpfs", self.path], capture_output=True, text=True)
        # Root is needed (the suite runs as root here and in CI); a failed
        # mount fails the test rather than quietly testing nothing.
        assert r.returncode == 0, "cannot mount a tmpfs: %s" % r.stderr
        self.filler = os.path.join(self.path, "filler")
        self.mounted = True

    def fill(self):
        """Take every free byte (a file grown until ENOSPC)."""
        with open(self.filler, "ab", buffering=0) as f:
            for chunk in (1 << 16, 4096, 512, 64, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def free(self):
        if os.path.exists(self.filler):
            os.unlink(self.filler)

    def close(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], check=True)
            self.mounted = False


def test_full_spool_fs_fails_state_updates_then_recovers(tmp_path):
    # A real tmpfs (2 MiB) as the spool's file system, filled to the last
    # byte by a file the test owns: LMDB's page writes then fail with ENOSPC.
    fs = Tmpfs(tmp_path / "fs", 2048)
    pport = free_port()
    sink = Sink(port=pport)
    d = None
    try:
        d = Mx2d(tmp_path, users=("@example.jp",), primary=["[127.0.0.1]:%d" % pport],
                 spool_dir=os.path.join(fs.path, "spool"), max_message_size=100000, **fast())
        start(d)
        rcpts = ["r%02d@example.jp" % i for i in range(40)]
        bodies = {}
        for i in range(6):
            tag = "q%d" % i
            bodies[tag] = make_body(tag, 3000)
            code, text = send(d.port, tag + "@sender.test", bodies[tag], rcpts)
            assert code == 250, text
        assert wait_until(lambda: log_count(d, "status=deferred") >= 40, 10)
        before = log_count(d, "cannot record delivery state")

        # 1. Full while the primary is down: every deferral the flusher
        #    tries to record (retry 1-2 s, probe 1 s) fails; new mail is
        #    refused at MAIL.
        assert fs.fill() == 0
        assert wait_until(lambda: log_count(d, "cannot record delivery state") >= before + 6, 10), \
            d.read_log()[-3000:]
        assert "cannot record delivery state: Insufficient system storage" in d.read_log()
        time.sleep(2)
        code, text = send(d.port, "late@sender.test", make_body("late", 100))
        assert code == 452 and "4.3.1" in text, (code, text)
        assert d.proc.poll() is None
        assert sorted(e["sender"] for e in queue(d)) == sorted(t + "@sender.test" for t in bodies)

        # 2. Full after 354: the end of DATA is 452 4.3.1. A spilled body
        #    (> 48 KiB) cannot be written to tmp/; one held in memory can
        #    only be stored if LMDB finds room among its own free pages, in
        #    which case it is a normal, acknowledged message.
        fs.free()
        spilled = make_body("spilled", 80 * 1024)
        inmem = make_body("inmem", 40 * 1024)
        c1 = c2 = None
        deadline = time.time() + 10
        while time.time() < deadline:
            c1, (code1, _) = open_data(d.port, "spilled@sender.test")
            if code1 == 354:
                break
            c1.close()
            time.sleep(0.3)    # the writer refreshes its free-space figure
        assert code1 == 354
        c2, (code2, text2) = open_data(d.port, "inmem@sender.test")
        assert code2 == 354, text2
        assert fs.fill() == 0
        code, text = finish_data(c1, spilled)
        assert code == 452 and "4.3.1" in text, (code, text)
        code, text = finish_data(c2, inmem)
        assert code in (250, 452), (code, text)
        if code == 250:
            bodies["inmem"] = inmem
        c1.close()
        c2.close()
        assert d.proc.poll() is None
        r = d.ctl("queue")
        assert r.returncode == 0 and "corrupt" not in (r.stdout + r.stderr).lower(), r.stdout

        # 3. Space returns, the primary comes back: the new message is
        #    accepted (once the free-space figure is refreshed, within 5 s)
        #    and every acknowledged message is delivered exactly once (no
        #    recipient was accepted by the primary before, so the
        #    duplicate window never opened), intact, to all recipients.
        fs.free()
        after = make_body("after", 2000)
        assert wait_until(lambda: send(d.port, "after@sender.test", after, rcpts)[0] == 250, 10, 0.5)
        bodies["after"] = after
        sink.start()
        assert sink.wait_for(lambda: len(sink.messages) >= len(bodies), 20), \
            (len(sink.messages), d.read_log()[-3000:])
        assert wait_until(lambda: queue(d) == [], 10), queue(d)
        time.sleep(1.5)
        froms = sorted(m.mail_from for m in sink.messages)
        assert froms == sorted(t + "@sender.test" for t in bodies), froms
        for m in sink.messages:
            tag = m.mail_from.split("@")[0]
            assert delivered_intact(m, bodies[tag]), tag
            assert sorted(m.rcpts) == (rcpts if tag != "inmem" else [ALICE])
        assert "corrupt" not in d.read_log().lower()
        assert d.proc.poll() is None
    finally:
        if d is not None:
            d.close()
        sink.stop()
        fs.close()


# ---- 3: DNS failures on the bounce route ---------------------------------

class FakeDns:
    """A tiny authoritative-style DNS server on UDP <addr>:53 (loopback).
    mode "down": nothing listens (the resolver cannot be reached);
    "servfail": every query is SERVFAIL; "ok": sender.test has MX 10
    localhost (which /etc/hosts resolves), names under .invalid are
    NXDOMAIN, anything else NOERROR with no data."""

    def __init__(self, addr):
        self.addr = addr
        self.mode = "down"
        self.queries = []
        self.sock = None
        self.stop_ev = threading.Event()
        self.thread = None

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, 53))
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        end = time.time() + 120
        while not self.stop_ev.is_set() and time.time() < end:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            try:
                self.sock.sendto(self.answer(q), peer)
            except (ValueError, IndexError, struct.error):
                continue

    def answer(self, q):
        pos, labels = 12, []
        while q[pos]:
            labels.append(q[pos + 1:pos + 1 + q[pos]].decode("ascii").lower())
            pos += 1 + q[pos]
        qtype = struct.unpack(">H", q[pos + 1:pos + 3])[0]
        question = q[12:pos + 5]
        name = ".".join(labels)
        self.queries.append((name, qtype, self.mode))
        rcode, answers = 0, b""
        if self.mode == "servfail":
            rcode = 2
        elif name.endswith(".invalid") or name == "invalid":
            rcode = 3
        elif name == "sender.test" and qtype == 15:
            exch = b"\x09localhost\x00"
            answers = (b"\xc0\x0c" + struct.pack(">HHIH", 15, 1, 60, 2 + len(exch))
                       + struct.pack(">H", 10) + exch)
        hdr = q[:2] + struct.pack(">HHHHH", 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        return hdr + question + answers

    def close(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(timeout=5)
        if self.sock:
            self.sock.close()


def in_own_resolv_conf(tmp_path, nameserver):
    """A command prefix: run in a private mount namespace whose
    /etc/resolv.conf names only `nameserver` (1 s timeout, 1 try), so the
    daemon's MX lookups go nowhere but to the loopback address."""
    rc = str(tmp_path / "resolv.conf")
    with open(rc, "w") as f:
        f.write("nameserver %s\noptions timeout:1 attempts:1\n" % nameserver)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', rc]


def dsns(d):
    return [e for e in queue(d) if e["sender"] == ""]


def test_bounce_whose_mx_cannot_be_resolved_stays_queued(tmp_path):
    # A loopback address of our own for the resolver: nothing else listens
    # on its port 53, and port 25 on 127.0.0.1 takes the DSN at the end.
    ns = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(1, 254), random.randint(2, 254))
    dns = FakeDns(ns)
    primary = Sink(rcpt_policy={ALICE: "550 5.1.1 <alice@example.jp>: no such user"}).start()
    mx = Sink(port=25)
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port], **fast())
    try:
        start(d, prefix=in_own_resolv_conf(tmp_path, ns))
        body = make_body("bounced", 500)
        code, text = send(d.port, "s@sender.test", body)
        assert code == 250, text
        # The primary refuses alice: a DSN to s@sender.test is queued, and
        # its route (the MX of sender.test) cannot be resolved: the
        # resolver is unreachable. It must stay queued and be retried.
        assert wait_until(lambda: log_count(
            d, "bounce destination temporarily unresolvable: temporary DNS failure") >= 3, 15), \
            d.read_log()[-3000:]
        q = dsns(d)
        assert len(q) == 1 and [r["address"] for r in q[0]["recipients"]] == ["s@sender.test"], q
        dsn_id = q[0]["id"]
        # The deferral is recorded: `mx2ctl queue` says why it waits.
        assert wait_until(lambda: "temporarily unresolvable" in
                          (dsns(d) or [{"recipients": [{"last_error": ""}]}])[0]
                          ["recipients"][0]["last_error"], 10), dsns(d)
        assert [e["sender"] for e in queue(d)] == [""]   # the original is done
        code, text = send(d.port, "other@sender.test", make_body("other", 300),
                          rcpts=("bob@example.jp",))
        assert code == 250, text                          # still serving

        # A resolver that answers SERVFAIL: the same, temporary.
        dns.mode = "servfail"
        dns.start()
        n = log_count(d, "temporarily unresolvable")
        assert wait_until(lambda: log_count(d, "temporarily unresolvable") >= n + 2, 10)
        assert ("sender.test", 15, "servfail") in dns.queries
        assert [e["id"] for e in dsns(d)] == [dsn_id]

        # DNS recovers: the DSN goes to the MX, exactly once.
        dns.mode = "ok"
        mx.start()
        assert mx.wait_messages(1, 15), d.read_log()[-3000:]
        assert wait_until(lambda: dsns(d) == [], 10), queue(d)
        time.sleep(1.5)
        assert len(mx.messages) == 1
        m = mx.messages[0]
        assert m.mail_from == "" and m.rcpts == ["s@sender.test"]
        assert b"alice@example.jp" in m.data and b"5.1.1" in m.data
        assert d.proc.poll() is None
    finally:
        d.close()
        dns.close()
        mx.stop()
        primary.stop()


def test_bounce_to_a_domain_that_does_not_exist_is_dropped_with_a_log_line(tmp_path):
    # NXDOMAIN (a sender under .invalid, RFC 6761) is the one DNS answer
    # taken as permanent (relay/dns.h): the DSN can never be delivered and
    # a bounce is never bounced, so it is dropped -- with a log line naming
    # the reason -- as Postfix discards such a double bounce. A SERVFAIL
    # first must not be mistaken for it.
    ns = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(1, 254), random.randint(2, 254))
    dns = FakeDns(ns)
    dns.mode = "servfail"
    dns.start()
    primary = Sink(rcpt_policy={ALICE: "550 5.1.1 no such user"}).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port], **fast())
    try:
        start(d, prefix=in_own_resolv_conf(tmp_path, ns))
        code, text = send(d.port, "s@nowhere.invalid", make_body("nx", 300))
        assert code == 250, text
        assert wait_until(lambda: log_count(d, "temporarily unresolvable") >= 2, 10), \
            d.read_log()[-3000:]
        assert len(dsns(d)) == 1
        dns.mode = "ok"
        assert wait_until(lambda: queue(d) == [], 10), queue(d)
        log = d.read_log()
        assert re.search(r"to=<s@nowhere\.invalid>.*dsn=5\.1\.2, status=bounced \(.*no such domain",
                         log), log[-3000:]
        assert ("nowhere.invalid", 15, "ok") in dns.queries
        code, text = send(d.port, "t@sender.test", make_body("after", 300), rcpts=("bob@example.jp",))
        assert code == 250, text
        assert d.proc.poll() is None
    finally:
        d.close()
        dns.close()
        primary.stop()


# ---- a fast primary and a slow disk ------------------------------------------

def test_attempts_waiting_for_their_record_do_not_exhaust_the_spools_readers(tmp_path):
    # Each open message body is an LMDB read transaction (a reader slot).
    # While a slow sync holds up the records of finished deliveries, the
    # flusher keeps delivering: hundreds of attempts wait for their record.
    # They must not keep their bodies open (regression: with 1,024 slots a
    # 20,000-message drain into smtp-sink stalled, every later read failing
    # with "cannot read the queue file" and the rest left for an hour).
    # 40 slots here (MX2_SPOOL_MAXREADERS) and 200 messages.
    faults = Faults(tmp_path)
    pport = free_port()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % pport], primary_concurrency=10,
             **fast(retry_min="1h", retry_max="1h", probe_interval="1h"))
    env = faults.env()
    env["MX2_SPOOL_MAXREADERS"] = "40"
    start(d, env)
    sink = Sink(port=pport)
    n = 200
    try:
        import smtplib
        with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as c:
            for i in range(n):
                assert c.sendmail("s%d@sender.test" % i, [ALICE],
                                  "Subject: m%d\r\n\r\n%s\r\n" % (i, "x" * 1500)) == {}
        assert wait_until(lambda: log_count(d, "status=deferred") >= n, 30), d.read_log()[-2000:]
        faults.on("slowsync /queue/data.mdb")
        sink.start()
        r = d.ctl("flush")
        assert r.returncode == 0, r.stderr
        assert sink.wait_messages(n, 60), (len(sink.messages), d.read_log()[-3000:])
        assert faults.hits("slowsync")
        faults.off()
        assert wait_until(lambda: queue(d) == [], 30), d.read_log()[-3000:]
        log = d.read_log()
        assert "cannot read the queue file" not in log, log[-3000:]
        assert log.count("status=sent") == n
        assert len({m.mail_from for m in sink.messages}) == n
    finally:
        faults.off()
        d.close()
        sink.stop()
