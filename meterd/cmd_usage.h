/* cmd_usage.h: `meterd usage`, the usage API on the command line. */
#ifndef MD_CMD_USAGE_H
#define MD_CMD_USAGE_H

int md_cmd_usage(int argc, char **argv);

#endif
