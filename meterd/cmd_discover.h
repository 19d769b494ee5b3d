/* cmd_discover.h: `meterd discover -c FILE [--rounds N]`: list the
 * Kubernetes pods the configuration selects and print the scrape targets
 * discovery finds, one JSON object per line.  Main thread only. */
#ifndef MD_CMD_DISCOVER_H
#define MD_CMD_DISCOVER_H

/* argv[0] is the first argument after "discover".  Returns the exit status:
 * 0 every list succeeded, 1 a list or the configuration failed, 2 usage. */
int md_cmd_discover(int argc, char **argv);

#endif
