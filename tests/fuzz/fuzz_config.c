/* fuzz_config.c: libFuzzer target for tlsproxy.conf: the parser and every
 * check config.c makes, on whole files held in memory.
 *
 * It stops where generation_build would begin: that step resolves backend
 * host names through DNS and opens every file the config names (a fuzzed
 * "cert = /dev/stdin" would block), so it is no place for random input.
 * The checks here read at most the user and group databases.
 *
 * Properties:
 * - every error names the file and, when it has a line, one that exists;
 * - a config without errors is whole: at least one listener, whose
 *   context and backend exist and whose addresses parsed; every backend
 *   address and every alpn_backend route is well formed; each context has
 *   as many keys as certificates;
 * - the helpers the generation builder uses (effective TLS settings, key
 *   lines, lookups by name) work on whatever was parsed;
 * - everything is freed (LeakSanitizer). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define NAME "fuzz.conf"

/* check_error_line checks that |e| starts with the file name and that its
 * line, if it has one, is within the |lines| of the text. */
static void
check_error_line(const char *e, int lines)
{
	const char *p = e + strlen(NAME);
	long line;
	char *end;

	if (strncmp(e, NAME ":", strlen(NAME) + 1) != 0)
		abort();
	if (p[1] < '0' || p[1] > '9')
		return;
	line = strtol(p + 1, &end, 10);
	if (*end != ':' || line < 1 || line > lines)
		abort();
}

static void
check_tls(const struct config *cfg, const struct conf_listener *cl,
    const struct conf_context *cc)
{
	static const char *const keys[] = { "ciphers", "honor_cipher_order",
		"ecdh_curve", "min_version", "max_version",
		"max_send_fragment", "alpn", "alpn_strict" };
	struct conf_tls t;

	config_tls_effective(cfg, cl, cc, &t);
	/* [global] has a default for every string setting. */
	if (t.ciphers == NULL || t.ecdh_curve == NULL ||
	    t.min_version == NULL || t.max_version == NULL)
		abort();
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (config_tls_line(cfg, cl, cc, keys[i]) < 0)
			abort();
	}
}

/* check_whole checks what a config without errors promises to the
 * generation builder. */
static void
check_whole(const struct config *cfg)
{
	if (cfg->num_listeners == 0)
		abort();
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		const struct conf_listener *l = &cfg->listeners[i];

		if (l->context == NULL || l->backend == NULL ||
		    config_find_context(cfg, l->context) == NULL ||
		    config_find_backend(cfg, l->backend) == NULL ||
		    l->bind.num == 0 ||
		    config_proxy_protocol(l->proxy_protocol) < 0)
			abort();
		for (size_t j = 0; j < l->bind.num; j++) {
			if (l->addrs[j].len == 0)
				abort();
		}
		for (size_t j = 0; j < l->alpn_backend.num; j++) {
			const char *colon = strrchr(l->alpn_backend.v[j], ':');

			if (colon == NULL ||
			    config_find_backend(cfg, colon + 1) == NULL)
				abort();
		}
	}
	for (size_t i = 0; i < cfg->num_backends; i++) {
		const struct conf_backend *b = &cfg->backends[i];

		if (b->address.num == 0 || (b->proxy_protocol != NULL &&
		    config_proxy_protocol(b->proxy_protocol) < 0))
			abort();
	}
	for (size_t i = 0; i < cfg->num_contexts; i++) {
		const struct conf_context *c = &cfg->contexts[i];

		if (c->cert.num != c->key.num || c->cert.num > 2 ||
		    (c->cert.num == 0 && c->pfx == NULL))
			abort();
		if (c->backend != NULL &&
		    config_find_backend(cfg, c->backend) == NULL)
			abort();
	}
	if (cfg->global.admin != NULL && cfg->global.admin_addr.len == 0)
		abort();
}

static void
check_config(const struct config *cfg, int lines)
{
	for (size_t i = 0; i < cfg->num_errors; i++)
		check_error_line(cfg->errors[i], lines);
	for (size_t i = 0; i < cfg->num_contexts; i++) {
		const struct conf_context *cc = &cfg->contexts[i];

		if (cc->h.name == NULL ||
		    config_find_context(cfg, cc->h.name) != cc)
			abort();
		check_tls(cfg, NULL, cc);
		/* Every pair costs a walk of the key table per setting: a
		 * few pairs reach every branch, hundreds only slow the run. */
		for (size_t j = 0; j < cfg->num_listeners && i < 8 && j < 8;
		    j++)
			check_tls(cfg, &cfg->listeners[j], cc);
	}
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		const struct conf_listener *l = &cfg->listeners[i];

		config_listener_has_tls(l);
		if (config_key_line(&l->h, "bind") < l->h.line)
			abort();
	}
	for (size_t i = 0; i < cfg->num_backends; i++) {
		const struct conf_backend *b = &cfg->backends[i];

		if (config_find_backend(cfg, b->h.name) != b)
			abort();
	}
	config_ticket_keys_file(&cfg->global);
	if (cfg->num_errors == 0)
		check_whole(cfg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg;
	char *text;
	int lines = 0;

	/* config_load refuses a file with a NUL byte: what a NUL ends is all
	 * the parser could ever see. */
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	for (const char *p = text; *p != '\0'; p++) {
		if (*p == '\n' || p[1] == '\0')
			lines++;
	}
	cfg = config_load_string(NAME, text);
	if (cfg == NULL)
		abort();
	check_config(cfg, lines);
	config_free(cfg);
	free(text);
	return 0;
}
