/* bare_select.c: the floor for the Cost Management API benchmark: the same
 * rows read by a bare prepared SQLite SELECT in a loop, no HTTP, no JSON.
 *
 *   bare_select DB ITERATIONS "SQL" [TEXT_PARAM]
 *
 * ?1 and ?2 are bound to 2025-06-01 and 2025-07-01 (unix seconds), ?3 to
 * TEXT_PARAM when given.  Prints rows per run and the p50/p99/max latency. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    sqlite3 *db;
    sqlite3_stmt *s;
    double *lat;
    long n, rows = 0;

    if (argc < 4)
        return 2;
    n = strtol(argv[2], NULL, 10);
    if (n < 1 || n > 1000000)
        return 2;
    lat = calloc((size_t)n, sizeof(*lat));
    if (lat == NULL ||
        sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, argv[3], -1, &s, NULL) != SQLITE_OK) {
        fprintf(stderr, "bare_select: %s\n", sqlite3_errmsg(db));
        return 1;
    }
    for (long i = 0; i < n; i++) {
        double t0 = now_ms();
        long r = 0;

        sqlite3_bind_int64(s, 1, 1748736000);
        sqlite3_bind_int64(s, 2, 1751328000);
        if (argc > 4)
            sqlite3_bind_text(s, 3, argv[4], -1, SQLITE_STATIC);
        while (sqlite3_step(s) == SQLITE_ROW) {
            (void)sqlite3_column_int64(s, 1);
            r++;
        }
        sqlite3_reset(s);
        lat[i] = now_ms() - t0;
        rows = r;
    }
    qsort(lat, (size_t)n, sizeof(*lat), cmp);
    printf("rows=%ld n=%ld p50_ms=%.4f p99_ms=%.4f max_ms=%.4f\n", rows, n, lat[n / 2],
        lat[(size_t)((double)n * 0.99) < (size_t)n ? (size_t)((double)n * 0.99) : (size_t)n - 1],
        lat[n - 1]);
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(lat);
    return 0;
}
