/* config.h: meterd.yaml, read through one key table per section.
 *
 * A loaded struct md_config is immutable and shared by reference: main owns
 * the current one and swaps it on reload (md_config_ref/unref are
 * thread-safe); readers take a reference for as long as they use it.
 * Tables (name, type, range, default, help) drive parsing, range checks,
 * defaults, freeing and `meterd --help-config`.  Later issues add sections by
 * adding a table and a struct member, nothing else. */
#ifndef MD_CONFIG_H
#define MD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cfgtab.h"

struct md_target_cfg {
    char             *url;
    char             *namespace;
    struct md_strmap  labels;
    uint64_t          interval_ms;   /* 0: scrape.interval */
    uint64_t          timeout_ms;    /* 0: scrape.timeout */
};

/* auth.tokens[]: a bearer token, kept only as its SHA-256 digest. */
enum md_cfg_auth_scope { MD_CFG_SCOPE_ADMIN, MD_CFG_SCOPE_READER, MD_CFG_SCOPE_TENANT };
struct md_auth_token_cfg {
    char              *name;
    uint8_t            sha256[32];
    int                scope;         /* enum md_cfg_auth_scope */
    struct md_strlist  namespaces;    /* tenant: rows of these namespaces... */
    struct md_strlist  departments;   /* ...or of these departments */
};

enum md_cfg_first_scrape { MD_CFG_FIRST_BASELINE, MD_CFG_FIRST_COUNT };

enum md_cfg_log_level { MD_CFG_LOG_DEBUG, MD_CFG_LOG_INFO, MD_CFG_LOG_WARN, MD_CFG_LOG_ERROR };
enum md_cfg_log_format { MD_CFG_LOG_LOGFMT, MD_CFG_LOG_JSON };

struct md_config {
    char *cluster;
    char *listen;                 /* "host:port" */
    struct {
        char     *path;
        uint64_t  busy_timeout_ms;
        uint64_t  max_page_count;  /* 0: no cap (tests/ops: a full disk) */
    } storage;
    struct {
        uint64_t interval_ms;
        uint64_t timeout_ms;
        uint64_t body_size_limit;
        uint64_t sample_limit;        /* 0: unlimited */
        char    *accept;              /* Accept header sent to targets */
    } scrape;
    struct md_cfg_list targets;   /* struct md_target_cfg */
    struct {
        int level;                /* enum md_cfg_log_level */
        int format;               /* enum md_cfg_log_format */
    } log;
    struct {
        char *file;               /* pricing models YAML */
    } pricing;
    struct {
        uint64_t grace_ms;        /* late-data grace after a day ends */
    } rating;
    struct {
        uint64_t threads;
        uint64_t max_connections;
        uint64_t max_connections_per_ip;
        uint64_t connection_timeout_ms;
        uint64_t connection_memory_limit;
        uint64_t send_buffer;     /* SO_SNDBUF bytes; 0: kernel autotuning */
    } http;
    struct {
        char             *department_label;
        char             *default_department;
        char             *namespace_label;
        char             *default_namespace;
        struct md_strmap  department_namespaces;
        char             *model_label;
        char             *provider_label;
        char             *operation_label;
        char             *token_type_label;
        struct md_strlist exclude_operations;
    } attribution;
    struct {
        int      first_scrape;        /* enum md_cfg_first_scrape */
        uint64_t series_max;
        uint64_t max_spread_ms;       /* longest gap spread over hours */
    } ledger;
    struct {
        uint64_t retention_ms;        /* 0: keep forever */
    } usage;
    struct {
        uint64_t max_series;          /* usage series exported on /metrics */
    } metrics;
    struct {
        int                enabled;
        char              *api_server;       /* "": in-cluster (KUBERNETES_SERVICE_*) */
        char              *token_file;       /* "": in-cluster token, or none with api_server */
        char              *ca_file;          /* "": in-cluster CA, or the system store */
        struct md_strlist  namespaces;       /* empty: all namespaces */
        char              *label_selector;
        struct md_strlist  port_names;       /* most preferred first; never empty */
        uint64_t           refresh_ms;
        uint64_t           request_timeout_ms;
        int                insecure_skip_verify;
    } kubernetes;
    struct {
        int                enabled;          /* the section is present */
        struct md_strlist  open_paths;       /* served without a token */
        struct md_cfg_list tokens;           /* struct md_auth_token_cfg */
        uint64_t           failure_limit;    /* bad tokens per address before 429 */
        uint64_t           failure_backoff_max_ms;
    } auth;

    /* not from the file */
    char *source;                 /* the path it was loaded from */
    int   refs;                   /* guarded by the module's mutex */
};

/* Loads and validates a file.  On success *out is a new config with one
 * reference; on failure returns MD_ECONFIG (or MD_EIO / MD_ENOMEM) with every
 * problem found in errs, and *out is untouched. */
int md_config_load(const char *path, struct md_config **out, struct md_cfg_errors *errs);
/* Same, from memory; name is used in messages. */
int md_config_load_buf(const char *name, const char *data, size_t len,
    struct md_config **out, struct md_cfg_errors *errs);

struct md_config *md_config_ref(struct md_config *c);
void              md_config_unref(struct md_config *c);   /* NULL is a no-op */

/* Writes the key tables as documentation (meterd --help-config). */
void md_config_help(FILE *fp);

/* Splits "host:port" ("[v6]:port" too); host may be empty (all addresses). */
int md_config_split_listen(const char *listen, char *host, size_t host_len,
    uint16_t *port);

#endif
