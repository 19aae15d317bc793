/* upgrade.h: the binary upgrade. The running process (the old one)
 * starts the binary at its own path with its own arguments and one private
 * socketpair; the new process says hello, receives the listening sockets
 * and the state clients would otherwise miss (session-ticket keys, the TLS
 * 1.2 session cache, OCSP staples, address bans), loads as usual and says
 * when it is ready. Only then does the old one hand systemd over to it and
 * drain. Whatever goes wrong before that, the old one keeps serving.
 *
 * The channel is a SOCK_SEQPACKET pair: each message arrives whole, starts
 * with a type and carries at most UPGRADE_MSG_MAX bytes; listening sockets
 * travel as SCM_RIGHTS. The whole handover is bounded in size
 * (UPGRADE_TOTAL_MAX) and, on both sides, by upgrade_timeout. */
#ifndef TLSPROXY_UPGRADE_H
#define TLSPROXY_UPGRADE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define UPGRADE_MSG_MAX 65536
#define UPGRADE_TOTAL_MAX (256UL << 20)

struct event_base;
struct listener_set;
struct peer_table;
struct upgrade;

/* upgrade_init remembers how this process was started: the path of its
 * binary (resolved now, before a package replaces the file) and its
 * arguments. Called first thing in main. */
void upgrade_init(int argc, char **argv);

/* ---- old side ---- */

/* What the old process hands over; read when the new one says hello. */
struct upgrade_source {
	const struct listener_set *socks;
	int admin_fd; /* -1: none */
	struct peer_table *peers;
};

/* upgrade_done_fn reports the end of an upgrade: |err| NULL when process
 * |pid| is ready and has been told it serves now, else why it failed (the
 * new process is gone by then, or will be reaped by upgrade_reap). */
typedef void (*upgrade_done_fn)(void *arg, pid_t pid, const char *err);

/* upgrade_start starts the new process. Returns the upgrade in progress,
 * or NULL with the reason in |err|. |done| is called once, from the event
 * loop of |base|, never from within upgrade_start. */
struct upgrade *upgrade_start(struct event_base *base,
    const struct upgrade_source *src, uint64_t timeout_ms,
    upgrade_done_fn done, void *arg, char *err, size_t err_len);

/* upgrade_pid returns the new process's pid. */
pid_t upgrade_pid(const struct upgrade *u);

/* upgrade_free ends |u|; a new process that is not ready yet is killed.
 * NULL is fine. */
void upgrade_free(struct upgrade *u);

/* upgrade_reap collects exited children (on SIGCHLD) and logs how each
 * ended; |u| (may be NULL) learns about its own. */
void upgrade_reap(struct upgrade *u);

/* ---- new side ---- */

/* upgrade_child_fd returns the handover channel this process was started
 * with, or -1 when it was started normally; it also prepares the
 * environment that systemd's watchdog reads. Called once, from main. */
int upgrade_child_fd(void);

/* upgrade_receive says hello on |fd| and reads the handover: listening
 * sockets go into |socks| (with the worker index the old process gave
 * them, folded into |num_workers|), the admin endpoint's socket to
 * admin_inherit, bans into |peers|, keys, sessions and staples into their
 * modules. Blocks for at most |timeout_ms|. Returns 0, or -1 with the
 * reason in |err| (and whatever was received closed). */
int upgrade_receive(int fd, uint64_t timeout_ms, struct listener_set *socks,
    int num_workers, struct peer_table *peers, char *err, size_t err_len);

/* upgrade_ready tells the old process this one is ready. Returns 0 or
 * -1 (the old process is gone). */
int upgrade_ready(int fd);

/* upgrade_fail tells the old process why this one gives up. */
void upgrade_fail(int fd, const char *why);

/* upgrade_wait_main reads the old process's answer to upgrade_ready:
 * 1 when it has handed over (systemd sees this process as the main one),
 * 0 when nothing has arrived yet, -1 when the channel closed without it. */
int upgrade_wait_main(int fd);

#endif
