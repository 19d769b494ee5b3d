/* cmd_bills.h: `meterd bills`, `meterd backfill`, `meterd finalize`. */
#ifndef MD_CMD_BILLS_H
#define MD_CMD_BILLS_H

int md_cmd_bills(int argc, char **argv);
int md_cmd_backfill(int argc, char **argv);
int md_cmd_finalize(int argc, char **argv);

#endif
