/* bare.c: the ceilings for the rating benchmark, plain SQLite, no meterd.
 *
 *   bare insert DB NAMESPACES MODELS DAYS
 *     Inserts the bill rows the rater stores for DAYS days (same table shape
 *     and indexes as schema/003_rating.sql, without triggers) into a new DB,
 *     one transaction per day as the rater commits, and prints rows/s.
 *   bare select DB FROM_DAY TO_DAY TENANT REPEAT [THREADS]
 *     Selects one tenant's lines of [FROM_DAY, TO_DAY) (days since 1970)
 *     from an existing DB (meterd's own, so the very table the endpoint
 *     reads) the way GET /api/v1/bills does, stepping every row and reading
 *     every column, and prints the rows and the select's p50/p99.
 *     THREADS (default 1) threads run at once, each with its own read-only
 *     connection and its own prepared statement, each REPEAT selects back
 *     to back: the same concurrency as wrk -cTHREADS against meterd, whose
 *     HTTP threads each have their own reader connection.  p50/p99 are over
 *     all THREADS x REPEAT selects.
 * Every SQLite call is checked: a failing ceiling must not look fast. */
#include <pthread.h>
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

static void
must(sqlite3 *db, int rc, int want, const char *what)
{
    if (rc != want) {
        fprintf(stderr, "bare: %s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

static int
do_insert(const char *path, int ns, int models, int days)
{
    static const char *tt[] = { "input", "cached_input", "cache_creation_input", "output",
                                "reasoning" };
    sqlite3 *db;
    sqlite3_stmt *s;
    double t0, t1;
    long rows = 0;

    remove(path);
    must(NULL, sqlite3_open(path, &db), SQLITE_OK, "open");
    must(db, sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
        "CREATE TABLE bill_lines (id INTEGER PRIMARY KEY, day INTEGER NOT NULL, cluster TEXT "
        "NOT NULL, namespace TEXT NOT NULL, department TEXT NOT NULL, model TEXT NOT NULL, "
        "token_type TEXT NOT NULL, tokens INTEGER NOT NULL, unit_price INTEGER NOT NULL, "
        "list_unit_price INTEGER NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL, "
        "pricing_model TEXT NOT NULL, pricing_revision INTEGER NOT NULL, kind TEXT NOT NULL, "
        "source_day INTEGER NOT NULL) STRICT;"
        "CREATE INDEX bill_lines_day ON bill_lines(day, cluster);"
        "CREATE INDEX bill_lines_tenant ON bill_lines(namespace, day);"
        "CREATE INDEX bill_lines_source ON bill_lines(cluster, source_day, kind);",
        NULL, NULL, NULL), SQLITE_OK, "schema");
    must(db, sqlite3_prepare_v2(db, "INSERT INTO bill_lines(day, cluster, namespace, "
        "department, model, token_type, tokens, unit_price, list_unit_price, amount, currency, "
        "pricing_model, pricing_revision, kind, source_day) VALUES (?1, 'bench', ?2, 'd', ?3, "
        "?4, ?5, ?6, ?6, ?7, 'USD', 'bench', 1, 'rated', ?1)", -1, &s, NULL), SQLITE_OK,
        "prepare insert");
    t0 = now();
    for (int d = 0; d < days; d++) {
        must(db, sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK, "begin");
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
                    must(db, sqlite3_step(s), SQLITE_DONE, "insert");
                    sqlite3_reset(s);
                    rows++;
                }
        must(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK, "commit");
    }
    t1 = now();
    sqlite3_finalize(s);
    sqlite3_close(db);
    printf("bare_insert_rows %ld\nbare_insert_seconds %.3f\nbare_insert_rows_per_s %.0f\n", rows,
        t1 - t0, (double)rows / (t1 - t0));
    return 0;
}

struct sel {
    const char *path, *tenant;
    int from, to, reps;
    double *lat;                /* reps latencies, seconds */
    long rows, sum;
    pthread_barrier_t *go;
};

static void *
select_thread(void *arg)
{
    struct sel *a = arg;
    sqlite3 *db;
    sqlite3_stmt *s;

    must(NULL, sqlite3_open_v2(a->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL),
        SQLITE_OK, "open");
    must(db, sqlite3_prepare_v2(db, "SELECT day, cluster, namespace, department, model, "
        "token_type, tokens, unit_price, list_unit_price, amount, currency, pricing_model, "
        "pricing_revision, kind, source_day FROM bill_lines WHERE day >= ?1 AND day < ?2 AND "
        "namespace = ?3", -1, &s, NULL), SQLITE_OK, "prepare select");
    pthread_barrier_wait(a->go);    /* all threads select at the same time */
    for (int i = 0; i < a->reps; i++) {
        double t0 = now();
        int rc;

        a->rows = 0;
        sqlite3_bind_int(s, 1, a->from);
        sqlite3_bind_int(s, 2, a->to);
        sqlite3_bind_text(s, 3, a->tenant, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            /* read what a bill line needs, as the endpoint does */
            for (int c = 0; c < 15; c++)
                a->sum += sqlite3_column_bytes(s, c);
            a->rows++;
        }
        must(db, rc, SQLITE_DONE, "select");
        sqlite3_reset(s);
        a->lat[i] = now() - t0;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return NULL;
}

static int
do_select(const char *path, int from, int to, const char *tenant, int reps, int threads)
{
    struct sel a[64];
    pthread_t t[64];
    pthread_barrier_t go;
    double *lat, t0, wall;
    size_t n = (size_t)reps * (size_t)threads;
    long sum = 0;

    if (reps < 1 || threads < 1 || threads > 64 || (lat = calloc(n, sizeof(*lat))) == NULL)
        return 2;
    if (pthread_barrier_init(&go, NULL, (unsigned)threads + 1) != 0)
        return 2;
    for (int i = 0; i < threads; i++) {
        a[i] = (struct sel){ path, tenant, from, to, reps, lat + (size_t)i * (size_t)reps, 0,
                             0, &go };
        if (pthread_create(&t[i], NULL, select_thread, &a[i]) != 0) {
            fputs("bare: pthread_create failed\n", stderr);
            exit(1);
        }
    }
    pthread_barrier_wait(&go);
    t0 = now();
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    wall = now() - t0;
    for (int i = 0; i < threads; i++) {
        if (a[i].rows != a[0].rows) {
            fputs("bare: threads saw different row counts\n", stderr);
            exit(1);
        }
        sum += a[i].sum;
    }
    qsort(lat, n, sizeof(*lat), cmp);
    printf("bare_select_threads %d\nbare_select_rows %ld\nbare_select_p50_ms %.3f\n"
        "bare_select_p99_ms %.3f\nbare_select_per_s %.0f\n", threads, a[0].rows,
        lat[n / 2] * 1e3, lat[n * 99 / 100] * 1e3, (double)n / wall);
    pthread_barrier_destroy(&go);
    free(lat);
    return sum > 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    int a, b, c, d, e = 1;

    if (argc == 6 && strcmp(argv[1], "insert") == 0 && (a = arg_int(argv[3])) >= 0 &&
        (b = arg_int(argv[4])) >= 0 && (c = arg_int(argv[5])) >= 0)
        return do_insert(argv[2], a, b, c);
    if ((argc == 7 || argc == 8) && strcmp(argv[1], "select") == 0 &&
        (a = arg_int(argv[3])) >= 0 && (b = arg_int(argv[4])) >= 0 &&
        (d = arg_int(argv[6])) >= 1 && (argc == 7 || ((e = arg_int(argv[7])) >= 1 && e <= 64)))
        return do_select(argv[2], a, b, argv[5], d, e);
    fputs("usage: bare insert DB NAMESPACES MODELS DAYS\n"
          "       bare select DB FROM_DAY TO_DAY TENANT REPEAT [THREADS (1-64)]\n", stderr);
    return 2;
}
