/* cmd_pricing.h: `meterd pricing ...` subcommands (main thread, CLI only). */
#ifndef MD_CMD_PRICING_H
#define MD_CMD_PRICING_H

/* argv[0] is the first word after "pricing".  Returns the exit status:
 * 0 ok, 1 invalid input, 2 usage error. */
int md_cmd_pricing(int argc, char **argv);

#endif
