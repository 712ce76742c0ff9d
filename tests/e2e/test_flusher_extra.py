"""Optional delivery behaviours of SPEC.md "Delivery (flusher)":
delay_warning, NOTIFY=NEVER, and defer_when_primary_up."""
import re
import smtplib
import time

from harness import Mx2d, Raw
from sink import Sink


def send(d, rcpt="alice@example.jp", notify=None):
    r = Raw(d.port)
    r.reply()
    r.cmd("EHLO client.test")
    assert r.cmd("MAIL FROM:<sender@sender.test>")[0] == 250
    extra = " NOTIFY=%s" % notify if notify else ""
    assert r.cmd("RCPT TO:<%s>%s" % (rcpt, extra))[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send("Subject: hello\r\n\r\nbody\r\n.\r\n")
    code, text = r.reply()
    assert code == 250, text
    r.cmd("QUIT")
    return text.split()[-1]


def test_delay_warning_sent_once(tmp_path):
    primary = Sink(rcpt_default="450 4.2.0 mailbox busy").start()
    relay = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port],
             bounce_relay="[127.0.0.1]:%d" % relay.port, delay_warning="2s",
             retry_min="1s", retry_max="1s", queue_lifetime="1h").start()
    try:
        send(d)
        assert relay.wait_messages(1, 15), d.read_log()
        time.sleep(3)          # more retries happen; still one warning
        assert len(relay.messages) == 1
        m = relay.messages[0]
        assert m.mail_from == "" and m.rcpts == ["sender@sender.test"]
        body = m.data.decode("utf-8", "replace")
        assert "report-type=delivery-status" in body
        assert re.search(r"^Action: delayed", body, re.M | re.I)
        assert "Final-Recipient: rfc822; alice@example.jp" in body
    finally:
        d.close()
        primary.stop()
        relay.stop()


def test_notify_never_suppresses_the_bounce(tmp_path):
    primary = Sink(rcpt_default="550 5.1.1 no such user").start()
    relay = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port],
             bounce_relay="[127.0.0.1]:%d" % relay.port, retry_min="1s").start()
    try:
        qid = send(d, notify="NEVER")
        deadline = time.time() + 10
        while time.time() < deadline and "%s: removed" % qid not in d.read_log():
            time.sleep(0.1)
        assert "%s: removed" % qid in d.read_log()
        time.sleep(1)
        assert relay.messages == []
        # Without NOTIFY the same failure does produce a DSN.
        send(d)
        assert relay.wait_messages(1, 10)
    finally:
        d.close()
        primary.stop()
        relay.stop()


def test_defer_when_primary_up(tmp_path):
    primary = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port], defer_when_primary_up=True,
             probe_interval="1s", retry_min="1s").start()
    try:
        # The probes find the primary up: new mail is sent back to it.
        deadline = time.time() + 10
        code = None
        while time.time() < deadline:
            r = Raw(d.port)
            r.reply()
            r.cmd("EHLO c")
            code, text = r.cmd("MAIL FROM:<s@sender.test>")
            r.close()
            if code == 421:
                break
            time.sleep(0.3)
        assert code == 421 and "4.3.2" in text, text
        # The primary goes away: mx2 takes mail again.
        primary.stop()
        deadline = time.time() + 15
        while time.time() < deadline:
            r = Raw(d.port)
            r.reply()
            r.cmd("EHLO c")
            code, text = r.cmd("MAIL FROM:<s@sender.test>")
            r.close()
            if code == 250:
                break
            time.sleep(0.3)
        assert code == 250, d.read_log()
    finally:
        d.close()
        primary.stop()


def test_notify_success_to_a_primary_without_dsn_gets_relayed_notice(tmp_path):
    primary = Sink(dsn=False).start()
    relay = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port],
             bounce_relay="[127.0.0.1]:%d" % relay.port).start()
    try:
        send(d, notify="SUCCESS")
        assert primary.wait_messages(1, 10)
        assert relay.wait_messages(1, 10), d.read_log()
        body = relay.messages[0].data.decode("utf-8", "replace")
        assert re.search(r"^Action: relayed", body, re.M | re.I), body
        assert "Final-Recipient: rfc822; alice@example.jp" in body
        # Without NOTIFY=SUCCESS: no notice at all.
        send(d)
        assert primary.wait_messages(2, 10)
        time.sleep(1)
        assert len(relay.messages) == 1
    finally:
        d.close()
        primary.stop()
        relay.stop()


def test_notify_success_passed_on_when_primary_offers_dsn(tmp_path):
    primary = Sink(dsn=True).start()
    relay = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port],
             bounce_relay="[127.0.0.1]:%d" % relay.port).start()
    try:
        send(d, notify="SUCCESS")
        assert primary.wait_messages(1, 10)
        assert primary.messages[0].rcpt_params["alice@example.jp"].get("NOTIFY") == "SUCCESS"
        time.sleep(1)
        assert relay.messages == []   # the primary will report, not mx2
    finally:
        d.close()
        primary.stop()
        relay.stop()


def test_many_bounces_all_delivered(tmp_path):
    # Regression: bounce connection slots were leaked, so after two DSNs no
    # further DSN was ever sent.
    primary = Sink(rcpt_default="550 5.1.1 no such user").start()
    relay = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port],
             bounce_relay="[127.0.0.1]:%d" % relay.port).start()
    try:
        for _ in range(6):
            send(d)
        assert relay.wait_messages(6, 20), d.read_log()
        deadline = time.time() + 10
        while time.time() < deadline and d.ctl("queue").stdout.strip() != "Mail queue is empty":
            time.sleep(0.2)
        assert d.ctl("queue").stdout.strip() == "Mail queue is empty"
    finally:
        d.close()
        primary.stop()
        relay.stop()


def send_utf8(d):
    r = Raw(d.port)
    r.reply()
    r.cmd("EHLO client.test")
    assert r.cmd("MAIL FROM:<sender@sender.test> SMTPUTF8 BODY=8BITMIME")[0] == 250
    assert r.cmd("RCPT TO:<alice@example.jp>")[0] == 250
    assert r.cmd("DATA")[0] == 354
    r.send("Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: Zoë <sender@sender.test>\r\n\r\ncafé\r\n.\r\n".encode())
    code, text = r.reply()
    assert code == 250, text
    r.cmd("QUIT")


def test_smtputf8_message_to_primary_without_smtputf8_bounces_5_6_7(tmp_path):
    primary = Sink(smtputf8=False).start()
    relay = Sink().start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port],
             bounce_relay="[127.0.0.1]:%d" % relay.port).start()
    try:
        send_utf8(d)
        assert relay.wait_messages(1, 10), d.read_log()
        body = relay.messages[0].data.decode("utf-8", "replace")
        assert re.search(r"^Status: 5\.6\.7", body, re.M), body
        assert primary.messages == []
        assert "dsn=5.6.7, status=bounced" in d.read_log()
    finally:
        d.close()
        primary.stop()
        relay.stop()


def test_smtputf8_passed_on_when_offered(tmp_path):
    primary = Sink(smtputf8=True).start()
    d = Mx2d(tmp_path, primary=["[127.0.0.1]:%d" % primary.port]).start()
    try:
        send_utf8(d)
        assert primary.wait_messages(1, 10), d.read_log()
        m = primary.messages[0]
        assert "SMTPUTF8" in m.mail_params
        assert "café".encode() in m.data
        assert primary.violations == []
    finally:
        d.close()
        primary.stop()
