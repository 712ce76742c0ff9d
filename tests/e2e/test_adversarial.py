"""Adversarial clients (issue 7 item 3): dictionary attacks, enormous
lines inside DATA, floods beyond the connection limits. The daemon stays up,
keeps serving a well-behaved client, and its memory stays bounded."""
import smtplib
import socket
import threading
import time

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
