/* cfgtab.h: YAML files read through key tables (fluent-bit config maps,
 * redis standardConfig).  A table row gives a key's name, type, range,
 * default and help; the engine walks a libyaml document against the tables,
 * converts and range-checks every value, applies defaults, and collects every
 * error as "FILE:LINE:COL: path: message" instead of stopping at the first.
 * Unknown keys are errors.  Used by meterd.yaml (config.c) and by every other
 * YAML file meterd reads (pricing).  Pure: no I/O but md_cfgtab_read_file. */
#ifndef MD_CFGTAB_H
#define MD_CFGTAB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MD_CONFIG_FILE_MAX   (4u << 20)  /* bytes read from a YAML file */
#define MD_CONFIG_ERRORS_MAX 100         /* errors collected before giving up */
#define MD_CONFIG_NODES_MAX  200000      /* YAML nodes visited (alias bombs) */
#define MD_CONFIG_STR_MAX    4096        /* default max bytes of a string value */
#define MD_CFG_LIST_MAX_DEFAULT 1024     /* items of a list or map without max */
#define MD_CFG_KEYS_MAX      64          /* keys in one section table */

struct md_strlist {
    char  **v;
    size_t  count;
};

struct md_strmap {
    char  **keys;
    char  **vals;
    size_t  count;
};

/* A list of section structs (e.g. targets[]): count elements of elem_size. */
struct md_cfg_list {
    void   *v;
    size_t  count;
};

/* Collected errors, each "FILE:LINE:COL: message" (1-based line/column). */
struct md_cfg_errors {
    char   msgs[MD_CONFIG_ERRORS_MAX][320];
    size_t count;
    int    truncated;             /* more errors than MD_CONFIG_ERRORS_MAX */
};

enum md_cfg_type {
    MD_CFG_STR,        /* char * (max: bytes, 0: MD_CONFIG_STR_MAX) */
    MD_CFG_BOOL,       /* int */
    MD_CFG_UINT,       /* uint64_t within [min, max] */
    MD_CFG_DURATION,   /* uint64_t milliseconds within [min, max] */
    MD_CFG_SIZE,       /* uint64_t bytes within [min, max] */
    MD_CFG_ENUM,       /* int: index into values[] */
    MD_CFG_STRLIST,    /* struct md_strlist, at most max items (0: default) */
    MD_CFG_STRMAP,     /* struct md_strmap, at most max pairs (0: default) */
    MD_CFG_SECTION,    /* nested keys; their offsets are relative to the parent
                        * struct (so "scrape.interval" is OFF(scrape.interval_ms)) */
    MD_CFG_LIST,       /* struct md_cfg_list of sub, at most max items */
    MD_CFG_SCALAR      /* any scalar, converted by the key's conv function */
};

#define MD_CFG_REQUIRED 0x1u

struct md_cfg_ctx;

/* Extra check of a string value; returns NULL when fine, else the reason. */
typedef const char *md_cfg_check_fn(const char *v);
/* MD_CFG_SCALAR converter: s[0..len) into field; NULL when fine, else the
 * reason (copied into the error, so a static or thread-local buffer is ok).
 * It may allocate into field; the section's free hook releases it. */
typedef const char *md_cfg_conv_fn(const char *s, size_t len, void *field);
/* Cross-field validation of a loaded section, called only when all of its
 * fields converted; node is its mapping (0 when absent). */
typedef void md_cfg_validate_fn(struct md_cfg_ctx *c, int node, const char *path, void *obj);
/* Releases what conv functions allocated inside obj (optional). */
typedef void md_cfg_free_fn(void *obj);

struct md_cfg_key {
    const char                  *name;
    enum md_cfg_type             type;
    size_t                       off;
    uint64_t                     min, max;
    const char                  *def;       /* in YAML syntax; NULL: none */
    const char                  *help;
    const struct md_cfg_section *sub;
    const char *const           *values;    /* MD_CFG_ENUM, NULL-terminated */
    unsigned                     flags;
    md_cfg_check_fn             *check;     /* MD_CFG_STR, MD_CFG_STRLIST */
    md_cfg_conv_fn              *conv;      /* MD_CFG_SCALAR */
};

struct md_cfg_section {
    const char         *name;
    const struct md_cfg_key *keys;          /* ends with a row whose name is NULL */
    size_t              size;               /* struct size, for MD_CFG_LIST elements */
    md_cfg_validate_fn *validate;
    md_cfg_free_fn     *free_extra;
};

/* Loads data against root into obj (zeroed by the caller).  Returns MD_OK,
 * MD_ECONFIG with every error in errs, or MD_ENOMEM.  On failure obj may hold
 * partial values: release them with md_cfgtab_free. */
int  md_cfgtab_load(const char *name, const char *data, size_t len,
    const struct md_cfg_section *root, void *obj, struct md_cfg_errors *errs);
void md_cfgtab_free(const struct md_cfg_section *root, void *obj);
/* Reads a whole file of at most MD_CONFIG_FILE_MAX bytes (caller md_free()s);
 * on failure one error in errs. */
int  md_cfgtab_read_file(const char *path, char **data, size_t *len,
    struct md_cfg_errors *errs);
void md_cfgtab_help(FILE *fp, const struct md_cfg_section *root, const char *prefix);
/* Prints every collected error, one per line, and a note when there were
 * more than MD_CONFIG_ERRORS_MAX (for command-line tools). */
void md_cfgtab_print_errors(FILE *fp, const struct md_cfg_errors *errs);

/* For validate functions: report an error at a node (0: no position). */
void md_cfgtab_error(struct md_cfg_ctx *c, int node, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The node of key `name` inside a mapping (its value when want_value),
 * or the mapping itself when the key is absent. */
int  md_cfgtab_key_node(struct md_cfg_ctx *c, int mapping, const char *name, int want_value);
/* The node of item i of a sequence node, or the sequence when out of range. */
int  md_cfgtab_item_node(struct md_cfg_ctx *c, int seq, size_t i);

#endif
