/* bench_parse.c: parser throughput on one exposition file, measured in the
 * same run as a plain memchr newline scan of the same buffer.
 *
 *   bench_parse FILE [RUNS]
 *
 * Prints the median over RUNS (default 5) of: bytes/s and samples/s of
 * md_expfmt_parser_run (a reused parser, every byte validated, a callback
 * that reads each sample), the same for a fresh md_expfmt_parse per run, and
 * the memchr scan; plus the allocations per sample (malloc/calloc/realloc
 * calls counted by interposing glibc's allocator in this binary). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "expfmt.h"
#include "util.h"

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t c, size_t n);
extern void *__libc_realloc(void *p, size_t n);

static unsigned long long n_alloc;

void *malloc(size_t n);
void *calloc(size_t c, size_t n);
void *realloc(void *p, size_t n);

void *
malloc(size_t n)
{
    n_alloc++;
    return __libc_malloc(n);
}

void *
calloc(size_t c, size_t n)
{
    n_alloc++;
    return __libc_calloc(c, n);
}

void *
realloc(void *p, size_t n)
{
    n_alloc++;
    return __libc_realloc(p, n);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct acc {
    uint64_t n;
    double   sum;
    size_t   lbytes;
};

static int
on_sample(void *arg, const struct md_sample *s)
{
    struct acc *a = arg;

    a->n++;
    a->sum += s->value;
    a->lbytes += s->nlabels + s->name.len;
    return 0;
}

int
main(int argc, char **argv)
{
    FILE *fp;
    char *buf;
    long sz;
    uint64_t runs_u = 5;
    int runs;
    double t_scan[64], t_reuse[64], t_fresh[64];
    unsigned long long allocs_fresh = 0, allocs_reuse = 0;
    uint64_t samples = 0, lines = 0;
    struct md_expfmt_parser *ps;

    if (argc > 2 && md_parse_u64(argv[2], strlen(argv[2]), 64, &runs_u) != MD_OK)
        runs_u = 0;
    runs = (int)runs_u;
    if (argc < 2 || runs < 1 || runs > 64) {
        fprintf(stderr, "usage: bench_parse FILE [RUNS<=64]\n");
        return 2;
    }
    fp = fopen(argv[1], "rb");
    if (fp == NULL || fseek(fp, 0, SEEK_END) != 0 || (sz = ftell(fp)) < 0) {
        perror(argv[1]);
        return 1;
    }
    rewind(fp);
    buf = malloc((size_t)sz + 1);
    if (buf == NULL || fread(buf, 1, (size_t)sz, fp) != (size_t)sz) {
        perror("read");
        return 1;
    }
    fclose(fp);
    ps = md_expfmt_parser_new();
    for (int r = 0; r < runs; r++) {
        struct md_expfmt_error err;
        struct acc a = { 0, 0, 0 };
        const char *p = buf, *e = buf + sz;
        uint64_t nl = 0;
        unsigned long long a0;
        double t0;
        int rc;

        t0 = now_s();
        while ((p = memchr(p, '\n', (size_t)(e - p))) != NULL) {
            nl++;
            p++;
        }
        t_scan[r] = now_s() - t0;
        lines = nl;

        a0 = n_alloc;
        t0 = now_s();
        rc = md_expfmt_parse(buf, (size_t)sz, MD_EXPFMT_AUTO, NULL, on_sample, &a, &err);
        t_fresh[r] = now_s() - t0;
        allocs_fresh = n_alloc - a0;
        if (rc != 0) {
            fprintf(stderr, "%s:%u:%u: %s\n", argv[1], err.line, err.col, err.msg);
            return 1;
        }
        samples = a.n;

        a.n = 0;
        a0 = n_alloc;
        t0 = now_s();
        rc = md_expfmt_parser_run(ps, buf, (size_t)sz, MD_EXPFMT_AUTO, NULL, NULL, on_sample,
            &a, &err);
        t_reuse[r] = now_s() - t0;
        allocs_reuse = n_alloc - a0;
        if (rc != 0 || a.n != samples) {
            fprintf(stderr, "reuse run failed: %s\n", err.msg);
            return 1;
        }
    }
    {
        double ms = median(t_scan, runs), mr = median(t_reuse, runs);
        double mf = median(t_fresh, runs);
        double mb = (double)sz / 1e6;

        printf("file: %s, %.1f MB, %llu lines, %llu samples, %d runs (medians)\n", argv[1], mb,
            (unsigned long long)lines, (unsigned long long)samples, runs);
        printf("| what | MB/s | samples/s | allocations/sample | vs memchr |\n");
        printf("|---|---:|---:|---:|---:|\n");
        printf("| memchr newline scan | %.0f | - | 0 | 1 |\n", mb / ms);
        printf("| md_expfmt_parser_run (reused parser) | %.0f | %.3g | %.2g (%llu total) | 1/%.1f |\n",
            mb / mr, (double)samples / mr, (double)allocs_reuse / (double)samples,
            allocs_reuse, mr / ms);
        printf("| md_expfmt_parse (fresh parser) | %.0f | %.3g | %.2g (%llu total) | 1/%.1f |\n",
            mb / mf, (double)samples / mf, (double)allocs_fresh / (double)samples,
            allocs_fresh, mf / ms);
    }
    md_expfmt_parser_free(ps);
    free(buf);
    return 0;
}
