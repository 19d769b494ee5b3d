/* store.c: SQLite store, migrations, the writer thread and reader connections.
 *
 * Threads: the writer thread owns `db` (the only read-write connection) and
 * every prepared statement on it.  The job queue is guarded by `mu`; stats
 * are atomics.  Readers are per-thread read-only connections, found through a
 * thread-local pointer and registered in `readers` (under `mu`) so that
 * md_store_close() can close them after the HTTP server has stopped.
 *
 * Invariants: a drain of the queue is one BEGIN IMMEDIATE ... COMMIT; on
 * failure it is rolled back whole and its jobs are retried, never half
 * applied.  user_version always equals the last migration applied, and it is
 * set inside that migration's transaction. */
#define MD_MODULE "store"
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

/* generated at build time from schema/NNN_*.sql */
struct md_migration {
    int         version;
    const char *name;
    const char *sql;
};
extern const struct md_migration md_migrations[];
extern const size_t md_migrations_count;

enum job_kind { JOB_EVENT = 1 };

struct job {
    enum job_kind kind;
    uint64_t      seq;
    uint64_t      ts_ns;
    char         *a;          /* event kind */
    char         *b;          /* event detail */
};

struct reader {
    sqlite3        *db;
    struct md_store *owner;
};

struct md_store {
    char           *path;
    uint64_t        busy_timeout_ms;
    sqlite3        *db;                 /* writer thread only, after start */
    sqlite3_stmt   *ins_event;

    pthread_mutex_t mu;
    pthread_cond_t  cv_work;            /* queue not empty, or stopping */
    pthread_cond_t  cv_done;            /* a drain finished */
    struct job      queue[MD_STORE_QUEUE_MAX];
    struct job      batch[MD_STORE_QUEUE_MAX];  /* writer thread: jobs in hand */
    size_t          q_head, q_len;
    uint64_t        next_seq;           /* seq of the next submitted job */
    uint64_t        done_seq;           /* every job below this is finished */
    int             last_drain_rc;
    int             stopping;
    int             running;
    pthread_t       thread;

    struct reader  *readers[MD_STORE_READERS_MAX];
    size_t          readers_count;

    atomic_ullong   commits, errors, busy_retries, write_ns_sum, dropped;
    atomic_int      healthy;
    int             schema_version;
};

static _Thread_local struct reader *tls_reader;

int
md_store_schema_latest(void)
{
    return md_migrations_count ? md_migrations[md_migrations_count - 1].version : 0;
}

static int
db_err(struct md_err *err, sqlite3 *db, const char *what)
{
    return md_err_set(err, MD_EDB, "%s: %s", what, db ? sqlite3_errmsg(db) : "no connection");
}

static int
exec(sqlite3 *db, const char *sql, struct md_err *err)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = md_err_set(err, MD_EDB, "%.60s: %s", sql, msg ? msg : sqlite3_errmsg(db));

        sqlite3_free(msg);
        return rc;
    }
    return MD_OK;
}

static int
pragma_int(sqlite3 *db, const char *sql, int *out, struct md_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_err(err, db, sql);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        rc = db_err(err, db, sql);
        sqlite3_finalize(st);
        return rc;
    }
    *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return MD_OK;
}

/* mkdir -p of the directory part of path. */
static int
make_parent_dirs(const char *path, struct md_err *err)
{
    char tmp[4096];
    size_t len = strlen(path);

    if (len >= sizeof(tmp))
        return md_err_set(err, MD_ELIMIT, "path longer than %zu bytes", sizeof(tmp) - 1);
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return md_err_set(err, MD_EIO, "cannot create directory \"%s\": %s", tmp,
                strerror(errno));
        *p = '/';
    }
    return MD_OK;
}

static int
migrate(struct md_store *st, struct md_err *err)
{
    int have = 0, latest = md_store_schema_latest(), rc;

    rc = pragma_int(st->db, "PRAGMA user_version", &have, err);
    if (rc != MD_OK)
        return rc;
    if (have > latest)
        return md_err_set(err, MD_EDB,
            "database \"%s\" has schema version %d, newer than this meterd knows (%d); "
            "use a newer meterd (the database was not modified)", st->path, have, latest);
    for (size_t i = 0; i < md_migrations_count; i++) {
        const struct md_migration *m = &md_migrations[i];
        char setv[64];

        if (m->version <= have)
            continue;
        rc = exec(st->db, "BEGIN IMMEDIATE", err);
        if (rc == MD_OK)
            rc = exec(st->db, m->sql, err);
        (void)snprintf(setv, sizeof(setv), "PRAGMA user_version = %d", m->version);
        if (rc == MD_OK)
            rc = exec(st->db, setv, err);
        if (rc == MD_OK)
            rc = exec(st->db, "COMMIT", err);
        if (rc != MD_OK) {
            char keep[MD_ERR_MSG_MAX];

            memcpy(keep, err ? err->msg : "", err ? sizeof(keep) : 1);
            (void)exec(st->db, "ROLLBACK", NULL);
            return md_err_set(err, MD_EDB, "migration %s: %s", m->name, keep);
        }
        md_log_info("applied migration %s (schema version %d)", m->name, m->version);
        have = m->version;
    }
    st->schema_version = have;
    return MD_OK;
}

int
md_store_open(const char *path, uint64_t busy_timeout_ms, struct md_store **out,
    struct md_err *err)
{
    struct md_store *st;
    int rc;

    st = md_calloc(1, sizeof(*st));
    if (st == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    st->path = md_strdup(path);
    st->busy_timeout_ms = busy_timeout_ms;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv_work, NULL);
    pthread_cond_init(&st->cv_done, NULL);
    atomic_store(&st->healthy, 1);
    st->next_seq = 1;
    st->done_seq = 1;
    if (st->path == NULL) {
        rc = md_err_set(err, MD_ENOMEM, "out of memory");
        goto fail;
    }
    rc = make_parent_dirs(path, err);
    if (rc != MD_OK)
        goto fail;
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
            SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = md_err_set(err, MD_EDB, "cannot open \"%s\": %s", path,
            st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, (int)(busy_timeout_ms > 600000 ? 600000 : busy_timeout_ms));
    (void)sqlite3_extended_result_codes(st->db, 1);
    /* check the version before any pragma that writes to the file */
    {
        int have = 0;

        rc = pragma_int(st->db, "PRAGMA user_version", &have, err);
        if (rc != MD_OK)
            goto fail;
        if (have > md_store_schema_latest()) {
            rc = md_err_set(err, MD_EDB,
                "database \"%s\" has schema version %d, newer than this meterd knows (%d); "
                "use a newer meterd (the database was not modified)", path, have,
                md_store_schema_latest());
            goto fail;
        }
    }
    /* WAL: readers never block the writer.  synchronous=FULL: a committed
     * usage transaction survives power loss, not only a crash (issue 7).
     * journal_size_limit keeps the WAL file bounded after checkpoints. */
    rc = exec(st->db, "PRAGMA journal_mode=WAL", err);
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA synchronous=FULL", err);
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA foreign_keys=ON", err);
    if (rc == MD_OK)
        rc = exec(st->db, "PRAGMA journal_size_limit=67108864", err);
    if (rc == MD_OK)
        rc = migrate(st, err);
    if (rc != MD_OK)
        goto fail;
    if (sqlite3_prepare_v3(st->db, "INSERT INTO events(ts_ns, kind, detail) VALUES (?, ?, ?)",
            -1, SQLITE_PREPARE_PERSISTENT, &st->ins_event, NULL) != SQLITE_OK) {
        rc = db_err(err, st->db, "prepare insert event");
        goto fail;
    }
    *out = st;
    return MD_OK;
fail:
    md_store_close(st);
    return rc;
}

static void
job_free(struct job *j)
{
    md_free(j->a);
    md_free(j->b);
    j->a = j->b = NULL;
}

static int
apply_job(struct md_store *st, struct job *j, struct md_err *err)
{
    int rc = MD_OK;

    switch (j->kind) {
    case JOB_EVENT:
        sqlite3_bind_int64(st->ins_event, 1, (sqlite3_int64)j->ts_ns);
        sqlite3_bind_text(st->ins_event, 2, j->a, -1, SQLITE_STATIC);
        sqlite3_bind_text(st->ins_event, 3, j->b ? j->b : "", -1, SQLITE_STATIC);
        if (sqlite3_step(st->ins_event) != SQLITE_DONE)
            rc = db_err(err, st->db, "insert event");
        sqlite3_reset(st->ins_event);
        sqlite3_clear_bindings(st->ins_event);
        break;
    }
    return rc;
}

/* Applies jobs[0..n) in one transaction.  On failure nothing is applied. */
static int
commit_jobs(struct md_store *st, struct job *jobs, size_t n, struct md_err *err)
{
    uint64_t t0 = md_now_monotonic_ns();
    int rc = exec(st->db, "BEGIN IMMEDIATE", err);

    for (size_t i = 0; i < n && rc == MD_OK; i++)
        rc = apply_job(st, &jobs[i], err);
    if (rc == MD_OK)
        rc = exec(st->db, "COMMIT", err);
    if (rc != MD_OK) {
        if (!sqlite3_get_autocommit(st->db))
            (void)exec(st->db, "ROLLBACK", NULL);   /* keep the first error */
        atomic_fetch_add(&st->errors, 1);
        return rc;
    }
    atomic_fetch_add(&st->commits, 1);
    atomic_fetch_add(&st->write_ns_sum, md_now_monotonic_ns() - t0);
    return MD_OK;
}

static int
is_busy(sqlite3 *db)
{
    int e = sqlite3_errcode(db);

    return e == SQLITE_BUSY || e == SQLITE_LOCKED;
}

static void *
writer_main(void *arg)
{
    struct md_store *st = arg;
    struct job *batch = st->batch;      /* writer thread only */
    struct md_complaint complaint = {0};

    for (;;) {
        struct md_err err = {0};
        uint64_t last_seq;
        size_t n = 0;
        int rc, stopping;

        pthread_mutex_lock(&st->mu);
        while (st->q_len == 0 && !st->stopping)
            pthread_cond_wait(&st->cv_work, &st->mu);
        stopping = st->stopping;
        while (st->q_len > 0) {
            batch[n++] = st->queue[st->q_head];
            st->q_head = (st->q_head + 1) % MD_STORE_QUEUE_MAX;
            st->q_len--;
        }
        pthread_mutex_unlock(&st->mu);
        if (n == 0 && stopping)
            break;
        last_seq = batch[n - 1].seq;

        /* a held lock is retried (the jobs stay in hand) until it is free;
         * any other failure drops this drain after logging it */
        for (int attempt = 0;; attempt++) {
            rc = commit_jobs(st, batch, n, &err);
            if (rc == MD_OK || !is_busy(st->db) || attempt >= 20)
                break;
            atomic_fetch_add(&st->busy_retries, 1);
            md_complain(&complaint, MD_LOG_WARN, MD_MODULE,
                "write: database is locked by another process; retrying");
            nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = 100000000 }, NULL);
        }
        if (rc == MD_OK) {
            atomic_store(&st->healthy, 1);
            md_release(&complaint, MD_MODULE, "write: committing again");
        } else {
            atomic_store(&st->healthy, 0);
            md_complain(&complaint, MD_LOG_ERR, MD_MODULE, "write: %s (rolled back)", err.msg);
        }
        for (size_t i = 0; i < n; i++)
            job_free(&batch[i]);
        pthread_mutex_lock(&st->mu);
        st->done_seq = last_seq + 1;
        st->last_drain_rc = rc;
        pthread_cond_broadcast(&st->cv_done);
        pthread_mutex_unlock(&st->mu);
    }
    return NULL;
}

int
md_store_writer_start(struct md_store *st, struct md_err *err)
{
    int e;

    pthread_mutex_lock(&st->mu);
    if (st->running) {
        pthread_mutex_unlock(&st->mu);
        return md_err_set(err, MD_ESTATE, "writer already running");
    }
    st->stopping = 0;
    e = pthread_create(&st->thread, NULL, writer_main, st);
    if (e == 0)
        st->running = 1;
    pthread_mutex_unlock(&st->mu);
    if (e != 0)
        return md_err_set(err, MD_ENOMEM, "cannot start writer thread: %s", strerror(e));
    return MD_OK;
}

void
md_store_writer_stop(struct md_store *st)
{
    int running;

    pthread_mutex_lock(&st->mu);
    running = st->running;
    st->stopping = 1;
    pthread_cond_broadcast(&st->cv_work);
    pthread_mutex_unlock(&st->mu);
    if (!running)
        return;
    pthread_join(st->thread, NULL);
    pthread_mutex_lock(&st->mu);
    st->running = 0;
    pthread_mutex_unlock(&st->mu);
}

static int
submit(struct md_store *st, struct job *j)
{
    pthread_mutex_lock(&st->mu);
    if (st->q_len == MD_STORE_QUEUE_MAX || !st->running || st->stopping) {
        pthread_mutex_unlock(&st->mu);
        atomic_fetch_add(&st->dropped, 1);
        return MD_ELIMIT;
    }
    j->seq = st->next_seq++;
    st->queue[(st->q_head + st->q_len) % MD_STORE_QUEUE_MAX] = *j;
    st->q_len++;
    pthread_cond_signal(&st->cv_work);
    pthread_mutex_unlock(&st->mu);
    return MD_OK;
}

int
md_store_submit_event(struct md_store *st, const char *kind, const char *detail)
{
    struct job j = { .kind = JOB_EVENT, .ts_ns = md_now_realtime_ns() };
    size_t dl = strlen(detail ? detail : "");
    int rc;

    j.a = md_strdup(kind);
    j.b = md_strndup(detail ? detail : "", dl > MD_STORE_TEXT_MAX ? MD_STORE_TEXT_MAX : dl);
    if (j.a == NULL || j.b == NULL) {
        job_free(&j);
        return MD_ENOMEM;
    }
    rc = submit(st, &j);
    if (rc != MD_OK)
        job_free(&j);
    return rc;
}

int
md_store_flush(struct md_store *st)
{
    uint64_t want;
    int rc;

    pthread_mutex_lock(&st->mu);
    want = st->next_seq;
    while (st->done_seq < want && st->running)
        pthread_cond_wait(&st->cv_done, &st->mu);
    rc = st->done_seq >= want ? st->last_drain_rc : MD_ESTATE;
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void
md_store_get_stats(struct md_store *st, struct md_store_stats *out)
{
    out->commits = atomic_load(&st->commits);
    out->errors = atomic_load(&st->errors);
    out->busy_retries = atomic_load(&st->busy_retries);
    out->write_ns_sum = atomic_load(&st->write_ns_sum);
    out->queue_dropped = atomic_load(&st->dropped);
    pthread_mutex_lock(&st->mu);
    out->queue_depth = st->q_len;
    pthread_mutex_unlock(&st->mu);
    out->schema_version = st->schema_version;
    out->healthy = atomic_load(&st->healthy);
}

/* ---- readers ---- */

static int
reader_get(struct md_store *st, sqlite3 **out, struct md_err *err)
{
    struct reader *r = tls_reader;

    if (r != NULL && r->owner == st && r->db != NULL) {
        *out = r->db;
        return MD_OK;
    }
    r = md_calloc(1, sizeof(*r));
    if (r == NULL)
        return md_err_set(err, MD_ENOMEM, "out of memory");
    r->owner = st;
    if (sqlite3_open_v2(st->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
            NULL) != SQLITE_OK) {
        int rc = db_err(err, r->db, "open read-only connection");

        sqlite3_close(r->db);
        md_free(r);
        return rc;
    }
    sqlite3_busy_timeout(r->db, 5000);
    pthread_mutex_lock(&st->mu);
    if (st->readers_count == MD_STORE_READERS_MAX) {
        pthread_mutex_unlock(&st->mu);
        sqlite3_close(r->db);
        md_free(r);
        return md_err_set(err, MD_ELIMIT, "more than %d reader connections",
            MD_STORE_READERS_MAX);
    }
    st->readers[st->readers_count++] = r;
    pthread_mutex_unlock(&st->mu);
    tls_reader = r;
    *out = r->db;
    return MD_OK;
}

int
md_store_count_events(struct md_store *st, const char *kind, uint64_t *out, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    int rc = reader_get(st, &db, err);

    if (rc != MD_OK)
        return rc;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM events WHERE ?1 = '' OR kind = ?1",
            -1, &s, NULL) != SQLITE_OK)
        return db_err(err, db, "count events");
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(s, 0);
    else
        rc = db_err(err, db, "count events");
    sqlite3_finalize(s);
    return rc;
}

int
md_store_check(struct md_store *st, struct md_err *err)
{
    sqlite3_stmt *s = NULL;
    sqlite3 *db;
    int rc = reader_get(st, &db, err);

    if (rc != MD_OK)
        return rc;
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL) != SQLITE_OK)
        return db_err(err, db, "quick_check");
    if (sqlite3_step(s) != SQLITE_ROW)
        rc = db_err(err, db, "quick_check");
    else if (strcmp((const char *)sqlite3_column_text(s, 0), "ok") != 0)
        rc = md_err_set(err, MD_EDB, "quick_check: %s", sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    return rc;
}

void
md_store_close(struct md_store *st)
{
    if (st == NULL)
        return;
    md_store_writer_stop(st);
    for (size_t i = 0; i < st->readers_count; i++) {
        sqlite3_close(st->readers[i]->db);
        st->readers[i]->db = NULL;
        md_free(st->readers[i]);
    }
    st->readers_count = 0;
    tls_reader = NULL;
    sqlite3_finalize(st->ins_event);
    st->ins_event = NULL;
    if (st->db != NULL && sqlite3_close(st->db) != SQLITE_OK)
        md_log_warn("close: %s", sqlite3_errmsg(st->db));
    st->db = NULL;
    pthread_cond_destroy(&st->cv_work);
    pthread_cond_destroy(&st->cv_done);
    pthread_mutex_destroy(&st->mu);
    md_free(st->path);
    md_free(st);
}
