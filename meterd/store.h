/* store.h: the SQLite store.
 *
 * One writer thread owns the only read-write connection; it drains a bounded
 * job queue and commits everything it drained in one BEGIN IMMEDIATE
 * transaction.  Readers (HTTP threads) each get their own read-only
 * connection, opened lazily on first use in that thread and closed by
 * md_store_close().  Migrations from schema/NNN_*.sql are embedded at build
 * time and applied in order at open, tracked in PRAGMA user_version; a
 * database newer than the binary is refused and left untouched. */
#ifndef MD_STORE_H
#define MD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MD_STORE_QUEUE_MAX   4096   /* jobs waiting for the writer */
#define MD_STORE_READERS_MAX 128    /* read-only connections (one per thread) */
#define MD_STORE_TEXT_MAX    1024   /* bytes of an event's detail */

struct md_store;

struct md_store_stats {
    uint64_t commits;            /* transactions committed */
    uint64_t errors;             /* transactions rolled back */
    uint64_t busy_retries;       /* write attempts that found the lock held */
    uint64_t write_ns_sum;       /* time spent in committed write transactions */
    uint64_t queue_depth;
    uint64_t queue_dropped;      /* jobs refused because the queue was full */
    int      schema_version;
    int      healthy;            /* 0 after a failed commit, 1 after a good one */
};

/* Opens (creating the file and its directory), refuses a newer schema,
 * applies pending migrations, sets WAL and synchronous=FULL. */
int  md_store_open(const char *path, uint64_t busy_timeout_ms, struct md_store **out,
    struct md_err *err);
/* Stops the writer if running (draining the queue), closes every connection. */
void md_store_close(struct md_store *st);

int  md_store_writer_start(struct md_store *st, struct md_err *err);
/* Commits what is queued, then joins the writer thread.  Idempotent. */
void md_store_writer_stop(struct md_store *st);

/* Queues an event row (start, stop, reload...).  Thread-safe, never blocks;
 * MD_ELIMIT when the queue is full (counted in queue_dropped). */
int  md_store_submit_event(struct md_store *st, const char *kind, const char *detail);
/* Blocks until every job queued before the call is committed or failed.
 * Returns MD_OK when the last drain committed.  For tests and shutdown. */
int  md_store_flush(struct md_store *st);

void md_store_get_stats(struct md_store *st, struct md_store_stats *out);

/* Schema version the binary knows (the highest embedded migration). */
int  md_store_schema_latest(void);

/* Read side, from any thread but the writer: count of event rows of a kind
 * ("" for all) through this thread's read-only connection. */
int  md_store_count_events(struct md_store *st, const char *kind, uint64_t *out,
    struct md_err *err);
/* PRAGMA quick_check through a read-only connection; MD_OK when "ok". */
int  md_store_check(struct md_store *st, struct md_err *err);

#endif
