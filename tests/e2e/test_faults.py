"""Fault injection on the delivery side (issue 7 item 2): a primary that
stalls, drops the connection in DATA, answers very slowly, or answers
garbage. mx2 must time out, retry, never lose the message, and deliver more
than once only in the documented window (a 250 that arrives after mx2 gave up)."""
import socket
import threading
import time

from harness import Mx2d, free_port
from sink import Sink

ALICE = "alice@example.jp"


def send(d, subject="fault"):
    import smtplib
    with smtplib.SMTP("127.0.0.1", d.port) as c:
        assert c.sendmail("s@sender.test", [ALICE], "Subject: %s\r\n\r\nbody\r\n" % subject) == {}


def queue_empty(d, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if d.ctl("queue").stdout.strip() == "Mail queue is empty":
            return True
        time.sleep(0.2)
    return False


def fast(**kw):
    base = dict(retry_min="1s", retry_max="2s", probe_interval="1s", connect_timeout="1s",
                smtp_timeout="2s")
    base.update(kw)
    return base


def test_primary_that_never_greets_times_out_then_delivers(tmp_path):
    sink = Sink(greeting_delay=30, io_timeout=40).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % sink.port], **fast()).start()
    try:
        send(d)
        deadline = time.time() + 10
        while time.time() < deadline and "timed out" not in d.read_log():
            time.sleep(0.2)
        assert "timed out" in d.read_log(), d.read_log()
        assert sink.messages == []
        sink.greeting_delay = 0
        assert sink.wait_messages(1, 15), d.read_log()
        assert queue_empty(d, 10)
        time.sleep(1.5)
        assert len(sink.messages) == 1
    finally:
        d.close()
        sink.stop()


def test_primary_dropping_in_data_gets_the_message_again(tmp_path):
    # First attempt: the primary ends DATA with 421 and hangs up (a crash
    # half-way); the message was not accepted, so it must come again.
    sink = Sink(data_reply=["421 4.3.0 going down", "250 2.0.0 Ok"]).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % sink.port], **fast()).start()
    try:
        send(d)
        assert sink.wait_messages(1, 15), d.read_log()
        assert len(sink.transactions) >= 2
        assert queue_empty(d, 10)
        time.sleep(1.5)
        assert len(sink.messages) == 1
    finally:
        d.close()
        sink.stop()


def test_slow_250_is_the_only_duplicate_window(tmp_path):
    # The primary takes longer than smtp_timeout to say 250: mx2 gives up,
    # defers and retries. The message may then arrive twice (the documented
    # reply-to-record window), never more, and the queue empties.
    state = {"n": 0}

    def slow_then_fast(sess):
        state["n"] += 1
        if state["n"] == 1:
            time.sleep(3.5)
        return "250 2.0.0 Ok"

    sink = Sink(data_reply=slow_then_fast).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % sink.port], **fast()).start()
    try:
        send(d)
        assert queue_empty(d, 20), d.read_log()
        time.sleep(1.5)
        assert 1 <= len(sink.messages) <= 2
        assert "timed out" in d.read_log()
    finally:
        d.close()
        sink.stop()


def test_primary_answering_garbage_defers_and_mx2_keeps_serving(tmp_path):
    port = free_port()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(16)
    lsock.settimeout(0.2)
    stop = threading.Event()
    seen = []

    def garbage():
        end = time.time() + 30
        while not stop.is_set() and time.time() < end:
            try:
                c, _ = lsock.accept()
            except socket.timeout:
                continue
            seen.append(1)
            try:
                c.sendall(b"HELLO THERE \x00\xff\r\n")
                time.sleep(0.2)
            finally:
                c.close()

    t = threading.Thread(target=garbage, daemon=True)
    t.start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % port], **fast()).start()
    try:
        send(d)
        deadline = time.time() + 10
        while time.time() < deadline and "malformed reply" not in d.read_log():
            time.sleep(0.2)
        assert "malformed reply" in d.read_log(), d.read_log()
        assert seen
        q = d.ctl("queue", "--json").stdout
        assert ALICE in q
        send(d, "still serving")
        assert d.proc.poll() is None
    finally:
        stop.set()
        t.join(timeout=5)
        lsock.close()
        d.close()
