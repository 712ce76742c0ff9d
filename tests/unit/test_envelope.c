/*
 * test_envelope.c - envelope encode/decode: round trip with every field set,
 * refusal of every truncation, every bit flip, and of each malformed field
 * (with the CRC repaired so the field check itself is what refuses it);
 * encode-side validation; envelope_set_error; dup/free.
 *
 * With MX2_WRITE_CORPUS=DIR in the environment it also writes the seed
 * corpus of tests/fuzz/fuzz_envelope.c to DIR (how the checked-in seeds in
 * tests/fuzz/corpus/envelope/ were made).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "err.h"

static struct envelope_rcpt full_rcpts[] = {
    {"alice@example.jp", "rfc822;alice@example.jp", ENVELOPE_NOTIFY_SUCCESS | ENVELOPE_NOTIFY_FAILURE,
     ENVELOPE_RCPT_DEFERRED, 0, 3, 1700000100, "451 4.3.0 try later"},
    {"bob@example.jp", "", ENVELOPE_NOTIFY_NEVER, ENVELOPE_RCPT_DONE, 0, 1, 1700000050, ""},
    {"carol@example.jp", "", 0, ENVELOPE_RCPT_BOUNCED, ENVELOPE_RF_DSN_SENT, 2, 1700000070,
     "550 5.1.1 no such user \xe3\x81\x82"},
    {"dave@example.jp", "", ENVELOPE_NOTIFY_DELAY, ENVELOPE_RCPT_PENDING, 0, 0, 0, ""},
};

static void
make_full(struct envelope *e)
{
    memset(e, 0, sizeof(*e));
    strcpy(e->qid, "1N2B3C4D5E6F7");
    e->arrival_sec = 1700000000;
    e->arrival_usec = 999999;
    e->sender = "sender+tag@example.org";
    e->size = 123456789012ull;
    e->client_addr = "2001:db8::25";
    e->client_name = "mail.example.org";
    e->helo = "mail.example.org";
    e->proto = ENVELOPE_PROTO_ESMTPS;
    e->tls_cipher = "TLSv1.3 TLS_AES_256_GCM_SHA384";
    e->flags = ENVELOPE_F_SMTPUTF8 | ENVELOPE_F_8BITMIME | ENVELOPE_F_HOLD | ENVELOPE_F_WARNED;
    e->ret = ENVELOPE_RET_HDRS;
    e->envid = "QQ314159";
    e->attempts = 7;
    e->first_failure = 1700000010;
    e->next_attempt = 1700003600;
    e->rcpts = full_rcpts;
    e->nrcpt = sizeof(full_rcpts) / sizeof(full_rcpts[0]);
}

static void
assert_env_equal(const struct envelope *a, const struct envelope *b)
{
    assert_string_equal(a->qid, b->qid);
    assert_true(a->arrival_sec == b->arrival_sec);
    assert_int_equal(a->arrival_usec, b->arrival_usec);
    assert_string_equal(a->sender ? a->sender : "", b->sender);
    assert_true(a->size == b->size);
    assert_string_equal(a->client_addr ? a->client_addr : "", b->client_addr);
    assert_string_equal(a->client_name ? a->client_name : "", b->client_name);
    assert_string_equal(a->helo ? a->helo : "", b->helo);
    assert_int_equal(a->proto, b->proto);
    assert_string_equal(a->tls_cipher ? a->tls_cipher : "", b->tls_cipher);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->ret, b->ret);
    assert_string_equal(a->envid ? a->envid : "", b->envid);
    assert_int_equal(a->attempts, b->attempts);
    assert_true(a->first_failure == b->first_failure);
    assert_true(a->next_attempt == b->next_attempt);
    assert_int_equal(a->nrcpt, b->nrcpt);
    for (size_t i = 0; i < a->nrcpt; i++) {
        const struct envelope_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];
        assert_string_equal(x->address, y->address);
        assert_string_equal(x->orcpt ? x->orcpt : "", y->orcpt);
        assert_int_equal(x->notify, y->notify);
        assert_int_equal(x->state, y->state);
        assert_int_equal(x->flags, y->flags);
        assert_int_equal(x->attempts, y->attempts);
        assert_true(x->last_attempt == y->last_attempt);
        assert_string_equal(x->last_error ? x->last_error : "", y->last_error);
    }
}

static void
test_round_trip(void **state)
{
    struct envelope e, d, c;
    unsigned char *buf, small[8];
    size_t len, len2;

    make_full(&e);
    assert_int_equal(envelope_encode(&e, &buf, &len), 0);
    assert_int_equal(envelope_encoded_size(&e), len);
    assert_int_equal(envelope_decode(buf, len, &d), 0);
    assert_env_equal(&e, &d);

    /* Re-encoding the decoded copy gives the same bytes. */
    unsigned char *buf2;
    assert_int_equal(envelope_encode(&d, &buf2, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf2);

    /* encode_to refuses a buffer too small. */
    assert_int_equal(envelope_encode_to(&e, small, sizeof(small), &len2), MX2_E_INVAL);

    assert_int_equal(envelope_dup(&d, &c), 0);
    assert_env_equal(&d, &c);
    envelope_free(&c);
    envelope_free(&d);
    assert_null(d.sender);
    envelope_free(&d); /* zeroed: no-op */
    envelope_free(NULL);
    free(buf);

    /* A minimal envelope: empty (null) sender and strings, one recipient. */
    struct envelope_rcpt r = {"x@example.jp", NULL, 0, ENVELOPE_RCPT_PENDING, 0, 0, 0, NULL};
    memset(&e, 0, sizeof(e));
    strcpy(e.qid, "0000000000000");
    e.rcpts = &r;
    e.nrcpt = 1;
    assert_int_equal(envelope_encode(&e, &buf, &len), 0);
    assert_int_equal(envelope_decode(buf, len, &d), 0);
    assert_string_equal(d.sender, "");
    assert_string_equal(d.rcpts[0].orcpt, "");
    assert_env_equal(&e, &d);
    envelope_free(&d);
    free(buf);
}

static void
test_truncation_and_bit_flips_refused(void **state)
{
    struct envelope e, d;
    unsigned char *buf;
    size_t len;

    make_full(&e);
    assert_int_equal(envelope_encode(&e, &buf, &len), 0);
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(envelope_decode(buf, n, &d), MX2_E_CORRUPT);
        assert_null(d.rcpts); /* zeroed on error */
    }
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (unsigned char)(1u << bit);
            if (envelope_decode(buf, len, &d) != MX2_E_CORRUPT)
                fail_msg("bit %d of byte %zu flipped: not refused", bit, i);
            buf[i] ^= (unsigned char)(1u << bit);
        }
    }
    assert_int_equal(envelope_decode(NULL, 0, &d), MX2_E_CORRUPT);
    /* One byte of trailing garbage (after the CRC) is refused too. */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(envelope_decode(longer, len + 1, &d), MX2_E_CORRUPT);
    free(longer);
    free(buf);
}

/* ---- malformed fields behind a valid CRC ---- */

static void
fix_crc(unsigned char *b, size_t len)
{
    uint32_t c = envelope_crc32(b, len - 4);
    b[len - 4] = (unsigned char)(c >> 24);
    b[len - 3] = (unsigned char)(c >> 16);
    b[len - 2] = (unsigned char)(c >> 8);
    b[len - 1] = (unsigned char)c;
}

static size_t
find(const unsigned char *b, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(b + i, s, n) == 0)
            return i;
    fail_msg("'%s' not in the record", s);
    return 0;
}

enum edit { SET, SET_BE16, SET_BE32 };

/* Offsets of the fixed header (README.md). */
#define OFF_VERSION 4
#define OFF_QID 5
#define OFF_ARRIVAL 18
#define OFF_USEC 26
#define OFF_PROTO 38
#define OFF_FLAGS 39
#define OFF_RET 43
#define OFF_FIRST_FAILURE 48
#define OFF_SENDER_LEN 64

static void
test_malformed_fields_refused(void **state)
{
    struct envelope e, d;
    unsigned char *orig;
    size_t len;

    make_full(&e);
    assert_int_equal(envelope_encode(&e, &orig, &len), 0);
    size_t alice = find(orig, len, "alice@example.jp");
    size_t bob = find(orig, len, "bob@example.jp");
    size_t bob_notify = bob + strlen("bob@example.jp") + 2; /* after empty orcpt */
    size_t dave = find(orig, len, "dave@example.jp");
    size_t dave_state = dave + strlen("dave@example.jp") + 2 + 1;
    size_t nrcpt_off = alice - 2 - 4;
    size_t helo_text = find(orig, len, "TLSv1.3");

    static const struct {
        const char *what;
        int where; /* index into offsets below */
        enum edit how;
        uint32_t val;
    } rows[] = {
        {"magic", 0, SET, 'X'},
        {"version 2", 1, SET, 2},
        {"version 0", 1, SET, 0},
        {"qid char", 2, SET, 'w'},
        {"arrival negative", 3, SET, 0x80},
        {"usec 1000000", 4, SET_BE32, 1000000},
        {"proto 3", 5, SET, 3},
        {"unknown flag", 6, SET_BE32, 0x10},
        {"ret 3", 7, SET, 3},
        {"first_failure negative", 8, SET, 0xff},
        {"sender length past end", 9, SET_BE16, 0xffff},
        {"sender length over limit", 9, SET_BE16, 4097},
        {"sender length short", 9, SET_BE16, 3},
        {"control char in string", 10, SET, '\n'},
        {"DEL in string", 10, SET, 0x7f},
        {"nrcpt 0", 11, SET_BE32, 0},
        {"nrcpt huge", 11, SET_BE32, 100001},
        {"nrcpt one too many", 11, SET_BE32, 5},
        {"nrcpt one too few", 11, SET_BE32, 3},
        {"notify NEVER|SUCCESS", 12, SET, ENVELOPE_NOTIFY_NEVER | ENVELOPE_NOTIFY_SUCCESS},
        {"notify high bit", 12, SET, 0x10},
        {"state 4", 13, SET, 4},
        {"rcpt flag unknown", 14, SET, 0x2},
        {"address length 0", 15, SET_BE16, 0},
    };
    size_t offs[] = {0,
                     OFF_VERSION,
                     OFF_QID + 3,
                     OFF_ARRIVAL,
                     OFF_USEC,
                     OFF_PROTO,
                     OFF_FLAGS,
                     OFF_RET,
                     OFF_FIRST_FAILURE,
                     OFF_SENDER_LEN,
                     helo_text + 3,
                     nrcpt_off,
                     bob_notify,
                     dave_state,
                     dave_state + 1,
                     alice - 2};

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned char *b = malloc(len);
        size_t o = offs[rows[i].where];
        memcpy(b, orig, len);
        switch (rows[i].how) {
        case SET:
            b[o] = (unsigned char)rows[i].val;
            break;
        case SET_BE16:
            b[o] = (unsigned char)(rows[i].val >> 8);
            b[o + 1] = (unsigned char)rows[i].val;
            break;
        case SET_BE32:
            b[o] = (unsigned char)(rows[i].val >> 24);
            b[o + 1] = (unsigned char)(rows[i].val >> 16);
            b[o + 2] = (unsigned char)(rows[i].val >> 8);
            b[o + 3] = (unsigned char)rows[i].val;
            break;
        }
        fix_crc(b, len);
        if (envelope_decode(b, len, &d) != MX2_E_CORRUPT)
            fail_msg("%s: not refused", rows[i].what);
        free(b);
    }
    /* Control: the unmodified record with a recomputed CRC still decodes. */
    fix_crc(orig, len);
    assert_int_equal(envelope_decode(orig, len, &d), 0);
    envelope_free(&d);
    free(orig);
}

static void
test_encode_refuses_bad_envelopes(void **state)
{
    char big[ENVELOPE_MAX_STR + 2], err[ENVELOPE_MAX_ERROR + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memset(err, 'e', sizeof(err) - 1);
    err[sizeof(err) - 1] = '\0';

    static const char *const cases[] = {
        "bad qid", "usec", "sender CRLF", "sender too long", "no rcpts", "empty address",
        "NEVER|DELAY", "state 9", "error too long", "proto", "negative time", "helo tab",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct envelope e;
        struct envelope_rcpt r = full_rcpts[0];
        unsigned char *buf = NULL;
        size_t len;
        make_full(&e);
        e.rcpts = &r;
        e.nrcpt = 1;
        switch (i) {
        case 0: strcpy(e.qid, "not-an-id!!!!"); break;
        case 1: e.arrival_usec = 1000000; break;
        case 2: e.sender = "a@b\r\nRCPT TO:<x@y>"; break;
        case 3: e.sender = big; break;
        case 4: e.nrcpt = 0; break;
        case 5: r.address = ""; break;
        case 6: r.notify = ENVELOPE_NOTIFY_NEVER | ENVELOPE_NOTIFY_DELAY; break;
        case 7: r.state = (enum envelope_rcpt_state)9; break;
        case 8: r.last_error = err; break;
        case 9: e.proto = (enum envelope_proto)7; break;
        case 10: e.next_attempt = -1; break;
        case 11: e.helo = "a\tb"; break;
        }
        if (envelope_encode(&e, &buf, &len) != MX2_E_INVAL)
            fail_msg("%s: encoded", cases[i]);
        assert_null(buf);
        assert_int_equal(envelope_encoded_size(&e), 0);
    }
}

static void
test_set_error(void **state)
{
    struct envelope_rcpt r = {0};
    char longer[ENVELOPE_MAX_ERROR + 10];

    envelope_set_error(&r, "451 4.3.0\r\nsecond line\tx", 24);
    assert_string_equal(r.last_error, "451 4.3.0  second line x");

    /* Cut on a UTF-8 boundary: "\xe3\x81\x82" straddles byte 512. */
    memset(longer, 'a', sizeof(longer));
    longer[510] = '\xe3';
    longer[511] = '\x81';
    longer[512] = '\x82';
    envelope_set_error(&r, longer, sizeof(longer));
    assert_int_equal(strlen(r.last_error), 510);

    memset(longer, 'b', sizeof(longer));
    envelope_set_error(&r, longer, sizeof(longer));
    assert_int_equal(strlen(r.last_error), ENVELOPE_MAX_ERROR);

    envelope_set_error(&r, NULL, 5);
    assert_string_equal(r.last_error, "");
    /* A NUL inside the text becomes a space, not a truncation. */
    envelope_set_error(&r, "a\0b", 3);
    assert_string_equal(r.last_error, "a b");
    free(r.last_error);
}

static void
test_names_and_counts(void **state)
{
    struct envelope e;

    make_full(&e);
    assert_int_equal(envelope_pending_count(&e), 2); /* alice deferred, dave pending */
    assert_string_equal(envelope_rcpt_state_name(ENVELOPE_RCPT_DEFERRED), "deferred");
    assert_string_equal(envelope_rcpt_state_name((enum envelope_rcpt_state)42), "unknown");
    assert_string_equal(envelope_proto_name(ENVELOPE_PROTO_ESMTPS), "ESMTPS");
    assert_string_equal(envelope_ret_name(ENVELOPE_RET_FULL), "FULL");
    /* CRC-32 check value ("123456789" -> 0xCBF43926). */
    assert_int_equal(envelope_crc32("123456789", 9), 0xcbf43926u);
}

/* The bit-at-a-time definition, for comparing the fast CRC with. */
static uint32_t
crc32_reference(uint32_t crc, const unsigned char *p, size_t len)
{
    uint32_t c = crc ^ 0xffffffffu;

    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void
test_crc32_matches_the_definition_at_every_length_and_alignment(void **state)
{
    unsigned char buf[600];
    uint32_t x = 12345;

    (void)state;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= 300; len++)
            assert_int_equal(envelope_crc32(buf + off, len), crc32_reference(0, buf + off, len));
    /* Updating in pieces gives the CRC of the whole. */
    for (size_t cut = 0; cut <= sizeof(buf); cut += 37) {
        uint32_t c = envelope_crc32_update(0, buf, cut);
        c = envelope_crc32_update(c, buf + cut, sizeof(buf) - cut);
        assert_int_equal(c, crc32_reference(0, buf, sizeof(buf)));
    }
}

/* MX2_WRITE_CORPUS=DIR: write the fuzz seeds. */
static void
write_corpus(const char *dir)
{
    struct envelope e;
    struct envelope_rcpt r = {"x@example.jp", "", 0, ENVELOPE_RCPT_PENDING, 0, 0, 0, ""};
    unsigned char *buf;
    size_t len;
    char path[4096];

    for (int i = 0; i < 3; i++) {
        make_full(&e);
        if (i == 1) {
            memset(&e, 0, sizeof(e));
            strcpy(e.qid, "1N2B3C4D5E6F8");
            e.rcpts = &r;
            e.nrcpt = 1;
        } else if (i == 2) {
            e.sender = "";
            e.nrcpt = 2;
        }
        if (envelope_encode(&e, &buf, &len) != 0)
            abort();
        snprintf(path, sizeof(path), "%s/seed%d.bin", dir, i);
        FILE *f = fopen(path, "wb");
        if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0)
            abort();
        free(buf);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_matches_the_definition_at_every_length_and_alignment),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncation_and_bit_flips_refused),
        cmocka_unit_test(test_malformed_fields_refused),
        cmocka_unit_test(test_encode_refuses_bad_envelopes),
        cmocka_unit_test(test_set_error),
        cmocka_unit_test(test_names_and_counts),
    };
    if (getenv("MX2_WRITE_CORPUS") != NULL)
        write_corpus(getenv("MX2_WRITE_CORPUS"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
