/*
 * fuzz_smtp_parse.c - smtp_parse_command on arbitrary lines, plus xtext.
 *
 * The first byte gives the SMTP_PARSE_* flags. Checked with abort():
 * the return value is 0 or one of the documented reply errors (never an
 * internal one), every error maps to a 5xx reply, the borrowed argument
 * lies inside the line, decoded ENVID/ORCPT are printable, NUL-terminated
 * and re-encode as xtext that decodes to the same bytes; and any input
 * that xtext-encodes decodes back exactly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_xtext(const char *s, size_t n)
{
    char enc[3 * SMTP_ORCPT_MAX + 1], dec[SMTP_ORCPT_MAX + 1];
    size_t el, dl;

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            abort();
    if (strlen(s) != n)
        abort();
    if (smtp_xtext_encode(s, n, enc, sizeof(enc), &el) != 0)
        abort();
    if (smtp_xtext_decode(enc, el, dec, sizeof(dec), &dl) != 0 || dl != n ||
        memcmp(dec, s, n) != 0)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_cmd c;
    const char *line;
    size_t len;
    int rc;

    if (size < 1)
        return 0;
    line = (const char *)data + 1;
    len = size - 1;
    rc = smtp_parse_command(line, len, data[0] & SMTP_PARSE_UTF8, &c);
    if (rc != 0 && rc != MX2_E_SYNTAX && rc != MX2_E_INVAL && rc != MX2_E_BAD_SENDER &&
        rc != MX2_E_BAD_ADDRESS && rc != MX2_E_BAD_PARAM)
        abort();
    if (rc != 0 && mx2_err_smtp(rc, NULL, NULL) / 100 != 5)
        abort();
    if ((int)c.verb < 0 || c.verb >= SMTP_V_COUNT_)
        abort();
    if (c.arg_len > 0 && (c.arg < line || c.arg + c.arg_len > line + len))
        abort();
    if (rc == 0) {
        if (c.verb == SMTP_V_UNKNOWN)
            abort();
        if (c.has_envid)
            check_xtext(c.envid, c.envid_len);
        if (c.has_orcpt)
            check_xtext(c.orcpt, c.orcpt_len);
        if (c.verb == SMTP_V_RCPT && (c.path.flags & ADDR_F_NULL))
            abort(); /* RCPT TO:<> */
        if ((c.notify & SMTP_NOTIFY_NEVER) && c.notify != SMTP_NOTIFY_NEVER)
            abort();
    }
    /* xtext decode of the raw line: whatever decodes re-encodes. */
    {
        char dec[256];
        size_t dl;
        if (len < sizeof(dec) && smtp_xtext_decode(line, len, dec, sizeof(dec), &dl) == 0)
            check_xtext(dec, dl);
        /* Encode of raw bytes always decodes back only when printable; at
         * least it must never overflow. */
        {
            char enc[3 * 256 + 1];
            size_t el, n = len < 256 ? len : 256;
            if (smtp_xtext_encode(line, n, enc, sizeof(enc), &el) != 0 || el > 3 * n)
                abort();
        }
    }
    return 0;
}
