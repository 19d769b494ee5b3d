/* discovery.h: Kubernetes pod discovery of ExtProc sidecar scrape targets.
 *
 * Two halves:
 * - the PodList decoder (discovery.c, pure, md_core): JSON text of one page
 *   of GET /api/v1/[namespaces/NS/]pods -> targets appended to a result,
 *   skipped pods counted by reason, and the page's continue token;
 * - the fetcher (discovery_fetch.c, edge, md_daemon, libcurl): lists the pods
 *   of the configured namespaces from the API server (in-cluster service
 *   account or kubernetes.api_server/token_file/ca_file), page by page, and
 *   decodes them.  Synchronous; the caller chooses thread and schedule.
 *
 * Which pods become targets (in this order of checks; the first failing
 * check names the skip reason):
 *   1. the item is a Pod object with metadata.name/namespace/uid strings
 *      (else "invalid");
 *   2. status.phase is "Running" (else "not_running");
 *   3. metadata.deletionTimestamp is absent or null (else "deleting": the
 *      pod is terminating and its endpoint is about to vanish);
 *   4. status.podIP is a valid IPv4 or IPv6 literal (absent or empty:
 *      "no_ip"; unparsable: "invalid");
 *   5. a TCP container port whose name is in port_names, tried in the order
 *      of port_names (preference), in .spec.containers and then in the
 *      .spec.initContainers whose restartPolicy is "Always" (native sidecars,
 *      how EAIG injects its ExtProc on Kubernetes >= 1.33).  Plain init
 *      containers are ignored: they have terminated before a pod is Running,
 *      so nothing listens on their ports (else "no_port").
 * Targets are sorted by (namespace, pod); two pods yielding the same URL
 * (cannot happen in a healthy cluster) keep the first and count "duplicate".
 */
#ifndef MD_DISCOVERY_H
#define MD_DISCOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "cfgtab.h"
#include "util.h"

struct md_config;

#define MD_DISCOVERY_TARGETS_MAX     100000u   /* targets in one result */
#define MD_DISCOVERY_LABELS_MAX      64u       /* labels kept per pod (by name) */
#define MD_DISCOVERY_LABEL_NAME_MAX  317u      /* prefix 253 + '/' + name 63 */
#define MD_DISCOVERY_LABEL_VALUE_MAX 63u       /* Kubernetes label value limit */
#define MD_DISCOVERY_NAME_MAX        253u      /* pod, namespace, node, container names */
#define MD_DISCOVERY_UID_MAX         128u
#define MD_DISCOVERY_CONTINUE_MAX    8192u     /* bytes of a continue token */
#define MD_DISCOVERY_BODY_MAX        (64u << 20)  /* bytes of one API response */
#define MD_DISCOVERY_PAGE_LIMIT      500u      /* ?limit= of each list request */
#define MD_DISCOVERY_PAGES_MAX       1000u     /* pages of one namespace list */
#define MD_DISCOVERY_TOKEN_MAX       (64u << 10)  /* bytes of a bearer token file */

/* One scrape target found on a pod.  Every string is owned by the result,
 * NUL-terminated and never NULL ("" when the pod did not say). */
struct md_discovered {
    char             *url;        /* http://IP:PORT/metrics, IPv6 in brackets */
    char             *namespace;
    char             *pod;        /* metadata.name */
    char             *uid;        /* metadata.uid */
    char             *node;       /* spec.nodeName */
    char             *container;  /* the container declaring the port */
    char             *port_name;  /* the matched entry of port_names */
    uint16_t          port;
    struct md_strmap  labels;     /* metadata.labels, sorted by name, bounded */
};

/* Pods seen and why the others were skipped; summed over every page. */
struct md_discovery_stats {
    size_t pods;            /* items in the PodLists */
    size_t targets;         /* pods that became targets */
    size_t not_running;
    size_t deleting;
    size_t no_ip;
    size_t no_port;
    size_t invalid;         /* wrongly shaped pod object or bad field */
    size_t duplicate;       /* URL already produced by another pod */
    size_t labels_dropped;  /* labels beyond the limits (pod kept) */
    size_t pages;           /* PodList pages decoded */
    char   first_invalid[160];  /* why the first "invalid" pod was skipped */
};

struct md_discovery_result {
    struct md_discovered      *v;
    size_t                     count;
    size_t                     alloc;
    struct md_discovery_stats  stats;
};

/* Zero-initialising a result is the same as md_discovery_result_init. */
void md_discovery_result_init(struct md_discovery_result *r);
/* Frees every target; r is empty (and reusable) afterwards.  NULL: no-op. */
void md_discovery_result_fini(struct md_discovery_result *r);
/* Moves src's content into dst (dst is finalised first); src ends empty. */
void md_discovery_result_move(struct md_discovery_result *dst, struct md_discovery_result *src);

/* Moves src's targets to the end of dst and adds src's stats to dst's;
 * src ends empty.  MD_ELIMIT past MD_DISCOVERY_TARGETS_MAX or MD_ENOMEM, with
 * both unchanged. */
int md_discovery_result_merge(struct md_discovery_result *dst, struct md_discovery_result *src,
    struct md_err *err);

/* Decodes one PodList page of json[0..len) (need not be NUL-terminated) and
 * appends its targets to res, adding to res->stats.  port_names are the
 * container port names wanted, most preferred first (at least one).
 * *continue_token receives metadata.continue (caller md_free()s it), or NULL
 * on the last page.  Returns MD_OK; MD_EPARSE for malformed JSON or a body
 * that is not a PodList (err names the JSON position or the field); MD_ELIMIT
 * past MD_DISCOVERY_TARGETS_MAX or MD_DISCOVERY_CONTINUE_MAX; MD_ENOMEM.  On
 * failure res and *continue_token are unchanged.  Pure; thread-safe. */
int md_discovery_decode_podlist(const char *json, size_t len, const struct md_strlist *port_names,
    struct md_discovery_result *res, char **continue_token, struct md_err *err);

/* Sorts res by (namespace, pod) and drops URL duplicates (counted).  The
 * fetcher calls it once after the last page. */
void md_discovery_result_finish(struct md_discovery_result *res);

/* The message of a Kubernetes Status object (the body of an API error) into
 * buf as printable ASCII ("Forbidden: pods is forbidden: ..."); "" when the
 * body is no Status.  Pure. */
void md_discovery_status_message(const char *json, size_t len, char *buf, size_t buf_len);

/* Base URL of the API server from KUBERNETES_SERVICE_HOST/_PORT values:
 * "https://HOST:PORT", an IPv6 HOST in brackets.  MD_EPARSE when host is
 * empty or port is not 1-65535.  Pure. */
int md_discovery_incluster_base(const char *host, const char *port, char *buf, size_t buf_len,
    struct md_err *err);

/* The fetcher.  Lists the pods of every configured namespace (or of all
 * namespaces) matching kubernetes.label_selector, follows continue tokens
 * (restarting a namespace once when the API answers 410 Gone for an expired
 * token), re-reads the token file on every call (projected tokens rotate),
 * and fills *out (finalised first) with the sorted, de-duplicated targets.
 * Works whether or not kubernetes.enabled is set (the caller decides).
 * Returns MD_OK, MD_ECONFIG (not in a cluster and no api_server, unreadable
 * token file), MD_EIO (transport, TLS, HTTP status: err carries the API's
 * Status message), MD_EPARSE, MD_ELIMIT (response over MD_DISCOVERY_BODY_MAX,
 * too many pages or targets) or MD_ENOMEM.  On failure *out is unchanged, so
 * the caller keeps scraping the targets it had.  Blocks for up to
 * kubernetes.request_timeout per page.  Call curl_global_init() before the
 * first call (main does, before threads start).  Never logs the token. */
int md_discovery_list(const struct md_config *cfg, struct md_discovery_result *out,
    struct md_err *err);

#endif
