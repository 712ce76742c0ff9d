"""End-to-end tests of mx2d's inbound SMTP (SPEC.md "SMTP behaviour (inbound)").

Each test starts the real daemon on a loopback port with its own spool and a
map compiled by the real mx2map, and talks to it with smtplib or raw sockets.
"""
import os
import re
import resource
import signal
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from harness import Mx2d, Raw, build_map, binpath

QID = r"[0-9A-V]{13}"


@pytest.fixture
def mx2(tmp_path):
    d = Mx2d(tmp_path).start()
    yield d
    d.close()


def make(tmp_path, **kw):
    return Mx2d(tmp_path, **kw)


def queue_ids(d):
    r = d.ctl("queue", "--json")
    assert r.returncode == 0, r.stderr
    import json
    return [json.loads(l)["id"] for l in r.stdout.splitlines() if l.strip()]


def simple_msg(subject="hi", body="hello\r\n"):
    return "From: a@sender.test\r\nTo: alice@example.jp\r\nSubject: %s\r\n\r\n%s" % (subject, body)


def test_greeting_and_ehlo(mx2):
    r = Raw(mx2.port)
    code, text = r.reply()
    assert (code, text) == (220, "220 mx2.test ESMTP mx2")
    code, text = r.cmd("EHLO client.test")
    assert code == 250
    lines = [l[4:] for l in text.splitlines()]
    assert lines[0] == "mx2.test"
    for kw in ("PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "DSN",
               "ENHANCEDSTATUSCODES"):
        assert kw in lines
    assert "STARTTLS" not in lines          # no tls_cert configured
    assert "ETRN" not in lines              # no etrn_clients
    assert not any(l.startswith("CHUNKING") for l in lines)
    assert r.cmd("QUIT")[0] == 221
    assert r.closed()


def test_accepts_listed_user(mx2):
    with smtplib.SMTP("127.0.0.1", mx2.port) as c:
        c.ehlo("client.test")
        c.mail("sender@sender.test")
        assert c.rcpt("alice@example.jp")[0] == 250
        code, text = c.data(simple_msg())
        assert code == 250
        assert re.fullmatch(r"2\.0\.0 Ok: queued as " + QID, text.decode()), text
    assert "from=<sender@sender.test>, size=" in mx2.read_log()


def test_unknown_user_550(mx2):
    with smtplib.SMTP("127.0.0.1", mx2.port) as c:
        c.ehlo("client.test")
        c.mail("sender@sender.test")
        code, text = c.rcpt("nobody-here@example.jp")
        assert code == 550
        assert text.decode() == ("5.1.1 <nobody-here@example.jp>: Recipient address rejected: "
                                 "User unknown")
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.1" in mx2.read_log()


@pytest.mark.parametrize("addr", ["ALICE@EXAMPLE.JP", "Alice@Example.Jp", "alice+tag@example.jp",
                                  "alice@example.jp."])
def test_case_tag_and_trailing_dot_accepted(mx2, addr):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 250
    assert r.cmd("RCPT TO:<%s>" % addr)[0] == 250


RELAY_TRICKS = [
    "someone@evil.test",
    "alice@example.jp.evil.test",
    "alice@sub.example.jp",
    "alice%evil.test@example.jp",
    "evil.test!alice@example.jp",
    '"alice@evil.test"@example.jp',
    "@example.jp:alice@evil.test",
    "@evil.test:alice@evil.test",
    "alice@[127.0.0.1]",
    "alice@[IPv6:::1]",
    "ALICE%EVIL.TEST@EXAMPLE.JP",
    '"alice%evil.test"@example.jp',
    '"evil!alice"@example.jp',
]


@pytest.mark.parametrize("users", [("alice", "bob"), ("alice", "@example.jp")])
def test_never_an_open_relay(tmp_path, users):
    d = make(tmp_path, users=users).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        for addr in RELAY_TRICKS:
            code, text = r.cmd("RCPT TO:<%s>" % addr)
            # Some tricks fail to parse at all (501); none may be accepted.
            assert code in (554, 501), (addr, code, text)
            if code == 554:
                assert text.startswith("554 5.7.1 <") and text.endswith(">: Relay access denied"), text
            r.cmd("RSET")
            r.cmd("MAIL FROM:<s@sender.test>")
        assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 250
    finally:
        d.close()


def test_catch_all_accepts_unknown_local(tmp_path):
    d = make(tmp_path, users=("@example.jp",)).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        r.cmd("MAIL FROM:<s@sender.test>")
        assert r.cmd("RCPT TO:<whoever@example.jp>")[0] == 250
    finally:
        d.close()


def test_map_missing_is_451_then_picked_up(tmp_path):
    d = make(tmp_path, users=None).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        r.cmd("MAIL FROM:<s@sender.test>")
        code, text = r.cmd("RCPT TO:<alice@example.jp>")
        assert code == 451 and text.startswith("451 4.3.0"), text
        build_map(d.map, ["alice"])
        deadline = time.time() + 10
        while time.time() < deadline:
            code, _ = r.cmd("RCPT TO:<alice@example.jp>")
            if code == 250:
                break
            time.sleep(0.3)
        assert code == 250     # same session, no restart, no signal
    finally:
        d.close()


def test_map_rebuild_picked_up_without_restart(mx2):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.cmd("MAIL FROM:<s@sender.test>")
    assert r.cmd("RCPT TO:<dave@example.jp>")[0] == 550
    build_map(mx2.map, ["alice", "dave"])
    deadline = time.time() + 10
    code = None
    while time.time() < deadline:
        code, _ = r.cmd("RCPT TO:<dave@example.jp>")
        if code == 250:
            break
        time.sleep(0.3)
    assert code == 250
    assert r.cmd("NOOP")[0] == 250   # the open session survived the reload


def test_sighup_reopens_map(mx2):
    build_map(mx2.map, ["alice", "erin"])
    mx2.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.cmd("MAIL FROM:<s@sender.test>")
    assert r.cmd("RCPT TO:<erin@example.jp>")[0] == 250
    assert "SIGHUP: recipient map" in mx2.read_log()


def test_too_many_recipients(tmp_path):
    d = make(tmp_path, max_recipients=2, users=("a1", "a2", "a3")).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        r.cmd("MAIL FROM:<s@sender.test>")
        assert r.cmd("RCPT TO:<a1@example.jp>")[0] == 250
        assert r.cmd("RCPT TO:<a2@example.jp>")[0] == 250
        code, text = r.cmd("RCPT TO:<a3@example.jp>")
        assert code == 452 and text.startswith("452 4.5.3"), text
    finally:
        d.close()


def test_message_size_limits(tmp_path):
    d = make(tmp_path, max_message_size=10000).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        code, text = r.cmd("MAIL FROM:<s@sender.test> SIZE=20000")
        assert code == 552 and text.startswith("552 5.3.4"), text
        assert r.cmd("MAIL FROM:<s@sender.test> SIZE=100")[0] == 250
        assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(("x" * 70 + "\r\n") * 300 + ".\r\n")
        code, text = r.reply()
        assert code == 552 and text.startswith("552 5.3.4"), text
        assert r.cmd("NOOP")[0] == 250     # still in sync
    finally:
        d.close()
    assert queue_ids(d) == []


def test_pipelining_replies_in_order(mx2):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.send("MAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@example.jp>\r\n"
           "RCPT TO:<nobody@example.jp>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\n")
    assert [r.reply()[0] for _ in range(5)] == [250, 250, 550, 250, 354]
    # The end of one message and a whole second transaction in one write.
    r.send("Subject: one\r\n\r\nbody\r\n.\r\nMAIL FROM:<t@sender.test>\r\n"
           "RCPT TO:<carol@example.jp>\r\nDATA\r\nSubject: two\r\n\r\nbody2\r\n.\r\nQUIT\r\n")
    replies = [r.reply() for _ in range(6)]
    assert [c for c, _ in replies] == [250, 250, 250, 354, 250, 221]
    assert "queued as" in replies[0][1] and "queued as" in replies[4][1]
    assert r.closed()
    assert len(queue_ids(mx2)) == 2


@pytest.mark.parametrize("seq", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"])
def test_smuggling_never_creates_second_message(mx2, seq):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.cmd("MAIL FROM:<s@sender.test>")
    r.cmd("RCPT TO:<alice@example.jp>")
    assert r.cmd("DATA")[0] == 354
    r.send(b"Subject: smuggle\r\n\r\nhello" + seq +
           b"MAIL FROM:<evil@evil.test>\r\nRCPT TO:<bob@example.jp>\r\nDATA\r\nsmuggled\r\n"
           b"\r\n.\r\n")
    code, text = r.reply()
    assert code == 250, text
    assert r.cmd("NOOP")[0] == 250   # nothing else was answered in between
    ids = queue_ids(mx2)
    assert len(ids) == 1
    shown = mx2.ctl("show", ids[0]).stdout
    assert "smuggled" in shown       # it stayed inside the one message


def test_bare_newline_reject_mode(tmp_path):
    d = make(tmp_path, bare_newline="reject").start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        r.cmd("MAIL FROM:<s@sender.test>")
        r.cmd("RCPT TO:<alice@example.jp>")
        r.cmd("DATA")
        r.send(b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n")
        code, text = r.reply()
        assert code == 550 and text.startswith("550 5.5.2"), text
        assert r.cmd("NOOP")[0] == 250
    finally:
        d.close()
    assert queue_ids(d) == []


def test_mail_loop_554(mx2):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.cmd("MAIL FROM:<s@sender.test>")
    r.cmd("RCPT TO:<alice@example.jp>")
    r.cmd("DATA")
    r.send("".join("Received: from hop%d by x; Tue, 1 Jan 2026 00:00:00 +0000\r\n" % i
                   for i in range(51)) + "Subject: loop\r\n\r\nx\r\n.\r\n")
    code, text = r.reply()
    assert code == 554 and text.startswith("554 5.4.6"), text


def test_fifty_received_is_fine(mx2):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.cmd("MAIL FROM:<s@sender.test>")
    r.cmd("RCPT TO:<alice@example.jp>")
    r.cmd("DATA")
    # mx2 adds its own Received:, the 50 here are the client's.
    r.send("".join("Received: from hop%d by x; Tue, 1 Jan 2026 00:00:00 +0000\r\n" % i
                   for i in range(50)) + "Subject: ok\r\n\r\nx\r\n.\r\n")
    assert r.reply()[0] == 250


def test_simple_commands_and_sequence_errors(mx2):
    r = Raw(mx2.port)
    r.reply()
    assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 503
    r.cmd("EHLO c")
    assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 503
    assert r.cmd("DATA")[0] == 503
    assert r.cmd("VRFY alice")[0] == 252
    assert r.cmd("EXPN staff")[0] == 502
    assert r.cmd("HELP")[0] == 214
    assert r.cmd("NOOP")[0] == 250
    assert r.cmd("RSET")[0] == 250
    assert r.cmd("BDAT 10 LAST")[0] == 502
    assert r.cmd("XYZZY")[0] == 500
    assert r.cmd("MAIL FROM:<s@sender.test> FOO=BAR")[0] == 555
    assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 250
    assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 503
    assert r.cmd("DATA")[0] == 554     # no valid recipients
    assert r.cmd("RCPT TO:<>")[0] == 501


def test_overlong_line_500_and_session_survives(mx2):
    r = Raw(mx2.port)
    r.reply()
    r.cmd("EHLO c")
    r.send("NOOP " + "x" * 100000 + "\r\n")
    code, text = r.reply()
    assert code == 500 and text.startswith("500 5.5.2"), text
    assert r.cmd("NOOP")[0] == 250


def test_too_many_errors_421(mx2):
    r = Raw(mx2.port)
    r.reply()
    codes = []
    try:
        for _ in range(40):
            codes.append(r.cmd("XYZZY")[0])
            if codes[-1] == 421:
                break
    except EOFError:
        pass
    assert codes[-1] == 421
    assert r.closed()


def test_nul_and_8bit_garbage_in_commands(mx2):
    r = Raw(mx2.port)
    r.reply()
    r.send(b"EHLO \x00\xff\xfe\r\n")
    assert r.reply()[0] in (500, 501)
    r.send(b"\xff\xfe\xfd\r\n")
    assert r.reply()[0] == 500
    assert r.cmd("NOOP")[0] == 250


def test_idle_client_times_out(tmp_path):
    d = make(tmp_path, smtp_timeout="2s").start()
    try:
        r = Raw(d.port)
        r.reply()
        t0 = time.time()
        code, text = r.reply()
        assert code == 421 and "4.4.2" in text
        assert time.time() - t0 < 10
        assert r.closed()
        # A client dribbling a command without ever finishing the line also ends.
        r2 = Raw(d.port)
        r2.reply()
        r2.send("NOOP")
        time.sleep(1)
        r2.send(" x")
        code, _ = r2.reply()
        assert code == 421
    finally:
        d.close()


def test_connections_per_ip_limit(tmp_path):
    d = make(tmp_path, max_connections_per_ip=3).start()
    try:
        held = [Raw(d.port) for _ in range(3)]
        for h in held:
            assert h.reply()[0] == 220
        extra = Raw(d.port)
        code, text = extra.reply()
        assert code == 421 and "4.7.0" in text
        assert extra.closed()
        held[0].cmd("QUIT")
        held[0].closed()
        time.sleep(0.2)
        again = Raw(d.port)
        assert again.reply()[0] == 220
    finally:
        d.close()


def test_thousand_concurrent_connections_greeted(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, max(hard, want)), max(hard, want)))
    d = make(tmp_path, max_connections=2000, max_connections_per_ip=2000).start()
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", d.port), timeout=10))
        greeted = 0
        for s in socks:
            if s.recv(100).startswith(b"220 mx2.test"):
                greeted += 1
        assert greeted == 1000
    finally:
        for s in socks:
            s.close()
        d.close()


def test_large_message_streams_to_disk(mx2):
    body = "".join("line %06d %s\r\n" % (i, "y" * 60) for i in range(50000))  # ~3.5 MiB
    with smtplib.SMTP("127.0.0.1", mx2.port) as c:
        c.ehlo("c")
        c.mail("s@sender.test")
        c.rcpt("bob@example.jp")
        code, text = c.data("Subject: big\r\n\r\n" + body)
        assert code == 250, text
    ids = queue_ids(mx2)
    assert len(ids) == 1
    shown = mx2.ctl("show", ids[0]).stdout
    assert "line 049999" in shown and "line 000000" in shown


def test_spool_full_is_452_and_daemon_keeps_serving(tmp_path):
    # A spool of 256 KiB: the first messages fit, then mx2 must answer
    # 452 4.3.1 (at MAIL when too little room is left for a maximal message,
    # or at the end of DATA when the commit itself fails) and keep serving.
    d = make(tmp_path, max_message_size=70000)
    env = dict(os.environ, MX2_SPOOL_MAPSIZE=str(256 * 1024))
    d.logf = open(d.log, "ab")
    d.proc = subprocess.Popen([binpath("mx2d"), "-c", d.conf], stdout=d.logf,
                              stderr=subprocess.STDOUT, env=env)
    try:
        d.wait_ready()
        results = []
        for i in range(8):
            with smtplib.SMTP("127.0.0.1", d.port) as c:
                c.ehlo("c")
                code, text = c.mail("s@sender.test")
                if code == 250:
                    assert c.rcpt("alice@example.jp")[0] == 250
                    try:
                        code, text = c.data("Subject: fill %d\r\n\r\n" % i + "z" * 60000 + "\r\n")
                    except smtplib.SMTPDataError as e:
                        code, text = e.smtp_code, e.smtp_error
                results.append((code, text))
        codes = [c for c, _ in results]
        assert 250 in codes and 452 in codes, results
        assert all(t.startswith(b"4.3.1") for c, t in results if c != 250), results
        assert d.proc.poll() is None
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.noop()[0] == 250
    finally:
        d.close()
    assert len(queue_ids(d)) == codes.count(250)


def test_starttls(tmp_path, tls_files):
    cert, key = tls_files
    d = make(tmp_path, tls_cert=cert, tls_key=key).start()
    try:
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            c.ehlo("c")
            assert c.has_extn("starttls")
            c.starttls(context=ssl._create_unverified_context())
            c.ehlo("c")
            assert not c.has_extn("starttls")   # not offered twice
            c.mail("s@sender.test")
            c.rcpt("alice@example.jp")
            assert c.data(simple_msg())[0] == 250
        ids = queue_ids(d)
        assert "with ESMTPS" in d.ctl("show", ids[0]).stdout
    finally:
        d.close()


def test_starttls_discards_pipelined_plaintext(tmp_path, tls_files):
    cert, key = tls_files
    d = make(tmp_path, tls_cert=cert, tls_key=key).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        # Injected command behind STARTTLS in the same packet (CVE-2011-0411).
        r.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        code, _ = r.reply()
        assert code == 220
        ctx = ssl._create_unverified_context()
        t = ctx.wrap_socket(r.s, server_hostname="mx2.test")
        t.sendall(b"RCPT TO:<alice@example.jp>\r\n")
        data = t.recv(1000)
        # Had the injected MAIL been executed, this RCPT would be accepted.
        assert data.startswith(b"503"), data
        t.sendall(b"EHLO c\r\n")
        data = b""
        while not re.search(rb"^250 ", data, re.M):
            data += t.recv(1000)
        assert b"STARTTLS" not in data
        t.close()
    finally:
        d.close()


def test_tls_garbage_handshake_does_not_hurt(tmp_path, tls_files):
    cert, key = tls_files
    d = make(tmp_path, tls_cert=cert, tls_key=key).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO c")
        assert r.cmd("STARTTLS")[0] == 220
        r.send(b"\x16\x03\x01\x00\x05garbagegarbage" * 10)
        assert r.closed()
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.noop()[0] == 250
    finally:
        d.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_exits_zero(mx2, sig):
    assert mx2.stop(sig) == 0


def test_client_that_never_reads_replies_is_bounded(tmp_path):
    # Pipelining commands without ever reading the replies must neither grow
    # mx2d's memory nor hold the connection past the timeout.
    d = make(tmp_path, smtp_timeout="2s").start()
    try:
        s = socket.create_connection(("127.0.0.1", d.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        t0 = time.time()
        closed = False
        while time.time() - t0 < 12:
            try:
                s.send(b"EHLO a\r\n" * 512)
            except BlockingIOError:
                time.sleep(0.02)
            except OSError:
                closed = True
                break
        rss_kb = int([l for l in open("/proc/%d/status" % d.proc.pid)
                      if l.startswith("VmHWM")][0].split()[1])
        s.close()
        assert closed, "connection still open after 12 s with smtp_timeout=2s"
        assert rss_kb < 64 * 1024, "peak RSS %d KiB" % rss_kb
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.noop()[0] == 250
    finally:
        d.close()
