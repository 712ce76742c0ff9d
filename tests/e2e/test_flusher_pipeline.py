"""The flusher pipelines the next message behind the previous one's end of
data (RFC 2920 3.1: message content may be the first command of a group),
and every outcome stays per message: a refused "." does not touch the next
transaction, and a connection lost with two messages in flight defers both
(neither is lost, neither is counted delivered)."""
import re
import socket
import threading
import time

from harness import Mx2d, free_port
from sink import Sink

ALICE = "alice@example.jp"


class ScriptedPrimary:
    """A one-connection-at-a-time SMTP server that records, for every end of
    data, whether the next MAIL FROM had already arrived before it answered
    (it waits `hold` seconds before each end-of-data reply to give the client
    the chance). dot_replies: replies for successive ends of data (the last
    one repeats); None closes the connection instead of answering."""

    def __init__(self, dot_replies=("250 2.0.0 Ok",), hold=0.3, lifetime=60, xforward=None):
        self.dot_replies = list(dot_replies)
        self.hold = hold
        self.xforward = xforward      # None: not offered; else the reply to XFORWARD
        self.xforwards = []           # XFORWARD lines received
        self.mail_with_xforward = []  # per XFORWARD: its MAIL already there before the reply?
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(0.5)
        self.port = self.lsock.getsockname()[1]
        self.messages = []          # (mail_from, data) accepted
        self.mail_before_reply = []  # per end of data: next MAIL already there?
        self.ndots = 0
        self.deadline = time.time() + lifetime
        self.stop_flag = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_flag = True
        self.thread.join(5)
        self.lsock.close()

    def serve(self):
        while not self.stop_flag and time.time() < self.deadline:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            try:
                self.session(s)
            except OSError:
                pass
            finally:
                s.close()

    def session(self, s):
        s.settimeout(10)
        buf = b""

        def line():
            nonlocal buf
            while b"\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("eof")
                buf += chunk
            ln, buf = buf.split(b"\r\n", 1)
            return ln

        s.sendall(b"220 primary.test ESMTP\r\n")
        mail_from, rcpts = None, 0
        while True:
            ln = line()
            verb = ln[:4].upper()
            if verb == b"EHLO":
                xf = b"250-XFORWARD NAME ADDR PROTO HELO\r\n" if self.xforward else b""
                s.sendall(b"250-primary.test\r\n250-PIPELINING\r\n" + xf + b"250 8BITMIME\r\n")
            elif verb == b"XFOR" and self.xforward:
                self.xforwards.append(ln.decode())
                time.sleep(0.1)
                s.setblocking(False)
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                except BlockingIOError:
                    pass
                s.settimeout(10)
                self.mail_with_xforward.append(buf.upper().startswith(b"MAIL FROM:"))
                s.sendall(self.xforward.encode() + b"\r\n")
            elif verb == b"MAIL":
                mail_from = ln.split(b"<", 1)[1].split(b">", 1)[0].decode()
                rcpts = 0
                s.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpts += 1
                s.sendall(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                s.sendall(b"354 go ahead\r\n")
                data = []
                while True:
                    d = line()
                    if d == b".":
                        break
                    data.append(d)
                time.sleep(self.hold)
                # What the client sent meanwhile, without waiting for more.
                s.setblocking(False)
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                except BlockingIOError:
                    pass
                s.settimeout(10)
                self.mail_before_reply.append(buf.upper().startswith((b"MAIL FROM:", b"XFORWARD ")))
                reply = self.dot_replies[min(self.ndots, len(self.dot_replies) - 1)]
                self.ndots += 1
                if reply is None:
                    return  # drop the connection with the reply owed
                if reply.startswith("250"):
                    self.messages.append((mail_from, b"\r\n".join(data)))
                s.sendall(reply.encode() + b"\r\n")
            elif verb == b"RSET":
                s.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                s.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                s.sendall(b"502 5.5.1 what\r\n")


def queue_three(tmp_path, **kw):
    """Three messages queued while the primary is down (nothing listens)."""
    down = free_port()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % down], primary_concurrency=1,
             retry_min="1s", retry_max="1s", probe_interval="1s", connect_timeout="1s",
             **kw).start()
    import smtplib
    for i in range(3):
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.sendmail("s%d@sender.test" % i, [ALICE],
                              "Subject: p%d\r\n\r\nbody %d\r\n" % (i, i)) == {}
    d.stop()
    d.logf.close()
    return d


def deliver_to(d, primary):
    d.settings["primary"] = ["[127.0.0.1]:%d" % primary.port]
    d.write_conf()
    d.start()


def wait(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_next_mail_is_pipelined_behind_end_of_data(tmp_path):
    d = queue_three(tmp_path)
    p = ScriptedPrimary()
    try:
        deliver_to(d, p)
        assert wait(lambda: len(p.messages) == 3, 20), d.read_log()[-2000:]
        assert sorted(m for m, _ in p.messages) == ["s0@sender.test", "s1@sender.test",
                                                    "s2@sender.test"]
        # One connection: the first two ends of data had the next MAIL
        # behind them; the last had nothing more to send.
        assert p.mail_before_reply[:2] == [True, True], p.mail_before_reply
        assert p.mail_before_reply[2] is False
        assert wait(lambda: "Mail queue is empty" in d.ctl("queue").stdout, 10)
    finally:
        d.close()
        p.stop()


def test_refused_end_of_data_leaves_the_pipelined_next_alone(tmp_path):
    d = queue_three(tmp_path, bounce_relay="[127.0.0.1]:%d" % free_port())
    p = ScriptedPrimary(dot_replies=["250 2.0.0 Ok", "554 5.6.0 no thanks", "250 2.0.0 Ok"])
    try:
        deliver_to(d, p)
        assert wait(lambda: p.ndots >= 3, 20), d.read_log()[-2000:]
        time.sleep(0.5)
        assert sorted(m for m, _ in p.messages) == ["s0@sender.test", "s2@sender.test"]
        log = d.read_log()
        assert "status=bounced (554 5.6.0 no thanks)" in log, log[-2000:]
        assert log.count("status=sent") == 2, log[-2000:]
        assert p.mail_before_reply[1] is True  # s2 was already behind s1's "."
    finally:
        d.close()
        p.stop()


def test_connection_lost_with_two_in_flight_defers_both(tmp_path):
    d = queue_three(tmp_path)
    # The first end of data is never answered: the server hangs up while the
    # second message's MAIL/RCPT/DATA are already behind it. Both must come
    # again (the first is the documented duplicate window: sent, unanswered).
    p = ScriptedPrimary(dot_replies=[None, "250 2.0.0 Ok"])
    try:
        deliver_to(d, p)
        assert wait(lambda: len({m for m, _ in p.messages}) == 3, 30), d.read_log()[-3000:]
        time.sleep(1)
        got = [m for m, _ in p.messages]
        assert sorted(got) == ["s0@sender.test", "s1@sender.test", "s2@sender.test"], got
        assert p.mail_before_reply[0] is True
        log = d.read_log()
        assert log.count("status=deferred (lost connection with") == 2, log[-3000:]
        assert wait(lambda: "Mail queue is empty" in d.ctl("queue").stdout, 10)
    finally:
        d.close()
        p.stop()


def test_xforward_is_pipelined_with_mail_and_behind_the_end_of_data(tmp_path):
    # Postfix's client pipelines XFORWARD with MAIL; so does ours: XFORWARD,
    # MAIL, RCPT and DATA go in one write, and the next message's XFORWARD
    # follows the previous end of data without waiting for its reply.
    d = queue_three(tmp_path)
    p = ScriptedPrimary(hold=0.3, xforward="250 2.0.0 Ok")
    try:
        deliver_to(d, p)
        assert wait(lambda: len(p.messages) == 3, 30), d.read_log()[-3000:]
        assert sorted(m for m, _ in p.messages) == ["s0@sender.test", "s1@sender.test",
                                                   "s2@sender.test"]
        assert len(p.xforwards) == 3, p.xforwards
        assert all("ADDR=127.0.0.1" in x for x in p.xforwards), p.xforwards
        assert p.mail_with_xforward == [True, True, True]
        assert p.mail_before_reply[:2] == [True, True], p.mail_before_reply
        assert wait(lambda: "Mail queue is empty" in d.ctl("queue").stdout, 10)
    finally:
        d.close()
        p.stop()


def test_a_refused_pipelined_xforward_does_not_fail_the_delivery(tmp_path):
    d = queue_three(tmp_path)
    p = ScriptedPrimary(hold=0.05, xforward="550 5.7.1 XFORWARD not for you")
    try:
        deliver_to(d, p)
        assert wait(lambda: len(p.messages) == 3, 30), d.read_log()[-3000:]
        assert len(p.xforwards) == 3
        assert wait(lambda: "Mail queue is empty" in d.ctl("queue").stdout, 10)
        assert d.read_log().count("status=sent") == 3
    finally:
        d.close()
        p.stop()


def test_a_421_to_a_pipelined_xforward_defers_with_the_servers_words(tmp_path):
    d = queue_three(tmp_path)
    p = ScriptedPrimary(hold=0.05, xforward="421 4.3.2 Service shutting down")
    try:
        deliver_to(d, p)
        assert wait(lambda: "(in reply to XFORWARD)" in d.read_log(), 20), d.read_log()[-3000:]
        log = d.read_log()
        assert re.search(r"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: "
                         r"421 4\.3\.2 Service shutting down \(in reply to XFORWARD\)\)", log), \
            log[-3000:]
        assert p.messages == []
    finally:
        d.close()
        p.stop()


def test_xforward_across_messages_keeps_the_sink_in_step(tmp_path):
    # The protocol-checking sink: XFORWARD never lands inside a transaction,
    # every message arrives with its own client attributes.
    d = queue_three(tmp_path)
    s = Sink(xforward=True).start()
    try:
        deliver_to(d, s)
        assert s.wait_messages(3, 20), d.read_log()[-2000:]
        assert s.violations == []
        assert all(sess.xforward for sess in s.sessions if sess.commands)
    finally:
        d.close()
        s.stop()
