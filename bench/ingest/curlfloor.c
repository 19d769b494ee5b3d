/* curlfloor.c: the CPU of libcurl multi transfers alone, the floor under
 * meterd's ingest cost (bench/RESULTS.md, issue 4): one multi handle in one
 * thread, keep-alive, each handle's options set once, bodies copied into a
 * per-target buffer and nothing inflated or parsed, against n simulator
 * targets on a jittered schedule, as meterd's scrape loop does.
 *
 *   cc -O2 -o curlfloor bench/ingest/curlfloor.c $(pkg-config --cflags --libs libcurl)
 *   extproc-sim --targets 200 --base-port 41001 --control-port 41000 --quiet &
 *   ./curlfloor 41001 200 8 20 1 2000
 *
 * Arguments: base port, targets, warm-up s, window s, gzip (1) or identity
 * (0), interval ms (2000), and which of libcurl's caches each handle has of
 * its own through a share handle: 0 none, 1 connections, 2 DNS, 3 both.
 * Prints the transfers in the window, the process's user and system CPU per
 * transfer (getrusage) and the new connections made.  A benchmark
 * tool: no error handling beyond what the measurement needs. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

struct tgt { CURL *e; char url[64]; char *buf; size_t len, cap; unsigned long long due; int busy; };
static unsigned long long now_ns(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1000000000ULL + ts.tv_nsec; }
static size_t wcb(char *p, size_t sz, size_t n, void *a) { struct tgt *t = a; size_t k = sz * n;
  if (t->len + k > t->cap) { t->cap = (t->len + k) * 2; t->buf = realloc(t->buf, t->cap); }
  memcpy(t->buf + t->len, p, k); t->len += k; return k; }
static double cpu_u(void) { struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6; }
static double cpu_s(void) { struct rusage r; getrusage(RUSAGE_SELF, &r);
  return r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6; }
/* a whole number 0..max, or exit: a benchmark argument */
static unsigned long num(const char *s, unsigned long max) {
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || *s == '-' || v > max) {
    fprintf(stderr, "curlfloor: \"%s\" is not a whole number 0..%lu\n", s, max);
    exit(2);
  }
  return v;
}
int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: curlfloor BASE_PORT TARGETS WARMUP_S WINDOW_S [GZIP 0|1] [INTERVAL_MS] [OWN_CACHES 0-3]\n");
    return 2;
  }
  int base = (int)num(argv[1], 65535), n = (int)num(argv[2], 4096);
  int warm = (int)num(argv[3], 3600), win = (int)num(argv[4], 3600);
  int gz = argc > 5 ? (int)num(argv[5], 1) : 1;
  unsigned long long iv = (argc > 6 ? num(argv[6], 3600000) : 2000) * 1000000ULL;
  int share = argc > 7 ? (int)num(argv[7], 3) : 0;
  if (n == 0 || win == 0 || iv == 0) {
    fprintf(stderr, "curlfloor: TARGETS, WINDOW_S and INTERVAL_MS must be above 0\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_ALL);
  CURLM *m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)n + 1);
  struct tgt *T = calloc(n, sizeof(*T));
  struct curl_slist *h = curl_slist_append(NULL, "Accept: text/plain;version=0.0.4");
  h = curl_slist_append(h, gz ? "Accept-Encoding: gzip" : "Accept-Encoding: identity");
  unsigned long long t0 = now_ns();
  for (int i = 0; i < n; i++) {
    T[i].e = curl_easy_init(); snprintf(T[i].url, 64, "http://127.0.0.1:%d/metrics", base + i);
    curl_easy_setopt(T[i].e, CURLOPT_URL, T[i].url); curl_easy_setopt(T[i].e, CURLOPT_PRIVATE, &T[i]);
    curl_easy_setopt(T[i].e, CURLOPT_WRITEFUNCTION, wcb); curl_easy_setopt(T[i].e, CURLOPT_WRITEDATA, &T[i]);
    curl_easy_setopt(T[i].e, CURLOPT_HTTPHEADER, h); curl_easy_setopt(T[i].e, CURLOPT_USERAGENT, "floor/1");
    curl_easy_setopt(T[i].e, CURLOPT_NOSIGNAL, 1L); curl_easy_setopt(T[i].e, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(T[i].e, CURLOPT_PROXY, "");
    if (share) {
      CURLSH *sh = curl_share_init();
      if (share & 1) curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
      if (share & 2) curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
      curl_easy_setopt(T[i].e, CURLOPT_SHARE, sh);
    }
    T[i].due = t0 + (unsigned long long)i * iv / n;
  }
  unsigned long long start_w = t0 + warm * 1000000000ULL, end_w = start_w + win * 1000000000ULL;
  double u0 = 0, s0 = 0; long conns = 0, done = 0, done0 = 0; size_t bytes = 0; int inwin = 0;
  for (;;) {
    unsigned long long now = now_ns(), next = now + 1000000000ULL;
    if (!inwin && now >= start_w) { inwin = 1; u0 = cpu_u(); s0 = cpu_s(); done0 = done; bytes = 0; }
    if (now >= end_w) break;
    for (int i = 0; i < n; i++) {
      if (!T[i].busy && T[i].due <= now) { T[i].due += iv; T[i].len = 0; T[i].busy = 1; curl_multi_add_handle(m, T[i].e); }
      if (!T[i].busy && T[i].due < next) next = T[i].due;
    }
    int run; curl_multi_perform(m, &run);
    CURLMsg *msg; int left;
    while ((msg = curl_multi_info_read(m, &left))) {
      if (msg->msg != CURLMSG_DONE) continue;
      struct tgt *t; curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
      long nc = 0; curl_easy_getinfo(t->e, CURLINFO_NUM_CONNECTS, &nc); if (inwin) conns += nc;
      curl_multi_remove_handle(m, t->e); t->busy = 0; done++; bytes += t->len;
      if (t->due < next) next = t->due;
    }
    now = now_ns();
    if (next > now) curl_multi_poll(m, NULL, 0, (int)((next - now) / 1000000 + 1), NULL);
  }
  double u = cpu_u() - u0, sy = cpu_s() - s0; long d = done - done0;
  printf("transfers %ld cpu %.3f s (user %.3f, sys %.3f) -> %.1f us per transfer (user %.1f, sys %.1f), %.0f bytes per body, %ld new connections\n",
         d, u + sy, u, sy, (u + sy) / d * 1e6, u / d * 1e6, sy / d * 1e6, (double)bytes / d, conns);
  return 0;
}
