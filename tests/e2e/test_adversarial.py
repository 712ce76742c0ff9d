"""Adversarial clients (issue 7 item 3): dictionary attacks, enormous
lines inside DATA, floods beyond the connection limits, slow clients
(slowloris), broken STARTTLS handshakes, TLS renegotiation, NUL and 8-bit
octets inside DATA. The daemon stays up, keeps serving a well-behaved client,
and its memory stays bounded. tests/bench/attack.py runs all of these at once
and measures a good client's latency meanwhile."""
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from harness import Mx2d, Raw


def peak_rss_kib(d):
    for line in open("/proc/%d/status" % d.proc.pid):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    return 0


def test_ten_thousand_rcpt_attempts_are_cut_off(tmp_path):
    d = Mx2d(tmp_path).start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO attacker")
        r.cmd("MAIL FROM:<a@evil.test>")
        r.send("".join("RCPT TO:<user%d@example.jp>\r\n" % i for i in range(10000)))
        codes = []
        try:
            while True:
                codes.append(r.reply()[0])
        except (EOFError, OSError):
            pass
        assert codes[-1] == 421, codes[-5:]
        assert len(codes) < 40, "the session was not cut off: %d replies" % len(codes)
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.sendmail("s@sender.test", ["alice@example.jp"], "Subject: ok\r\n\r\nx\r\n") == {}
    finally:
        d.close()


def test_enormous_header_line_is_refused_with_bounded_memory(tmp_path):
    d = Mx2d(tmp_path, max_message_size=1048576).start()
    try:
        r = Raw(d.port, timeout=30)
        r.reply()
        r.cmd("EHLO big")
        r.cmd("MAIL FROM:<s@sender.test>")
        r.cmd("RCPT TO:<alice@example.jp>")
        assert r.cmd("DATA")[0] == 354
        chunk = b"X" * (1 << 20)
        r.send(b"Subject: ")
        for _ in range(8):                      # one 8 MiB header line
            r.send(chunk)
        r.send(b"\r\n\r\nbody\r\n.\r\n")
        code, text = r.reply()
        assert code == 552 and "5.3.4" in text, text
        assert r.cmd("NOOP")[0] == 250
        assert peak_rss_kib(d) < 48 * 1024, peak_rss_kib(d)
    finally:
        d.close()


def test_connection_flood_and_a_good_client(tmp_path):
    d = Mx2d(tmp_path, max_connections=50, max_connections_per_ip=50).start()
    socks = []
    try:
        for _ in range(200):
            try:
                socks.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
            except OSError:
                break
        time.sleep(0.5)
        # Everyone beyond the limit was told 421 and closed; the daemon lives.
        refused = 0
        for s in socks[50:]:
            s.settimeout(5)
            data = s.recv(200)
            if data.startswith(b"421"):
                refused += 1
        assert refused == len(socks) - 50
        for s in socks:
            s.close()
        time.sleep(0.5)
        t0 = time.time()
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
            assert c.sendmail("s@sender.test", ["alice@example.jp"], "Subject: ok\r\n\r\nx\r\n") == {}
        assert time.time() - t0 < 5
    finally:
        for s in socks:
            s.close()
        d.close()


# ---- slow clients (slowloris) ----
#
# What the code does (relay/conn.h, relay/smtp_session.[ch]): smtp_timeout
# is one timer per connection. In command mode it is restarted only when a
# complete command line has been handled, so it is a deadline per command
# line: bytes that never complete a line do not count. In DATA it is a
# budget that starts full at the 354 and is refilled by every byte received
# at 1/SMTPD_MIN_DATA_RATE s (500 B/s, as Postfix's smtpd_min_data_rate),
# never above smtp_timeout. During a STARTTLS handshake nothing restarts it:
# the whole handshake has one smtp_timeout.

def good_session(port, subject="ok"):
    """One well-behaved SMTP session; returns its duration in seconds."""
    t0 = time.time()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        assert c.sendmail("s@sender.test", ["alice@example.jp"],
                          "Subject: %s\r\n\r\n%s\r\n" % (subject, "x" * 2000)) == {}
    return time.time() - t0


def dribble(sock, payload, interval, limit):
    """Send payload one byte every `interval` s until the server closes or
    `limit` s pass. Returns (bytes sent, what the server sent, seconds from
    the start until the close or None, seconds from the last byte sent until
    the close or None)."""
    sock.setblocking(False)
    t0 = time.time()
    sent, got, last = 0, b"", t0
    next_send = t0
    while time.time() - t0 < limit:
        now = time.time()
        if sent < len(payload) and now >= next_send:
            try:
                sock.send(payload[sent:sent + 1])
            except OSError:
                return sent, got, now - t0, now - last
            sent += 1
            last = now
            next_send += interval
        try:
            chunk = sock.recv(4096)
            if not chunk:
                now = time.time()
                return sent, got, now - t0, now - last
            got += chunk
        except BlockingIOError:
            pass
        except OSError:
            now = time.time()
            return sent, got, now - t0, now - last
        time.sleep(0.02)
    return sent, got, None, None


def run_threads(fns):
    """Run each fn in a thread; returns their results (exceptions re-raised)."""
    out = [None] * len(fns)

    def wrap(i, fn):
        try:
            out[i] = ("ok", fn())
        except BaseException as e:      # re-raised in the test's thread
            out[i] = ("exc", e)

    ts = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    return ts, out


def join_threads(ts, out, timeout=30):
    for t in ts:
        t.join(timeout)
        assert not t.is_alive(), "a client thread hung"
    for kind, val in out:
        if kind == "exc":
            raise val
    return [val for _, val in out]


def open_data(port):
    """A session that is inside DATA (354 read)."""
    r = Raw(port)
    r.reply()
    r.cmd("EHLO slow")
    r.cmd("MAIL FROM:<s@slow.test>")
    assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    return r


def test_slowloris_command_dribble_is_cut_off_while_good_client_served(tmp_path):
    # smtp_timeout 2 s is a deadline per command line: a client dribbling a
    # command one byte per second, or even four bytes per second, is cut off
    # about 2 s after its last complete line although bytes keep coming.
    d = Mx2d(tmp_path, smtp_timeout="2s").start()
    try:
        slow = [Raw(d.port), Raw(d.port)]
        for r in slow:
            assert r.reply()[0] == 220
        payload = b"NOOP " + b"y" * 60
        ts, out = run_threads([lambda: dribble(slow[0].s, payload, 1.0, 12),
                               lambda: dribble(slow[1].s, payload, 0.25, 12)])
        served = []
        t0 = time.time()
        while time.time() - t0 < 5:             # good clients while they dribble
            served.append(good_session(d.port))
        results = join_threads(ts, out)
        for (sent, got, at, _), per_s in zip(results, (1, 4)):
            assert at is not None, "a %d byte/s dribbler was never cut off" % per_s
            assert got.startswith(b"421 4.4.2 "), got
            # Cut off by the 2 s deadline, not by an idle timer the bytes reset.
            assert 1.5 <= at <= 5.5, (per_s, at, sent)
            assert sent >= 2 * per_s - 1, (per_s, sent)
        assert len(served) >= 2 and max(served) < 5, served
        assert d.read_log().count("timeout after INIT") >= 2
    finally:
        d.close()


def test_slowloris_data_dribble_is_cut_off_while_good_client_served(tmp_path):
    # In DATA smtp_timeout is a budget (SMTPD_MIN_DATA_RATE in
    # relay/smtp_session.h): full at the 354, refilled by 2 ms per byte
    # received. One body byte per second -- or none at all -- runs it out
    # about smtp_timeout after the 354. Nothing is queued for them, and good
    # clients are served meanwhile.
    d = Mx2d(tmp_path, smtp_timeout="2s").start()
    try:
        dribbler, silent = open_data(d.port), open_data(d.port)
        ts, out = run_threads([lambda: dribble(dribbler.s, b"Subject: " + b"z" * 100, 1.0, 10),
                               lambda: dribble(silent.s, b"", 1.0, 10)])
        served = []
        t0 = time.time()
        while time.time() - t0 < 4:
            served.append(good_session(d.port))
        (sent, got, at, _), (_, got2, at2, _) = join_threads(ts, out)
        assert at is not None, "a 1 byte/s DATA dribbler was never cut off (sent %d)" % sent
        assert got.startswith(b"421 4.4.2 "), got
        assert 1.5 <= at <= 4.5 and sent <= 5, (at, sent)
        assert at2 is not None and got2.startswith(b"421 4.4.2 "), (at2, got2)
        assert 1.5 <= at2 <= 4.5, at2
        assert served and max(served) < 5, served
        log = d.read_log()
        assert log.count("timeout after DATA") == 2, log
        assert log.count("(queue active)") == len(served)
    finally:
        d.close()


def test_data_at_a_modest_rate_is_not_cut_off(tmp_path):
    # The budget is not a deadline for the whole DATA phase: a slow but real
    # sender (1 KiB every 0.5 s, four times the minimum rate) keeps going
    # for three smtp_timeouts and gets its 250.
    d = Mx2d(tmp_path, smtp_timeout="2s").start()
    try:
        r = open_data(d.port)
        t0 = time.time()
        line = b"x" * 1022 + b"\r\n"
        for _ in range(12):
            r.send(line)
            time.sleep(0.5)
        r.send(b".\r\n")
        code, text = r.reply()
        assert code == 250 and "queued as" in text, text
        assert time.time() - t0 >= 6
        assert r.cmd("QUIT")[0] == 221
        assert "timeout after" not in d.read_log()
    finally:
        d.close()


# ---- broken STARTTLS handshakes and renegotiation ----

def client_hello():
    """A real TLS 1.2 ClientHello record, made by Python's ssl without a socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="mx2.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    # record: 16 03 0x LL LL; handshake: 01 LL LL LL; client_version 03 03
    assert hello[0] == 0x16 and hello[5] == 0x01 and hello[9:11] == b"\x03\x03", hello[:12]
    return hello


def after_starttls(port):
    r = Raw(port)
    assert r.reply()[0] == 220
    r.cmd("EHLO broken")
    assert r.cmd("STARTTLS")[0] == 220
    return r


def until_closed(r, limit=8):
    """(bytes the server sent, seconds until it closed or None)."""
    t0 = time.time()
    r.s.settimeout(limit)
    got = b""
    try:
        while True:
            chunk = r.s.recv(65536)
            if not chunk:
                return got, time.time() - t0
            got += chunk
    except socket.timeout:
        return got, None
    except ConnectionResetError:
        return got, time.time() - t0


def tls_variant(port, name, hello):
    """Run one broken handshake; returns (name, server bytes, close time)."""
    r = after_starttls(port)
    try:
        if name == "truncated-then-silence":
            r.send(hello[:40])
        elif name == "hello-dribbled":
            sent, got, at, _ = dribble(r.s, hello, 0.25, 8)
            assert sent < len(hello)
            return name, got, at
        elif name == "plaintext-after-starttls":
            r.send("EHLO again\r\nMAIL FROM:<x@evil.test>\r\n")
        elif name == "record-version-2.0":
            r.send(hello[:1] + b"\x02\x00" + hello[3:])
        elif name == "hello-offers-tls1.0-only":
            r.send(hello[:9] + b"\x03\x01" + hello[11:])
        elif name == "hello-offers-ssl3-only":
            r.send(hello[:9] + b"\x03\x00" + hello[11:])
        elif name == "record-length-65535":
            r.send(b"\x16\x03\x01\xff\xff" + b"\x01" * 2000)
        elif name in ("close-mid-handshake", "reset-mid-handshake", "garbage-for-key-exchange"):
            r.send(hello)
            r.s.settimeout(5)
            flight = r.s.recv(65536)
            assert flight[:1] == b"\x16" and flight[5:6] == b"\x02", flight[:8]  # ServerHello
            if name == "close-mid-handshake":
                r.s.close()
                return name, flight[:1], 0.0
            if name == "reset-mid-handshake":
                r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                r.s.close()
                return name, flight[:1], 0.0
            r.send(b"\x16\x03\x03\x00\x10" + b"G" * 16)
        got, at = until_closed(r)
        return name, got, at
    finally:
        r.close()


# name -> (what the client must see, (earliest, latest) close in seconds)
TLS_VARIANTS = {
    # Nothing restarts the timer during the handshake: cut at smtp_timeout.
    "truncated-then-silence": (b"", (1.5, 6)),
    "hello-dribbled": (b"", (1.5, 6)),
    # Refused at once. mbedTLS closes without an alert where it cannot even
    # parse a record; a parseable ClientHello below TLS 1.2 gets a fatal
    # protocol_version alert (21, version, 2 bytes: level 2, description 70).
    "plaintext-after-starttls": (b"", (0, 2)),
    "record-version-2.0": (b"", (0, 2)),
    "hello-offers-tls1.0-only": (b"\x15\x03\x01\x00\x02\x02\x46", (0, 2)),
    "hello-offers-ssl3-only": (b"\x15\x03\x00\x00\x02\x02\x46", (0, 2)),
    "record-length-65535": (b"", (0, 2)),
    "garbage-for-key-exchange": (b"", (0, 2)),
    # The client goes away; nothing to observe but the daemon's health.
    "close-mid-handshake": (b"\x16", (0, 0)),
    "reset-mid-handshake": (b"\x16", (0, 0)),
}


def test_broken_starttls_handshakes(tmp_path, tls_files):
    cert, key = tls_files
    n = len(TLS_VARIANTS)
    # Exactly enough slots per IP for the broken clients: if any of them
    # leaked its slot, the final check below would be refused.
    d = Mx2d(tmp_path, tls_cert=cert, tls_key=key, smtp_timeout="2s",
             max_connections_per_ip=n).start()
    try:
        hello = client_hello()
        ts, out = run_threads([lambda name=name: tls_variant(d.port, name, hello)
                               for name in TLS_VARIANTS])
        results = join_threads(ts, out)
        for name, got, at in results:
            want, (lo, hi) = TLS_VARIANTS[name]
            assert got == want, (name, got[:40])
            assert at is not None and lo <= at <= hi, (name, at)
        time.sleep(0.3)
        log = d.read_log()
        assert log.count("timeout after TLS") == 2, log
        assert log.count("TLS handshake failed") >= 6, log
        assert d.proc.poll() is None
        # Every slot came back: n simultaneous sessions are greeted, and one
        # of them completes a message over TLS.
        held = [Raw(d.port) for _ in range(n - 1)]
        for h in held:
            assert h.reply()[0] == 220
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
            c.starttls(context=ssl._create_unverified_context())
            assert c.sendmail("s@sender.test", ["alice@example.jp"],
                              "Subject: after\r\n\r\nx\r\n") == {}
        for h in held:
            h.close()
    finally:
        d.close()


def renegotiate(port, timeout=15):
    """openssl s_client: STARTTLS at TLS 1.2, EHLO, then "R" (renegotiate).
    Returns s_client's combined output (with -msg: every record it saw)."""
    p = subprocess.Popen(["openssl", "s_client", "-starttls", "smtp", "-tls1_2", "-crlf",
                          "-msg", "-connect", "127.0.0.1:%d" % port],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()

    def wait_for(text, limit=10, count=1):
        deadline = time.time() + limit
        while time.time() < deadline:
            if b"".join(list(lines)).count(text) >= count:
                return True
            time.sleep(0.05)
        return False

    try:
        assert wait_for(b"Verify return code"), b"".join(lines)
        p.stdin.write(b"EHLO reneg\n")
        p.stdin.flush()
        # s_client prints the last line of the EHLO reply it got before
        # STARTTLS; the second one is the reply to ours, over TLS.
        assert wait_for(b"250 SMTPUTF8", count=2), b"".join(lines)
        # "R" must arrive in a read of its own to be taken as a command.
        time.sleep(0.3)
        p.stdin.write(b"R\n")
        p.stdin.flush()
        wait_for(b"no renegotiation", 5)
        try:
            p.stdin.write(b"NOOP\n")
            p.stdin.flush()
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.wait(timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(5)
    return b"".join(lines).decode("utf-8", "replace")


def test_tls_renegotiation_is_refused(tmp_path, tls_files):
    # relay/tls.c disables renegotiation. What a client observes when it asks
    # (OpenSSL 3 s_client, TLS 1.2, "R"): its new ClientHello is answered by
    # a warning-level no_renegotiation alert (RFC 5246 7.2.2, code 100) and
    # nothing else -- no ServerHello, no new handshake. OpenSSL then aborts
    # the connection itself (error "no renegotiation", a fatal
    # handshake_failure alert to the server). mx2d keeps serving.
    cert, key = tls_files
    d = Mx2d(tmp_path, tls_cert=cert, tls_key=key).start()
    try:
        outs = [renegotiate(d.port) for _ in range(3)]
        for out in outs:
            assert "Protocol  : TLSv1.2" in out, out
            after = out.split("RENEGOTIATING", 1)
            assert len(after) == 2, out
            assert "Alert [length 0002], warning no_renegotiation" in after[1], after[1]
            assert "ServerHello" not in after[1], after[1]
            assert "no renegotiation" in after[1]
            # The NOOP written after "R" was never answered.
            assert "250 2.0.0" not in after[1], after[1]
        assert d.read_log().count("TLS established") == 3
        assert d.proc.poll() is None
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
            c.starttls(context=ssl._create_unverified_context())
            assert c.sendmail("s@sender.test", ["alice@example.jp"],
                              "Subject: after\r\n\r\nx\r\n") == {}
    finally:
        d.close()


# ---- NUL and 8-bit octets inside DATA ----
#
# The documented rules (relay/smtp_data.h): only line ends are special in
# DATA. NUL and 8-bit octets are content, kept and forwarded byte for byte,
# in the header section as in the body; a bare LF is a line end and a stray
# CR a space (bare_newline = "normalize"). The Message-ID goes to a log line,
# so there controls and 8-bit octets are shown as '?'.

BINARY_HEADERS = (b"From: a@sender.test\r\nTo: alice@example.jp\r\n"
                  b"Subject: caf\xc3\xa9 \xff\xfe\x00 nul\r\n"
                  b"X-Binary: \x00\x01\x1b[31m\x7f\x80\x9f\xa0\xff\r\n"
                  b"Message-ID: <id\x00\x1b[2J\xffend@evil.test>\r\n"
                  b"Rece\x00ived: from nowhere\r\n"
                  b"\r\n")


def binary_body():
    every = bytes(b for b in range(256) if b not in (10, 13))
    return (b"\x00\x00\x00\r\n" + every + b"\r\n" + every[::-1] * 20 + b"\r\n"
            b".\x00 a line that starts with a dot and a NUL\r\n" + b"\xff" * 3000 + b"\r\n")


def dot_stuff(data):
    return b"".join(b"." + l if l.startswith(b".") else l for l in data.splitlines(True))


def test_nul_and_8bit_in_data_headers_and_body_pass_through(tmp_path):
    from sink import Sink
    sink = Sink(lifetime=60).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % sink.port], retry_min="1s",
             probe_interval="1s", connect_timeout="2s").start()
    try:
        content = BINARY_HEADERS + binary_body()
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO bin")
        assert r.cmd("MAIL FROM:<s@sender.test> BODY=8BITMIME")[0] == 250
        assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(dot_stuff(content) + b".\r\n")
        code, text = r.reply()
        assert code == 250 and "queued as" in text, text
        assert r.cmd("QUIT")[0] == 221
        assert sink.wait_messages(1, 20), d.read_log()
        m = sink.messages[0]
        # mx2 prepends its Received: and changes nothing else.
        assert m.data.startswith(b"Received: ")
        assert m.data.endswith(content), m.data[-200:]
        assert m.data.count(b"\x00") == content.count(b"\x00")
        assert m.mail_params.get("BODY", "").upper() == "8BITMIME"
        assert sink.violations == [], sink.violations
        log = open(d.log, "rb").read()
        assert b"message-id=<id??[2J?end@evil.test>" in log, log[-2000:]
        assert b"\x00" not in log and b"\x1b" not in log and b"\xff" not in log
        assert d.proc.poll() is None
    finally:
        d.close()
        sink.stop()


def test_random_binary_garbage_as_a_message(tmp_path):
    # 64 KiB of seeded random octets (CR, LF, dots, NULs, 8-bit everywhere)
    # as headers and body: accepted, and what reaches the primary has only
    # CRLF line ends (the sink records any bare CR/LF as a violation), every
    # NUL and 8-bit octet of the input, and all of the message (no early end
    # of data). A second session then sends the same garbage as commands.
    import random
    from sink import Sink
    rnd = random.Random(7)
    alphabet = bytes(range(256)) + b"\r\n.\x00" * 16
    garbage = bytes(rnd.choice(alphabet) for _ in range(65536))
    garbage = garbage.replace(b"\r\n.\r\n", b"\r\n,\r\n")
    garbage += b"\r\nEND-OF-GARBAGE\r\n"
    sink = Sink(lifetime=60).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % sink.port], retry_min="1s",
             probe_interval="1s", connect_timeout="2s").start()
    try:
        r = Raw(d.port)
        r.reply()
        r.cmd("EHLO bin")
        assert r.cmd("MAIL FROM:<s@sender.test> BODY=8BITMIME")[0] == 250
        assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 250
        assert r.cmd("DATA")[0] == 354
        r.send(garbage + b".\r\n")
        code, text = r.reply()
        assert code == 250, text
        assert r.cmd("NOOP")[0] == 250          # still in sync
        assert sink.wait_messages(1, 20), d.read_log()
        m = sink.messages[0]
        assert m.data.endswith(b"\r\nEND-OF-GARBAGE\r\n")
        assert m.data.count(b"\x00") == garbage.count(b"\x00")
        high = sum(1 for b in garbage if b >= 0x80)
        assert sum(1 for b in m.data if b >= 0x80) == high
        assert sink.violations == [], sink.violations
        assert len(sink.transactions) == 1      # nothing smuggled
        # The same octets as commands: errors, then 421; never a crash.
        g = Raw(d.port)
        g.reply()
        g.send(garbage)
        assert g.closed(10)
        assert b"421 4.7.0" in g.buf, g.buf[-300:]
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as c:
            assert c.noop()[0] == 250
    finally:
        d.close()
        sink.stop()
