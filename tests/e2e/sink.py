"""A controllable SMTP sink for the end-to-end tests: it plays mx2's primary
(and, as a second instance, the bounce relay).

Why hand-written and not aiosmtpd: the flusher tests need things aiosmtpd 1.4
does not give without monkey-patching -- the exact bytes of DATA as they came
over the wire, a reply per recipient chosen at run time, a 421 greeting, a
listener that can be stopped (dropping live sessions, like a crashed primary)
and started again on the same port, XFORWARD, and a record of every protocol
slip the client makes. A blocking socket server with one thread per
connection is the simplest thing that does all of that and is easy to reason
about when a test fails.

Usage:

    sink = Sink(rcpt_policy={"bob@example.jp": "550 5.1.1 no such user"})
    sink.start()                 # 127.0.0.1, port chosen now (sink.port)
    ... mx2 delivers ...
    assert sink.wait_for(lambda: len(sink.messages) == 1, 10)
    sink.stop(); sink.start()    # same port again (SO_REUSEADDR)

Replies are given as strings: "250", "450 4.2.0 try later",
"550 5.1.1 no such user" (a bare code gets a generic text), a multi-line
reply separated by "\\n", a list of such strings (used one per attempt, the
last one repeated), or a callable taking the Session and returning one. Any
reply whose code is 421 closes the connection after it is sent, as a real
server does. Options and policies are plain attributes and may be changed
while the sink runs (the next command reads them).

Everything the sink sees is recorded: `messages` (accepted DATA only),
`transactions` (every DATA, with its reply), `sessions` (one per accepted
TCP connection: EHLO name, TLS, AUTH, XFORWARD, every command line),
`rcpt_log` ((address, code, session number) for every RCPT), `connections`
and `connect_times`, and `violations`: protocol errors by the client (a
parameter for an extension that was not offered, a bare LF, a command out of
sequence, pipelining without PIPELINING, ...). The flusher tests assert that
`violations` stays empty.

The sink is bounded: every socket has a timeout, and the sink stops by itself
`lifetime` seconds after start(), so a test that forgets it cannot hang the
suite. It listens on 127.0.0.1 only.
"""
import base64
import os
import re
import socket
import ssl
import subprocess
import threading
import time

HOST = "127.0.0.1"
LINE_MAX = 4096             # longest command line accepted (RFC 5321 says 512)
DATA_LINE_MAX = 1 << 20     # longest DATA line buffered before giving up

_GENERIC = {"2": "Ok", "3": "Go ahead", "4": "Try again later", "5": "Rejected"}


def normalize_reply(spec, default):
    """Turn a reply spec into (code, [lines]); None means `default`."""
    if spec is None:
        spec = default
    spec = str(spec).replace("\r\n", "\n")
    lines = [l for l in spec.split("\n") if l != ""] or [default]
    first = lines[0]
    if not re.match(r"^[2-5][0-9][0-9]([ -]|$)", first):
        raise ValueError("bad reply spec %r" % (spec,))
    code = int(first[:3])
    if len(first) == 3:
        d = first[0]
        lines[0] = "%s %s.0.0 %s" % (first, d, _GENERIC[d])
    out = []
    for l in lines:
        text = l[4:] if re.match(r"^[2-5][0-9][0-9]([ -]|$)", l) else l
        out.append(text)
    return code, out


def xtext_decode(s):
    """RFC 3461 xtext: "+XX" is the byte 0xXX."""
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), s)


def parse_params(words):
    """ESMTP parameters "KEY=VALUE KEY" -> dict with upper-cased keys."""
    out = {}
    for w in words:
        if not w:
            continue
        k, eq, v = w.partition("=")
        out[k.upper()] = v if eq else None
    return out


def parse_path(arg, keyword):
    """'FROM:<a@b> P=V' -> ('a@b', {params}) or None when malformed."""
    m = re.match(r"^%s:<([^<>]*)>((?: +[^ ]+)*) *$" % keyword, arg, re.IGNORECASE)
    if not m:
        return None
    return m.group(1), parse_params(m.group(2).split(" "))


class Message:
    """One mail transaction as the sink saw it."""

    def __init__(self, session, mail_from, mail_params):
        self.session = session.number
        self.ehlo = session.ehlo
        self.tls = session.tls
        self.tls_version = session.tls_version
        self.auth_user = session.auth_user
        self.xforward = dict(session.xforward)
        self.mail_from = mail_from          # "" for the null sender <>
        self.mail_params = mail_params
        self.rcpts = []                     # accepted recipients, in order
        self.rcpt_params = {}               # address -> params dict
        self.raw = b""                      # DATA as on the wire, without ".\r\n"
        self.data = b""                     # the same with dot-stuffing undone
        self.reply = None                   # the final reply line to DATA
        self.time = None                    # when DATA ended

    def __repr__(self):
        return "<Message from=<%s> to=%r %d bytes reply=%r>" % (
            self.mail_from, self.rcpts, len(self.data), self.reply)


class Session:
    """One accepted TCP connection."""

    def __init__(self, number, peer):
        self.number = number
        self.peer = peer
        self.ehlo = None          # name given in the last EHLO/HELO
        self.esmtp = False
        self.tls = False
        self.tls_version = None
        self.tls_attempted = False  # STARTTLS was answered 220
        self.tls_error = None       # why the handshake failed
        self.auth_user = None
        self.auth_mechanism = None
        self.xforward = {}
        self.commands = []        # every command line, decoded, without CRLF
        self.started = time.time()
        self.ended = None

    def __repr__(self):
        return "<Session %d ehlo=%r tls=%r auth=%r commands=%r>" % (
            self.number, self.ehlo, self.tls, self.auth_user, self.commands)


class _Closed(Exception):
    pass


class _Conn:
    """A socket with its own read buffer, so STARTTLS can drop what is left."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def readline(self, limit):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > limit:
                raise _Closed("line too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed("eof")
            self.buf += chunk

    def send(self, data):
        self.sock.sendall(data)


class Sink:
    """A controllable SMTP server on 127.0.0.1 in background threads."""

    def __init__(self, port=None, *, hostname="sink.test",
                 rcpt_policy=None, rcpt_default="250 2.1.5 Ok",
                 greeting=None, ehlo_reply=None, mail_reply=None,
                 data_cmd_reply=None, data_reply=None, greeting_delay=0.0,
                 pipelining=True, eightbitmime=True, enhancedstatuscodes=True,
                 size=None, dsn=False, xforward=False, smtputf8=False,
                 starttls=False, tls_cert=None, tls_key=None, require_tls=False,
                 auth=None, auth_mechanisms=("PLAIN", "LOGIN"), auth_tls_only=True,
                 io_timeout=30.0, lifetime=300.0):
        self.port = port
        self.hostname = hostname
        self.rcpt_policy = rcpt_policy if rcpt_policy is not None else {}
        self.rcpt_default = rcpt_default
        self.greeting = greeting
        self.ehlo_reply = ehlo_reply
        self.mail_reply = mail_reply
        self.data_cmd_reply = data_cmd_reply
        self.data_reply = data_reply
        self.greeting_delay = greeting_delay
        self.pipelining = pipelining
        self.eightbitmime = eightbitmime
        self.enhancedstatuscodes = enhancedstatuscodes
        self.size = size
        self.dsn = dsn
        self.xforward = xforward
        self.smtputf8 = smtputf8
        self.starttls = starttls
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.require_tls = require_tls
        self.auth = auth                  # (user, password) -> AUTH required
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.auth_tls_only = auth_tls_only
        self.io_timeout = io_timeout
        self.lifetime = lifetime

        self.messages = []
        self.transactions = []
        self.sessions = []
        self.rcpt_log = []
        self.violations = []
        self.connections = 0
        self.connect_times = []
        self.starts = 0

        self._cond = threading.Condition()
        self._ctl_lock = threading.Lock()
        self._lsock = None
        self._thread = None
        self._stopping = threading.Event()
        self._live = set()
        self._workers = []
        self._timer = None
        self._attempts = {}      # (stage, key) -> count, for list policies
        self._ctx = None

    # ---- control ----

    def start(self):
        """Listen on 127.0.0.1:port (a fresh port the first time if none was
        given; the same port on every later start)."""
        if self.running:
            raise RuntimeError("sink already running")
        self._thread = None
        if self.starttls:
            if not (self.tls_cert and self.tls_key):
                raise ValueError("starttls needs tls_cert and tls_key")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
            self._ctx = ctx
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.time() + 5
        while True:
            try:
                s.bind((HOST, self.port or 0))
                break
            except OSError:
                # The port can be briefly unavailable on a quick restart;
                # SO_REUSEADDR covers TIME_WAIT, this covers the rest.
                if time.time() > deadline:
                    s.close()
                    raise
                time.sleep(0.05)
        s.listen(128)
        s.settimeout(0.1)
        self.port = s.getsockname()[1]
        self._lsock = s
        self._stopping.clear()
        self.starts += 1
        self._thread = threading.Thread(target=self._accept_loop, name="sink-accept-%d" % self.port,
                                        daemon=True)
        self._thread.start()
        if self.lifetime:
            self._timer = threading.Timer(self.lifetime, self.stop)
            self._timer.daemon = True
            self._timer.start()
        return self

    @property
    def running(self):
        return self._lsock is not None

    def stop(self):
        """Stop listening and cut every live session (like a primary that
        dies). Recorded data is kept. Safe to call twice, and from the
        lifetime timer while a test calls it too."""
        with self._ctl_lock:
            self._stopping.set()
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
            if self._thread is not None:
                self._thread.join(5)
            # Close the listener first: from here on a connect is refused.
            if self._lsock is not None:
                self._lsock.close()
                self._lsock = None
            with self._cond:
                live = list(self._live)
            for sock in live:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for t in list(self._workers):
                t.join(5)
            self._workers = [t for t in self._workers if t.is_alive()]
            with self._cond:
                self._cond.notify_all()

    def restart(self):
        self.stop()
        return self.start()

    def close(self):
        self.stop()

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- queries ----

    def wait_for(self, pred, timeout):
        """Wait until pred() is true (re-checked on every event and every
        0.1 s); returns its last value."""
        deadline = time.time() + timeout
        with self._cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.time()
                if left <= 0:
                    return v
                self._cond.wait(min(left, 0.1))

    def wait_messages(self, n, timeout):
        return self.wait_for(lambda: len(self.messages) >= n, timeout)

    def delivered_to(self, address):
        """Messages accepted with `address` among their recipients."""
        a = address.lower()
        return [m for m in list(self.messages) if a in [r.lower() for r in m.rcpts]]

    def rcpt_count(self, address):
        """How many RCPT commands named `address` (whatever the answer)."""
        a = address.lower()
        return sum(1 for r in list(self.rcpt_log) if r[0].lower() == a)

    # ---- internals ----

    def _event(self):
        with self._cond:
            self._cond.notify_all()

    def _violation(self, sess, what):
        with self._cond:
            self.violations.append("session %d: %s" % (sess.number, what))
            self._cond.notify_all()

    def _accept_loop(self):
        lsock = self._lsock
        while not self._stopping.is_set():
            try:
                sock, peer = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._cond:
                if self._stopping.is_set():
                    sock.close()
                    break
                self.connections += 1
                self.connect_times.append(time.time())
                sess = Session(self.connections, peer)
                self.sessions.append(sess)
                self._live.add(sock)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(sock, sess), daemon=True,
                                 name="sink-%d-%d" % (self.port, sess.number))
            self._workers.append(t)
            t.start()

    def _pick(self, stage, key, spec, sess):
        """Resolve a policy value: callable, list (one per attempt) or str."""
        if callable(spec):
            spec = spec(sess)
        if isinstance(spec, (list, tuple)):
            with self._cond:
                n = self._attempts.get((stage, key), 0)
                self._attempts[(stage, key)] = n + 1
            spec = spec[min(n, len(spec) - 1)] if spec else None
        return spec

    def _send_reply(self, conn, code, lines):
        out = b""
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out += ("%03d%s%s\r\n" % (code, sep, text)).encode("utf-8")
        conn.send(out)

    def _reply(self, conn, sess, spec, default):
        code, lines = normalize_reply(spec, default)
        self._send_reply(conn, code, lines)
        if code == 421:
            raise _Closed("421 sent")
        return code, lines

    def _serve(self, sock, sess):
        sock.settimeout(self.io_timeout)
        conn = _Conn(sock)
        try:
            end = time.time() + self.greeting_delay
            while time.time() < end and not self._stopping.is_set():
                time.sleep(0.05)
            spec = self._pick("greeting", None, self.greeting, sess)
            code, _ = self._reply(conn, sess, spec, "220 %s ESMTP sink" % self.hostname)
            self._session(conn, sess, refuse=code >= 400)
        except (_Closed, OSError, ssl.SSLError):
            pass
        except ValueError as e:
            # A bad reply spec is a bug in the test: make it visible.
            self._violation(sess, "sink misconfigured: %s" % e)
        finally:
            sess.ended = time.time()
            try:
                conn.sock.close()
            except OSError:
                pass
            with self._cond:
                self._live.discard(sock)
                self._live.discard(conn.sock)
                self._cond.notify_all()

    def _ehlo_lines(self, sess):
        lines = [self.hostname]
        if self.pipelining:
            lines.append("PIPELINING")
        if self.size is not None:
            lines.append("SIZE %d" % self.size)
        if self.eightbitmime:
            lines.append("8BITMIME")
        if self.enhancedstatuscodes:
            lines.append("ENHANCEDSTATUSCODES")
        if self.dsn:
            lines.append("DSN")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        if self.xforward:
            lines.append("XFORWARD NAME ADDR PROTO HELO")
        if self._offers_starttls(sess):
            lines.append("STARTTLS")
        if self._offers_auth(sess):
            lines.append("AUTH " + " ".join(self.auth_mechanisms))
        return lines

    def _offers_starttls(self, sess):
        return self.starttls and not sess.tls

    def _offers_auth(self, sess):
        return self.auth is not None and (sess.tls or not self.auth_tls_only)

    def _session(self, conn, sess, refuse):
        txn = None
        while True:
            raw = conn.readline(LINE_MAX)
            if not raw.endswith(b"\r\n"):
                self._violation(sess, "command line without CRLF: %r" % raw)
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            sess.commands.append(line)
            self._event()
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if (not self.pipelining and conn.buf and verb not in ("DATA",)
                    and not (verb == "QUIT")):
                self._violation(sess, "pipelined after %s without PIPELINING" % verb)

            if verb == "QUIT":
                self._reply(conn, sess, None, "221 2.0.0 Bye")
                return
            if refuse:
                # RFC 5321 3.1: after a 554 greeting, only QUIT is useful.
                self._reply(conn, sess, None, "503 5.5.1 No service")
                continue
            if verb in ("EHLO", "HELO"):
                txn = None
                spec = self._pick("ehlo", None, self.ehlo_reply, sess)
                if spec is not None:
                    code, _ = self._reply(conn, sess, spec, "250 ok")
                    if code >= 400:
                        continue
                sess.ehlo = arg.strip()
                sess.esmtp = verb == "EHLO"
                if verb == "EHLO":
                    self._send_reply(conn, 250, self._ehlo_lines(sess))
                else:
                    self._send_reply(conn, 250, [self.hostname])
                continue
            if verb == "NOOP":
                self._reply(conn, sess, None, "250 2.0.0 Ok")
                continue
            if verb == "RSET":
                txn = None
                self._reply(conn, sess, None, "250 2.0.0 Ok")
                continue
            if verb == "VRFY":
                self._reply(conn, sess, None, "252 2.0.0 Cannot VRFY")
                continue
            if sess.ehlo is None:
                self._violation(sess, "%s before EHLO" % verb)
                self._reply(conn, sess, None, "503 5.5.1 Send EHLO first")
                continue
            if verb == "STARTTLS":
                if not self._offers_starttls(sess) or arg or txn is not None:
                    self._violation(sess, "STARTTLS not offered or out of sequence")
                    self._reply(conn, sess, None, "503 5.5.1 STARTTLS not available")
                    continue
                self._reply(conn, sess, None, "220 2.0.0 Ready to start TLS")
                if conn.buf:
                    self._violation(sess, "data pipelined after STARTTLS: %r" % conn.buf)
                    conn.buf = b""
                sess.tls_attempted = True
                self._event()
                try:
                    tsock = self._ctx.wrap_socket(conn.sock, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    sess.tls_error = str(e)
                    self._event()
                    raise _Closed("TLS handshake failed")
                with self._cond:
                    self._live.add(tsock)
                conn.sock = tsock
                sess.tls = True
                sess.tls_version = tsock.version()
                # RFC 3207 4.2: forget everything learnt before TLS.
                sess.ehlo = None
                sess.esmtp = False
                sess.xforward = {}
                txn = None
                self._event()
                continue
            if verb == "AUTH":
                self._auth(conn, sess, arg, txn)
                continue
            if verb == "XFORWARD":
                if not self.xforward or not sess.esmtp or txn is not None:
                    self._violation(sess, "XFORWARD not offered or inside a transaction")
                    self._reply(conn, sess, None, "503 5.5.1 XFORWARD not available")
                    continue
                params = parse_params(arg.split(" "))
                bad = [k for k in params if k not in ("NAME", "ADDR", "PROTO", "HELO", "PORT",
                                                       "SOURCE", "IDENT")]
                if bad or not params or any(v is None for v in params.values()):
                    self._violation(sess, "bad XFORWARD %r" % arg)
                    self._reply(conn, sess, None, "501 5.5.4 Bad XFORWARD syntax")
                    continue
                for k, v in params.items():
                    sess.xforward[k] = xtext_decode(v)
                self._reply(conn, sess, None, "250 2.0.0 Ok")
                continue
            if verb == "MAIL":
                txn = self._mail(conn, sess, arg, txn)
                continue
            if verb == "RCPT":
                self._rcpt(conn, sess, arg, txn)
                continue
            if verb == "DATA":
                self._data(conn, sess, arg, txn)
                txn = None
                continue
            if verb == "BDAT":
                self._violation(sess, "BDAT without CHUNKING")
            else:
                self._violation(sess, "unknown command %r" % line)
            self._reply(conn, sess, None, "500 5.5.2 Command not recognized")

    def _auth(self, conn, sess, arg, txn):
        words = arg.split(" ")
        mech = words[0].upper() if words else ""
        if not self._offers_auth(sess) or mech not in self.auth_mechanisms \
                or sess.auth_user is not None or txn is not None:
            self._violation(sess, "AUTH %s not offered or out of sequence" % mech)
            self._reply(conn, sess, None, "503 5.5.1 AUTH not available")
            return

        def ask(prompt):
            self._send_reply(conn, 334, [prompt])
            resp = conn.readline(LINE_MAX).rstrip(b"\r\n").decode("ascii", "replace")
            sess.commands.append("<auth response>")
            if resp == "*":
                raise ValueError("cancelled")
            return resp

        def b64(s):
            return base64.b64decode(s.encode("ascii"), validate=True).decode("utf-8")

        try:
            if mech == "PLAIN":
                resp = words[1] if len(words) > 1 else ask("")
                authzid, user, password = b64(resp).split("\0")
            else:   # LOGIN
                user = b64(words[1]) if len(words) > 1 else b64(ask("VXNlcm5hbWU6"))
                password = b64(ask("UGFzc3dvcmQ6"))
        except ValueError:
            self._reply(conn, sess, None, "501 5.5.2 Cannot decode AUTH response")
            return
        if (user, password) == tuple(self.auth):
            sess.auth_user = user
            sess.auth_mechanism = mech
            self._event()
            self._reply(conn, sess, None, "235 2.7.0 Authentication successful")
        else:
            self._reply(conn, sess, None, "535 5.7.8 Authentication credentials invalid")

    def _mail(self, conn, sess, arg, txn):
        if txn is not None:
            self._violation(sess, "nested MAIL")
            self._reply(conn, sess, None, "503 5.5.1 Nested MAIL command")
            return txn
        p = parse_path(arg, "FROM")
        if p is None:
            self._violation(sess, "bad MAIL syntax %r" % arg)
            self._reply(conn, sess, None, "501 5.5.4 Syntax: MAIL FROM:<address>")
            return None
        addr, params = p
        if self.require_tls and not sess.tls:
            self._reply(conn, sess, None, "530 5.7.0 Must issue a STARTTLS command first")
            return None
        if self.auth is not None and sess.auth_user is None:
            self._reply(conn, sess, None, "530 5.7.0 Authentication required")
            return None
        allowed = {"BODY": self.eightbitmime, "SIZE": self.size is not None,
                   "RET": self.dsn, "ENVID": self.dsn, "SMTPUTF8": self.smtputf8,
                   "AUTH": self.auth is not None}
        for k, v in params.items():
            if not allowed.get(k, False):
                self._violation(sess, "MAIL parameter %s not offered" % k)
                self._reply(conn, sess, None, "555 5.5.4 Unsupported option: %s" % k)
                return None
            if k == "BODY" and (v or "").upper() not in ("7BIT", "8BITMIME"):
                self._violation(sess, "bad BODY=%s" % v)
        if "SIZE" in params:
            try:
                declared = int(params["SIZE"])
            except (TypeError, ValueError):
                self._violation(sess, "bad SIZE=%s" % params["SIZE"])
                declared = 0
            if self.size and declared > self.size:
                self._reply(conn, sess, None, "552 5.3.4 Message size exceeds fixed limit")
                return None
        spec = self._pick("mail", None, self.mail_reply, sess)
        code, _ = self._reply(conn, sess, spec, "250 2.1.0 Ok")
        if code >= 300:
            return None
        return Message(sess, addr, params)

    def _rcpt(self, conn, sess, arg, txn):
        if txn is None:
            # With PIPELINING, RCPT after a refused MAIL is normal client
            # behaviour; without a MAIL at all it is a client bug.
            if not any(c.upper().startswith("MAIL") for c in sess.commands):
                self._violation(sess, "RCPT without MAIL")
            self._reply(conn, sess, None, "503 5.5.1 Need MAIL command")
            return
        p = parse_path(arg, "TO")
        if p is None or not p[0]:
            self._violation(sess, "bad RCPT syntax %r" % arg)
            self._reply(conn, sess, None, "501 5.5.4 Syntax: RCPT TO:<address>")
            return
        addr, params = p
        for k in params:
            if k not in ("NOTIFY", "ORCPT") or not self.dsn:
                self._violation(sess, "RCPT parameter %s not offered" % k)
                self._reply(conn, sess, None, "555 5.5.4 Unsupported option: %s" % k)
                return
        key = addr.lower()
        policy = self.rcpt_policy
        if callable(policy):
            spec = policy(addr)
        else:
            spec = None
            for k, v in policy.items():
                if k.lower() == key:
                    spec = self._pick("rcpt", key, v, sess)
                    break
        code, _ = self._reply(conn, sess, spec, self.rcpt_default)
        with self._cond:
            self.rcpt_log.append((addr, code, sess.number))
            self._cond.notify_all()
        if code < 300:
            txn.rcpts.append(addr)
            txn.rcpt_params[addr] = params

    def _data(self, conn, sess, arg, txn):
        if arg:
            self._violation(sess, "DATA with an argument")
        if txn is None:
            if not any(c.upper().startswith("MAIL") for c in sess.commands):
                self._violation(sess, "DATA without MAIL")
            self._reply(conn, sess, None, "503 5.5.1 Need MAIL command")
            return
        if not txn.rcpts:
            self._reply(conn, sess, None, "554 5.5.1 No valid recipients")
            return
        spec = self._pick("data_cmd", None, self.data_cmd_reply, sess)
        code, _ = self._reply(conn, sess, spec, "354 End data with <CR><LF>.<CR><LF>")
        if code != 354:
            return
        raw = []
        data = []
        while True:
            line = conn.readline(DATA_LINE_MAX)
            if line == b".\r\n":
                break
            if not line.endswith(b"\r\n"):
                self._violation(sess, "DATA line without CRLF: %r" % line[:80])
            elif b"\r" in line[:-2]:
                self._violation(sess, "bare CR in DATA line: %r" % line[:80])
            raw.append(line)
            data.append(line[1:] if line.startswith(b".") else line)
        txn.raw = b"".join(raw)
        txn.data = b"".join(data)
        txn.time = time.time()
        if any(b >= 0x80 for b in txn.data) and (txn.mail_params.get("BODY") or "").upper() \
                != "8BITMIME":
            self._violation(sess, "8-bit DATA without BODY=8BITMIME")
        if self.size and len(txn.data) > self.size:
            spec = "552 5.3.4 Message size exceeds fixed limit"
        else:
            spec = self._pick("data", None, self.data_reply, sess)
        with self._cond:
            n = len(self.messages) + 1
        code, lines = normalize_reply(spec, "250 2.0.0 Ok: queued as SINK%d" % n)
        txn.reply = "%03d %s" % (code, lines[-1])
        with self._cond:
            self.transactions.append(txn)
            if code < 300:
                self.messages.append(txn)
            self._cond.notify_all()
        self._send_reply(conn, code, lines)
        if code == 421:
            raise _Closed("421 sent")


# ---- test certificates (openssl) ----

def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(directory, name="mx2 test CA"):
    """A self-signed CA (EC P-256). Returns (cert_path, key_path)."""
    directory = str(directory)
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, re.sub(r"[^A-Za-z0-9]+", "_", name))
    cert, key = base + ".crt", base + ".key"
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-sha256",
             "-subj", "/CN=" + name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return cert, key


def make_cert(directory, ca, cn="127.0.0.1", san="IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost",
              name=None):
    """A server certificate signed by `ca` (a (cert, key) pair from make_ca).
    Returns (cert_path, key_path).

    The default names 127.0.0.1 twice on purpose: as an iPAddress SAN (what
    OpenSSL clients such as Python's ssl check for an IP literal) and as a
    dNSName SAN, because mbedTLS 2.28 (mx2's TLS library) matches a host name
    against dNSName entries only and ignores iPAddress SANs (Mbed-TLS/mbedtls
    issue 5082; IP SAN matching arrived in 3.x)."""
    directory = str(directory)
    base = os.path.join(directory, name or re.sub(r"[^A-Za-z0-9]+", "_", cn) + "_server")
    cert, key, csr, ext = base + ".crt", base + ".key", base + ".csr", base + ".ext"
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=" + cn, cwd=directory)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
        if san:
            f.write("subjectAltName=%s\n" % san)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-sha256", "-extfile", ext, cwd=directory)
    return cert, key
