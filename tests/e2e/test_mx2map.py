"""End-to-end tests of the real mx2map binary (SPEC.md "mx2map").

Each test builds maps in a temporary directory from passwd / aliases / list
files (or stdin) and checks the exit codes, the summary, the bad-line
reports ("FILE:LINE: reason"), `query` and `dump`. One test builds a map of
a million entries and prints how long it took (no assertion on time).

Fixtures live in this file on purpose: the e2e directory is shared and
conftest.py belongs to nobody in particular.
"""
import os
import subprocess
import time

import pytest

ROOT = os.environ.get("MX2_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("MX2_BIN") or os.path.join(ROOT, "build", "bin")
MX2MAP = os.path.join(BIN, "mx2map")

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
systemd-network:x:998:998::/:/usr/sbin/nologin
postfix:x:1005:1005::/var/spool/postfix:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
Bob:x:1001:1001::/home/bob:/bin/zsh
svc:x:1002:1002::/srv:/bin/false
guest:x:1003:1003::/home/guest:/bin/bash
carol:x:1004:1004::/home/carol:
"""

ALIASES = """\
# /etc/aliases
MAILER-DAEMON: postmaster
postmaster: root
staff: alice,
  bob,
# a comment inside the entry
\tcarol
members: :include:/etc/mail/members
"quoted": alice
broken:
no colon here
"""

LIST = """\
# Postfix relay_recipient_maps style
user-a@example.jp x
User-B@Example.JP OK
dave
@catchall.example
eve@other.example x
bad%route@example.jp x
"""


def run(*args, stdin=None, check=None):
    p = subprocess.run([MX2MAP] + [str(a) for a in args], input=stdin, capture_output=True,
                       text=True, timeout=300)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def dump(path):
    p = run("dump", path, check=0)
    return p.stdout.splitlines()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "passwd").write_text(PASSWD)
    (tmp_path / "aliases").write_text(ALIASES)
    (tmp_path / "list").write_text(LIST)
    return tmp_path


def usage_error(p):
    """Usage errors: exit 2, nothing on stdout, one line on stderr naming the problem."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("mx2map: ")
    return lines[0]


# ---------------------------------------------------------------- basics

def test_version_and_help():
    p = run("--version", check=0)
    assert p.stdout.startswith("mx2map ") and len(p.stdout.split()) == 2
    for args in (["-h"], ["--help"], ["build", "-h"], ["query", "--help"], ["dump", "-h"]):
        p = run(*args, check=0)
        assert "usage: mx2map build -o MAP" in p.stdout
        assert "mx2map dump MAP" in p.stdout
        assert p.stderr == ""


@pytest.mark.parametrize("args,needle", [
    ([], "missing command"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["build", "--list", "x"], "-o MAP is required"),
    (["build", "-o", "m", "--bogus"], "unknown option '--bogus'"),
    (["build", "-o", "m", "--list"], "needs an argument"),
    (["build", "-o", "m", "--list", "-", "--passwd", "-", "--domain", "x.jp"], "only one source"),
    (["build", "-o", "m", "--list", "l", "--min-uid", "abc"], "--min-uid"),
    (["build", "-o", "m", "--list", "l", "--min-uid", "-5"], "--min-uid"),
    (["build", "-o", "m", "--list", "l", "--domain", "bad domain"], "bad --domain"),
    (["build", "-o", "m", "--list", "l", "--domain", "[192.0.2.1]"], "bad --domain"),
    (["build", "-o", "m", "--passwd", "p"], "--domain is required"),
    (["build", "-o", "m", "--aliases", "a"], "--domain is required"),
    (["build", "-o", "m", "--list", "l", "extra"], "unexpected argument 'extra'"),
    (["query", "m"], "expected MAP ADDRESS"),
    (["query", "m", "a@b", "c"], "expected MAP ADDRESS"),
    (["query", "m", "no-at-sign"], "is not an address"),
    (["query", "-x", "m", "a@b"], "unknown option"),
    (["dump"], "expected MAP"),
    (["dump", "a", "b"], "expected MAP"),
])
def test_usage_errors_exit_2(tmp_path, args, needle):
    line = usage_error(run(*args))
    assert needle in line
    assert not os.path.exists(tmp_path / "m")


# ----------------------------------------------------------------- build

def test_build_from_passwd(files):
    m = files / "m.mdb"
    p = run("build", "-o", m, "--domain", "Example.JP", "--passwd", files / "passwd",
            "--exclude", "guest", check=0)
    assert dump(m) == sorted([
        "abuse@example.jp", "alice@example.jp", "bob@example.jp", "carol@example.jp",
        "postmaster@example.jp"])
    s = p.stdout
    assert s.startswith("mx2map: wrote 5 keys to %s (" % m)
    # 14 lines: 3 accounts, 11 skipped: 7 uid<1000 (root, daemon, bin, sys,
    # mail, www-data, systemd-network), 2 system (nobody, postfix), 1 shell
    # (svc), 1 excluded (guest).
    assert "passwd: 3 accounts, 11 skipped: 7 uid<1000, 2 system, 1 nologin shell, 1 excluded" in s
    assert "always: postmaster, abuse for 1 domains" in s
    assert p.stderr == ""


def test_build_min_uid(files):
    m = files / "m.mdb"
    run("build", "-o", m, "--domain", "example.jp", "--passwd", files / "passwd",
        "--min-uid", "0", check=0)
    keys = dump(m)
    # A lower floor never lets system accounts in.
    for sysname in ("root", "daemon", "bin", "sys", "mail", "www-data", "nobody", "postfix",
                    "systemd-network"):
        assert sysname + "@example.jp" not in keys
    assert "guest@example.jp" in keys and "svc@example.jp" not in keys


def test_build_from_aliases_reports_bad_lines(files):
    m = files / "m.mdb"
    p = run("build", "-o", m, "--domain", "example.jp", "--aliases", files / "aliases", check=0)
    assert dump(m) == sorted([
        "abuse@example.jp", "mailer-daemon@example.jp", "members@example.jp",
        "postmaster@example.jp", "quoted@example.jp", "staff@example.jp"])
    err = p.stderr.splitlines()
    assert "%s:10: alias 'broken' has an empty right-hand side" % (files / "aliases") in err
    assert any(line.startswith("%s:11: missing ':'" % (files / "aliases")) for line in err)
    assert len(err) == 2
    assert "aliases: 5 names" in p.stdout and "2 bad lines skipped" in p.stdout


def test_build_from_list(files):
    m = files / "m.mdb"
    p = run("build", "-o", m, "--domain", "example.jp", "--list", files / "list", check=0)
    assert dump(m) == sorted([
        "@catchall.example",
        "abuse@catchall.example", "abuse@example.jp", "abuse@other.example",
        "dave@example.jp", "eve@other.example",
        "postmaster@catchall.example", "postmaster@example.jp", "postmaster@other.example",
        "user-a@example.jp", "user-b@example.jp"])
    assert p.stderr.strip() == (
        "%s:7: 'bad%%route@example.jp': local part contains a routing character (%% ! @ :)"
        % (files / "list"))
    assert "list: 5" in p.stdout and "always: postmaster, abuse for 3 domains" in p.stdout


def test_list_with_addresses_needs_no_domain(tmp_path):
    m = tmp_path / "m.mdb"
    run("build", "-o", m, "--list", "-", stdin="a@x.jp\nb@y.jp extra\n", check=0)
    assert dump(m) == sorted(["a@x.jp", "b@y.jp", "abuse@x.jp", "abuse@y.jp",
                              "postmaster@x.jp", "postmaster@y.jp"])


def test_list_local_parts_without_domain_exit_2(tmp_path):
    (tmp_path / "l").write_text("a@x.jp\nlocalonly\n")
    p = run("build", "-o", tmp_path / "m.mdb", "--list", tmp_path / "l")
    assert p.returncode == 2
    assert "no --domain" in p.stderr and "localonly" in p.stderr
    assert not (tmp_path / "m.mdb").exists()


def test_all_sources_and_several_domains(files):
    m = files / "m.mdb"
    (files / "list2").write_text("frank\n")
    p = run("build", "-o", m, "--domain", "example.jp", "--domain", "example.com",
            "--passwd", files / "passwd", "--aliases", files / "aliases",
            "--list", files / "list", "--list", files / "list2", check=0)
    keys = dump(m)
    for d in ("example.jp", "example.com"):
        for local in ("alice", "bob", "carol", "staff", "mailer-daemon", "postmaster", "abuse",
                      "frank", "dave"):
            assert "%s@%s" % (local, d) in keys
    assert keys == sorted(set(keys))
    assert "passwd:" in p.stdout and "aliases:" in p.stdout and "list:" in p.stdout
    assert "mx2map: wrote %d keys" % len(keys) in p.stdout


def test_stdin_source(files):
    m = files / "m.mdb"
    # ssh primary getent passwd | mx2map build --passwd - --domain example.jp -o MAP
    p = run("build", "--passwd", "-", "--domain", "example.jp", "-o", m, stdin=PASSWD, check=0)
    assert "alice@example.jp" in dump(m)
    # Reports name the stream.
    p = run("build", "--list", "-", "--domain", "example.jp", "-o", m,
            stdin="ok\nbad!bang\n", check=0)
    assert p.stderr.strip().startswith("stdin:2: ")


def test_nothing_readable_keeps_old_map(files):
    m = files / "m.mdb"
    run("build", "-o", m, "--domain", "example.jp", "--list", files / "list", check=0)
    before = dump(m)
    # Empty stdin (a failed ssh upstream) must not wipe the map.
    p = run("build", "-o", m, "--domain", "example.jp", "--passwd", "-", stdin="")
    assert p.returncode == 2 and "left unchanged" in p.stderr
    p = run("build", "-o", m, "--domain", "example.jp", "--list", "-", stdin="a%b\n# c\n")
    assert p.returncode == 2
    assert dump(m) == before
    assert sorted(os.listdir(files)) == ["aliases", "list", "m.mdb", "passwd"]


def test_missing_source_file_exit_2(files):
    m = files / "m.mdb"
    p = run("build", "-o", m, "--domain", "example.jp", "--list", files / "list",
            "--aliases", files / "nope")
    assert p.returncode == 2
    assert str(files / "nope") in p.stderr and "No such file" in p.stderr
    assert not m.exists()
    assert sorted(os.listdir(files)) == ["aliases", "list", "passwd"]


def test_unwritable_output_exit_1(files):
    p = run("build", "-o", files / "no-such-dir" / "m.mdb", "--domain", "example.jp",
            "--list", files / "list")
    assert p.returncode == 1
    assert "cannot create" in p.stderr


def test_rebuild_replaces_atomically(files):
    m = files / "m.mdb"
    run("build", "-o", m, "--domain", "example.jp", "--list", "-", stdin="old\n", check=0)
    ino = os.stat(m).st_ino
    run("build", "-o", m, "--domain", "example.jp", "--list", "-", stdin="new\n", check=0)
    assert os.stat(m).st_ino != ino  # a new file renamed over, never rewritten in place
    assert "new@example.jp" in dump(m) and "old@example.jp" not in dump(m)
    # No temporary or lock files left beside the map.
    assert sorted(os.listdir(files)) == ["aliases", "list", "m.mdb", "passwd"]


def test_default_sources_system_passwd(tmp_path):
    """No source: `getent passwd` (+ /etc/aliases when present) of this host."""
    m = tmp_path / "m.mdb"
    p = run("build", "-o", m, "--domain", "example.jp")
    # A build host may have no ordinary user at all: then nothing could be
    # read and the map is not written (exit 2). Either way never root.
    assert p.returncode in (0, 2), p.stderr
    if p.returncode == 0:
        assert "passwd:" in p.stdout
        keys = dump(m)
        assert "root@example.jp" not in keys and "nobody@example.jp" not in keys
        assert "postmaster@example.jp" in keys
    else:
        assert "no recipient could be read" in p.stderr
        assert not m.exists()


# ----------------------------------------------------------- query, dump

@pytest.fixture
def built(files):
    m = files / "m.mdb"
    run("build", "-o", m, "--domain", "example.jp", "--passwd", files / "passwd",
        "--aliases", files / "aliases", "--list", files / "list", check=0)
    return m


@pytest.mark.parametrize("args,rc,out", [
    (["alice@example.jp"], 0, "alice@example.jp"),
    (["ALICE@Example.JP"], 0, "alice@example.jp"),
    (["<alice@example.jp>"], 0, "alice@example.jp"),
    (["alice@example.jp."], 0, "alice@example.jp"),
    (["alice+news@example.jp"], 0, "alice@example.jp"),
    (["-d", "", "alice+news@example.jp"], 1, ""),
    (["-d", "-", "alice+news@example.jp"], 1, ""),
    (["-d", "-", "alice-news@example.jp"], 0, "alice@example.jp"),
    (["-d", "+-", "alice-news@example.jp"], 0, "alice@example.jp"),
    (["postmaster@example.jp"], 0, "postmaster@example.jp"),
    (["abuse@catchall.example"], 0, "abuse@catchall.example"),
    (["anybody@catchall.example"], 0, "@catchall.example"),
    (["any+thing@CatchAll.Example"], 0, "@catchall.example"),
    (["a%b@catchall.example"], 1, ""),
    (["a!b@catchall.example"], 1, ""),
    (["root@example.jp"], 1, ""),
    (["nobody@example.jp"], 1, ""),
    (["svc@example.jp"], 1, ""),
    (["alice@example.com"], 1, ""),
    (["zed@example.jp"], 1, ""),
])
def test_query(built, args, rc, out):
    p = run("query", *args[:-1], built, args[-1])
    assert p.returncode == rc, (p.stdout, p.stderr)
    assert p.stdout.strip() == out
    if rc == 1:
        assert p.stderr == ""  # a plain miss is silent, like postmap -q


def test_query_with_config(built, tmp_path):
    conf = tmp_path / "mx2.conf"
    conf.write_text('recipient_map = "%s";\nrecipient_delimiter = "-";\n' % built)
    assert run("query", "-c", conf, "alice-x@example.jp", check=0).stdout == "alice@example.jp\n"
    run("query", "-c", conf, built, "alice+x@example.jp", check=1)
    run("query", "-c", conf, "-d", "+", built, "alice+x@example.jp", check=0)
    conf.write_text("no_such_key = 1;\n")
    p = run("query", "-c", conf, built, "alice@example.jp")
    assert p.returncode == 2 and "no_such_key" in p.stderr


def test_query_and_dump_unreadable_map(tmp_path):
    missing = tmp_path / "missing.mdb"
    for args in (["query", missing, "a@example.jp"], ["dump", missing]):
        p = run(*args)
        assert p.returncode == 1 and p.stdout == ""
        assert str(missing) in p.stderr and "No such file" in p.stderr
    garbage = tmp_path / "garbage.mdb"
    garbage.write_bytes(b"this is not an LMDB file\n" * 1000)
    for args in (["query", garbage, "a@example.jp"], ["dump", garbage]):
        p = run(*args)
        assert p.returncode == 1 and p.stdout == ""
        assert str(garbage) in p.stderr and "not a valid map" in p.stderr


def test_dump_sorted(built):
    keys = dump(built)
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys))
    assert "@catchall.example" in keys and keys[0] == "@catchall.example"


# ------------------------------------------------------------ big build

def test_million_entry_list(tmp_path):
    n = 1000000
    lst = tmp_path / "big.list"
    with open(lst, "w") as f:
        for i in range(n):
            f.write("user%07d@example.jp x\n" % ((i * 7919) % n))
    m = tmp_path / "big.mdb"
    t0 = time.monotonic()
    p = run("build", "-o", m, "--list", lst, check=0)
    elapsed = time.monotonic() - t0
    print("\nmx2map build of %d list entries: %.2f s; map %d bytes" % (n, elapsed,
                                                                     os.path.getsize(m)))
    assert p.stdout.startswith("mx2map: wrote %d keys" % (n + 2))
    for i in (0, 1, 4242, n - 1):
        run("query", m, "USER%07d+tag@example.jp" % i, check=0)
    run("query", m, "user%07d@example.jp" % n, check=1)
    d = run("dump", m, check=0).stdout.splitlines()
    assert len(d) == n + 2 and d == sorted(d)
