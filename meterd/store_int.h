/* store_int.h: what the store's modules (store.c, store_query.c) share.
 * Only store modules include this header (and sqlite3.h). */
#ifndef MD_STORE_INT_H
#define MD_STORE_INT_H

#include <sqlite3.h>

#include "buf.h"
#include "store.h"

/* Bytes of a generated SELECT: tenant lists of up to 2 x 1024 entries
 * become "?NNNN," placeholders. */
#define MD_STORE_SQL_MAX (64u << 10)

/* This thread's read-only connection (opened on first use). */
int  md_store_reader_db(struct md_store *st, sqlite3 **out, struct md_err *err);
/* Appends " AND (d.namespace IN (...) OR d.department IN (...))" for a
 * restricted tenant (" AND 0" when both lists are empty), numbering the
 * parameters from *bind; md_store_tenant_bind binds them in the same order. */
void md_store_tenant_sql(struct md_buf *sql, const struct md_tenant_filter *t, int *bind);
void md_store_tenant_bind(sqlite3_stmt *s, const struct md_tenant_filter *t, int *bind);

#endif
