"""Tests of the SMTP sink (sink.py) itself, driven by smtplib and raw sockets.

The flusher tests trust the sink's record of what mx2 sent, so the sink gets
its own tests: exact DATA bytes, per-recipient policies, a 421 greeting,
stop/start on the same port, STARTTLS with the test CAs, AUTH, extensions
and the protocol violations it must notice.
"""
import base64
import smtplib
import socket
import ssl
import time

import pytest

from harness import Raw
from sink import Sink, make_ca, make_cert, normalize_reply


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "sink test CA")
    other = make_ca(d, "other CA")
    return {
        "ca": ca,
        "good": make_cert(d, ca, name="good"),
        "other_ca": make_cert(d, other, name="other_ca"),
        "wrong_name": make_cert(d, ca, cn="other.test", san="DNS:other.test", name="wrong_name"),
    }


@pytest.fixture
def sink():
    s = Sink(lifetime=60).start()
    yield s
    s.stop()


def client_ctx(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


BODY = (b"From: a@sender.test\r\nTo: alice@example.jp\r\nSubject: dots\r\n\r\n"
        b".hidden\r\n..double\r\n.\r\nmiddle . line\r\ncaf\xc3\xa9 \xff\r\nlast\r\n")


def test_records_exact_data_and_envelope(sink):
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("s@sender.test", ["BODY=8BITMIME"])
        assert c.rcpt("alice@example.jp")[0] == 250
        assert c.rcpt("bob@example.jp")[0] == 250
        code, text = c.data(BODY)
        assert (code, text) == (250, b"2.0.0 Ok: queued as SINK1")
    assert sink.wait_messages(1, 5)
    (m,) = sink.messages
    assert m.mail_from == "s@sender.test"
    assert m.mail_params == {"BODY": "8BITMIME"}
    assert m.rcpts == ["alice@example.jp", "bob@example.jp"]
    assert m.data == BODY
    # smtplib stuffed every line starting with a dot; the sink undid it.
    assert b"\r\n...double\r\n" in m.raw and m.raw.startswith(b"From:")
    assert b"\r\n..\r\n" in m.raw
    assert m.ehlo == "client.test" and not m.tls and m.auth_user is None
    assert m.reply == "250 2.0.0 Ok: queued as SINK1"
    assert sink.connections == 1 and len(sink.sessions) == 1
    assert sink.violations == []


def test_null_sender_and_several_transactions_per_session(sink):
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        c.ehlo("client.test")
        for i in range(3):
            c.sendmail("<>" if i == 1 else "s@sender.test", ["alice@example.jp"],
                       b"Subject: %d\r\n\r\nbody\r\n" % i)
            c.rset()
    assert sink.wait_messages(3, 5)
    assert [m.mail_from for m in sink.messages] == ["s@sender.test", "", "s@sender.test"]
    assert [m.data for m in sink.messages] == [b"Subject: %d\r\n\r\nbody\r\n" % i
                                               for i in range(3)]
    assert sink.connections == 1
    assert sink.violations == []


def test_rcpt_policy_per_address_and_per_attempt(sink):
    sink.rcpt_policy = {"Bob@example.jp": "450 4.2.0 try later",
                        "carol@example.jp": "550 5.1.1 no such user",
                        "dave@example.jp": ["451", "250"]}
    for attempt in range(2):
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("s@sender.test")
            assert c.rcpt("alice@example.jp") == (250, b"2.1.5 Ok")
            assert c.rcpt("bob@EXAMPLE.jp") == (450, b"4.2.0 try later")
            assert c.rcpt("carol@example.jp") == (550, b"5.1.1 no such user")
            assert c.rcpt("dave@example.jp") == ((451, b"4.0.0 Try again later") if attempt == 0
                                                 else (250, b"2.0.0 Ok"))
            assert c.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250
    assert sink.wait_messages(2, 5)
    assert sink.messages[0].rcpts == ["alice@example.jp"]
    assert sink.messages[1].rcpts == ["alice@example.jp", "dave@example.jp"]
    assert [c for a, c, _ in sink.rcpt_log] == [250, 450, 550, 451, 250, 450, 550, 250]
    assert sink.rcpt_count("bob@example.jp") == 2
    assert len(sink.delivered_to("alice@example.jp")) == 2
    assert len(sink.delivered_to("bob@example.jp")) == 0
    assert sink.violations == []


def test_callable_rcpt_policy(sink):
    sink.rcpt_policy = lambda addr: "250" if addr.startswith("ok") else "550 5.1.1 nope"
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("s@sender.test")
        assert c.rcpt("ok@example.jp")[0] == 250
        assert c.rcpt("no@example.jp") == (550, b"5.1.1 nope")


def test_all_recipients_refused_data_554(sink):
    sink.rcpt_default = "550 5.1.1 no"
    r = Raw(sink.port)
    assert r.reply()[0] == 220
    assert r.cmd("EHLO client.test")[0] == 250
    assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 250
    assert r.cmd("RCPT TO:<x@example.jp>")[0] == 550
    assert r.cmd("DATA")[0] == 554
    assert r.cmd("QUIT")[0] == 221
    r.close()
    assert sink.messages == [] and sink.violations == []


def test_greeting_421_closes_and_counts_connections(sink):
    sink.greeting = "421 4.3.2 sick primary"
    for _ in range(3):
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP("127.0.0.1", sink.port, timeout=10)
        assert e.value.smtp_code == 421
    assert sink.wait_for(lambda: sink.connections == 3, 5)
    assert sink.connections == 3
    assert len(sink.connect_times) == 3
    # The connection is really closed after the 421.
    r = Raw(sink.port)
    assert r.reply() == (421, "421 4.3.2 sick primary")
    assert r.closed(5)


def test_greeting_554_refuses_everything_but_quit(sink):
    sink.greeting = "554 5.3.2 not now"
    r = Raw(sink.port)
    assert r.reply()[0] == 554
    assert r.cmd("EHLO client.test")[0] == 503
    assert r.cmd("QUIT")[0] == 221


def test_mail_421_and_data_replies(sink):
    sink.mail_reply = "421 4.3.0 going down"
    r = Raw(sink.port)
    r.reply()
    r.cmd("EHLO client.test")
    assert r.cmd("MAIL FROM:<s@sender.test>") == (421, "421 4.3.0 going down")
    assert r.closed(5)

    sink.mail_reply = None
    sink.data_reply = "554 5.7.1 spam"
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("s@sender.test")
        c.rcpt("alice@example.jp")
        assert c.data(b"Subject: x\r\n\r\nx\r\n") == (554, b"5.7.1 spam")
        sink.data_reply = None
        sink.data_cmd_reply = "451 4.3.0 no DATA now"
        c.mail("s@sender.test")
        c.rcpt("alice@example.jp")
        assert c.docmd("DATA") == (451, b"4.3.0 no DATA now")
    assert sink.messages == []
    assert [t.reply for t in sink.transactions] == ["554 5.7.1 spam"]
    assert sink.violations == []


def test_multiline_reply_spec():
    assert normalize_reply("250-first\n250 second", "250 x") == (250, ["first", "second"])
    assert normalize_reply("450", "250 x") == (450, ["4.0.0 Try again later"])
    assert normalize_reply(None, "220 hi") == (220, ["hi"])
    with pytest.raises(ValueError):
        normalize_reply("hello", "250 x")


def test_stop_and_restart_on_the_same_port(sink):
    port = sink.port
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.sendmail("s@sender.test", ["alice@example.jp"], b"Subject: 1\r\n\r\n1\r\n")
    # A session open at stop() is cut, like a primary that dies.
    live = Raw(port)
    assert live.reply()[0] == 220
    sink.stop()
    assert not sink.running
    assert live.closed(5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    sink.start()
    assert sink.port == port and sink.starts == 2
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.sendmail("s@sender.test", ["alice@example.jp"], b"Subject: 2\r\n\r\n2\r\n")
    assert sink.wait_messages(2, 5)
    assert [m.data for m in sink.messages] == [b"Subject: 1\r\n\r\n1\r\n",
                                               b"Subject: 2\r\n\r\n2\r\n"]
    assert sink.connections == 3


def test_unstarted_sink_keeps_a_given_port_free_to_refuse():
    from harness import free_port
    port = free_port()
    s = Sink(port, lifetime=30)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    s.start()
    try:
        assert s.port == port
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            assert c.noop()[0] == 250
    finally:
        s.stop()


def test_stops_by_itself_after_its_lifetime():
    s = Sink(lifetime=0.5).start()
    port = s.port
    deadline = time.time() + 5
    while s.running and time.time() < deadline:
        time.sleep(0.05)
    assert not s.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    s.stop()   # harmless after the timer stopped it


def test_starttls_verified_by_the_test_ca(pki):
    s = Sink(starttls=True, tls_cert=pki["good"][0], tls_key=pki["good"][1], lifetime=60).start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            code, text = c.ehlo("client.test")
            assert b"STARTTLS" in text.split(b"\n")
            c.starttls(context=client_ctx(pki["ca"][0]))
            code, text = c.ehlo("client.test")
            assert b"STARTTLS" not in text
            c.sendmail("s@sender.test", ["alice@example.jp"], b"Subject: tls\r\n\r\nx\r\n")
        assert s.wait_messages(1, 5)
        m = s.messages[0]
        assert m.tls and m.tls_version.startswith("TLS")
        assert s.sessions[0].tls_attempted and s.violations == []
    finally:
        s.stop()


@pytest.mark.parametrize("cert", ["other_ca", "wrong_name"])
def test_test_certificates_fail_verification_as_intended(pki, cert):
    s = Sink(starttls=True, tls_cert=pki[cert][0], tls_key=pki[cert][1], lifetime=60).start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.test")
            with pytest.raises(ssl.SSLCertVerificationError):
                c.starttls(context=client_ctx(pki["ca"][0]))
        assert s.wait_for(lambda: s.sessions and s.sessions[0].ended, 5)
        assert s.sessions[0].tls_attempted and not s.sessions[0].tls
        assert s.sessions[0].tls_error
        assert s.messages == []
    finally:
        s.stop()


def test_require_tls(pki):
    s = Sink(starttls=True, require_tls=True, tls_cert=pki["good"][0], tls_key=pki["good"][1],
             lifetime=60).start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.test")
            assert c.mail("s@sender.test")[0] == 530
    finally:
        s.stop()


def test_starttls_discards_pipelined_plaintext(pki):
    s = Sink(starttls=True, tls_cert=pki["good"][0], tls_key=pki["good"][1], lifetime=60).start()
    try:
        r = Raw(s.port)
        r.reply()
        r.cmd("EHLO client.test")
        r.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        assert r.reply()[0] == 220
        assert s.wait_for(lambda: s.violations, 5)
        assert "pipelined after STARTTLS" in s.violations[0]
        r.close()
    finally:
        s.stop()


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_required_over_tls(pki, mech):
    s = Sink(starttls=True, tls_cert=pki["good"][0], tls_key=pki["good"][1],
             auth=("u", "s3cret pw"), auth_mechanisms=(mech,), lifetime=60).start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.test")
            assert not c.has_extn("auth")          # only after TLS
            assert c.mail("s@sender.test")[0] == 530
            c.rset()
            c.starttls(context=client_ctx(pki["ca"][0]))
            c.ehlo("client.test")
            assert c.esmtp_features["auth"].split() == [mech]
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                c.login("u", "wrong")
            assert e.value.smtp_code == 535
            c.login("u", "s3cret pw")
            c.sendmail("s@sender.test", ["alice@example.jp"], b"Subject: auth\r\n\r\nx\r\n")
        assert s.wait_messages(1, 5)
        assert s.messages[0].auth_user == "u" and s.messages[0].tls
        assert s.violations == []
    finally:
        s.stop()


def test_auth_plain_with_prompt(pki):
    s = Sink(auth=("u", "pw"), auth_tls_only=False, lifetime=60).start()
    try:
        r = Raw(s.port)
        r.reply()
        assert "AUTH PLAIN LOGIN" in r.cmd("EHLO client.test")[1]
        assert r.cmd("AUTH PLAIN")[0] == 334
        assert r.cmd(base64.b64encode(b"\0u\0pw").decode())[0] == 235
        assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 250
        r.close()
    finally:
        s.stop()


def test_extensions_and_parameters():
    s = Sink(dsn=True, xforward=True, smtputf8=True, size=1000, lifetime=60).start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.test")
            for k in ("pipelining", "8bitmime", "dsn", "smtputf8", "xforward", "size"):
                assert c.has_extn(k), k
            assert c.esmtp_features["size"] == "1000"
            assert c.docmd("XFORWARD", "ADDR=192.0.2.7 HELO=client+2Eexample NAME=[UNAVAILABLE]")[0] == 250
            assert c.mail("s@sender.test", ["SIZE=2000"])[0] == 552
            assert c.mail("s@sender.test", ["SIZE=100", "RET=HDRS", "ENVID=x", "SMTPUTF8"])[0] == 250
            assert c.rcpt("alice@example.jp", ["NOTIFY=FAILURE,DELAY",
                                               "ORCPT=rfc822;alice@example.jp"])[0] == 250
            assert c.data(b"Subject: p\r\n\r\nx\r\n")[0] == 250
        assert s.wait_messages(1, 5)
        m = s.messages[0]
        assert m.xforward == {"ADDR": "192.0.2.7", "HELO": "client.example",
                              "NAME": "[UNAVAILABLE]"}
        assert m.mail_params == {"SIZE": "100", "RET": "HDRS", "ENVID": "x", "SMTPUTF8": None}
        assert m.rcpt_params["alice@example.jp"] == {"NOTIFY": "FAILURE,DELAY",
                                                     "ORCPT": "rfc822;alice@example.jp"}
        assert s.violations == []
    finally:
        s.stop()


def test_parameters_for_extensions_not_offered_are_violations():
    s = Sink(pipelining=False, eightbitmime=False, lifetime=60).start()
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.test")
            assert not c.has_extn("pipelining") and not c.has_extn("8bitmime")
            assert not c.has_extn("dsn") and not c.has_extn("xforward")
            assert c.mail("s@sender.test", ["BODY=8BITMIME"])[0] == 555
            assert c.mail("s@sender.test")[0] == 250
            assert c.rcpt("alice@example.jp", ["NOTIFY=NEVER"])[0] == 555
            assert c.docmd("XFORWARD", "ADDR=192.0.2.7")[0] == 503
        assert len(s.violations) == 3, s.violations
    finally:
        s.stop()


def test_client_slips_are_recorded(sink):
    sink.pipelining = False
    r = Raw(sink.port)
    r.reply()
    assert r.cmd("MAIL FROM:<s@sender.test>")[0] == 503        # before EHLO
    r.send("EHLO client.test\n")                                # bare LF
    assert r.reply()[0] == 250
    r.send("MAIL FROM:<s@sender.test>\r\nRCPT TO:<a@example.jp>\r\n")  # no PIPELINING
    assert r.reply()[0] == 250 and r.reply()[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send("8bit \xe9\nbare LF\r\n.\r\n")                    # 8-bit without BODY, bare LF
    assert r.reply()[0] == 250
    assert r.cmd("BDAT 10 LAST")[0] == 500
    r.close()
    v = "\n".join(sink.violations)
    for what in ("before EHLO", "without CRLF", "without PIPELINING", "DATA line without CRLF",
                 "8-bit DATA without BODY=8BITMIME", "BDAT"):
        assert what in v, (what, v)
