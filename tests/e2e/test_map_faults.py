"""The recipient map going bad (issue 7 item 2): a garbage map at start is
451 (never 550); a good map appearing is picked up; a garbage file replacing
a good map never takes it away."""
import os
import time

from harness import Mx2d, Raw, build_map


def rcpt(d, addr="alice@example.jp"):
    r = Raw(d.port)
    r.reply()
    r.cmd("EHLO c")
    r.cmd("MAIL FROM:<s@sender.test>")
    code, text = r.cmd("RCPT TO:<%s>" % addr)
    r.close()
    return code, text


def write_garbage(path):
    tmp = path + ".garbage"
    with open(tmp, "wb") as f:
        f.write(os.urandom(8192))
    os.rename(tmp, path)


def test_garbage_map_is_451_then_recovers(tmp_path):
    d = Mx2d(tmp_path, users=None)
    write_garbage(d.map)
    d.start()
    try:
        code, text = rcpt(d)
        assert code == 451 and "4.3.0" in text, text
        assert rcpt(d, "nobody@example.jp")[0] == 451      # not 550: the map cannot say
        build_map(d.map, ["alice"])
        deadline = time.time() + 10
        while time.time() < deadline and rcpt(d)[0] != 250:
            time.sleep(0.3)
        assert rcpt(d)[0] == 250
        assert rcpt(d, "nobody@example.jp")[0] == 550
    finally:
        d.close()


def test_garbage_replacing_a_good_map_keeps_the_good_one(tmp_path):
    d = Mx2d(tmp_path).start()
    try:
        assert rcpt(d)[0] == 250
        write_garbage(d.map)
        deadline = time.time() + 10
        while time.time() < deadline and "the new file is unusable" not in d.read_log():
            time.sleep(0.3)
        assert "the new file is unusable" in d.read_log()
        assert rcpt(d)[0] == 250
        assert rcpt(d, "nobody@example.jp")[0] == 550
        build_map(d.map, ["alice", "zed"])
        deadline = time.time() + 10
        while time.time() < deadline and rcpt(d, "zed@example.jp")[0] != 250:
            time.sleep(0.3)
        assert rcpt(d, "zed@example.jp")[0] == 250
    finally:
        d.close()
