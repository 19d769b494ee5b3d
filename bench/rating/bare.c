/* bare.c: the ceiling for the rating benchmark.  Inserts the same bill rows
 * the rater stores (same table shape and indexes as schema/003_rating.sql,
 * without triggers) in one transaction, then selects one tenant-month the
 * way GET /api/v1/bills does, N times, and prints rows/s and the select's
 * p50/p99.  Usage: bare DB NAMESPACES MODELS DAYS TENANT REPEAT */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* A whole number from 0 to 10^6, or -1. */
static int
arg_int(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);

    return (*s == '\0' || *end != '\0' || v < 0 || v > 1000000) ? -1 : (int)v;
}

int
main(int argc, char **argv)
{
    static const char *tt[] = { "input", "cached_input", "cache_creation_input", "output",
                                "reasoning" };
    sqlite3 *db;
    sqlite3_stmt *s;
    int ns, models, days, reps;
    double t0, t1, *lat;
    long rows = 0;

    if (argc != 7 || (ns = arg_int(argv[2])) < 0 || (models = arg_int(argv[3])) < 0 ||
        (days = arg_int(argv[4])) < 0 || (reps = arg_int(argv[6])) < 0)
        return 2;
    remove(argv[1]);
    sqlite3_open(argv[1], &db);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
        "CREATE TABLE bill_lines (id INTEGER PRIMARY KEY, day INTEGER NOT NULL, cluster TEXT "
        "NOT NULL, namespace TEXT NOT NULL, department TEXT NOT NULL, model TEXT NOT NULL, "
        "token_type TEXT NOT NULL, tokens INTEGER NOT NULL, unit_price INTEGER NOT NULL, "
        "list_unit_price INTEGER NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL, "
        "pricing_model TEXT NOT NULL, pricing_revision INTEGER NOT NULL, kind TEXT NOT NULL, "
        "source_day INTEGER NOT NULL) STRICT;"
        "CREATE INDEX bill_lines_day ON bill_lines(day, cluster);"
        "CREATE INDEX bill_lines_tenant ON bill_lines(namespace, day);"
        "CREATE INDEX bill_lines_source ON bill_lines(cluster, source_day, kind);",
        NULL, NULL, NULL);
    t0 = now();
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO bill_lines(day, cluster, namespace, department, model, "
        "token_type, tokens, unit_price, list_unit_price, amount, currency, pricing_model, "
        "pricing_revision, kind, source_day) VALUES (?1, 'bench', ?2, 'd', ?3, ?4, ?5, ?6, ?6, "
        "?7, 'USD', 'bench', 1, 'rated', ?1)", -1, &s, NULL);
    for (int d = 0; d < days; d++)
        for (int n = 0; n < ns; n++)
            for (int m = 0; m < models; m++)
                for (int t = 0; t < 5; t++) {
                    char nsb[32], mb[32];

                    snprintf(nsb, sizeof(nsb), "ns-%04d", n);
                    snprintf(mb, sizeof(mb), "model-%02d", m);
                    sqlite3_bind_int(s, 1, 20454 + d);
                    sqlite3_bind_text(s, 2, nsb, -1, SQLITE_TRANSIENT);
                    sqlite3_bind_text(s, 3, mb, -1, SQLITE_TRANSIENT);
                    sqlite3_bind_text(s, 4, tt[t], -1, SQLITE_STATIC);
                    sqlite3_bind_int64(s, 5, 4000 + n + m + t);
                    sqlite3_bind_int64(s, 6, 1000000000LL);
                    sqlite3_bind_int64(s, 7, 4000 + n + m + t);
                    sqlite3_step(s);
                    sqlite3_reset(s);
                    rows++;
                }
    sqlite3_finalize(s);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    t1 = now();
    printf("bare_insert_rows %ld\nbare_insert_seconds %.3f\nbare_insert_rows_per_s %.0f\n", rows,
        t1 - t0, (double)rows / (t1 - t0));
    lat = calloc((size_t)reps, sizeof(*lat));
    sqlite3_prepare_v2(db, "SELECT day, cluster, namespace, department, model, token_type, "
        "tokens, unit_price, list_unit_price, amount, currency, pricing_model, pricing_revision, "
        "kind, source_day FROM bill_lines WHERE day >= ?1 AND day < ?2 AND namespace = ?3", -1,
        &s, NULL);
    for (int i = 0; i < reps; i++) {
        long got = 0;

        t0 = now();
        sqlite3_bind_int(s, 1, 20454);
        sqlite3_bind_int(s, 2, 20454 + days);
        sqlite3_bind_text(s, 3, argv[5], -1, SQLITE_STATIC);
        while (sqlite3_step(s) == SQLITE_ROW)
            got++;
        sqlite3_reset(s);
        lat[i] = now() - t0;
        if (got != (long)days * models * 5)
            return 1;
    }
    qsort(lat, (size_t)reps, sizeof(*lat), cmp);
    printf("bare_select_p50_ms %.3f\nbare_select_p99_ms %.3f\n", lat[reps / 2] * 1e3,
        lat[reps * 99 / 100] * 1e3);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return 0;
}
