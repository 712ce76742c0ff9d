"""Shared helpers for the end-to-end tests: run the real mx2d on loopback.

Every daemon listens on 127.0.0.1 on a port chosen at run time, keeps its
spool, map and config under a temporary directory, and is stopped by PID
(SIGTERM, then SIGKILL if it hangs) when the test ends.
"""
import os
import signal
import socket
import subprocess
import time

ROOT = os.environ.get("MX2_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("MX2_BIN") or os.path.join(ROOT, "build", "bin")


def binpath(name):
    return os.path.join(BIN, name)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_map(path, entries, domain="example.jp"):
    """Compile a recipient map with the real mx2map from a plain list."""
    lst = path + ".list"
    with open(lst, "w") as f:
        f.write("\n".join(entries) + "\n")
    subprocess.run([binpath("mx2map"), "build", "-o", path, "--domain", domain, "--list", lst],
                   check=True, capture_output=True)


def conf_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[ " + ", ".join(conf_value(x) for x in v) + " ]"
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, conf_value(x)) for k, x in v.items()) + " }"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Mx2d:
    """One mx2d process with its own directory, config, map and spool."""

    def __init__(self, tmpdir, users=("alice", "bob", "carol"), **overrides):
        self.dir = str(tmpdir)
        self.port = free_port()
        self.map = os.path.join(self.dir, "recipients.mdb")
        self.spool = os.path.join(self.dir, "spool")
        self.conf = os.path.join(self.dir, "mx2.conf")
        self.log = os.path.join(self.dir, "mx2d.log")
        self.proc = None
        self.settings = {
            "hostname": "mx2.test",
            "listen": ["127.0.0.1:%d" % self.port],
            "relay_domains": ["example.jp"],
            "recipient_map": self.map,
            "primary": ["[127.0.0.1]:%d" % free_port()],
            "spool_dir": self.spool,
            # sun_path holds 108 bytes: pytest's temporary paths are too long.
            "control_socket": "/tmp/mx2-test-%d-%d.sock" % (os.getpid(), self.port),
            "http_listen": "",
            "smtp_timeout": "30s",
        }
        self.settings.update(overrides)
        if users is not None:
            build_map(self.map, list(users))
        self.write_conf()

    def write_conf(self):
        with open(self.conf, "w") as f:
            for k, v in self.settings.items():
                f.write("%s = %s;\n" % (k, conf_value(v)))

    def start(self, wait=True):
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([binpath("mx2d"), "-c", self.conf],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mx2d exited with %s:\n%s" % (self.proc.returncode,
                                                               self.read_log()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(100).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        # Wait for the server's close so this probe no longer
                        # counts against connection limits.
                        while s.recv(100):
                            pass
                        time.sleep(0.05)
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mx2d did not come up:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self):
        try:
            rc = self.stop()
        finally:
            if getattr(self, "logf", None):
                self.logf.close()
        # A daemon that crashed, or that a sanitizer stopped (ASan/UBSan/LSan
        # exit non-zero), fails the test even if the mail flowed.
        if rc not in (None, 0, -9):
            raise AssertionError("mx2d exited with %s:\n%s" % (rc, self.read_log()[-4000:]))

    def ctl(self, *args, check=False):
        return subprocess.run([binpath("mx2ctl"), "-c", self.conf] + list(args),
                              capture_output=True, text=True, check=check)


class Raw:
    """A raw SMTP client socket: exact bytes out, replies in."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def reply(self):
        """Read one (possibly multi-line) reply; returns (code, text)."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("connection closed; got %r" % (self.buf,))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True when the server has closed the connection (after any replies)."""
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()
