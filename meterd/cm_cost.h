/* cm_cost.h: the priced cost of a Cost Management item (cm_cost.c). */
#ifndef MD_CM_COST_H
#define MD_CM_COST_H

#include <stdint.h>

struct md_cm_cost_key;

/* md_cm_cost_fn over the daemon's bill (arg: struct md_app *): the sum of
 * the priced lines md_rating_bills returns for the key's days, cluster,
 * namespace, token type and tenant, provisional days included.
 * MD_ENOTFOUND: no priced line; MD_ELIMIT: several currencies or overflow. */
int md_app_cm_cost(void *arg, const struct md_cm_cost_key *k, int64_t *cost_nanos,
    char currency[8]);

#endif
