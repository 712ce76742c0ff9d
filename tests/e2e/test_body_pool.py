"""Large bodies: kept in the server-wide memory pool while it has room,
spilled to a temp file when it has not, and the switch in the middle of a
message (pool exhausted half-way: what memory held goes to the file first).
Every path must store the exact bytes: checked by delivering to a sink."""
import hashlib
import os
import smtplib
import subprocess
import threading

from harness import Mx2d, binpath, free_port
from sink import Sink

ALICE = "alice@example.jp"


def body(tag, size):
    line = ("%s " % tag) + "x" * 70 + "\r\n"
    text = "Subject: %s\r\n\r\n" % tag
    n = 0
    while len(text) < size:
        # Some lines start with a dot: dot-stuffing must survive the switch.
        text += ("." if n % 97 == 0 else "") + "%07d " % n + line
        n += 1
    return text


def start(tmp_path, pool, sink_port):
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % sink_port], retry_min="1s",
             retry_max="1s", probe_interval="1s", max_message_size=20 << 20)
    d.logf = open(d.log, "ab")
    env = dict(os.environ, MX2_BODY_POOL=str(pool), MX2_DEBUG="1")
    d.proc = subprocess.Popen([binpath("mx2d"), "-c", d.conf], stdout=d.logf,
                              stderr=subprocess.STDOUT, env=env)
    d.wait_ready()
    return d


def send_concurrently(port, bodies):
    errors = []

    def one(tag, b):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
                assert c.sendmail("%s@sender.test" % tag, [ALICE], b) == {}
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((tag, repr(e)))

    ts = [threading.Thread(target=one, args=(t, b)) for t, b in bodies.items()]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    assert errors == []


def check_delivered(sink, bodies, d):
    assert sink.wait_messages(len(bodies), 60), d.read_log()[-2000:]
    got = {m.mail_from.split("@")[0]: m.data for m in sink.messages}
    assert sorted(got) == sorted(bodies)
    for tag, b in bodies.items():
        data = got[tag]
        want = b.encode()
        # mx2 adds its Received: line in front; the rest is byte-identical.
        assert data.endswith(want), tag
        assert hashlib.sha256(data[len(data) - len(want):]).digest() == \
            hashlib.sha256(want).digest()


def run(tmp_path, pool, sizes, switches):
    sink = Sink()
    sink_port = free_port()
    d = start(tmp_path, pool, sink_port)
    try:
        bodies = {"m%d" % i: body("m%d" % i, s) for i, s in enumerate(sizes)}
        send_concurrently(d.port, bodies)
        assert os.listdir(os.path.join(d.spool, "tmp")) == []
        sink.port = sink_port
        sink.start()
        check_delivered(sink, bodies, d)
        n = d.read_log().count("body pool exhausted: spilling")
        assert switches(n), n
    finally:
        d.close()
        sink.stop()


def test_bodies_in_the_memory_pool(tmp_path):
    # The default pool (32 MiB) holds all of these at once.
    run(tmp_path, 32 << 20, [300_000, 1_100_000, 2_500_000, 60_000], lambda n: n == 0)


def test_bodies_spilled_without_a_pool(tmp_path):
    run(tmp_path, 0, [300_000, 1_100_000, 60_000], lambda n: n == 0)


def test_pool_exhausted_half_way_spills_what_memory_held(tmp_path):
    # 256 KiB shared by eight concurrent 400-900 KB messages: most start in
    # memory and must switch to a file part-way.
    run(tmp_path, 256 * 1024, [400_000 + 70_000 * i for i in range(8)], lambda n: n >= 1)
