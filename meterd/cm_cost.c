/* cm_cost.c: the `cost` of a Cost Management item (api_costmgmt.c), taken
 * from the same bill the bills API serves: the stored lines of closed and
 * finalized days and the corrections booked in the range (summed in SQL,
 * md_store_cm_cost), plus the open days rated now with the current pricing
 * (md_rating_bills, open days only: provisional).  So an item's cost
 * always covers the same days as its usage: month-to-date cost includes
 * today, as GET /api/v1/bills shows it.
 *
 * Thread: called on HTTP threads; md_rating_bills reads through the calling
 * thread's read-only connection, nothing here is shared.
 * Invariants: a cost is the exact sum of priced line amounts (integer
 * nanos); unpriced lines add nothing; lines in several currencies give no
 * single cost (MD_ELIMIT, the item shows null); no priced line at all is
 * MD_ENOTFOUND (null too). */

#include <string.h>

#include "api.h"
#include "app.h"
#include "cm_cost.h"
#include "rating.h"
#include "store.h"
#include "util.h"

int
md_app_cm_cost(void *arg, const struct md_cm_cost_key *k, int64_t *cost_nanos, char currency[8])
{
    struct md_app *app = arg;
    struct md_bill_query q;
    struct md_bill bill;
    struct md_err err = {0};
    int64_t sum = 0;
    char cur[8] = "";
    int rc, have = 0;

    if (k->from_s < 0 || k->to_s <= k->from_s)
        return MD_ENOTFOUND;
    /* the stored lines, summed in SQL (a cluster's month can be millions of
     * lines: never loaded) */
    rc = md_store_cm_cost(app->store, k, &sum, cur);
    if (rc == MD_OK)
        have = 1;
    else if (rc != MD_ENOTFOUND)
        return rc;
    cur[sizeof(cur) - 1] = '\0';
    /* the open days, rated now */
    memset(&q, 0, sizeof(q));
    q.from_day = (int32_t)(k->from_s / 86400);
    q.to_day = (int32_t)((k->to_s + 86399) / 86400);
    q.filter[MD_BILL_CLUSTER] = k->cluster;
    q.filter[MD_BILL_NAMESPACE] = k->namespace;
    q.filter[MD_BILL_TOKEN_TYPE] = k->token_type;
    q.lines_max = MD_RATING_LINES_MAX;
    q.tenant = k->tenant;
    q.open_only = 1;
    md_bill_init(&bill, q.lines_max);
    rc = md_rating_bills(app->rating, app->store, &q, &bill, &err);
    for (size_t i = 0; rc == MD_OK && i < bill.count; i++) {
        const struct md_bill_line *l = &bill.lines[i];

        if (!l->priced)
            continue;
        if (have && strcmp(cur, l->currency) != 0)
            rc = MD_ELIMIT;                 /* several currencies: no single cost */
        else if (strlen(l->currency) >= sizeof(cur))
            rc = MD_ELIMIT;
        else if (md_add_i64(sum, l->amount_nanos, &sum) != MD_OK)
            rc = MD_ELIMIT;
        else if (!have) {
            memcpy(cur, l->currency, strlen(l->currency) + 1);
            have = 1;
        }
    }
    md_bill_fini(&bill);
    if (rc != MD_OK)
        return rc;
    if (!have)
        return MD_ENOTFOUND;
    *cost_nanos = sum;
    memcpy(currency, cur, sizeof(cur));
    return MD_OK;
}
