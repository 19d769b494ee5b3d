/* app.h: the running daemon's shared state, created by main.
 *
 * main owns the struct and the current configuration: it swaps `cfg` under
 * cfg_mu on reload; other threads take a reference with md_app_config() and
 * drop it with md_config_unref().  The flags and timestamps are atomics that
 * main (reload) and the writer (store health) update and HTTP threads read. */
#ifndef MD_APP_H
#define MD_APP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"

struct md_store;
struct md_scrape;
struct md_rating;

struct md_app {
    struct md_store    *store;
    struct md_scrape   *scrape;                  /* set before ready; NULL in tools */
    struct md_rating   *rating;                  /* bills and pricing (rating.h) */
    pthread_mutex_t     cfg_mu;
    struct md_config   *cfg;                     /* current; guarded by cfg_mu */
    atomic_int          ready;                   /* config loaded and store open */
    atomic_int          reload_ok;               /* last reload succeeded */
    atomic_ullong       reload_success_ns;       /* wall clock of the last good load */
    atomic_ullong       reloads_total;           /* reload attempts */
    atomic_ullong       reload_failures_total;
    uint64_t            start_ns;                /* process start, wall clock */
};

/* A counted reference to the current configuration; never NULL after start. */
struct md_config *md_app_config(struct md_app *app);

#endif
