/*
 * err.c - text and SMTP reply for each mx2 error code (see err.h).
 */
#include "err.h"

#include <string.h>

struct err_entry {
    int code;
    const char *ecode;
    const char *text;
};

static const struct err_entry err_table[] = {
#define MX2_ERR_ROW_(name, code, ecode, text) {code, ecode, text},
    MX2_ERR_MAP(MX2_ERR_ROW_)
#undef MX2_ERR_ROW_
};

static const struct err_entry *
err_lookup(int err)
{
    if (err > MX2_E_BASE - 1 || err < MX2_E_BASE - MX2_ERRIDX_COUNT_)
        return NULL;
    return &err_table[MX2_E_BASE - 1 - err];
}

int
mx2_err_is_mx2(int err)
{
    return err_lookup(err) != NULL;
}

const char *
mx2_strerror(int err)
{
    const struct err_entry *e;

    if (err == 0)
        return "Success";
    if ((e = err_lookup(err)) != NULL)
        return e->text;
    if (err < 0 && err > -4096)
        return strerror(-err);
    return "Unknown error";
}

int
mx2_err_smtp(int err, const char **ecode, const char **text)
{
    const struct err_entry *e = err_lookup(err);

    if (e == NULL)
        e = err_lookup(MX2_E_INTERNAL);
    if (ecode != NULL)
        *ecode = e->ecode;
    if (text != NULL)
        *text = e->text;
    return e->code;
}
