/*
 * mx2map.c - build, query and dump mx2's recipient map (SPEC.md "mx2map").
 *
 *   mx2map build -o MAP [--domain D]... [--passwd FILE|-] [--aliases FILE|-]
 *                [--list FILE|-] [--min-uid N] [--exclude NAME]...
 *   mx2map query [-d DELIMS] [-c FILE] [MAP] ADDRESS
 *   mx2map dump MAP
 *
 * This is the classic Postfix backup-MX recipe (relay_recipient_maps built
 * from the primary's `getent passwd` and /etc/aliases, system accounts left
 * out, postmaster kept) as one command:
 *
 *   ssh primary getent passwd | mx2map build --passwd - --domain example.jp -o MAP
 *
 * Exit codes (SPEC.md "Programs"): 0 ok; 1 operational failure (cannot
 * write the map, cannot read it, `getent` failed, query found nothing);
 * 2 usage error or bad input (unknown option, missing file, local parts
 * but no --domain, nothing at all could be read).
 *
 * Why refuse to write a map when the sources gave no recipient. The usual
 * input is piped from another host; if that ssh fails, stdin is empty, and
 * an "empty" map would make mx2d answer 550 to every real user. Exiting 2
 * leaves the previous map in place.
 *
 * Why postmaster and abuse are always added: RFC 5321 4.5.1 requires
 * postmaster for every domain, RFC 2142 asks for abuse; a backup MX that
 * rejected them would hide exactly the reports an outage produces.
 */
#include "config.h"
#include "err.h"
#include "mapsrc.h"
#include "rcptmap.h"
#include "xalloc.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MX2_VERSION
#define MX2_VERSION "unknown"
#endif

#define MX2MAP_EXIT_FAIL 1
#define MX2MAP_EXIT_USAGE 2

static const char mx2map_usage_text[] =
    "usage: mx2map build -o MAP [--domain D]... [--passwd FILE|-] [--aliases FILE|-]\n"
    "                    [--list FILE|-] [--min-uid N] [--exclude NAME]...\n"
    "       mx2map query [-d DELIMS] [-c FILE] [MAP] ADDRESS\n"
    "       mx2map dump MAP\n"
    "       mx2map -h | --help | --version\n"
    "\n"
    "build   compile the recipient map MAP (LMDB) from passwd, aliases and plain\n"
    "        lists, written atomically (temporary file + rename).\n"
    "        --passwd FILE   getent passwd / passwd(5) lines; accounts with uid >=\n"
    "                        --min-uid (default 1000), without nobody, system\n"
    "                        accounts and nologin/false shells\n"
    "        --aliases FILE  every alias name of an aliases(5) file\n"
    "        --list FILE     one local part, address or @domain (catch-all) per\n"
    "                        line; further columns are ignored; # comments\n"
    "        --domain D      domain appended to local parts (repeatable)\n"
    "        --exclude NAME  leave this passwd account or alias name out (repeatable)\n"
    "        FILE may be - for standard input (one source at most). With no source,\n"
    "        reads `getent passwd` and /etc/aliases. postmaster and abuse are always\n"
    "        added for every domain.\n"
    "query   print the key that ADDRESS matches (exit 0) or exit 1. -d sets the\n"
    "        recipient delimiter characters (default \"+\", \"\" disables); -c FILE\n"
    "        takes recipient_delimiter (and, when MAP is left out, recipient_map)\n"
    "        from an mx2 configuration file; -d still wins over it.\n"
    "dump    print every key of MAP, one per line, sorted.\n";

static void mx2map_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void
mx2map_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("mx2map: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try mx2map -h)\n", stderr);
    exit(MX2MAP_EXIT_USAGE);
}

/* ------------------------------------------------------------ domain set */

/* A small open-addressing string set: the domains that get postmaster and
 * abuse. A list of a million addresses may name many domains, so not a
 * linear scan. */
struct mx2map_set {
    char **slot;
    size_t cap, count;
};

static uint64_t
mx2map_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int
mx2map_set_add(struct mx2map_set *set, const char *s)
{
    size_t i;

    if (set->count * 2 >= set->cap) {
        struct mx2map_set bigger = {xcalloc(set->cap ? set->cap * 2 : 64, sizeof(char *)),
                                    set->cap ? set->cap * 2 : 64, 0};
        for (i = 0; i < set->cap; i++) {
            if (set->slot[i] != NULL) {
                size_t j = mx2map_hash(set->slot[i]) & (bigger.cap - 1);
                while (bigger.slot[j] != NULL)
                    j = (j + 1) & (bigger.cap - 1);
                bigger.slot[j] = set->slot[i];
                bigger.count++;
            }
        }
        free(set->slot);
        *set = bigger;
    }
    for (i = mx2map_hash(s) & (set->cap - 1); set->slot[i] != NULL; i = (i + 1) & (set->cap - 1))
        if (strcmp(set->slot[i], s) == 0)
            return 0;
    set->slot[i] = xstrdup(s);
    set->count++;
    return 1;
}

static void
mx2map_set_free(struct mx2map_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slot[i]);
    free(set->slot);
    memset(set, 0, sizeof(*set));
}

/* ----------------------------------------------------------------- build */

enum mx2map_src_kind { SRC_PASSWD, SRC_ALIASES, SRC_LIST };

struct mx2map_src {
    enum mx2map_src_kind kind;
    const char *path; /* "-" = stdin; NULL = `getent passwd` */
    int optional;     /* the default /etc/aliases: skipped when missing */
};

struct mx2map_build {
    struct rcptmap_build *b;
    char **domains; /* from --domain, normalised */
    size_t ndomains;
    const char *const *exclude;
    size_t nexclude;
    struct mx2map_set all_domains;
    enum mx2map_src_kind kind; /* source being read */
    const char *file;          /* its name in reports */
    size_t names;              /* names accepted from all sources */
    size_t orphans;            /* local parts seen with no --domain */
    char orphan_example[RCPTMAP_LOCAL_MAX + 1];
    const char *orphan_file;
    size_t bad_lines;
    size_t add_failed;
    size_t aliases_excluded;
};

static void
mx2map_add(struct mx2map_build *mb, const char *key)
{
    if (rcptmap_build_add(mb->b, key) != 0)
        mb->add_failed++; /* parsers validated every name: not expected */
}

static void
mx2map_on_name(void *arg, const char *name)
{
    struct mx2map_build *mb = arg;
    const char *at = strrchr(name, '@');
    char key[RCPTMAP_KEY_MAX];

    if (at != NULL) {
        /* "user@domain" or "@domain" from a list: postmaster and abuse
         * must exist for that domain too. */
        mx2map_set_add(&mb->all_domains, at + 1);
        mx2map_add(mb, name);
        mb->names++;
        return;
    }
    if (mb->kind == SRC_ALIASES) {
        for (size_t i = 0; i < mb->nexclude; i++) {
            if (strcasecmp(mb->exclude[i], name) == 0) {
                mb->aliases_excluded++;
                return;
            }
        }
    }
    mb->names++;
    if (mb->ndomains == 0) {
        if (mb->orphans++ == 0) {
            snprintf(mb->orphan_example, sizeof(mb->orphan_example), "%s", name);
            mb->orphan_file = mb->file;
        }
        return;
    }
    for (size_t i = 0; i < mb->ndomains; i++) {
        snprintf(key, sizeof(key), "%s@%s", name, mb->domains[i]);
        mx2map_add(mb, key);
    }
}

static void
mx2map_on_bad(void *arg, const char *file, unsigned long line, const char *reason)
{
    struct mx2map_build *mb = arg;

    mb->bad_lines++;
    fprintf(stderr, "%s:%lu: %s\n", file, line, reason);
}

static unsigned long
mx2map_parse_uid(const char *s)
{
    char *end;
    unsigned long long v;

    if (s[0] < '0' || s[0] > '9')
        mx2map_usage_error("build: --min-uid '%s' is not a number", s);
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > UINT32_MAX)
        mx2map_usage_error("build: --min-uid '%s' is not a valid uid", s);
    return (unsigned long)v;
}

static int
mx2map_build_fail(struct rcptmap_build *b, int code)
{
    rcptmap_build_abort(b);
    return code;
}

static int
mx2map_cmd_build(int argc, char **argv)
{
    enum { OPT_DOMAIN = 256, OPT_PASSWD, OPT_ALIASES, OPT_LIST, OPT_MIN_UID, OPT_EXCLUDE };
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"domain", required_argument, NULL, OPT_DOMAIN},
        {"passwd", required_argument, NULL, OPT_PASSWD},
        {"aliases", required_argument, NULL, OPT_ALIASES},
        {"list", required_argument, NULL, OPT_LIST},
        {"min-uid", required_argument, NULL, OPT_MIN_UID},
        {"exclude", required_argument, NULL, OPT_EXCLUDE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct mx2map_src *srcs = xcalloc((size_t)argc + 2, sizeof(*srcs));
    const char **exclude = xcalloc((size_t)argc + 1, sizeof(*exclude));
    struct mx2map_build mb;
    struct mapsrc_passwd_stats pw = {0};
    struct mapsrc_aliases_stats al = {0};
    struct mapsrc_list_stats li = {0};
    struct mapsrc_passwd_opts popts = {.min_uid = 1000};
    struct mapsrc_sink sink;
    const char *out = NULL;
    size_t nsrc = 0, nexclude = 0, nstdin = 0, nkeys;
    int have[3] = {0, 0, 0}, c, rc, ret = 0;

    memset(&mb, 0, sizeof(mb));
    mb.domains = xcalloc((size_t)argc + 1, sizeof(char *));
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case OPT_DOMAIN: {
            char key[RCPTMAP_KEY_MAX];
            const char *why = "";
            int n = rcptmap_normalize_key("", 0, optarg, strlen(optarg), key, sizeof(key), &why);
            if (n < 0)
                mx2map_usage_error("build: bad --domain '%s': %s", optarg, why);
            mb.domains[mb.ndomains++] = xstrdup(key + 1); /* skip the '@' */
            break;
        }
        case OPT_PASSWD:
        case OPT_ALIASES:
        case OPT_LIST:
            srcs[nsrc].kind = c == OPT_PASSWD    ? SRC_PASSWD
                              : c == OPT_ALIASES ? SRC_ALIASES
                                                 : SRC_LIST;
            srcs[nsrc].path = optarg;
            if (strcmp(optarg, "-") == 0 && ++nstdin > 1)
                mx2map_usage_error("build: only one source may be - (standard input)");
            nsrc++;
            break;
        case OPT_MIN_UID:
            popts.min_uid = mx2map_parse_uid(optarg);
            break;
        case OPT_EXCLUDE:
            exclude[nexclude++] = optarg;
            break;
        case 'h':
            fputs(mx2map_usage_text, stdout);
            exit(0);
        case ':':
            mx2map_usage_error("build: option %s needs an argument", argv[optind - 1]);
        default:
            mx2map_usage_error("build: unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        mx2map_usage_error("build: unexpected argument '%s'", argv[optind]);
    if (out == NULL)
        mx2map_usage_error("build: -o MAP is required");
    if (nsrc == 0) {
        /* SPEC: no source given reads the system's own accounts. */
        srcs[nsrc++] = (struct mx2map_src){SRC_PASSWD, NULL, 0};
        if (access("/etc/aliases", F_OK) == 0)
            srcs[nsrc++] = (struct mx2map_src){SRC_ALIASES, "/etc/aliases", 1};
    }
    for (size_t i = 0; i < nsrc; i++)
        have[srcs[i].kind] = 1;
    if ((have[SRC_PASSWD] || have[SRC_ALIASES]) && mb.ndomains == 0)
        mx2map_usage_error("build: passwd and aliases give local parts: --domain is required");
    popts.exclude = exclude;
    popts.exclude_count = nexclude;
    mb.exclude = exclude;
    mb.nexclude = nexclude;
    for (size_t i = 0; i < mb.ndomains; i++)
        mx2map_set_add(&mb.all_domains, mb.domains[i]);

    rc = rcptmap_build_begin(out, &mb.b);
    if (rc != 0) {
        fprintf(stderr, "mx2map: %s: cannot create the map: %s\n", out, mx2_strerror(rc));
        ret = MX2MAP_EXIT_FAIL;
        goto done;
    }
    sink = (struct mapsrc_sink){mx2map_on_name, mx2map_on_bad, &mb};
    for (size_t i = 0; i < nsrc; i++) {
        struct mapsrc_passwd_stats ps;
        struct mapsrc_aliases_stats as;
        struct mapsrc_list_stats ls;
        FILE *f;
        int is_pipe = srcs[i].path == NULL, is_stdin = 0;

        if (is_pipe) {
            mb.file = "getent passwd";
            /* A constant command with no caller-supplied text: nothing to
             * inject. getent is what reads NSS (files, LDAP, sss). */
            f = popen("getent passwd", "r"); /* NOLINT(cert-env33-c): see above */
        } else if (strcmp(srcs[i].path, "-") == 0) {
            mb.file = "stdin";
            f = stdin;
            is_stdin = 1;
        } else {
            mb.file = srcs[i].path;
            f = fopen(srcs[i].path, "r");
        }
        if (f == NULL) {
            fprintf(stderr, "mx2map: %s: %s\n", mb.file, strerror(errno));
            ret = mx2map_build_fail(mb.b, is_pipe ? MX2MAP_EXIT_FAIL : MX2MAP_EXIT_USAGE);
            goto done;
        }
        mb.kind = srcs[i].kind;
        switch (srcs[i].kind) {
        case SRC_PASSWD:
            rc = mapsrc_passwd_file(f, mb.file, &popts, &sink, &ps);
            pw.accounts += ps.accounts;
            pw.skipped_uid += ps.skipped_uid;
            pw.skipped_system += ps.skipped_system;
            pw.skipped_shell += ps.skipped_shell;
            pw.skipped_excluded += ps.skipped_excluded;
            pw.bad_lines += ps.bad_lines;
            break;
        case SRC_ALIASES:
            rc = mapsrc_aliases_file(f, mb.file, &sink, &as);
            al.names += as.names;
            al.bad_lines += as.bad_lines;
            break;
        case SRC_LIST:
            rc = mapsrc_list_file(f, mb.file, &sink, &ls);
            li.locals += ls.locals;
            li.addresses += ls.addresses;
            li.catchalls += ls.catchalls;
            li.bad_lines += ls.bad_lines;
            break;
        }
        if (is_pipe) {
            int status = pclose(f);
            if (rc == 0 && status != 0) {
                fprintf(stderr, "mx2map: getent passwd failed (exit status %d)\n",
                        WIFEXITED(status) ? WEXITSTATUS(status) : -1);
                ret = mx2map_build_fail(mb.b, MX2MAP_EXIT_FAIL);
                goto done;
            }
        } else if (!is_stdin) {
            fclose(f);
        }
        if (rc != 0) {
            fprintf(stderr, "mx2map: %s: read error: %s\n", mb.file, mx2_strerror(rc));
            ret = mx2map_build_fail(mb.b, MX2MAP_EXIT_FAIL);
            goto done;
        }
    }
    if (mb.orphans > 0) {
        fprintf(stderr, "mx2map: %s: %zu local parts (such as '%s') but no --domain given\n",
                mb.orphan_file, mb.orphans, mb.orphan_example);
        ret = mx2map_build_fail(mb.b, MX2MAP_EXIT_USAGE);
        goto done;
    }
    if (mb.names == 0) {
        fprintf(stderr,
                "mx2map: no recipient could be read from the sources (%zu bad lines); "
                "%s left unchanged\n",
                mb.bad_lines, out);
        ret = mx2map_build_fail(mb.b, MX2MAP_EXIT_USAGE);
        goto done;
    }
    for (size_t i = 0; i < mb.all_domains.cap; i++) {
        char key[RCPTMAP_KEY_MAX];
        if (mb.all_domains.slot[i] == NULL)
            continue;
        snprintf(key, sizeof(key), "postmaster@%s", mb.all_domains.slot[i]);
        mx2map_add(&mb, key);
        snprintf(key, sizeof(key), "abuse@%s", mb.all_domains.slot[i]);
        mx2map_add(&mb, key);
    }
    nkeys = rcptmap_build_count(mb.b);
    rc = rcptmap_build_commit(mb.b);
    mb.b = NULL;
    if (rc != 0) {
        fprintf(stderr, "mx2map: %s: cannot write the map: %s\n", out, mx2_strerror(rc));
        ret = MX2MAP_EXIT_FAIL;
        goto done;
    }

    printf("mx2map: wrote %zu keys to %s (", nkeys, out);
    {
        const char *sep = "";
        if (have[SRC_PASSWD]) {
            size_t skipped =
                pw.skipped_uid + pw.skipped_system + pw.skipped_shell + pw.skipped_excluded;
            printf("passwd: %zu accounts, %zu skipped: %zu uid<%lu, %zu system, "
                   "%zu nologin shell, %zu excluded",
                   pw.accounts, skipped, pw.skipped_uid, popts.min_uid, pw.skipped_system,
                   pw.skipped_shell, pw.skipped_excluded);
            sep = "; ";
        }
        if (have[SRC_ALIASES]) {
            printf("%saliases: %zu names", sep, al.names);
            if (mb.aliases_excluded > 0)
                printf(", %zu excluded", mb.aliases_excluded);
            sep = "; ";
        }
        if (have[SRC_LIST]) {
            printf("%slist: %zu (%zu local parts, %zu addresses, %zu catch-alls)", sep,
                   li.locals + li.addresses + li.catchalls, li.locals, li.addresses, li.catchalls);
            sep = "; ";
        }
        printf("%salways: postmaster, abuse for %zu domains", sep, mb.all_domains.count);
        printf("; %zu bad lines skipped)\n", mb.bad_lines + mb.add_failed);
    }
    if (fflush(stdout) != 0)
        ret = MX2MAP_EXIT_FAIL;
done:
    for (size_t i = 0; i < mb.ndomains; i++)
        free(mb.domains[i]);
    free(mb.domains);
    mx2map_set_free(&mb.all_domains);
    free(srcs);
    free(exclude);
    return ret;
}

/* ----------------------------------------------------------------- query */

static int
mx2map_cmd_query(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *delim = NULL, *addr, *at, *map_path, *conf = NULL;
    char key[RCPTMAP_KEY_MAX], *local, *domain, *cfg_delim = NULL, *cfg_map = NULL;
    size_t alen;
    struct rcptmap *map;
    int c, rc, ret;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":d:c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            delim = optarg;
            break;
        case 'c':
            conf = optarg;
            break;
        case 'h':
            fputs(mx2map_usage_text, stdout);
            exit(0);
        case ':':
            mx2map_usage_error("query: option %s needs an argument", argv[optind - 1]);
        default:
            mx2map_usage_error("query: unknown option '%s'", argv[optind - 1]);
        }
    }
    /* With -c, MAP may be left out: the config's recipient_map is used. */
    if (argc - optind != 2 && !(conf != NULL && argc - optind == 1))
        mx2map_usage_error("query: expected MAP ADDRESS");
    if (conf != NULL) {
        /* recipient_delimiter exactly as mx2d will apply it. */
        struct mx2_config cfg;
        struct config_errors errs = {0};
        memset(&cfg, 0, sizeof(cfg));
        rc = config_load(conf, &cfg, &errs);
        if (rc != 0) {
            for (size_t i = 0; i < errs.count; i++)
                fprintf(stderr, "mx2map: %s\n", errs.lines[i]);
            if (errs.count == 0)
                fprintf(stderr, "mx2map: %s: %s\n", conf, mx2_strerror(rc));
            config_errors_free(&errs);
            config_free(&cfg);
            exit(MX2MAP_EXIT_USAGE);
        }
        cfg_delim = xstrdup(cfg.recipient_delimiter != NULL ? cfg.recipient_delimiter : "");
        cfg_map = xstrdup(cfg.recipient_map != NULL ? cfg.recipient_map : "");
        config_errors_free(&errs);
        config_free(&cfg);
        if (delim == NULL)
            delim = cfg_delim;
    }
    if (delim == NULL)
        delim = "+";
    map_path = argc - optind == 2 ? argv[optind] : cfg_map;
    addr = argv[argc - 1];
    alen = strlen(addr);
    if (alen >= 2 && addr[0] == '<' && addr[alen - 1] == '>') {
        addr++;
        alen -= 2;
    }
    local = xstrndup(addr, alen);
    at = strrchr(local, '@');
    if (at == NULL || at == local || at[1] == '\0') {
        free(local);
        mx2map_usage_error("query: '%s' is not an address (local@domain)", argv[argc - 1]);
    }
    domain = local + (at - local) + 1;
    local[at - local] = '\0';

    rc = rcptmap_open(map_path, &map);
    if (rc != 0) {
        fprintf(stderr, "mx2map: %s: cannot open the recipient map: %s\n", map_path,
                rc == MX2_E_MAP_UNAVAILABLE ? "not a valid map (corrupt or truncated)"
                                            : mx2_strerror(rc));
        ret = MX2MAP_EXIT_FAIL;
        goto done;
    }
    rc = rcptmap_lookup(map, local, domain, delim, key, sizeof(key));
    if (rc == 0) {
        printf("%s\n", key);
        ret = fflush(stdout) == 0 ? 0 : MX2MAP_EXIT_FAIL;
    } else {
        if (rc != MX2_E_NOT_FOUND)
            fprintf(stderr, "mx2map: %s: %s\n", map_path, mx2_strerror(rc));
        ret = MX2MAP_EXIT_FAIL;
    }
done:
    rcptmap_close(map);
    free(local);
    free(cfg_delim);
    free(cfg_map);
    return ret;
}

/* ------------------------------------------------------------------ dump */

static int
mx2map_print_key(const char *key, size_t len, void *arg)
{
    (void)arg;
    if (fwrite(key, 1, len, stdout) != len || putchar('\n') == EOF)
        return -EIO;
    return 0;
}

static int
mx2map_cmd_dump(int argc, char **argv)
{
    struct rcptmap *map;
    int rc;

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(mx2map_usage_text, stdout);
        exit(0);
    }
    if (argc != 2)
        mx2map_usage_error("dump: expected MAP");
    if (argv[1][0] == '-' && argv[1][1] != '\0')
        mx2map_usage_error("dump: unknown option '%s'", argv[1]);
    rc = rcptmap_open(argv[1], &map);
    if (rc != 0) {
        fprintf(stderr, "mx2map: %s: cannot open the recipient map: %s\n", argv[1],
                rc == MX2_E_MAP_UNAVAILABLE ? "not a valid map (corrupt or truncated)"
                                            : mx2_strerror(rc));
        rcptmap_close(map);
        return MX2MAP_EXIT_FAIL;
    }
    rc = rcptmap_iterate(map, mx2map_print_key, NULL);
    rcptmap_close(map);
    if (rc == 0 && fflush(stdout) != 0)
        rc = -EIO;
    if (rc != 0) {
        fprintf(stderr, "mx2map: %s: %s\n", argv[1], mx2_strerror(rc));
        return MX2MAP_EXIT_FAIL;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        mx2map_usage_error("missing command (build, query or dump)");
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(mx2map_usage_text, stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("mx2map %s\n", MX2_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "build") == 0)
        return mx2map_cmd_build(argc - 1, argv + 1);
    if (strcmp(argv[1], "query") == 0)
        return mx2map_cmd_query(argc - 1, argv + 1);
    if (strcmp(argv[1], "dump") == 0)
        return mx2map_cmd_dump(argc - 1, argv + 1);
    mx2map_usage_error("unknown command '%s'", argv[1]);
}
