/* test_discovery.c: the PodList decoder on fixtures shaped like the real API
 * (tests/fixtures/k8s/, written by make_fixtures.py): native-sidecar and
 * legacy ports, port preference, pending/deleting/no-IP/no-port pods, two
 * namespaces, IPv6, paging, Status bodies, malformed JSON and wrong types,
 * per-pod oddities, label limits, rollback on failure, allocation failure;
 * the in-cluster URL helper; the kubernetes section of meterd.yaml. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "discovery.h"
#include "util.h"

static char p_admin[] = "aigw-admin", p_metrics[] = "aigw-metrics", p_redis[] = "redis";
static char *both_v[] = { p_admin, p_metrics };
static const struct md_strlist PORTS = { both_v, 2 };
static char untouched[] = "untouched";

static char *
read_fixture(const char *name, size_t *len)
{
    const char *dir = getenv("MD_FIXTURES");
    char path[1024];
    FILE *fp;
    char *data;
    long n;

    if (dir == NULL)
        dir = "tests/fixtures";
    (void)snprintf(path, sizeof(path), "%s/k8s/%s", dir, name);
    fp = fopen(path, "rb");
    if (fp == NULL)
        fail_msg("cannot open fixture %s", path);
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, fp), (size_t)n);
    data[n] = '\0';
    fclose(fp);
    *len = (size_t)n;
    return data;
}

static int
decode(const char *json, size_t len, const struct md_strlist *ports,
    struct md_discovery_result *res, char **cont, struct md_err *err)
{
    char *c = NULL;
    int rc = md_discovery_decode_podlist(json, len, ports, res, &c, err);

    if (cont != NULL)
        *cont = c;
    else
        md_free(c);
    return rc;
}

static int
decode_fixture(const char *name, const struct md_strlist *ports, struct md_discovery_result *res,
    char **cont)
{
    struct md_err err = {0};
    size_t len;
    char *data = read_fixture(name, &len);
    int rc = decode(data, len, ports, res, cont, &err);

    if (rc != MD_OK)
        fail_msg("%s: got rc %d (%s), want MD_OK", name, rc, err.msg);
    free(data);
    return rc;
}

struct want_target {
    const char *ns, *pod, *url, *uid, *node, *container, *port_name;
};

static void
check_target(const struct md_discovered *t, const struct want_target *w)
{
    if (strcmp(t->url, w->url) != 0 || strcmp(t->namespace, w->ns) != 0 ||
        strcmp(t->pod, w->pod) != 0 || strcmp(t->uid, w->uid) != 0 ||
        strcmp(t->node, w->node) != 0 || strcmp(t->container, w->container) != 0 ||
        strcmp(t->port_name, w->port_name) != 0)
        fail_msg("got {%s %s/%s uid=%s node=%s container=%s port=%s}\n"
                 "want {%s %s/%s uid=%s node=%s container=%s port=%s}",
            t->url, t->namespace, t->pod, t->uid, t->node, t->container, t->port_name,
            w->url, w->ns, w->pod, w->uid, w->node, w->container, w->port_name);
    assert_int_equal(t->port, 1064);
}

/* Expected by hand from podlist_mixed.json (see make_fixtures.py): pods 1,
 * 4 and 6 qualify; 2 Pending and 8 Succeeded are not running, 3 is
 * terminating, 5 has no IP yet, 7 (redis) and 9 (port on a plain init
 * container) have no port. */
static const struct want_target MIXED[] = {
    { "team-a", "envoy-legacy-gw-5b8f9c7d6-qh2vn", "http://10.244.2.31:1064/metrics",
      "8e2d4b71-0c3a-4f5e-b6d7-1a2b3c4d5e04", "worker-2", "ai-gateway-extproc", "aigw-metrics" },
    { "team-a", "envoy-team-a-gw-7c9d5f6b8-4xkqp", "http://10.244.1.17:1064/metrics",
      "3f6c1a52-9b1e-4c8f-a0d2-5e7b9c1d2f01", "worker-1", "ai-gateway-extproc", "aigw-admin" },
    { "team-b", "envoy-team-b-gw-66f7d8c9b5-lm4ns", "http://10.244.3.9:1064/metrics",
      "b41f7e22-5d6a-4b3c-9e8f-7a6b5c4d3e06", "worker-3", "ai-gateway-extproc", "aigw-admin" },
};

static void
test_mixed(void **state)
{
    struct md_discovery_result res;
    const struct md_discovered *t;

    (void)state;
    md_discovery_result_init(&res);
    decode_fixture("podlist_mixed.json", &PORTS, &res, NULL);
    md_discovery_result_finish(&res);
    assert_int_equal(res.count, 3);
    for (size_t i = 0; i < 3; i++)
        check_target(&res.v[i], &MIXED[i]);
    assert_int_equal(res.stats.pods, 9);
    assert_int_equal(res.stats.targets, 3);
    assert_int_equal(res.stats.not_running, 2);
    assert_int_equal(res.stats.deleting, 1);
    assert_int_equal(res.stats.no_ip, 1);
    assert_int_equal(res.stats.no_port, 2);
    assert_int_equal(res.stats.invalid, 0);
    assert_int_equal(res.stats.duplicate, 0);
    assert_int_equal(res.stats.labels_dropped, 0);
    assert_int_equal(res.stats.pages, 1);
    /* labels: all six, sorted by name */
    t = &res.v[2];
    assert_int_equal(t->labels.count, 6);
    assert_string_equal(t->labels.keys[0], "app.kubernetes.io/component");
    assert_string_equal(t->labels.vals[0], "proxy");
    assert_string_equal(t->labels.keys[3], "gateway.envoyproxy.io/owning-gateway-name");
    assert_string_equal(t->labels.vals[3], "gw");
    assert_string_equal(t->labels.keys[4], "gateway.envoyproxy.io/owning-gateway-namespace");
    assert_string_equal(t->labels.vals[4], "team-b");
    assert_string_equal(t->labels.keys[5], "pod-template-hash");
    assert_string_equal(t->labels.vals[5], "66f7d8c9b5");
    md_discovery_result_fini(&res);
    assert_int_equal(res.count, 0);
}

static void
test_port_preference(void **state)
{
    static char *metrics_first_v[] = { p_metrics, p_admin };
    static char *admin_only_v[] = { p_admin };
    static char *other_v[] = { p_redis };
    const struct md_strlist metrics_first = { metrics_first_v, 2 };
    const struct md_strlist admin_only = { admin_only_v, 1 };
    const struct md_strlist other = { other_v, 1 };
    struct md_discovery_result res;

    (void)state;
    /* the v0.4 sidecar declares both names: the preferred one wins */
    md_discovery_result_init(&res);
    decode_fixture("podlist_mixed.json", &metrics_first, &res, NULL);
    md_discovery_result_finish(&res);
    assert_int_equal(res.count, 3);
    assert_string_equal(res.v[2].pod, "envoy-team-b-gw-66f7d8c9b5-lm4ns");
    assert_string_equal(res.v[2].port_name, "aigw-metrics");
    assert_string_equal(res.v[1].port_name, "aigw-admin");   /* v0.5: only aigw-admin */
    md_discovery_result_fini(&res);

    /* aigw-admin only: the v0.3 pod has no such port */
    decode_fixture("podlist_mixed.json", &admin_only, &res, NULL);
    md_discovery_result_finish(&res);
    assert_int_equal(res.count, 2);
    assert_int_equal(res.stats.no_port, 3);
    assert_string_equal(res.v[0].pod, "envoy-team-a-gw-7c9d5f6b8-4xkqp");
    assert_string_equal(res.v[1].pod, "envoy-team-b-gw-66f7d8c9b5-lm4ns");
    md_discovery_result_fini(&res);

    /* any configured name works, also in a regular container */
    decode_fixture("podlist_mixed.json", &other, &res, NULL);
    md_discovery_result_finish(&res);
    assert_int_equal(res.count, 1);
    assert_string_equal(res.v[0].url, "http://10.244.1.52:6379/metrics");
    assert_string_equal(res.v[0].container, "redis");
    assert_int_equal(res.v[0].port, 6379);
    md_discovery_result_fini(&res);
}

static void
test_ipv6(void **state)
{
    struct md_discovery_result res;

    (void)state;
    md_discovery_result_init(&res);
    decode_fixture("podlist_ipv6.json", &PORTS, &res, NULL);
    assert_int_equal(res.count, 1);
    assert_string_equal(res.v[0].url, "http://[fd00:10:244:1::1a]:1064/metrics");
    assert_string_equal(res.v[0].namespace, "team-c");
    md_discovery_result_fini(&res);
}

static void
test_paging(void **state)
{
    struct md_discovery_result res;
    char *cont = NULL;

    (void)state;
    md_discovery_result_init(&res);
    decode_fixture("podlist_page1.json", &PORTS, &res, &cont);
    assert_non_null(cont);
    assert_string_equal(cont, "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyMTEzLCJzdGFydCI6InRlYW0tYS9l"
                              "bnZveS10ZWFtLWEtZ3ctN2M5ZDVmNmI4LXA5ejJtXHUwMDAwIn0");
    md_free(cont);
    assert_int_equal(res.count, 1);
    assert_int_equal(res.stats.not_running, 1);
    decode_fixture("podlist_page2.json", &PORTS, &res, &cont);
    assert_null(cont);
    md_discovery_result_finish(&res);
    assert_int_equal(res.count, 2);
    assert_int_equal(res.stats.pages, 2);
    assert_int_equal(res.stats.pods, 3);
    check_target(&res.v[0], &MIXED[1]);
    check_target(&res.v[1], &MIXED[2]);
    md_discovery_result_fini(&res);
}

static void
test_status_bodies(void **state)
{
    struct md_discovery_result res;
    struct md_err err = {0};
    char msg[200];
    size_t len;
    char *data = read_fixture("status_forbidden.json", &len);

    (void)state;
    md_discovery_result_init(&res);
    assert_int_equal(decode(data, len, &PORTS, &res, NULL, &err), MD_EPARSE);
    assert_non_null(strstr(err.msg, "Status: Forbidden: pods is forbidden: User "
                                    "\"system:serviceaccount:meterd:meterd\" cannot list"));
    md_discovery_status_message(data, len, msg, sizeof(msg));
    assert_string_equal(msg, "Forbidden: pods is forbidden: User \"system:serviceaccount:meterd:"
                             "meterd\" cannot list resource \"pods\" in API group \"\" at the "
                             "cluster scope");
    free(data);
    data = read_fixture("status_expired.json", &len);
    md_discovery_status_message(data, len, msg, 16);
    assert_string_equal(msg, "Expired: The pr");   /* cut to the buffer */
    free(data);
    md_discovery_status_message("<html>502</html>", 16, msg, sizeof(msg));
    assert_string_equal(msg, "");
    md_discovery_status_message("{\"kind\":\"PodList\"}", 17, msg, sizeof(msg));
    assert_string_equal(msg, "");
    /* control characters do not pass */
    md_discovery_status_message("{\"kind\":\"Status\",\"message\":\"a\\nb\\u001b[31m\"}", 44, msg,
        sizeof(msg));
    assert_string_equal(msg, "a?b?[31m");
    assert_int_equal(res.count, 0);
}

/* ---- malformed lists ---- */

static const struct {
    const char *json;
    int         rc;
    const char *msg;   /* substring of the error */
} bad_lists[] = {
    { "", MD_EPARSE, "malformed JSON at line 1" },
    { "{", MD_EPARSE, "malformed JSON" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":[]}x", MD_EPARSE, "malformed JSON" },
    { "[]", MD_EPARSE, "the body is an array, not an object" },
    { "\"PodList\"", MD_EPARSE, "malformed JSON" },   /* jansson wants an object or array */
    { "{\"apiVersion\":\"v1\",\"items\":[]}", MD_EPARSE, "\"kind\" is missing" },
    { "{\"kind\":7,\"apiVersion\":\"v1\",\"items\":[]}", MD_EPARSE, "\"kind\" is missing or not a string" },
    { "{\"kind\":\"ServiceList\",\"apiVersion\":\"v1\",\"items\":[]}", MD_EPARSE,
      "\"kind\" is \"ServiceList\", expected \"PodList\"" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v2\",\"items\":[]}", MD_EPARSE, "\"apiVersion\"" },
    { "{\"kind\":\"PodList\",\"items\":[]}", MD_EPARSE, "\"apiVersion\"" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\"}", MD_EPARSE, "\"items\" is missing" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":{}}", MD_EPARSE,
      "\"items\" is an object, not an array" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":\"x\"}", MD_EPARSE,
      "\"items\" is a string, not an array" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":[],\"items\":[]}", MD_EPARSE,
      "\"metadata\" is an array, not an object" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"continue\":5},\"items\":[]}",
      MD_EPARSE, "\"metadata.continue\" is an integer, not a string" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"continue\":\"a\\nb\"},\"items\":[]}",
      MD_EPARSE, "control characters" },
    { "{\"kind\":\"PodList\",\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":[]}", MD_EPARSE,
      "duplicate object key" },
    { "{\"kind\":\"Pod\\u0000List\",\"apiVersion\":\"v1\",\"items\":[]}", MD_EPARSE,
      "malformed JSON" },
    { "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":[{\"metadata\":{\"name\":\"a\xff\"}}]}",
      MD_EPARSE, "malformed JSON" },   /* invalid UTF-8 */
};

static void
test_bad_lists(void **state)
{
    struct md_discovery_result res;

    (void)state;
    md_discovery_result_init(&res);
    for (size_t i = 0; i < sizeof(bad_lists) / sizeof(bad_lists[0]); i++) {
        struct md_err err = {0};
        char *cont = untouched;
        int rc = md_discovery_decode_podlist(bad_lists[i].json, strlen(bad_lists[i].json),
            &PORTS, &res, &cont, &err);

        if (rc != bad_lists[i].rc || strstr(err.msg, bad_lists[i].msg) == NULL)
            fail_msg("case %zu %s: got rc %d \"%s\", want rc %d with \"%s\"", i,
                bad_lists[i].json, rc, err.msg, bad_lists[i].rc, bad_lists[i].msg);
        assert_string_equal(cont, "untouched");
        assert_int_equal(res.count, 0);
        assert_int_equal(res.stats.pods, 0);
    }
    /* items null and an empty list are fine */
    {
        static const char *ok[] = {
            "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"1\"},"
            "\"items\":null}",
            "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"continue\":\"\"},\"items\":[]}",
        };
        for (size_t i = 0; i < 2; i++) {
            struct md_err err = {0};
            char *cont = untouched;

            assert_int_equal(md_discovery_decode_podlist(ok[i], strlen(ok[i]), &PORTS, &res,
                &cont, &err), MD_OK);
            assert_null(cont);
        }
        assert_int_equal(res.stats.pages, 2);
    }
    /* no port names is a caller error */
    {
        struct md_strlist none = { NULL, 0 };
        struct md_err err = {0};
        char *cont = NULL;

        assert_int_equal(md_discovery_decode_podlist("{}", 2, &none, &res, &cont, &err),
            MD_ESTATE);
    }
    md_discovery_result_fini(&res);
}

static void
test_continue_limit(void **state)
{
    struct md_discovery_result res;
    struct md_buf b;
    struct md_err err = {0};
    char *cont = NULL;

    (void)state;
    md_discovery_result_init(&res);
    md_buf_init(&b, 1 << 20);
    assert_int_equal(md_buf_puts(&b, "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":"
                                     "{\"continue\":\""), MD_OK);
    for (size_t i = 0; i < MD_DISCOVERY_CONTINUE_MAX; i++)
        assert_int_equal(md_buf_putc(&b, 'A'), MD_OK);
    assert_int_equal(md_buf_puts(&b, "\"},\"items\":[]}"), MD_OK);
    /* exactly the limit: fine */
    assert_int_equal(md_discovery_decode_podlist(b.data, b.len, &PORTS, &res, &cont, &err), MD_OK);
    assert_int_equal(strlen(cont), MD_DISCOVERY_CONTINUE_MAX);
    md_free(cont);
    cont = NULL;
    /* one byte more: MD_ELIMIT */
    b.len = 0;
    assert_int_equal(md_buf_puts(&b, "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":"
                                     "{\"continue\":\""), MD_OK);
    for (size_t i = 0; i <= MD_DISCOVERY_CONTINUE_MAX; i++)
        assert_int_equal(md_buf_putc(&b, 'A'), MD_OK);
    assert_int_equal(md_buf_puts(&b, "\"},\"items\":[]}"), MD_OK);
    assert_int_equal(md_discovery_decode_podlist(b.data, b.len, &PORTS, &res, &cont, &err),
        MD_ELIMIT);
    assert_null(cont);
    assert_non_null(strstr(err.msg, "8193 bytes"));
    md_buf_fini(&b);
    md_discovery_result_fini(&res);
}

/* ---- one pod, edited ---- */

static const char BASE_POD[] =
    "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"9\"},"
    "\"items\":[{"
    "\"metadata\":{\"name\":\"gw-1\",\"namespace\":\"ns1\",\"uid\":\"u-1\","
    "  \"labels\":{\"app\":\"envoy\"}},"
    "\"spec\":{\"nodeName\":\"n1\","
    "  \"initContainers\":[{\"name\":\"ai-gateway-extproc\",\"restartPolicy\":\"Always\","
    "    \"ports\":[{\"name\":\"aigw-admin\",\"containerPort\":1064,\"protocol\":\"TCP\"}]}],"
    "  \"containers\":[{\"name\":\"envoy\",\"ports\":[{\"name\":\"metrics\",\"containerPort\":19001}]}]},"
    "\"status\":{\"phase\":\"Running\",\"podIP\":\"10.1.2.3\",\"podIPs\":[{\"ip\":\"10.1.2.3\"}]}"
    "}]}";

/* Sets (value != NULL) or deletes the member at a '/'-separated path of
 * object keys and array indexes below the first item. */
static void
edit(json_t *root, const char *path, const char *value)
{
    json_t *cur = json_array_get(json_object_get(root, "items"), 0);
    char buf[256], *save = NULL, *seg, *next;

    (void)snprintf(buf, sizeof(buf), "%s", path);
    seg = strtok_r(buf, "/", &save);
    while (seg != NULL) {
        next = strtok_r(NULL, "/", &save);
        if (next == NULL)
            break;
        cur = json_is_array(cur) ? json_array_get(cur, (size_t)strtoul(seg, NULL, 10))
                                 : json_object_get(cur, seg);
        assert_non_null(cur);
        seg = next;
    }
    if (value == NULL) {
        assert_int_equal(json_object_del(cur, seg), 0);
    } else {
        json_error_t je;
        json_t *v = json_loads(value, JSON_DECODE_ANY, &je);

        if (v == NULL)
            fail_msg("bad test value %s: %s", value, je.text);
        if (json_is_array(cur))
            assert_int_equal(json_array_set_new(cur, (size_t)strtoul(seg, NULL, 10), v), 0);
        else
            assert_int_equal(json_object_set_new(cur, seg, v), 0);
    }
}

enum reason { R_TARGET, R_INVALID, R_NOT_RUNNING, R_DELETING, R_NO_IP, R_NO_PORT };

static const struct {
    const char *path, *value;   /* value NULL: delete */
    const char *path2, *value2;
    enum reason want;
    const char *url;            /* R_TARGET: the URL */
} pod_cases[] = {
    { NULL, NULL, NULL, NULL, R_TARGET, "http://10.1.2.3:1064/metrics" },
    { "metadata", NULL, NULL, NULL, R_INVALID, NULL },
    { "metadata", "[]", NULL, NULL, R_INVALID, NULL },
    { "metadata/name", "5", NULL, NULL, R_INVALID, NULL },
    { "metadata/name", "\"\"", NULL, NULL, R_INVALID, NULL },
    { "metadata/name", "\"gw\\n1\"", NULL, NULL, R_INVALID, NULL },
    { "metadata/namespace", NULL, NULL, NULL, R_INVALID, NULL },
    { "metadata/uid", NULL, NULL, NULL, R_INVALID, NULL },
    { "status", NULL, NULL, NULL, R_INVALID, NULL },
    { "status", "\"Running\"", NULL, NULL, R_INVALID, NULL },
    { "status/phase", NULL, NULL, NULL, R_NOT_RUNNING, NULL },
    { "status/phase", "\"Failed\"", NULL, NULL, R_NOT_RUNNING, NULL },
    { "status/phase", "\"Unknown\"", NULL, NULL, R_NOT_RUNNING, NULL },
    { "status/phase", "\"running\"", NULL, NULL, R_NOT_RUNNING, NULL },
    { "metadata/deletionTimestamp", "\"2026-11-27T10:00:00Z\"", NULL, NULL, R_DELETING, NULL },
    { "metadata/deletionTimestamp", "null", NULL, NULL, R_TARGET, "http://10.1.2.3:1064/metrics" },
    { "status/podIP", NULL, NULL, NULL, R_NO_IP, NULL },
    { "status/podIP", "\"\"", NULL, NULL, R_NO_IP, NULL },
    { "status/podIP", "null", NULL, NULL, R_NO_IP, NULL },
    { "status/podIP", "42", NULL, NULL, R_INVALID, NULL },
    { "status/podIP", "\"10.0.0.300\"", NULL, NULL, R_INVALID, NULL },
    { "status/podIP", "\"10.0.0.1/24\"", NULL, NULL, R_INVALID, NULL },
    { "status/podIP", "\"pod.example\"", NULL, NULL, R_INVALID, NULL },
    { "status/podIP", "\"::1\"", NULL, NULL, R_TARGET, "http://[::1]:1064/metrics" },
    { "status/podIP", "\"::ffff:10.1.2.3\"", NULL, NULL, R_TARGET,
      "http://[::ffff:10.1.2.3]:1064/metrics" },
    { "spec", NULL, NULL, NULL, R_INVALID, NULL },
    { "spec/containers", "{}", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers", "\"x\"", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers", NULL, NULL, NULL, R_NO_PORT, NULL },
    { "spec/initContainers", "null", NULL, NULL, R_NO_PORT, NULL },
    { "spec/initContainers/0", "7", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/name", NULL, NULL, NULL, R_INVALID, NULL },
    /* a plain init container has finished before the pod runs */
    { "spec/initContainers/0/restartPolicy", NULL, NULL, NULL, R_NO_PORT, NULL },
    { "spec/initContainers/0/restartPolicy", "\"OnFailure\"", NULL, NULL, R_NO_PORT, NULL },
    { "spec/initContainers/0/ports", "{}", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/ports", NULL, NULL, NULL, R_NO_PORT, NULL },
    { "spec/initContainers/0/ports/0", "\"aigw-admin\"", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/ports/0/containerPort", "0", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/ports/0/containerPort", "65536", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/ports/0/containerPort", "\"1064\"", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/ports/0/containerPort", "1064.0", NULL, NULL, R_INVALID, NULL },
    { "spec/initContainers/0/ports/0/containerPort", "65535", NULL, NULL, R_TARGET,
      "http://10.1.2.3:65535/metrics" },
    { "spec/initContainers/0/ports/0/protocol", "\"UDP\"", NULL, NULL, R_NO_PORT, NULL },
    { "spec/initContainers/0/ports/0/protocol", NULL, NULL, NULL, R_TARGET,
      "http://10.1.2.3:1064/metrics" },
    { "spec/initContainers/0/ports/0/name", "\"aigw-admin2\"", NULL, NULL, R_NO_PORT, NULL },
    /* the second name is found in a regular container */
    { "spec/initContainers/0/ports/0/name", "\"x\"", "spec/containers/0/ports/0/name",
      "\"aigw-metrics\"", R_TARGET, "http://10.1.2.3:19001/metrics" },
    /* the first name wins over the second even in a later list */
    { "spec/containers/0/ports/0/name", "\"aigw-metrics\"", NULL, NULL, R_TARGET,
      "http://10.1.2.3:1064/metrics" },
    { "spec/nodeName", NULL, NULL, NULL, R_TARGET, "http://10.1.2.3:1064/metrics" },
    { "spec/nodeName", "3", NULL, NULL, R_INVALID, NULL },
    { "metadata/labels", "[]", NULL, NULL, R_INVALID, NULL },
    { "metadata/labels", "null", NULL, NULL, R_TARGET, "http://10.1.2.3:1064/metrics" },
    /* the deletion check comes after the phase, the IP check after both */
    { "status/phase", "\"Pending\"", "metadata/deletionTimestamp", "\"2026-01-01T00:00:00Z\"",
      R_NOT_RUNNING, NULL },
    { "status/podIP", NULL, "metadata/deletionTimestamp", "\"2026-01-01T00:00:00Z\"",
      R_DELETING, NULL },
};

static void
test_pod_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(pod_cases) / sizeof(pod_cases[0]); i++) {
        struct md_discovery_result res;
        struct md_err err = {0};
        json_error_t je;
        json_t *root = json_loads(BASE_POD, 0, &je);
        size_t got[6];
        char *text;
        int rc;

        if (root == NULL)
            fail_msg("BASE_POD: %s", je.text);
        if (pod_cases[i].path != NULL)
            edit(root, pod_cases[i].path, pod_cases[i].value);
        if (pod_cases[i].path2 != NULL)
            edit(root, pod_cases[i].path2, pod_cases[i].value2);
        text = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        md_discovery_result_init(&res);
        rc = decode(text, strlen(text), &PORTS, &res, NULL, &err);
        if (rc != MD_OK)
            fail_msg("case %zu (%s): rc %d %s", i, pod_cases[i].path, rc, err.msg);
        got[R_TARGET] = res.stats.targets;
        got[R_INVALID] = res.stats.invalid;
        got[R_NOT_RUNNING] = res.stats.not_running;
        got[R_DELETING] = res.stats.deleting;
        got[R_NO_IP] = res.stats.no_ip;
        got[R_NO_PORT] = res.stats.no_port;
        for (int r = 0; r < 6; r++) {
            if (got[r] != (r == (int)pod_cases[i].want))
                fail_msg("case %zu (%s = %s): reason counters target=%zu invalid=%zu "
                         "not_running=%zu deleting=%zu no_ip=%zu no_port=%zu; want only #%d",
                    i, pod_cases[i].path, pod_cases[i].value ? pod_cases[i].value : "(deleted)",
                    got[0], got[1], got[2], got[3], got[4], got[5], (int)pod_cases[i].want);
        }
        assert_int_equal(res.stats.pods, 1);
        assert_int_equal(res.count, got[R_TARGET]);
        if (pod_cases[i].want == R_TARGET) {
            if (strcmp(res.v[0].url, pod_cases[i].url) != 0)
                fail_msg("case %zu: url %s, want %s", i, res.v[0].url, pod_cases[i].url);
            assert_string_equal(res.v[0].node, strcmp(pod_cases[i].path ? pod_cases[i].path : "",
                "spec/nodeName") == 0 ? "" : "n1");
        }
        if (pod_cases[i].want == R_INVALID) {
            if (res.stats.first_invalid[0] == '\0')
                fail_msg("case %zu: an invalid pod without a reason", i);
        }
        md_discovery_result_fini(&res);
        free(text);
    }
}

static void
test_invalid_reason_names_the_pod(void **state)
{
    struct md_discovery_result res;
    struct md_err err = {0};
    json_t *root = json_loads(BASE_POD, 0, NULL);
    char *text;

    (void)state;
    edit(root, "spec/initContainers/0/ports/0/containerPort", "70000");
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    md_discovery_result_init(&res);
    assert_int_equal(decode(text, strlen(text), &PORTS, &res, NULL, &err), MD_OK);
    assert_string_equal(res.stats.first_invalid,
        "pod ns1/gw-1: spec.initContainers[0] (\"ai-gateway-extproc\") port \"aigw-admin\": "
        "containerPort is not 1-65535");
    md_discovery_result_fini(&res);
    free(text);
}

static void
test_label_limits(void **state)
{
    struct md_discovery_result res;
    struct md_err err = {0};
    json_t *root = json_loads(BASE_POD, 0, NULL), *labels = json_object();
    char key[400], *text;

    (void)state;
    /* 70 good labels l00..l69, one value of 64 bytes, one non-string value,
     * one key of 318 bytes, one empty value (allowed) */
    for (int i = 0; i < 70; i++) {
        (void)snprintf(key, sizeof(key), "example.com/l%02d", i);
        json_object_set_new(labels, key, json_string("v"));
    }
    json_object_set_new(labels, "a-long-value", json_string(
        "0123456789012345678901234567890123456789012345678901234567890123"));
    json_object_set_new(labels, "a-number", json_integer(3));
    memset(key, 'k', 318);
    key[318] = '\0';
    json_object_set_new(labels, key, json_string("v"));
    json_object_set_new(labels, "a-empty", json_string(""));
    json_object_set_new(json_object_get(json_array_get(json_object_get(root, "items"), 0),
        "metadata"), "labels", labels);
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    md_discovery_result_init(&res);
    assert_int_equal(decode(text, strlen(text), &PORTS, &res, NULL, &err), MD_OK);
    assert_int_equal(res.count, 1);
    /* 71 acceptable (a-empty + 70), 64 kept by name, 7 + 3 dropped */
    assert_int_equal(res.v[0].labels.count, MD_DISCOVERY_LABELS_MAX);
    assert_int_equal(res.stats.labels_dropped, 10);
    assert_string_equal(res.v[0].labels.keys[0], "a-empty");
    assert_string_equal(res.v[0].labels.vals[0], "");
    assert_string_equal(res.v[0].labels.keys[1], "example.com/l00");
    assert_string_equal(res.v[0].labels.keys[63], "example.com/l62");
    md_discovery_result_fini(&res);
    free(text);
}

static void
test_rollback_and_duplicates(void **state)
{
    struct md_discovery_result res, other;
    struct md_err err = {0};
    struct md_discovery_stats before;
    json_t *root;
    char *text;
    static const char half[] =
        "{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":[{\"metadata\":{\"name\":\"a\","
        "\"namespace\":\"n\",\"uid\":\"u\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"ports\":"
        "[{\"name\":\"aigw-admin\",\"containerPort\":1}]}]},\"status\":{\"phase\":\"Running\","
        "\"podIP\":\"10.9.9.9\"}}], \"metadata\": {\"continue\": 1}}";

    (void)state;
    md_discovery_result_init(&res);
    decode_fixture("podlist_mixed.json", &PORTS, &res, NULL);
    before = res.stats;
    /* a page that fails after a target was appended leaves res as it was */
    assert_int_equal(decode(half, strlen(half), &PORTS, &res, NULL, &err), MD_EPARSE);
    assert_int_equal(res.count, 3);
    assert_memory_equal(&res.stats, &before, sizeof(before));

    /* the same pod IP:port from a second namespace: the first (by
     * namespace/pod) is kept, the other counted */
    root = json_loads(BASE_POD, 0, NULL);
    edit(root, "status/podIP", "\"10.244.1.17\"");
    edit(root, "metadata/namespace", "\"zz-late\"");
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    md_discovery_result_init(&other);
    assert_int_equal(decode(text, strlen(text), &PORTS, &other, NULL, &err), MD_OK);
    assert_int_equal(md_discovery_result_merge(&res, &other, &err), MD_OK);
    assert_int_equal(other.count, 0);
    assert_int_equal(res.count, 4);
    assert_int_equal(res.stats.pods, 10);
    md_discovery_result_finish(&res);
    assert_int_equal(res.count, 3);
    assert_int_equal(res.stats.duplicate, 1);
    assert_int_equal(res.stats.targets, 3);
    check_target(&res.v[1], &MIXED[1]);
    md_discovery_result_move(&other, &res);
    assert_int_equal(res.count, 0);
    assert_int_equal(other.count, 3);
    md_discovery_result_fini(&other);
    md_discovery_result_fini(&res);
    free(text);
}

/* Every allocation of a decode fails in turn: MD_ENOMEM with the result
 * untouched, or success with the full answer (ASan checks for leaks). */
static void
test_alloc_failure(void **state)
{
    size_t len;
    char *data = read_fixture("podlist_mixed.json", &len);
    int saw_enomem = 0, saw_ok = 0;

    (void)state;
    for (unsigned n = 1; n < 400 && !saw_ok; n++) {
        struct md_discovery_result res;
        struct md_err err = {0};
        char env[16];
        int rc;

        /* one target already there: a failing page must leave it alone */
        md_discovery_result_init(&res);
        decode_fixture("podlist_ipv6.json", &PORTS, &res, NULL);
        (void)snprintf(env, sizeof(env), "%u", n);
        setenv("MD_FAIL_ALLOC_AT", env, 1);
        md_alloc_reset();
        rc = decode(data, len, &PORTS, &res, NULL, &err);
        unsetenv("MD_FAIL_ALLOC_AT");
        md_alloc_reset();
        if (rc == MD_ENOMEM) {
            saw_enomem = 1;
            assert_int_equal(res.count, 1);
            assert_int_equal(res.stats.pods, 1);
            assert_int_equal(res.stats.pages, 1);
            assert_string_equal(res.v[0].namespace, "team-c");
        } else {
            assert_int_equal(rc, MD_OK);
            assert_int_equal(res.count, 4);
            assert_int_equal(res.stats.pods, 10);
            saw_ok = 1;
        }
        md_discovery_result_fini(&res);
    }
    assert_true(saw_enomem);
    assert_true(saw_ok);
    free(data);
}

static const struct {
    const char *host, *port;
    int         rc;
    const char *want;
} incluster_cases[] = {
    { "10.96.0.1", "443", MD_OK, "https://10.96.0.1:443" },
    { "fd00:10:96::1", "443", MD_OK, "https://[fd00:10:96::1]:443" },
    { "kubernetes.default.svc", "6443", MD_OK, "https://kubernetes.default.svc:6443" },
    { "", "443", MD_EPARSE, NULL },
    { NULL, "443", MD_EPARSE, NULL },
    { "10.96.0.1", NULL, MD_EPARSE, NULL },
    { "10.96.0.1", "0", MD_EPARSE, NULL },
    { "10.96.0.1", "65536", MD_EPARSE, NULL },
    { "10.96.0.1", "44x", MD_EPARSE, NULL },
    { "10.96.0.1", "", MD_EPARSE, NULL },
    { "evil.com/x", "443", MD_EPARSE, NULL },
    { "user@evil.com", "443", MD_EPARSE, NULL },
    { "[fd00::1]", "443", MD_EPARSE, NULL },
    { "a b", "443", MD_EPARSE, NULL },
};

static void
test_incluster_base(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(incluster_cases) / sizeof(incluster_cases[0]); i++) {
        struct md_err err = {0};
        char buf[128] = "";
        int rc = md_discovery_incluster_base(incluster_cases[i].host, incluster_cases[i].port,
            buf, sizeof(buf), &err);

        if (rc != incluster_cases[i].rc ||
            (rc == MD_OK && strcmp(buf, incluster_cases[i].want) != 0))
            fail_msg("case %zu (%s, %s): got rc %d \"%s\" (%s), want rc %d \"%s\"", i,
                incluster_cases[i].host ? incluster_cases[i].host : "NULL",
                incluster_cases[i].port ? incluster_cases[i].port : "NULL", rc, buf, err.msg,
                incluster_cases[i].rc, incluster_cases[i].want ? incluster_cases[i].want : "");
    }
}

/* ---- the kubernetes section of meterd.yaml ---- */

static void
test_config_defaults_and_values(void **state)
{
    static struct md_cfg_errors errs;
    struct md_config *c = NULL;
    static const char full[] =
        "kubernetes:\n"
        "  enabled: true\n"
        "  api_server: https://10.0.0.1:6443/\n"
        "  token_file: /run/t\n"
        "  ca_file: /run/ca.crt\n"
        "  namespaces: [team-a, team-b]\n"
        "  label_selector: app.kubernetes.io/name=envoy,tier!=x\n"
        "  port_names: [aigw-metrics]\n"
        "  refresh: 1m\n"
        "  request_timeout: 2s\n"
        "  insecure_skip_verify: true\n";

    (void)state;
    if (md_config_load_buf("t.yaml", "", 0, &c, &errs) != MD_OK)
        fail_msg("defaults: %s", errs.msgs[0]);
    assert_false(c->kubernetes.enabled);
    assert_string_equal(c->kubernetes.api_server, "");
    assert_string_equal(c->kubernetes.token_file, "");
    assert_string_equal(c->kubernetes.ca_file, "");
    assert_string_equal(c->kubernetes.label_selector, "");
    assert_int_equal(c->kubernetes.namespaces.count, 0);
    assert_int_equal(c->kubernetes.port_names.count, 2);
    assert_string_equal(c->kubernetes.port_names.v[0], "aigw-admin");
    assert_string_equal(c->kubernetes.port_names.v[1], "aigw-metrics");
    assert_int_equal(c->kubernetes.refresh_ms, 30000);
    assert_int_equal(c->kubernetes.request_timeout_ms, 10000);
    assert_false(c->kubernetes.insecure_skip_verify);
    md_config_unref(c);
    /* an empty section gets the defaults too */
    c = NULL;
    if (md_config_load_buf("t.yaml", "kubernetes:\n", 12, &c, &errs) != MD_OK)
        fail_msg("empty section: %s", errs.msgs[0]);
    assert_int_equal(c->kubernetes.port_names.count, 2);
    md_config_unref(c);
    c = NULL;
    if (md_config_load_buf("t.yaml", full, strlen(full), &c, &errs) != MD_OK)
        fail_msg("full: %s", errs.msgs[0]);
    assert_true(c->kubernetes.enabled);
    assert_string_equal(c->kubernetes.api_server, "https://10.0.0.1:6443/");
    assert_int_equal(c->kubernetes.namespaces.count, 2);
    assert_string_equal(c->kubernetes.namespaces.v[1], "team-b");
    assert_string_equal(c->kubernetes.label_selector, "app.kubernetes.io/name=envoy,tier!=x");
    assert_int_equal(c->kubernetes.port_names.count, 1);
    assert_string_equal(c->kubernetes.port_names.v[0], "aigw-metrics");
    assert_int_equal(c->kubernetes.refresh_ms, 60000);
    assert_int_equal(c->kubernetes.request_timeout_ms, 2000);
    assert_true(c->kubernetes.insecure_skip_verify);
    md_config_unref(c);
    /* a token over plain http only to loopback (kubectl proxy, tests) */
    c = NULL;
    {
        static const char lo[] = "kubernetes:\n  api_server: http://127.0.0.1:8001\n"
                                 "  token_file: /t\n";

        if (md_config_load_buf("t.yaml", lo, strlen(lo), &c, &errs) != MD_OK)
            fail_msg("loopback: %s", errs.msgs[0]);
        md_config_unref(c);
    }
}

static const struct {
    const char *yaml;
    const char *want;   /* the one expected error, as printed */
} config_errors[] = {
    { "kubernetes:\n  port_names: []\n",
      "t.yaml:2:15: kubernetes.port_names: needs at least one container port name" },
    { "kubernetes:\n  port_names: [AIGW]\n",
      "t.yaml:2:16: kubernetes.port_names[0]: \"AIGW\": not a container port name" },
    { "kubernetes:\n  port_names: [aigw-admin-port-x]\n",
      "t.yaml:2:16: kubernetes.port_names[0]: \"aigw-admin-port-x\": a container port name has 1 to 15" },
    { "kubernetes:\n  port_names: [\"1064\"]\n",
      "t.yaml:2:16: kubernetes.port_names[0]: \"1064\": not a container port name (needs a letter" },
    { "kubernetes:\n  port_names: [a, b, a]\n",
      "t.yaml:2:22: kubernetes.port_names[2]: \"a\" is listed twice" },
    { "kubernetes:\n  namespaces:\n    - team-a\n    - Team_B\n",
      "t.yaml:4:7: kubernetes.namespaces[1]: \"Team_B\": not a Kubernetes namespace name" },
    { "kubernetes:\n  namespaces: [\"\"]\n",
      "t.yaml:2:16: kubernetes.namespaces[0]: \"\": must not be empty" },
    { "kubernetes:\n  namespaces: [x, x]\n",
      "t.yaml:2:19: kubernetes.namespaces[1]: \"x\" is listed twice" },
    { "kubernetes:\n  api_server: ftp://x\n",
      "t.yaml:2:15: kubernetes.api_server: \"ftp://x\": must start with http:// or https://" },
    { "kubernetes:\n  api_server: https://u:p@h:6443\n",
      "t.yaml:2:15: kubernetes.api_server: \"https://u:p@h:6443\": must not contain user:password@" },
    { "kubernetes:\n  api_server: https://h/?x=1\n",
      "t.yaml:2:15: kubernetes.api_server: \"https://h/?x=1\": must not have a query" },
    { "kubernetes:\n  insecure_skip_verify: true\n",
      "t.yaml:2:25: kubernetes.insecure_skip_verify: only allowed with an https:// api_server" },
    { "kubernetes:\n  api_server: http://127.0.0.1:1\n  insecure_skip_verify: true\n",
      "t.yaml:3:25: kubernetes.insecure_skip_verify: only allowed with an https:// api_server" },
    { "kubernetes:\n  api_server: http://127.0.0.1:1\n  ca_file: /ca\n",
      "t.yaml:3:12: kubernetes.ca_file: set, but api_server \"http://127.0.0.1:1\" is plain http" },
    { "kubernetes:\n  api_server: http://10.0.0.1:8080\n  token_file: /t\n",
      "t.yaml:3:15: kubernetes.token_file: would send the token in clear text" },
    { "kubernetes:\n  api_server: http://127.example.com\n  token_file: /t\n",
      "t.yaml:3:15: kubernetes.token_file: would send the token in clear text" },
    { "kubernetes:\n  refresh: 500ms\n",
      "t.yaml:2:12: kubernetes.refresh: \"500ms\" is out of range [1s, 1d]" },
    { "kubernetes:\n  enable: true\n",
      "t.yaml:2:3: kubernetes.enable: unknown key (did you mean \"enabled\"?)" },
    { "kubernetes:\n  label_selector: \"a=\\tb\"\n",
      "t.yaml:2:19: kubernetes.label_selector: \"a=\tb\": contains a control character" },
};

static void
test_config_errors(void **state)
{
    static struct md_cfg_errors errs;

    (void)state;
    for (size_t i = 0; i < sizeof(config_errors) / sizeof(config_errors[0]); i++) {
        struct md_config *c = NULL;
        int rc;

        memset(&errs, 0, sizeof(errs));
        rc = md_config_load_buf("t.yaml", config_errors[i].yaml, strlen(config_errors[i].yaml),
            &c, &errs);
        if (rc != MD_ECONFIG || errs.count != 1 ||
            strncmp(errs.msgs[0], config_errors[i].want, strlen(config_errors[i].want)) != 0)
            fail_msg("case %zu: got rc %d, %zu errors, first \"%s\"; want one starting \"%s\"",
                i, rc, errs.count, errs.count ? errs.msgs[0] : "", config_errors[i].want);
        assert_null(c);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed),
        cmocka_unit_test(test_port_preference),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_paging),
        cmocka_unit_test(test_status_bodies),
        cmocka_unit_test(test_bad_lists),
        cmocka_unit_test(test_continue_limit),
        cmocka_unit_test(test_pod_cases),
        cmocka_unit_test(test_invalid_reason_names_the_pod),
        cmocka_unit_test(test_label_limits),
        cmocka_unit_test(test_rollback_and_duplicates),
        cmocka_unit_test(test_alloc_failure),
        cmocka_unit_test(test_incluster_base),
        cmocka_unit_test(test_config_defaults_and_values),
        cmocka_unit_test(test_config_errors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
