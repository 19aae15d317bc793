/* resolver.h: asynchronous name resolution with libevent's evdns, for
 * every host name tlsproxy looks up while it runs (the session store, OCSP
 * responders, backends at load time). A slow or dead DNS server then
 * delays only the lookup that needs it, never an event loop. */
#ifndef TLSPROXY_RESOLVER_H
#define TLSPROXY_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct strlist;

/* resolver_check returns 0 if |s| names a DNS server as [global] resolver
 * takes it ("IP", "IP:PORT" or "[IPv6]:PORT"), else -1 with what was
 * expected in |err|. */
int resolver_check(const char *s, char *err, size_t err_len);

/* resolver_new returns an evdns base on |base| that asks |servers| (none:
 * the name servers of /etc/resolv.conf), waits |timeout_ms| for each
 * answer and tries twice, and knows /etc/hosts. NULL when out of memory
 * or when a server is not an address. Free it with
 * evdns_base_free(dns, 1), which fails the queries still waiting. */
struct evdns_base *resolver_new(struct event_base *base,
    const struct strlist *servers, uint64_t timeout_ms);

/* resolver_wait_ms returns the longest a query may take with
 * |timeout_ms| per attempt: what callers use as their own deadline. */
uint64_t resolver_wait_ms(uint64_t timeout_ms);

#endif
