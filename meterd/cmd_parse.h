/* cmd_parse.h: `meterd parse`, the exposition parser as a command. */
#ifndef MD_CMD_PARSE_H
#define MD_CMD_PARSE_H

/* argv holds the arguments after "parse"; returns the exit status
 * (0 valid, 1 invalid input or I/O error, 2 usage). */
int md_cmd_parse(int argc, char **argv);

#endif
