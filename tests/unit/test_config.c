/* test_config.c: meterd.yaml loading: defaults, every error class with its
 * line:column, unknown keys, duration and size edges, several errors at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

static struct md_cfg_errors errs;

static struct md_config *
load_ok(const char *yaml)
{
    struct md_config *c = NULL;
    int rc = md_config_load_buf("t.yaml", yaml, strlen(yaml), &c, &errs);

    if (rc != MD_OK)
        fail_msg("expected success, got %d: %s", rc, errs.count ? errs.msgs[0] : "(none)");
    return c;
}

static void
test_defaults(void **state)
{
    struct md_config *c = load_ok("");

    (void)state;
    assert_string_equal(c->cluster, "default");
    assert_string_equal(c->listen, "127.0.0.1:9180");
    assert_string_equal(c->storage.path, "./var/meterd.db");
    assert_int_equal(c->scrape.interval_ms, 15000);
    assert_int_equal(c->scrape.timeout_ms, 10000);
    assert_int_equal(c->scrape.body_size_limit, 16u << 20);
    assert_int_equal(c->targets.count, 0);
    assert_int_equal(c->log.level, MD_CFG_LOG_INFO);
    assert_int_equal(c->log.format, MD_CFG_LOG_LOGFMT);
    assert_int_equal(c->http.threads, 4);
    assert_int_equal(c->http.send_buffer, 256u << 10);
    assert_int_equal(c->http.connection_timeout_ms, 30000);
    md_config_unref(c);
    /* send_buffer 0B: the kernel's autotuning */
    c = load_ok("http:\n  send_buffer: 0B\n");
    assert_int_equal(c->http.send_buffer, 0);
    md_config_unref(c);
    /* a document that is only a comment or "---" is empty too */
    c = load_ok("# nothing\n---\n");
    md_config_unref(c);
}

static void
test_full_file(void **state)
{
    static const char yaml[] =
        "cluster: prod-east\n"
        "listen: \"[::1]:9999\"\n"
        "storage:\n"
        "  path: /tmp/x.db\n"
        "scrape:\n"
        "  interval: 1m\n"
        "  timeout: 30s\n"
        "  body_size_limit: 8MiB\n"
        "targets:\n"
        "  - url: http://127.0.0.1:1064/metrics\n"
        "    namespace: team-a\n"
        "    labels: {pod: p1, zone: z}\n"
        "  - url: https://h:1/m\n"
        "log:\n"
        "  level: debug\n"
        "  format: json\n";
    struct md_config *c = load_ok(yaml);
    struct md_target_cfg *t;

    (void)state;
    assert_string_equal(c->cluster, "prod-east");
    assert_string_equal(c->listen, "[::1]:9999");
    assert_int_equal(c->scrape.interval_ms, 60000);
    assert_int_equal(c->scrape.timeout_ms, 30000);
    assert_int_equal(c->scrape.body_size_limit, 8u << 20);
    assert_int_equal(c->targets.count, 2);
    t = c->targets.v;
    assert_string_equal(t[0].url, "http://127.0.0.1:1064/metrics");
    assert_string_equal(t[0].namespace, "team-a");
    assert_int_equal(t[0].labels.count, 2);
    assert_string_equal(t[0].labels.keys[1], "zone");
    assert_string_equal(t[0].labels.vals[1], "z");
    assert_string_equal(t[1].namespace, "");
    assert_int_equal(c->log.level, MD_CFG_LOG_DEBUG);
    assert_int_equal(c->log.format, MD_CFG_LOG_JSON);
    md_config_unref(c);
}

/* Each case: a file and the exact errors expected, in order. */
static const struct {
    const char *yaml;
    const char *want[4];
} error_cases[] = {
    /* unknown keys: at the key, with a suggestion when one is close */
    { "clustr: a\n", { "t.yaml:1:1: clustr: unknown key (did you mean \"cluster\"?)" } },
    { "scrape:\n  intervall: 5s\n",
      { "t.yaml:2:3: scrape.intervall: unknown key (did you mean \"interval\"?)" } },
    { "zzz: 1\n", { "t.yaml:1:1: zzz: unknown key" } },
    /* durations: a unit is required; value column */
    { "scrape:\n  interval: 5\n", { "t.yaml:2:13: scrape.interval: \"5\" needs a unit (e.g. 15s)" } },
    { "scrape:\n  interval: 5x\n",
      { "t.yaml:2:13: scrape.interval: \"5x\" unknown unit (use ms, s, m, h, d or w)" } },
    { "scrape:\n  interval: 50ms\n", { "t.yaml:2:13: scrape.interval: \"50ms\" is out of range [100ms, 1d]" } },
    { "scrape:\n  interval: [1]\n", { "t.yaml:2:13: scrape.interval: expected a duration (e.g. 15s)" } },
    /* sizes */
    { "scrape:\n  body_size_limit: 16\n",
      { "t.yaml:2:20: scrape.body_size_limit: \"16\" needs a unit (e.g. 16MiB)" } },
    { "scrape:\n  body_size_limit: 16XB\n",
      { "t.yaml:2:20: scrape.body_size_limit: \"16XB\" unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)" } },
    { "scrape:\n  body_size_limit: 100B\n",
      { "t.yaml:2:20: scrape.body_size_limit: \"100B\" is out of range [1024, 4294967296] bytes" } },
    { "http:\n  send_buffer: 65MiB\n",
      { "t.yaml:2:16: http.send_buffer: \"65MiB\" is out of range [0, 67108864] bytes" } },
    /* cross-field rule, at the timeout value */
    { "scrape:\n  interval: 5s\n  timeout: 10s\n",
      { "t.yaml:3:12: scrape.timeout: 10s is longer than scrape.interval (5s)" } },
    /* enums */
    { "log:\n  level: loud\n",
      { "t.yaml:2:10: log.level: \"loud\" is not one of: debug, info, warn, error" } },
    /* type mismatches */
    { "storage: 5\n", { "t.yaml:1:10: storage: expected a mapping" } },
    { "targets: {a: 1}\n", { "t.yaml:1:10: targets: expected a list" } },
    { "targets:\n  - http://x\n", { "t.yaml:2:5: targets[0]: expected a mapping" } },
    /* required key, at the mapping */
    { "targets:\n  - namespace: a\n", { "t.yaml:2:5: targets[0]: missing required key \"url\"" } },
    /* string checks */
    { "targets:\n  - url: ftp://x/\n",
      { "t.yaml:2:10: targets[0].url: \"ftp://x/\": must start with http:// or https://" } },
    { "targets:\n  - url: http://x/\n    namespace: Team_A\n",
      { "t.yaml:3:16: targets[0].namespace: \"Team_A\": not a Kubernetes namespace name "
        "(lower-case letters, digits and '-')" } },
    { "listen: 9180\n",
      { "t.yaml:1:9: listen: \"9180\": expected host:port with a port from 1 to 65535 (e.g. 127.0.0.1:9180)" } },
    { "listen: \"127.0.0.1:70000\"\n",
      { "t.yaml:1:9: listen: \"127.0.0.1:70000\": expected host:port with a port from 1 to 65535 (e.g. 127.0.0.1:9180)" } },
    { "cluster: \"\"\n", { "t.yaml:1:10: cluster: \"\": must not be empty" } },
    { "targets:\n  - url: http://x/\n    labels: {\"bad-name\": v}\n",
      { "t.yaml:3:14: targets[0].labels: \"bad-name\" is not a valid label name "
        "([a-zA-Z_][a-zA-Z0-9_]*, no leading __)" } },
    /* duplicates */
    { "cluster: a\ncluster: b\n", { "t.yaml:2:1: cluster: duplicate key" } },
    { "targets:\n  - url: http://x/\n  - url: http://x/\n",
      { "t.yaml:3:10: targets[1].url: \"http://x/\" is already targets[0]" } },
    /* YAML syntax, at libyaml's problem mark */
    { "scrape:\n  interval: 5s\n timeout: 1s\n",
      { "t.yaml:3:2: YAML syntax: did not find expected key while parsing a block mapping" } },
    { "a: [1, 2\n", { "t.yaml:2:1: YAML syntax: did not find expected ',' or ']' while parsing a flow sequence" } },
    /* top level */
    { "- a\n", { "t.yaml:1:1: expected a mapping at the top level" } },
    { "cluster: a\n---\ncluster: b\n", { "t.yaml:3:1: only one YAML document is allowed" } },
    /* several errors in one file, all reported in document order */
    { "clustr: a\nscrape:\n  interval: 5\nlog:\n  format: xml\n",
      { "t.yaml:1:1: clustr: unknown key (did you mean \"cluster\"?)",
        "t.yaml:3:13: scrape.interval: \"5\" needs a unit (e.g. 15s)",
        "t.yaml:5:11: log.format: \"xml\" is not one of: logfmt, json" } },
};

static void
test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        struct md_config *c = NULL;
        const char *y = error_cases[i].yaml;
        size_t nwant = 0;
        int rc = md_config_load_buf("t.yaml", y, strlen(y), &c, &errs);

        while (nwant < 4 && error_cases[i].want[nwant] != NULL)
            nwant++;
        if (rc == MD_OK)
            fail_msg("case %zu: loaded, want %zu error(s)", i, nwant);
        assert_null(c);
        for (size_t e = 0; e < errs.count || e < nwant; e++) {
            const char *got = e < errs.count ? errs.msgs[e] : "(missing)";
            const char *want = e < nwant ? error_cases[i].want[e] : "(none)";

            if (strcmp(got, want) != 0)
                fail_msg("case %zu error %zu:\n got  %s\n want %s", i, e, got, want);
        }
    }
}

static void
test_alias_bomb(void **state)
{
    /* a billion-laughs document: must stop with a node-limit error, fast */
    static const char yaml[] =
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        "targets: [{url: http://x/, labels: {a: *f}}]\n";
    struct md_config *c = NULL;

    (void)state;
    assert_int_not_equal(md_config_load_buf("t.yaml", yaml, strlen(yaml), &c, &errs), MD_OK);
    assert_true(errs.count >= 1);
}

static void
test_too_many_errors(void **state)
{
    char *yaml = malloc(200 * 16);
    struct md_config *c = NULL;
    size_t off = 0;

    (void)state;
    for (int i = 0; i < 150; i++)
        off += (size_t)snprintf(yaml + off, 200 * 16 - off, "k%03d: 1\n", i);
    assert_int_equal(md_config_load_buf("t.yaml", yaml, off, &c, &errs), MD_ECONFIG);
    assert_int_equal(errs.count, MD_CONFIG_ERRORS_MAX);
    assert_true(errs.truncated);
    free(yaml);
}

static void
test_limits(void **state)
{
    char big[5000];
    char yaml[5100];
    struct md_config *c = NULL;

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    (void)snprintf(yaml, sizeof(yaml), "cluster: %s\n", big);
    assert_int_equal(md_config_load_buf("t.yaml", yaml, strlen(yaml), &c, &errs), MD_ECONFIG);
    assert_string_equal(errs.msgs[0],
        "t.yaml:1:10: cluster: value is 4999 bytes, longer than the limit of 253");
    /* a NUL byte smuggled in through an escape */
    assert_int_equal(md_config_load_buf("t.yaml", "cluster: \"a\\0b\"\n", 16, &c, &errs),
        MD_ECONFIG);
    assert_string_equal(errs.msgs[0], "t.yaml:1:10: cluster: value contains a NUL byte");
}

static void
test_load_file(void **state)
{
    char path[] = "/tmp/md_cfg_XXXXXX";
    struct md_config *c = NULL;
    FILE *fp;
    int fd = mkstemp(path);

    (void)state;
    assert_true(fd >= 0);
    fp = fdopen(fd, "w");
    fputs("cluster: c1\n", fp);
    fclose(fp);
    assert_int_equal(md_config_load(path, &c, &errs), MD_OK);
    assert_string_equal(c->cluster, "c1");
    assert_string_equal(c->source, path);
    md_config_unref(c);
    unlink(path);
    assert_int_equal(md_config_load(path, &c, &errs), MD_EIO);
    assert_non_null(strstr(errs.msgs[0], "cannot open"));
}

static void
test_shipped_default(void **state)
{
    const char *src = getenv("MD_SOURCE");
    char path[1024];
    struct md_config *c = NULL;

    (void)state;
    if (src == NULL)
        skip();
    (void)snprintf(path, sizeof(path), "%s/config/meterd.yaml", src);
    if (md_config_load(path, &c, &errs) != MD_OK)
        fail_msg("config/meterd.yaml: %s", errs.msgs[0]);
    md_config_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_shipped_default),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
