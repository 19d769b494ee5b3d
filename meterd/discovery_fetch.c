/* discovery_fetch.c: the edge half of Kubernetes pod discovery: lists pods
 * from the API server with libcurl and hands each page to the decoder in
 * discovery.c.
 *
 * Stateless between calls: every md_discovery_list() builds its own curl
 * handle (connections are reused across the pages and namespaces of one
 * list), re-reads the token file (projected service-account tokens rotate
 * about hourly) and frees everything before returning, so the calling
 * thread owns all state for the duration of the call.  Invariants: the
 * token lives only in a wiped buffer and in curl's header list (wiped
 * before it is freed); it never reaches a log line or an error message.
 * Every response is bounded by MD_DISCOVERY_BODY_MAX bytes (decompressed),
 * every list by MD_DISCOVERY_PAGES_MAX pages per namespace. */
#define MD_MODULE "discovery"

#include "discovery.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "version.h"

#define SA_DIR     "/var/run/secrets/kubernetes.io/serviceaccount"
#define SA_TOKEN   SA_DIR "/token"
#define SA_CA      SA_DIR "/ca.crt"
#define BASE_MAX   2100

struct fetch {
    const struct md_config *cfg;
    CURL                   *h;
    struct curl_slist      *hdrs;
    struct md_buf           body;
    char                    base[BASE_MAX];   /* no trailing '/' */
    char                    errbuf[CURL_ERROR_SIZE];
};

static atomic_int warned_insecure;

/* ---- token ---- */

/* Reads a bearer token: at most MD_DISCOVERY_TOKEN_MAX bytes, trailing
 * whitespace trimmed, visible ASCII only (so it cannot inject a header).
 * *out is a wiped-on-free buffer the caller releases with wipe_free(). */
static int
read_token(const char *path, char **out, struct md_err *err)
{
    char *buf;
    size_t len = 0;
    int fd, rc = MD_OK;

    buf = md_malloc(MD_DISCOVERY_TOKEN_MAX + 1);
    if (buf == NULL)
        return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = md_err_set(err, MD_ECONFIG, "kubernetes: token file \"%s\": %s", path,
            strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, MD_DISCOVERY_TOKEN_MAX + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = md_err_set(err, MD_ECONFIG, "kubernetes: token file \"%s\": %s", path,
                strerror(errno));
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > MD_DISCOVERY_TOKEN_MAX) {
            rc = md_err_set(err, MD_ECONFIG, "kubernetes: token file \"%s\" is over %u bytes",
                path, MD_DISCOVERY_TOKEN_MAX);
            break;
        }
    }
    (void)close(fd);
    if (rc != MD_OK)
        goto out;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        len--;
    buf[len] = '\0';
    if (len == 0) {
        rc = md_err_set(err, MD_ECONFIG, "kubernetes: token file \"%s\" is empty", path);
        goto out;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
            rc = md_err_set(err, MD_ECONFIG,
                "kubernetes: token file \"%s\" holds a space or a non-ASCII byte", path);
            goto out;
        }
    }
out:
    if (rc != MD_OK) {
        explicit_bzero(buf, MD_DISCOVERY_TOKEN_MAX + 1);
        md_free(buf);
        return rc;
    }
    *out = buf;
    return MD_OK;
}

static void
wipe_free(char *s, size_t size)
{
    if (s == NULL)
        return;
    explicit_bzero(s, size);
    md_free(s);
}

static void
free_headers(struct curl_slist *h)
{
    /* curl copied the Authorization line; wipe the copy before freeing */
    for (struct curl_slist *p = h; p != NULL; p = p->next)
        explicit_bzero(p->data, strlen(p->data));
    curl_slist_free_all(h);
}

/* ---- setup ---- */

static int
resolve(struct fetch *f, const char **token_path, const char **ca_path, struct md_err *err)
{
    const struct md_config *cfg = f->cfg;
    const char *api = cfg->kubernetes.api_server;
    struct md_err e = {0};
    size_t len;

    if (api[0] != '\0') {
        len = strlen(api);
        while (len > 0 && api[len - 1] == '/')
            len--;
        if (len >= sizeof(f->base))
            return md_err_set(err, MD_ECONFIG, "kubernetes: api_server is too long");
        memcpy(f->base, api, len);
        f->base[len] = '\0';
        *token_path = cfg->kubernetes.token_file[0] ? cfg->kubernetes.token_file : NULL;
        *ca_path = cfg->kubernetes.ca_file[0] ? cfg->kubernetes.ca_file : NULL;
        return MD_OK;
    }
    if (getenv("KUBERNETES_SERVICE_HOST") == NULL)
        return md_err_set(err, MD_ECONFIG, "kubernetes: not running in a cluster "
            "(KUBERNETES_SERVICE_HOST is unset) and kubernetes.api_server is empty");
    if (md_discovery_incluster_base(getenv("KUBERNETES_SERVICE_HOST"),
            getenv("KUBERNETES_SERVICE_PORT"), f->base, sizeof(f->base), &e) != MD_OK)
        return md_err_set(err, MD_ECONFIG, "kubernetes: in cluster: %s", e.msg);
    *token_path = cfg->kubernetes.token_file[0] ? cfg->kubernetes.token_file : SA_TOKEN;
    *ca_path = cfg->kubernetes.ca_file[0] ? cfg->kubernetes.ca_file : SA_CA;
    return MD_OK;
}

static size_t
on_body(char *p, size_t size, size_t n, void *ud)
{
    struct md_buf *b = ud;

    /* size is 1 for write callbacks; returning less than n aborts */
    if (md_buf_append(b, p, size * n) != MD_OK)
        return 0;
    return size * n;
}

static int
setup(struct fetch *f, const char *token_path, const char *ca_path, struct md_err *err)
{
    const struct md_config *cfg = f->cfg;
    char *token = NULL, *line = NULL;
    struct curl_slist *h;
    int rc = MD_OK;

    f->h = curl_easy_init();
    if (f->h == NULL)
        return md_err_set(err, MD_ENOMEM, "kubernetes: curl_easy_init failed");
    h = curl_slist_append(NULL, "Accept: application/json");
    if (h == NULL)
        return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
    f->hdrs = h;
    if (token_path != NULL) {
        size_t line_size = MD_DISCOVERY_TOKEN_MAX + 32;

        rc = read_token(token_path, &token, err);
        if (rc != MD_OK)
            return rc;
        line = md_malloc(line_size);
        if (line == NULL) {
            wipe_free(token, MD_DISCOVERY_TOKEN_MAX + 1);
            return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
        }
        {
            static const char pfx[] = "Authorization: Bearer ";
            size_t tl = strlen(token);   /* <= MD_DISCOVERY_TOKEN_MAX */

            memcpy(line, pfx, sizeof(pfx) - 1);
            memcpy(line + sizeof(pfx) - 1, token, tl + 1);
        }
        h = curl_slist_append(f->hdrs, line);
        wipe_free(line, line_size);
        wipe_free(token, MD_DISCOVERY_TOKEN_MAX + 1);
        if (h == NULL)
            return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
        f->hdrs = h;
    }
    (void)curl_easy_setopt(f->h, CURLOPT_HTTPHEADER, f->hdrs);
    (void)curl_easy_setopt(f->h, CURLOPT_WRITEFUNCTION, on_body);
    (void)curl_easy_setopt(f->h, CURLOPT_WRITEDATA, &f->body);
    (void)curl_easy_setopt(f->h, CURLOPT_ERRORBUFFER, f->errbuf);
    (void)curl_easy_setopt(f->h, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(f->h, CURLOPT_TIMEOUT_MS, (long)cfg->kubernetes.request_timeout_ms);
    (void)curl_easy_setopt(f->h, CURLOPT_CONNECTTIMEOUT_MS,
        (long)cfg->kubernetes.request_timeout_ms);
    (void)curl_easy_setopt(f->h, CURLOPT_PROTOCOLS_STR, "http,https");
    (void)curl_easy_setopt(f->h, CURLOPT_FOLLOWLOCATION, 0L);
    (void)curl_easy_setopt(f->h, CURLOPT_ACCEPT_ENCODING, "");
    (void)curl_easy_setopt(f->h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MD_DISCOVERY_BODY_MAX);
    (void)curl_easy_setopt(f->h, CURLOPT_USERAGENT, "meterd/" MD_VERSION);
    /* the API server is reached directly, never through a proxy from the
     * environment (a proxy would see the bearer token of a plain http URL) */
    (void)curl_easy_setopt(f->h, CURLOPT_PROXY, "");
    if (ca_path != NULL)
        (void)curl_easy_setopt(f->h, CURLOPT_CAINFO, ca_path);
    if (cfg->kubernetes.insecure_skip_verify) {
        (void)curl_easy_setopt(f->h, CURLOPT_SSL_VERIFYPEER, 0L);
        (void)curl_easy_setopt(f->h, CURLOPT_SSL_VERIFYHOST, 0L);
        if (atomic_exchange(&warned_insecure, 1) == 0)
            md_log_warn("kubernetes.insecure_skip_verify is on: the API server \"%s\" is "
                "not authenticated", f->base);
    }
    return MD_OK;
}

static void
teardown(struct fetch *f)
{
    if (f->h != NULL)
        curl_easy_cleanup(f->h);
    free_headers(f->hdrs);
    md_buf_fini(&f->body);
    f->h = NULL;
    f->hdrs = NULL;
}

/* ---- requests ---- */

/* path + "?limit=...&labelSelector=...&continue=..." into url. */
static int
build_url(struct fetch *f, const char *ns, const char *cont, struct md_buf *url,
    struct md_err *err)
{
    const char *sel = f->cfg->kubernetes.label_selector;
    int rc;

    md_buf_reset(url);
    rc = md_buf_puts(url, f->base);
    if (rc == MD_OK && ns != NULL)
        rc = md_buf_printf(url, "/api/v1/namespaces/%s/pods", ns);   /* a DNS label */
    else if (rc == MD_OK)
        rc = md_buf_puts(url, "/api/v1/pods");
    if (rc == MD_OK)
        rc = md_buf_printf(url, "?limit=%u", MD_DISCOVERY_PAGE_LIMIT);
    if (rc == MD_OK && sel[0] != '\0') {
        char *e = curl_easy_escape(f->h, sel, 0);

        if (e == NULL)
            return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
        rc = md_buf_printf(url, "&labelSelector=%s", e);
        curl_free(e);
    }
    if (rc == MD_OK && cont != NULL) {
        char *e = curl_easy_escape(f->h, cont, 0);

        if (e == NULL)
            return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
        rc = md_buf_printf(url, "&continue=%s", e);
        curl_free(e);
    }
    if (rc != MD_OK)
        return md_err_set(err, rc, "kubernetes: request URL over %zu bytes", url->cap);
    return MD_OK;
}

/* One GET; *status gets the HTTP status.  The body is in f->body. */
static int
get(struct fetch *f, const char *url, const char *what, long *status, struct md_err *err)
{
    CURLcode cc;

    md_buf_reset(&f->body);
    f->errbuf[0] = '\0';
    (void)curl_easy_setopt(f->h, CURLOPT_URL, url);
    cc = curl_easy_perform(f->h);
    if (cc == CURLE_WRITE_ERROR || cc == CURLE_FILESIZE_EXCEEDED)
        return md_err_set(err, MD_ELIMIT, "kubernetes: %s: response over %u bytes", what,
            MD_DISCOVERY_BODY_MAX);
    if (cc != CURLE_OK)
        return md_err_set(err, MD_EIO, "kubernetes: %s: %s", what,
            f->errbuf[0] ? f->errbuf : curl_easy_strerror(cc));
    (void)curl_easy_getinfo(f->h, CURLINFO_RESPONSE_CODE, status);
    return MD_OK;
}

static int
http_error(struct fetch *f, const char *what, long status, struct md_err *err)
{
    char msg[200];

    md_discovery_status_message(f->body.data ? f->body.data : "", f->body.len, msg, sizeof(msg));
    if (msg[0] == '\0') {
        /* not a Status (a proxy's page?): a short printable excerpt */
        size_t o = 0;

        for (size_t i = 0; i < f->body.len && o + 1 < 80; i++) {
            unsigned char ch = (unsigned char)f->body.data[i];

            msg[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : ' ';
        }
        msg[o] = '\0';
    }
    return md_err_set(err, MD_EIO, "kubernetes: %s: HTTP %ld%s%s", what, status,
        msg[0] ? ": " : "", msg);
}

/* Lists one namespace (ns NULL: all) into res, following continue tokens.
 * A 410 Gone on a continued request means the token expired (the API keeps
 * them a few minutes): the namespace is listed again from the start, once. */
static int
list_namespace(struct fetch *f, const char *ns, struct md_discovery_result *res,
    struct md_err *err)
{
    struct md_discovery_result part;
    struct md_err e = {0};
    struct md_buf url;
    char what[300];
    char *cont = NULL;
    int rc = MD_OK, restarts = 0;
    size_t pages = 0;

    md_discovery_result_init(&part);
    md_buf_init(&url, BASE_MAX + 3 * MD_DISCOVERY_CONTINUE_MAX + 3 * 1024 + 256);
    if (ns != NULL)
        (void)snprintf(what, sizeof(what), "list pods in namespace \"%s\" (%.200s)", ns, f->base);
    else
        (void)snprintf(what, sizeof(what), "list pods in all namespaces (%.200s)", f->base);
    for (;;) {
        long status = 0;
        char *next = NULL;

        rc = build_url(f, ns, cont, &url, err);
        if (rc == MD_OK)
            rc = get(f, url.data, what, &status, err);
        if (rc != MD_OK)
            break;
        if (status == 410 && cont != NULL && restarts == 0) {
            md_log_info("kubernetes: %s: continue token expired (410); listing again", what);
            restarts++;
            md_free(cont);
            cont = NULL;
            md_discovery_result_fini(&part);
            pages = 0;
            continue;
        }
        if (status != 200) {
            rc = http_error(f, what, status, err);
            break;
        }
        rc = md_discovery_decode_podlist(f->body.data ? f->body.data : "", f->body.len,
            &f->cfg->kubernetes.port_names, &part, &next, &e);
        if (rc != MD_OK) {
            (void)md_err_set(err, rc, "kubernetes: %.100s: %s", what, e.msg);
            break;
        }
        md_free(cont);
        cont = next;
        if (cont == NULL)
            break;
        if (++pages >= MD_DISCOVERY_PAGES_MAX) {
            rc = md_err_set(err, MD_ELIMIT, "kubernetes: %s: more than %u pages", what,
                MD_DISCOVERY_PAGES_MAX);
            break;
        }
    }
    if (rc == MD_OK)
        rc = md_discovery_result_merge(res, &part, err);
    md_free(cont);
    md_buf_fini(&url);
    md_discovery_result_fini(&part);
    return rc;
}

int
md_discovery_list(const struct md_config *cfg, struct md_discovery_result *out,
    struct md_err *err)
{
    struct md_discovery_result res;
    struct fetch *f;
    const char *token_path = NULL, *ca_path = NULL;
    int rc;

    md_discovery_result_init(&res);
    f = md_calloc(1, sizeof(*f));
    if (f == NULL)
        return md_err_set(err, MD_ENOMEM, "kubernetes: out of memory");
    f->cfg = cfg;
    md_buf_init(&f->body, MD_DISCOVERY_BODY_MAX);
    rc = resolve(f, &token_path, &ca_path, err);
    if (rc == MD_OK)
        rc = setup(f, token_path, ca_path, err);
    if (rc == MD_OK && cfg->kubernetes.namespaces.count == 0)
        rc = list_namespace(f, NULL, &res, err);
    for (size_t i = 0; rc == MD_OK && i < cfg->kubernetes.namespaces.count; i++)
        rc = list_namespace(f, cfg->kubernetes.namespaces.v[i], &res, err);
    teardown(f);
    md_free(f);
    if (rc != MD_OK) {
        md_discovery_result_fini(&res);
        return rc;
    }
    md_discovery_result_finish(&res);
    md_discovery_result_move(out, &res);
    return MD_OK;
}
