/* attrib.h: attribution of parsed samples to meterd's dimensions.
 *
 * Pure (no I/O).  An md_attrib is compiled from one configuration and is
 * immutable afterwards, so the scrape thread may use it while main builds the
 * next one on reload.  For each sample of a scrape it decides: billed tokens
 * (token-usage _sum), billed requests (_count of the input type), or a drop
 * reason (counted in the batch; nothing is dropped silently). */
#ifndef MD_ATTRIB_H
#define MD_ATTRIB_H

#include "batch.h"
#include "config.h"
#include "expfmt.h"
#include "util.h"

#define MD_ATTRIB_KEY_MAX (64u << 10)   /* bytes of one series identity */

struct md_attrib;
/* Per-thread working memory of md_attrib_sample (series identity, sorted
 * labels): one per scraping thread, reused across samples. */
struct md_attrib_scratch;

struct md_attrib_scratch *md_attrib_scratch_new(void);
void                      md_attrib_scratch_free(struct md_attrib_scratch *sc);   /* NULL ok */

/* What the scrape knows of the target a sample came from. */
struct md_attrib_target {
    const char *namespace;        /* static target's or pod's namespace; "" if none */
};

struct md_attrib *md_attrib_new(const struct md_config *cfg, struct md_err *err);
void              md_attrib_free(struct md_attrib *a);      /* NULL ok */

/* Classifies one sample and adds it to b (or counts its drop reason).
 * Returns MD_OK, or MD_ELIMIT / MD_ENOMEM from the batch (the scrape fails). */
int md_attrib_sample(const struct md_attrib *a, const struct md_attrib_target *t,
    const struct md_sample *s, struct md_batch *b, struct md_attrib_scratch *sc,
    struct md_err *err);
/* The drop reason (enum md_drop) of every sample with this name, when the
 * name alone decides it (not a token-usage family, an inference-usage
 * duplicate, a _bucket, another role), or -1 when the sample's labels
 * decide.  md_attrib_sample gives the same answer for such a sample, so a
 * parser may skip these samples by name (md_expfmt_opts.skip_fn) and count
 * them under this reason instead. */
int md_attrib_name_drop(struct md_str name);
/* After the whole body parsed: moves OpenMetrics _created values onto the
 * entries of the same series and removes the _created entries. */
int md_attrib_finish(struct md_batch *b, struct md_err *err);

#endif
