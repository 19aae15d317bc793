/* admin.h: the admin endpoint (evhttp on the control thread): GET
 * /metrics in the Prometheus text format, GET /status as JSON. Off unless
 * [global] admin is set; only loopback or a unix socket unless
 * admin_allow_public says otherwise (checked with the config). */
#ifndef TLSPROXY_ADMIN_H
#define TLSPROXY_ADMIN_H

struct admin;
struct conf_global;
struct daemon;

/* admin_apply makes the endpoint follow |g|: started, moved to a new
 * address, or stopped. |*a| is NULL while off. A new address that cannot
 * be bound is logged and the endpoint stays where it was. Returns 0, or
 * -1 if the address could not be bound. */
int admin_apply(struct admin **a, struct daemon *d,
    const struct conf_global *g);

/* admin_inherit gives the endpoint a listening socket received from the
 * process this one replaces; the next admin_apply uses it if it listens
 * on the configured address, and closes it otherwise. */
void admin_inherit(int fd);

/* admin_fd returns the endpoint's listening socket, or -1 while off. */
int admin_fd(const struct admin *a);

/* admin_hand_over stops accepting on the endpoint's socket, which another
 * process serves from now on, without removing a unix socket's path.
 * Requests already accepted are still answered. */
void admin_hand_over(struct admin *a);

/* admin_free stops the endpoint. NULL is fine. */
void admin_free(struct admin *a);

#endif
