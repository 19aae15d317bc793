/* resolver.c: evdns bases configured from [global] resolver. */
#include "resolver.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "addr.h"
#include "config.h"

/* Each server is tried this many times per query. */
#define RESOLVER_ATTEMPTS 2

int
resolver_check(const char *s, char *err, size_t err_len)
{
	char host[INET6_ADDRSTRLEN + 2];
	struct in6_addr a6;
	struct in_addr a4;
	unsigned port;

	if (inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1)
		return 0;
	if (addr_split(s, host, sizeof(host), &port) == 0 && port > 0 &&
	    (inet_pton(AF_INET, host, &a4) == 1 ||
	    (s[0] == '[' && inet_pton(AF_INET6, host, &a6) == 1)))
		return 0;
	snprintf(err, err_len, "expected a name server's IP address, "
	    "IP:PORT or [IPv6]:PORT, got '%s'", s);
	return -1;
}

uint64_t
resolver_wait_ms(uint64_t timeout_ms)
{
	return timeout_ms * RESOLVER_ATTEMPTS;
}

struct evdns_base *
resolver_new(struct event_base *base, const struct strlist *servers,
    uint64_t timeout_ms)
{
	struct evdns_base *dns;
	char v[32];

	/* An inactive base must not keep a loop alive nor hold a socket. */
	if (servers == NULL || servers->num == 0) {
		dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
		    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	} else {
		dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		for (size_t i = 0; dns != NULL && i < servers->num; i++) {
			if (evdns_base_nameserver_ip_add(dns, servers->v[i]) != 0) {
				evdns_base_free(dns, 0);
				dns = NULL;
			}
		}
		/* Names in /etc/hosts (localhost among them) answer without
		 * asking a server, as with the system resolver. */
		if (dns != NULL)
			evdns_base_load_hosts(dns, NULL);
	}
	if (dns == NULL)
		return NULL;
	snprintf(v, sizeof(v), "%llu.%03llu",
	    (unsigned long long)(timeout_ms / 1000),
	    (unsigned long long)(timeout_ms % 1000));
	evdns_base_set_option(dns, "timeout:", v);
	snprintf(v, sizeof(v), "%d", RESOLVER_ATTEMPTS);
	evdns_base_set_option(dns, "attempts:", v);
	return dns;
}
