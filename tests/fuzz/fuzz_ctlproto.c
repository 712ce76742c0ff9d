/*
 * fuzz_ctlproto.c - the control protocol on arbitrary bytes: what any local
 * member of the daemon's group (or a broken script) could write to the
 * control socket, and what a broken daemon could answer mx2ctl.
 *
 * The input is framed into lines exactly as control.c does
 * (ctlproto_next_line, discarding an overlong line); each line is parsed as
 * a request and as a response. Checked with abort(): a parsed request has a
 * valid command, at most CTLPROTO_MAX_IDS IDs, each well-formed; formatting
 * it and parsing the result gives the same request back; a response's text
 * lies inside the line and an ERR code is 100..599; framing always advances
 * and never reads past the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_request(const char *line, size_t len)
{
    static struct ctlproto_req req, again;
    static char buf[CTLPROTO_LINE_MAX + 1];
    const char *ids[CTLPROTO_MAX_IDS];
    const char *why = NULL;
    int n;

    if (ctlproto_parse_request(line, len, &req, &why) != 0) {
        if (why == NULL)
            abort();
        return;
    }
    if ((unsigned)req.cmd >= CTLPROTO_CMD_COUNT_ || req.nids > CTLPROTO_MAX_IDS)
        abort();
    for (size_t i = 0; i < req.nids; i++) {
        if (!ctlproto_id_valid(req.ids[i], strlen(req.ids[i])))
            abort();
        ids[i] = req.ids[i];
    }
    n = ctlproto_format_request(req.cmd, req.flags, ids, req.nids, buf, sizeof(buf));
    if (n <= 0 || buf[n - 1] != '\n')
        abort();
    if (ctlproto_parse_request(buf, (size_t)n - 1, &again, NULL) != 0)
        abort();
    if (again.cmd != req.cmd || again.flags != req.flags || again.nids != req.nids)
        abort();
    for (size_t i = 0; i < req.nids; i++)
        if (strcmp(again.ids[i], req.ids[i]) != 0)
            abort();
}

static void
check_response(const char *line, size_t len)
{
    struct ctlproto_resp r;

    if (ctlproto_parse_response(line, len, &r) != 0)
        return;
    if (r.text != NULL && (r.text < line || r.text + r.text_len > line + len))
        abort();
    if (r.kind == CTLPROTO_R_ERR && (r.code < 100 || r.code > 599))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t pos = 0;
    int discarding = 0;

    while (pos < size) {
        size_t linelen = 0, consumed = 0;
        int rc = ctlproto_next_line(s + pos, size - pos, &linelen, &consumed);

        if (rc == 0) {
            /* The tail without LF: still a line for the parsers' sake. */
            check_request(s + pos, size - pos);
            check_response(s + pos, size - pos);
            break;
        }
        if (rc < 0) {
            const char *lf = memchr(s + pos, '\n', size - pos);
            discarding = 1;
            if (lf == NULL)
                break;
            pos = (size_t)(lf - s) + 1;
            discarding = 0;
            continue;
        }
        if (consumed == 0 || consumed > size - pos || linelen >= consumed)
            abort();
        if (!discarding) {
            check_request(s + pos, linelen);
            check_response(s + pos, linelen);
        }
        pos += consumed;
    }
    return 0;
}
