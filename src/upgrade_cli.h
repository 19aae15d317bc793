/* upgrade_cli.h: the --upgrade command. */
#ifndef TLSPROXY_UPGRADE_CLI_H
#define TLSPROXY_UPGRADE_CLI_H

struct config;

/* upgrade_request asks the daemon serving |cfg|'s admin endpoint to
 * upgrade to the binary on disk, waits for the outcome and prints it.
 * Returns the exit status: 0 when a new process took over. */
int upgrade_request(const struct config *cfg);

#endif
