"""mx2d's command line: -t, --version, -h, bad usage; and the README's demo."""
import os
import signal
import smtplib
import socket
import subprocess
import time

from harness import Mx2d, ROOT, binpath, free_port


def run(*args):
    return subprocess.run([binpath("mx2d")] + list(args), capture_output=True, text=True,
                          timeout=30)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("mx2d ")
    r = run("-h")
    assert r.returncode == 0 and "usage: mx2d" in r.stdout


def test_usage_error_exits_2_with_one_line():
    # SPEC: errors go to stderr as one line that names the problem.
    for args, names in [(["--no-such-option"], "unknown option '--no-such-option'"),
                        (["-x"], "unknown option '-x'"),
                        (["-c"], "option -c needs an argument"),
                        (["extra-argument"], "unexpected argument 'extra-argument'")]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("mx2d: ") and names in lines[0], \
            (args, r.stderr)


def test_check_good_config(tmp_path):
    d = Mx2d(tmp_path)
    r = run("-t", "-c", d.conf)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


def test_check_reports_every_problem_with_lines(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text('hostname = "mx2.test";\n'
                    'no_such_key = 1;\n'
                    'smtp_timeout = "5 weeks";\n'
                    'max_recipients = -3;\n'
                    'primary = [ "[127.0.0.1]:99999" ];\n')
    r = run("-t", "-c", str(conf))
    assert r.returncode == 2
    err = r.stderr
    assert "bad.conf:2" in err and "no_such_key" in err
    assert "bad.conf:3" in err and "smtp_timeout" in err
    assert "bad.conf:4" in err and "max_recipients" in err
    assert "bad.conf:5" in err and "primary" in err


def test_check_reports_config_errors_and_a_missing_map_together(tmp_path):
    # "prints every problem found": a refused key does not hide the map.
    d = Mx2d(tmp_path, users=None)
    text = open(d.conf).read()
    conf = tmp_path / "both.conf"
    conf.write_text(text + '\nno_such_key = 1;\n')
    r = run("-t", "-c", str(conf))
    assert r.returncode == 2
    assert "no_such_key" in r.stderr and "recipient_map" in r.stderr, r.stderr
    assert all(line.startswith("mx2d: ") for line in r.stderr.splitlines()), r.stderr
    # A refused recipient_map is reported once, as refused: its default
    # path is not tried in its place.
    conf.write_text(text.replace("recipient_map", "#recipient_map") +
                    '\nrecipient_map = 5;\nno_such_key = 1;\n')
    r = run("-t", "-c", str(conf))
    assert r.returncode == 2
    assert "no_such_key" in r.stderr and r.stderr.count("recipient_map") == 1, r.stderr


def test_check_fails_when_map_does_not_open(tmp_path):
    d = Mx2d(tmp_path, users=None)
    r = run("-t", "-c", d.conf)
    assert r.returncode == 2
    assert "recipient_map" in r.stderr


def test_missing_config_file(tmp_path):
    r = run("-t", "-c", str(tmp_path / "nope.conf"))
    assert r.returncode == 2 and "nope.conf" in r.stderr


def test_demo_quick_start(tmp_path):
    """The README's first command, with the build step skipped (MX2_BIN set)."""
    port, pport = free_port(), free_port()
    env = dict(os.environ, MX2_BIN=os.path.dirname(binpath("mx2d")),
               MX2_DEMO_DIR=str(tmp_path / "demo"), MX2_DEMO_PORT=str(port),
               MX2_DEMO_PRIMARY_PORT=str(pport))
    p = subprocess.Popen(["bash", os.path.join(ROOT, "etc", "demo", "run")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as c:
                    assert c.sendmail("you@sender.test", ["alice@example.jp"],
                                      "Subject: demo\r\n\r\nhi\r\n") == {}
                break
            except (ConnectionRefusedError, OSError):
                time.sleep(0.2)
        else:
            raise AssertionError("demo relay did not come up")
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as c:
            c.ehlo("c")
            c.mail("you@sender.test")
            assert c.rcpt("nobody@example.jp")[0] == 550
        conf = str(tmp_path / "demo" / "mx2.conf")
        q = subprocess.run([binpath("mx2ctl"), "-c", conf, "queue"], capture_output=True, text=True)
        assert q.returncode == 0 and "you@sender.test" in q.stdout
        # The demo primary the script tells the user to start: mx2 delivers
        # to it by itself on its next probe.
        sink = subprocess.Popen(["/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l",
                                 "127.0.0.1:%d" % pport], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 20
            while time.time() < deadline:
                q = subprocess.run([binpath("mx2ctl"), "-c", conf, "queue"], capture_output=True,
                                   text=True)
                if "Mail queue is empty" in q.stdout:
                    break
                time.sleep(0.5)
            assert "Mail queue is empty" in q.stdout, q.stdout
        finally:
            sink.terminate()
            sink_out = sink.communicate(timeout=10)[0].decode("utf-8", "replace")
        assert "Subject: demo" in sink_out
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=30)[0].decode()
    assert "mx2d is starting" in out
    assert p.returncode == 0, out


def test_syslog_mode_start_failure_also_on_stderr(tmp_path):
    # log = "syslog": a start that fails must still say why to whoever
    # started mx2d (a terminal, systemd's journal), not only to syslog.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        d = Mx2d(tmp_path, log="syslog", listen=["127.0.0.1:%d" % taken.getsockname()[1]])
        r = subprocess.run([binpath("mx2d"), "-c", d.conf], capture_output=True, text=True,
                           timeout=30)
    finally:
        taken.close()
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(line.startswith("mx2d: error: ") for line in lines), r.stderr
    assert any("cannot listen" in line for line in lines), r.stderr


def test_cmake_install_puts_the_programs_in_sbin(tmp_path):
    # SPEC: `cmake --install build` installs them to <prefix>/sbin.
    build = os.path.dirname(os.path.dirname(os.path.abspath(binpath("mx2d"))))
    assert os.path.exists(os.path.join(build, "cmake_install.cmake")), \
        "MX2_BIN is not a CMake build's bin/: %s" % build
    prefix = tmp_path / "prefix"
    r = subprocess.run(["cmake", "--install", build, "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for prog in ("mx2d", "mx2ctl", "mx2map"):
        path = prefix / "sbin" / prog
        assert os.access(path, os.X_OK), path
        v = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
        assert v.returncode == 0 and v.stdout.startswith(prog + " "), (prog, v.stdout, v.stderr)
    assert os.path.islink(prefix / "sbin" / "mx2-mailq")
    assert (prefix / "etc" / "mx2" / "mx2.conf.sample").is_file()
