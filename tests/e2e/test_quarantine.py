"""A damaged queue at startup (issue 7 item 2): one bad record is moved to
<spool>/quarantine/ with a log line and the rest of the queue is delivered; a
data.mdb cut short or with a page that does not parse is moved aside whole,
what it still holds is salvaged into a new queue, and mx2d keeps serving. No
crash (LMDB would SIGBUS on a short file), no mail delivered damaged."""
import glob
import os
import re
import smtplib
import subprocess
import time

from harness import Mx2d, binpath
from sink import Sink

ALICE = "alice@example.jp"
PAGE = 4096


def body_for(i):
    return "Subject: q%d\r\n\r\n" % i + ("line %d\r\n" % i) * (i % 7 * 40) + "end\r\n"


def queue_mail(tmp_path, n):
    """n messages queued while the primary is down; mx2d stopped after."""
    d = Mx2d(tmp_path, retry_min="1s", retry_max="2s", probe_interval="1s").start()
    try:
        for i in range(n):
            with smtplib.SMTP("127.0.0.1", d.port) as c:
                # The sender appears in the envelope record only (not in the
                # body), so a test can find that record's bytes in data.mdb.
                assert c.sendmail("q%04d@sender.test" % i, [ALICE], body_for(i)) == {}
    finally:
        d.close()
    return d


def restart_with_sink(d, sink):
    d.settings["primary"] = ["[127.0.0.1]:%d" % sink.port]
    d.write_conf()
    d.start()


def delivered_indexes(sink):
    out = []
    for m in list(sink.messages):
        data = m.data.decode("latin-1")
        i = int(re.search(r"Subject: q(\d+)", data).group(1))
        assert body_for(i).split("\r\n\r\n", 1)[1] in data, "message %d delivered damaged" % i
        out.append(i)
    return out


def data_mdb(d):
    return os.path.join(d.spool, "queue", "data.mdb")


def test_corrupt_record_is_quarantined_and_the_rest_delivered(tmp_path):
    d = queue_mail(tmp_path, 6)
    path = data_mdb(d)
    with open(path, "r+b") as f:
        raw = f.read()
        # Every copy of the record (old page versions too) gets the flip.
        for m in re.finditer(rb"q0003@sender\.test", raw):
            f.seek(m.start())
            f.write(b"Q")
    sink = Sink().start()
    try:
        restart_with_sink(d, sink)
        log = d.read_log()
        line = [ln for ln in log.splitlines() if "quarantined:" in ln]
        assert len(line) == 1 and "checksum" in line[0], log[-2000:]
        qid = re.search(r"([0-9A-V]{13}): quarantined:", line[0]).group(1)
        qdir = os.path.join(d.spool, "quarantine")
        assert os.path.exists(os.path.join(qdir, qid + ".env"))
        with open(os.path.join(qdir, qid + ".body"), "rb") as f:
            stored = f.read()  # mx2's Received: line, then the message
        assert stored.startswith(b"Received: ") and stored.endswith(body_for(3).encode())
        assert sink.wait_messages(5, 20), d.read_log()[-2000:]
        time.sleep(1)
        assert sorted(delivered_indexes(sink)) == [0, 1, 2, 4, 5]
        r = d.ctl("queue")
        assert r.stdout.strip() == "Mail queue is empty"  # stdout format unchanged
        assert "2 items in %s" % qdir in r.stderr, r.stderr  # .env and .body
    finally:
        d.close()
        sink.stop()
    # A second start finds nothing more to quarantine.
    assert d.read_log().count("quarantined:") == 1


def test_truncated_spool_is_set_aside_and_mx2_keeps_serving(tmp_path):
    d = queue_mail(tmp_path, 20)
    path = data_mdb(d)
    size = os.path.getsize(path)
    os.truncate(path, size // 2)
    with open(path, "rb") as f:
        damaged = f.read()
    # mx2ctl reading it (daemon stopped) fails cleanly instead of SIGBUS.
    r = d.ctl("queue")
    assert r.returncode not in (0,) and r.returncode > 0, (r.returncode, r.stderr)
    assert "corrupt" in r.stderr.lower(), r.stderr
    sink = Sink().start()
    try:
        restart_with_sink(d, sink)
        log = d.read_log()
        assert "queue database damaged" in log, log[-2000:]
        aside = glob.glob(os.path.join(d.spool, "quarantine", "queue.*"))
        assert len(aside) == 1
        with open(os.path.join(aside[0], "data.mdb"), "rb") as f:
            assert f.read() == damaged  # kept byte for byte for the operator
        m = re.search(r"salvaged (\d+) messages", log)
        assert m, log[-2000:]
        salvaged = int(m.group(1))
        # New mail is accepted and delivered; whatever was salvaged too.
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.sendmail("new@sender.test", [ALICE], body_for(999)) == {}
        assert sink.wait_messages(salvaged + 1, 20), d.read_log()[-2000:]
        got = delivered_indexes(sink)
        assert 999 in got and len(got) == len(set(got)) == salvaged + 1
    finally:
        d.close()
        sink.stop()


def test_page_that_does_not_parse_is_salvaged_around(tmp_path):
    n = 300
    d = queue_mail(tmp_path, n)
    path = data_mdb(d)
    with open(path, "r+b") as f:
        raw = f.read()
        # The live leaf of the env database that holds that record: only
        # that page. (Wiping every page where the bytes occur also hit stale
        # copies in the unused gap of branch pages, breaking both walks'
        # paths: a layout-dependent test.)
        def holds(p):  # in the nodes, [upper, end), not in the free gap
            page = raw[p * PAGE:(p + 1) * PAGE]
            upper = int.from_bytes(page[14:16], "little")
            return b"q0150@sender.test" in page[upper:]
        pages = [p for p in env_leaf_pages(raw) if holds(p)]
        assert len(pages) == 1, pages
        f.seek(pages[0] * PAGE)
        f.write(b"\xff" * 16)
    sink = Sink().start()
    try:
        restart_with_sink(d, sink)
        log = d.read_log()
        m = re.search(r"salvaged (\d+) messages \((\d+) records refused", log)
        assert m and "queue database damaged" in log, log[-3000:]
        salvaged = int(m.group(1))
        # Both sides of the damaged leaf come back: at least the first and
        # the last messages, and most of the queue.
        assert salvaged >= n // 2, log[-3000:]
        assert sink.wait_messages(salvaged, 30), d.read_log()[-2000:]
        time.sleep(1)
        got = delivered_indexes(sink)
        assert len(got) == len(set(got)) == salvaged
        assert 0 in got and n - 1 in got and 150 not in got
    finally:
        d.close()
        sink.stop()


def test_mx2ctl_never_crashes_on_a_truncated_spool(tmp_path):
    d = queue_mail(tmp_path, 10)
    path = data_mdb(d)
    size = os.path.getsize(path)
    for cut in (size - PAGE, size // 2, 3 * PAGE, 100, 0):
        os.truncate(path, cut)
        for args in (["queue"], ["queue", "--json"], ["stats"]):
            r = subprocess.run([binpath("mx2ctl"), "-c", d.conf] + args, capture_output=True,
                               text=True, timeout=20)
            assert r.returncode >= 0, (cut, args, r.returncode)  # not killed by a signal


def env_leaf_pages(raw):
    """The leaf pages of the env database's live tree (LMDB: a branch
    node's child page number is in mn_lo, mn_hi and mn_flags)."""
    leaves, todo = [], [lmdb_named_db_root(raw, b"env")]
    while todo:
        p = todo.pop()
        page = raw[p * PAGE:(p + 1) * PAGE]
        flags = int.from_bytes(page[10:12], "little")
        lower = int.from_bytes(page[12:14], "little")
        if flags & 0x02:  # P_LEAF
            leaves.append(p)
            continue
        assert flags & 0x01, "page %d is neither branch nor leaf" % p
        for i in range((lower - 16) // 2):
            node = int.from_bytes(page[16 + 2 * i:18 + 2 * i], "little")
            lo, hi, fl = (int.from_bytes(page[node + k:node + k + 2], "little") for k in (0, 2, 4))
            todo.append(lo | hi << 16 | fl << 32)
    return leaves


def lmdb_named_db_root(raw, name):
    """The root page of the named database `name` in an LMDB file's bytes:
    the newer meta page (0 or 1) gives the main database's root, a leaf
    whose node `name` holds that database's MDB_db record."""
    metas = []
    for p in (0, 1):
        off = p * PAGE + 16
        txnid = int.from_bytes(raw[off + 128:off + 136], "little")
        main_root = int.from_bytes(raw[off + 112:off + 120], "little")
        metas.append((txnid, main_root))
    main_root = max(metas)[1]
    page = raw[main_root * PAGE:(main_root + 1) * PAGE]
    lower = int.from_bytes(page[12:14], "little")
    for i in range((lower - 16) // 2):
        node = int.from_bytes(page[16 + 2 * i:18 + 2 * i], "little")
        ksize = int.from_bytes(page[node + 6:node + 8], "little")
        if page[node + 8:node + 8 + ksize] == name:
            db = page[node + 8 + ksize:node + 8 + ksize + 48]
            return int.from_bytes(db[40:48], "little")
    raise AssertionError("no database %r in the main root page %d" % (name, main_root))


def test_damaged_page_read_at_open_is_salvaged_not_a_crash(tmp_path):
    # The start itself reads the meta database (format version, journal
    # generation) and walks the others: a damaged page there used to kill
    # mx2d (SIGBUS in LMDB) at every start. Now a child process reads the
    # spool first; its death means "damaged": set aside, salvage, serve.
    n = 40
    d = queue_mail(tmp_path, n)
    path = data_mdb(d)
    with open(path, "r+b") as f:
        raw = f.read()
        root = lmdb_named_db_root(raw, b"meta")
        f.seek(root * PAGE)
        f.write(b"\xff" * 16)
    sink = Sink().start()
    try:
        restart_with_sink(d, sink)
        log = d.read_log()
        assert "queue database damaged" in log, log[-3000:]
        m = re.search(r"salvaged (\d+) messages", log)
        assert m and int(m.group(1)) == n, log[-3000:]
        assert sink.wait_messages(n, 30), d.read_log()[-2000:]
        time.sleep(1)
        got = delivered_indexes(sink)
        assert sorted(got) == list(range(n)), got
        with smtplib.SMTP("127.0.0.1", d.port) as c:
            assert c.sendmail("new@sender.test", [ALICE], body_for(999)) == {}
        assert sink.wait_messages(n + 1, 20), d.read_log()[-2000:]
    finally:
        d.close()
        sink.stop()
