/*
 * fuzz_reply.c - reply lines, the multi-line accumulator and EHLO keyword
 * extraction on arbitrary bytes (what a hostile or broken primary could
 * send). The input is split at LF (a preceding CR is dropped) into lines.
 *
 * Checked with abort(): the accumulator never exceeds its bounds, text_len
 * matches the NUL-terminated text, all lines agree on the code, a complete
 * reply's code is 200..599, and once it errs it stays poisoned.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct smtp_reply r; /* 8 KiB: keep it off the stack */
    const char *s = (const char *)data;
    size_t pos = 0;
    int poisoned = 0;

    smtp_reply_init(&r);
    while (pos < size) {
        const char *nl = memchr(s + pos, '\n', size - pos);
        size_t end = nl != NULL ? (size_t)(nl - s) : size, len = end - pos;
        struct smtp_reply_line l;
        int rc;

        if (len > 0 && s[pos + len - 1] == '\r')
            len--;
        if (smtp_parse_reply_line(s + pos, len, &l) == 0) {
            if (l.code < 200 || l.code > 599 || l.text < s + pos ||
                l.text + l.text_len > s + pos + len)
                abort();
            if (l.has_ecode && (strlen(l.ecode) < 5 || l.ecode[0] != s[pos]))
                abort();
        }
        rc = smtp_reply_add_line(&r, s + pos, len);
        if (poisoned && rc != MX2_E_PROTOCOL)
            abort();
        if (rc == MX2_E_PROTOCOL) {
            poisoned = 1;
        } else if (rc == 1) {
            struct smtp_ehlo e;
            if (!r.done || r.code < 200 || r.code > 599 || r.nlines > SMTP_REPLY_MAX_LINES)
                abort();
            if (r.text_len > SMTP_REPLY_TEXT_MAX || strlen(r.text) != r.text_len)
                abort();
            rc = smtp_ehlo_parse(&r, &e);
            if ((rc == 0) != (r.code / 100 == 2))
                abort();
            smtp_reply_init(&r);
        } else if (rc == MX2_E_INVAL) {
            abort(); /* only after done, and we re-init then */
        }
        pos = end + 1;
    }
    {
        struct smtp_ehlo e;
        memset(&e, 0, sizeof(e));
        smtp_ehlo_parse_line(s, size, &e);
    }
    return 0;
}
