"""Durability: a message answered 250 survives kill -9 at any instant.

Several clients send messages while the test kill -9's mx2d at random
instants and restarts it. Afterwards every message that was answered 250 is
in the queue, intact (its payload checksum matches), exactly once; and no
message appears that was not acknowledged, unless its end-of-data had been
sent and the daemon died before replying (the unavoidable SMTP window).
"""
import hashlib
import json
import random
import re
import socket
import threading
import time

from harness import Mx2d


def send_one(port, token, payload):
    """One transaction on a raw socket. Returns 'acked', 'inflight' (the
    terminator was sent, no reply came) or 'failed' (died earlier)."""
    try:
        # Refused while mx2d restarts: a failed attempt, and the client
        # thread goes on (it used to die here, leaving less load).
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return "failed", None
    f = s.makefile("rb")
    stage = "failed"
    try:
        def expect(prefix):
            while True:
                line = f.readline()
                if not line:
                    raise EOFError
                if line[3:4] != b"-":
                    if not line.startswith(prefix):
                        raise EOFError
                    return line
        expect(b"220")
        s.sendall(b"EHLO durable.test\r\n")
        expect(b"250")
        s.sendall(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@example.jp>\r\nDATA\r\n")
        expect(b"250")
        expect(b"250")
        expect(b"354")
        digest = hashlib.sha256(payload).hexdigest()
        msg = (b"Subject: %s\r\nX-Check: %s\r\n\r\nBEGIN\r\n" % (token.encode(), digest.encode())
               + payload + b"END\r\n.\r\n")
        s.sendall(msg)
        stage = "inflight"
        line = expect(b"250")
        return "acked", line
    except (OSError, EOFError):
        return stage, None
    finally:
        s.close()


def test_kill9_loses_nothing_acknowledged(tmp_path):
    d = Mx2d(tmp_path, max_connections_per_ip=100)
    d.start()
    acked, inflight = set(), set()
    lock = threading.Lock()
    stop = threading.Event()
    counter = [0]
    rnd = random.Random(1234)

    def client(n):
        r = random.Random(n)
        while not stop.is_set():
            with lock:
                counter[0] += 1
                token = "tok-%d-%d" % (n, counter[0])
            size = r.choice([100, 2000, 30000, 120000])
            payload = b"".join(b"%d %s\r\n" % (i, token.encode()) for i in range(size // 30))
            state, _ = send_one(d.port, token, payload)
            with lock:
                if state == "acked":
                    acked.add(token)
                elif state == "inflight":
                    inflight.add(token)
            if state != "acked":
                time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            time.sleep(rnd.uniform(0.3, 1.2))
            d.kill9()
            d.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        d.stop()

    r = d.ctl("queue", "--json")
    assert r.returncode == 0, r.stderr
    entries = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    seen = {}
    for e in entries:
        shown = d.ctl("show", e["id"]).stdout.replace("\r", "")
        m = re.search(r"^Subject: (tok-\S+)$", shown, re.M)
        assert m, shown[:500]
        token = m.group(1)
        seen[token] = seen.get(token, 0) + 1
        check = re.search(r"^X-Check: ([0-9a-f]{64})$", shown, re.M).group(1)
        body = shown.split("\nBEGIN\n", 1)[1].split("END\n", 1)[0]
        payload = body.replace("\n", "\r\n").encode()
        assert hashlib.sha256(payload).hexdigest() == check, "message %s damaged" % e["id"]
    assert len(acked) > 20, "too few messages got through to test anything"
    missing = acked - set(seen)
    assert not missing, "acknowledged but lost: %s" % sorted(missing)[:10]
    dups = [t for t, n in seen.items() if n > 1]
    assert not dups, "queued more than once: %s" % dups[:10]
    unexpected = set(seen) - acked - inflight
    assert not unexpected, "visible but never acknowledged nor in flight: %s" % sorted(unexpected)


def test_kill9_before_the_journal_checkpoint(tmp_path):
    """Small messages are durable in the spool's journal at their 250 and
    move into the queue database at a checkpoint (every write the flusher
    makes, or 200 ms). kill -9 right after the 250s, while the primary is
    stalled (it accepts and never greets, so no delivery result is written):
    mx2ctl, with mx2d down, lists them from the journal; the next start moves
    them into the database, each once, intact."""
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(16)  # never accepted: the TCP handshake completes, no greeting
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % stalled.getsockname()[1]])
    try:
        d.start()
        tokens = []
        payloads = {}
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"EHLO j.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
            for i in range(5):
                token = "jtok-%d" % i
                payload = b"".join(b"%d %s\r\n" % (k, token.encode()) for k in range(60 + i))
                digest = hashlib.sha256(payload).hexdigest()
                s.sendall(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@example.jp>\r\nDATA\r\n")
                assert f.readline().startswith(b"250")
                assert f.readline().startswith(b"250")
                assert f.readline().startswith(b"354")
                s.sendall(b"Subject: %s\r\nX-Check: %s\r\n\r\nBEGIN\r\n" % (token.encode(),
                          digest.encode()) + payload + b"END\r\n.\r\n")
                line = f.readline()
                assert line.startswith(b"250"), line
                tokens.append(token)
                payloads[token] = digest
            d.kill9()
        down = d.ctl("queue", "--json")
        assert down.returncode == 0, down.stderr
        assert len([l for l in down.stdout.splitlines() if l.strip()]) == 5, down.stdout
        d.start()
        m = re.findall(r"journal of \d+ KiB; (\d+) acknowledged messages moved", d.read_log())
        assert m and 1 <= int(m[-1]) <= 5, d.read_log()[-2000:]
        r = d.ctl("queue", "--json")
        entries = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        seen = []
        for e in entries:
            shown = d.ctl("show", e["id"]).stdout.replace("\r", "")
            token = re.search(r"^Subject: (jtok-\S+)$", shown, re.M).group(1)
            body = shown.split("\nBEGIN\n", 1)[1].split("END\n", 1)[0]
            assert hashlib.sha256(body.replace("\n", "\r\n").encode()).hexdigest() == payloads[token]
            seen.append(token)
        assert sorted(seen) == sorted(tokens)
    finally:
        d.close()
        stalled.close()
