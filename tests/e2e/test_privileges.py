"""mx2d without root: an unprivileged user holding only CAP_NET_BIND_SERVICE
(what the systemd unit's AmbientCapabilities= gives) binds a port below 1024,
accepts mail and writes its spool."""
import os
import pwd
import random
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from harness import Mx2d, binpath


def privileged_free_port():
    for _ in range(50):
        port = random.randint(600, 1000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below 1024")


def test_unprivileged_with_net_bind_service():
    assert os.geteuid() == 0, "this suite runs as root (see README)"
    # pytest's own temporary directories are root-only (0700): use one nobody can enter.
    tmp_path = tempfile.mkdtemp(prefix="mx2-cap-")
    try:
        run_unprivileged(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def run_unprivileged(tmp_path):
    assert shutil.which("setpriv"), "setpriv (util-linux) is required"
    nobody = pwd.getpwnam("nobody")
    port = privileged_free_port()
    d = Mx2d(tmp_path, listen=["127.0.0.1:%d" % port])
    d.port = port
    for root, dirs, files in os.walk(str(tmp_path)):
        for n in dirs + files:
            os.chown(os.path.join(root, n), nobody.pw_uid, nobody.pw_gid)
    os.chown(str(tmp_path), nobody.pw_uid, nobody.pw_gid)
    os.chmod(str(tmp_path), 0o755)
    d.logf = open(d.log, "ab")
    d.proc = subprocess.Popen(
        ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid, "--clear-groups",
         "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
         "--bounding-set=-all,+net_bind_service", binpath("mx2d"), "-c", d.conf],
        stdout=d.logf, stderr=subprocess.STDOUT)
    try:
        d.wait_ready()
        status = open("/proc/%d/status" % d.proc.pid).read()
        uid_line = [l for l in status.splitlines() if l.startswith("Uid:")][0]
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4, uid_line
        with smtplib.SMTP("127.0.0.1", port) as c:
            assert c.sendmail("s@sender.test", ["alice@example.jp"], "Subject: cap\r\n\r\nx\r\n") == {}
        q = d.ctl("queue", "--json")
        assert q.returncode == 0 and len(q.stdout.splitlines()) == 1, q.stdout + q.stderr
    finally:
        d.close()
    assert d.proc.returncode == 0, d.read_log()
