/*
 * maplookup.c - recipient-map lookup microbenchmark (issue 6, target 8).
 *
 * Usage: maplookup MAP PRESENT [LOOKUPS [BATCHES]]
 *
 * MAP is a map built by `mx2map build --list` from the keys
 * "u%07u@example.jp" for 0 <= i < PRESENT (tests/bench/bench.py writes that
 * list). The program opens it with rcptmap_open() exactly as mx2d does and
 * times BATCHES batches (default 5) of LOOKUPS rcptmap_lookup() calls
 * (default 1,000,000) on keys drawn at random, half present (i < PRESENT) and
 * half absent (PRESENT <= i < 2 * PRESENT), with recipient_delimiter "+" as
 * in mx2d's default config. It prints one JSON line: median/min/max
 * nanoseconds per lookup over the batches, and the hit counts.
 *
 * Why a C program: `mx2map query` is one process per lookup, so its time is
 * exec + map open, not the lookup. The keys are formatted before the clock
 * starts; what is timed is what mx2d's RCPT handler pays: normalise, B-tree
 * walk for the exact key and, for an absent key, the catch-all "@domain".
 * Random keys over a map of a million entries make most walks miss the CPU
 * caches, as real traffic would.
 *
 * Checks (exit 1): every present key must be found, every absent key must
 * not be; a map that cannot be opened or has the wrong size fails too.
 * Built by tests/bench/run against build-bench's libmx2common.a
 * (cc -O2 ... -llmdb -lconfig); not part of the CMake build.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */

#include "err.h"
#include "rcptmap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DOMAIN "example.jp"
#define MAXBATCH 64

struct key {
    char local[16];
    unsigned present;
};

/* xorshift64*: reproducible and fast; rand() would be a shared lock. */
static uint64_t
rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static double
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static unsigned long
parse_count(const char *s, const char *what)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v == 0 || v > 100000000UL) {
        fprintf(stderr, "maplookup: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    struct rcptmap *map = NULL;
    struct key *keys;
    unsigned long present, lookups = 1000000, batches = 5;
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    double ns[MAXBATCH];
    unsigned long hits = 0, want_hits = 0, wrong = 0;
    char matched[RCPTMAP_KEY_MAX];
    int rc;

    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: maplookup MAP PRESENT [LOOKUPS [BATCHES]]\n");
        return 2;
    }
    present = parse_count(argv[2], "PRESENT");
    if (present > 9999999UL / 2) {
        fprintf(stderr, "maplookup: PRESENT too large for u%%07u keys\n");
        return 2;
    }
    if (argc > 3)
        lookups = parse_count(argv[3], "LOOKUPS");
    if (argc > 4)
        batches = parse_count(argv[4], "BATCHES");
    if (batches > MAXBATCH) {
        fprintf(stderr, "maplookup: at most %d batches\n", MAXBATCH);
        return 2;
    }
    rc = rcptmap_open(argv[1], &map);
    if (rc != 0) {
        fprintf(stderr, "maplookup: %s: %s\n", argv[1], mx2_strerror(rc));
        rcptmap_close(map);
        return 1;
    }
    /* mx2map adds postmaster and abuse for the domain. */
    if (rcptmap_count(map) < present || rcptmap_count(map) > present + 2) {
        fprintf(stderr, "maplookup: map holds %zu keys, expected %lu (+2)\n", rcptmap_count(map),
                present);
        rcptmap_close(map);
        return 1;
    }
    keys = calloc(lookups, sizeof(*keys));
    if (keys == NULL) {
        fprintf(stderr, "maplookup: out of memory\n");
        rcptmap_close(map);
        return 1;
    }
    for (unsigned long b = 0; b < batches; b++) {
        /* New random keys per batch, formatted outside the timed loop. */
        for (unsigned long i = 0; i < lookups; i++) {
            unsigned idx = (unsigned)(rng_next(&seed) % (2 * present));
            /* Mixed case: the lookup lower-cases, as for real RCPT TO. */
            snprintf(keys[i].local, sizeof(keys[i].local), "%c%07u", (i & 1) ? 'U' : 'u', idx);
            keys[i].present = idx < present;
            want_hits += keys[i].present;
        }
        double t0 = now_ns();
        for (unsigned long i = 0; i < lookups; i++) {
            rc = rcptmap_lookup(map, keys[i].local, DOMAIN, "+", matched, sizeof(matched));
            if (rc == 0)
                hits++;
            if ((rc == 0) != (keys[i].present != 0) || (rc != 0 && rc != MX2_E_NOT_FOUND))
                wrong++;
        }
        ns[b] = (now_ns() - t0) / (double)lookups;
    }
    free(keys);
    rcptmap_close(map);
    qsort(ns, batches, sizeof(ns[0]), cmp_double);
    double median =
        batches % 2 ? ns[batches / 2] : (ns[batches / 2 - 1] + ns[batches / 2]) / 2.0;
    printf("{\"lookups_per_batch\": %lu, \"batches\": %lu, \"median_ns\": %.1f, "
           "\"min_ns\": %.1f, \"max_ns\": %.1f, \"hits\": %lu, \"expected_hits\": %lu, "
           "\"wrong\": %lu}\n",
           lookups, batches, median, ns[0], ns[batches - 1], hits, want_hits, wrong);
    if (wrong != 0) {
        fprintf(stderr, "maplookup: %lu lookups gave the wrong answer\n", wrong);
        return 1;
    }
    return 0;
}
