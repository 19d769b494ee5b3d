/* store_priv.h: what store modules (store.c, store_rating.c) share and
 * nothing else includes: the SQLite handles and the writer's call jobs.
 *
 * A call job runs a function on the writer thread with the read-write
 * connection, inside the writer's transaction and inside its own
 * SAVEPOINT: when fn fails, its writes are rolled back and the drain's
 * other jobs still commit. */
#ifndef MD_STORE_PRIV_H
#define MD_STORE_PRIV_H

#include <sqlite3.h>
#include <stdint.h>

#include "store.h"

typedef int md_store_call_fn(void *arg, sqlite3 *db, struct md_err *err);

/* Queues fn(arg, db, err) for the writer and waits for its commit.
 * Returns fn's result, or the transaction's error when the commit failed
 * (fn's writes are then gone too), or MD_ELIMIT when the queue is full.
 * Never call it from the writer thread. */
int md_store_call(struct md_store *st, md_store_call_fn *fn, void *arg, struct md_err *err);

/* This thread's read-only connection (see store.h "Readers"). */
int md_store_reader(struct md_store *st, sqlite3 **db, struct md_err *err);
/* A statement for sql on this thread's read-only connection, prepared on
 * its first use and kept with the connection: parsing and planning a
 * statement costs more than a small query's steps.  The caller binds and
 * steps it and must hand it back with md_store_reader_put (also on errors),
 * on the same thread and before this thread uses another store's reader;
 * put resets it (ending its read transaction) and clears its bindings. */
int  md_store_reader_stmt(struct md_store *st, const char *sql, sqlite3_stmt **s,
    struct md_err *err);
void md_store_reader_put(sqlite3_stmt *s);

/* rating hooks (store_rating.c), called by store.c on the writer thread */
struct md_rating;
/* Marks (cluster, day) as having new usage, in the scrape's transaction. */
int  md_rating_touch(struct md_rating *r, sqlite3 *db, const char *cluster, size_t cluster_len,
    int32_t day, struct md_err *err);
/* Closes days past their grace and re-rates dirty days, each in its own
 * transaction, for at most about budget_ms.  Returns 1 when work remains. */
int  md_rating_tick(struct md_rating *r, sqlite3 *db, uint64_t budget_ms);
/* The writer connection whose hot statements (touch, pending) the rater may
 * keep prepared; NULL finalizes them.  md_store_set_rating binds st->db and
 * md_store_close unbinds it before closing the connection. */
void md_rating_bind_db(struct md_rating *r, sqlite3 *db);

#endif
