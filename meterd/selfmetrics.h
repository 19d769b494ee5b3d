/* selfmetrics.h: renders meterd's own health metrics (build info, process
 * start, configuration reloads, store, HTTP) as text exposition 0.0.4.
 * Called from HTTP threads; reads only atomics and snapshots. */
#ifndef MD_SELFMETRICS_H
#define MD_SELFMETRICS_H

#include "app.h"
#include "buf.h"

int md_selfmetrics_render(struct md_app *app, struct md_buf *out);

#endif
