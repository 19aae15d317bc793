/* main.c: command line and startup order. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "acme.h"
#include "config.h"
#include "daemon.h"
#include "ech.h"
#include "generation.h"
#include "log.h"
#include "tickets.h"
#include "tls_ctx.h"
#include "upgrade.h"
#include "upgrade_cli.h"

#define DEFAULT_CONFIG "/etc/tlsproxy/tlsproxy.conf"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: tlsproxy [-c FILE] [-t] [-V] [-h]\n"
	    "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
	    "  -t, --test         check the configuration, certificates and keys, then exit\n"
	    "      --upgrade      ask the running daemon (through its admin endpoint) to\n"
	    "                     replace itself with the binary on disk; wait for the outcome\n"
	    "  -V, --version      print the versions of tlsproxy and BoringSSL\n"
	    "  -h, --help         this text\n"
	    "      --list-keys    print every configuration key with its default\n"
	    "      --list-ciphers print the cipher suites BoringSSL supports\n"
	    "      --list-curves  print the key-exchange groups BoringSSL supports\n"
	    "      --new-ticket-key  print a fresh session-ticket key (base64 line)\n"
	    "      --new-ech-key PUBLIC_NAME\n"
	    "                     print a fresh Encrypted Client Hello key file\n"
	    "      --ech-config-list FILE...\n"
	    "                     print the ECHConfigList of ech files (base64, for DNS)\n");
}

/* load builds the generation the daemon or -t needs, printing every
 * error; NULL when there was any, with a summary in |why|. */
static struct generation *
load(const char *path, char *why, size_t why_len)
{
	struct config *cfg = config_load(path);
	struct generation *g;

	if (cfg == NULL) {
		fprintf(stderr, "tlsproxy: out of memory\n");
		snprintf(why, why_len, "out of memory");
		return NULL;
	}
	log_set_level((enum log_level)cfg->global.log_level);
	g = generation_build(cfg);
	if (g == NULL) {
		for (size_t i = 0; i < cfg->num_errors; i++)
			fprintf(stderr, "%s\n", cfg->errors[i]);
		fprintf(stderr, "tlsproxy: %zu error%s in %s\n", cfg->num_errors,
		    cfg->num_errors == 1 ? "" : "s", path);
		snprintf(why, why_len, "%zu error%s in the configuration, the "
		    "first: %s", cfg->num_errors, cfg->num_errors == 1 ? "" : "s",
		    cfg->num_errors > 0 ? cfg->errors[0] : "-");
		config_free(cfg);
	}
	return g;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ "list-keys", no_argument, NULL, 'K' },
		{ "list-ciphers", no_argument, NULL, 'C' },
		{ "list-curves", no_argument, NULL, 'G' },
		{ "new-ticket-key", no_argument, NULL, 'N' },
		{ "new-ech-key", required_argument, NULL, 'E' },
		{ "ech-config-list", no_argument, NULL, 'L' },
		{ "upgrade", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = DEFAULT_CONFIG;
	struct generation *g;
	char why[512];
	int test = 0, upgrade = 0, upgrade_fd, c;

	upgrade_init(argc, argv);
	upgrade_fd = upgrade_child_fd();

	while ((c = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'U':
			upgrade = 1;
			break;
		case 'V':
			printf("tlsproxy %s\nBoringSSL API version %d, %s\n"
			    "post-quantum key exchange: %s\n", TLSPROXY_VERSION,
			    BORINGSSL_API_VERSION, TLSPROXY_BORINGSSL_BUILD,
#ifdef SSL_GROUP_X25519_MLKEM768
			    "X25519MLKEM768"
#else
			    "none (this BoringSSL has no ML-KEM)"
#endif
			    );
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 'K':
			config_print_keys();
			return 0;
		case 'C':
			tls_ctx_list_ciphers();
			return 0;
		case 'G':
			tls_ctx_list_curves();
			return 0;
		case 'N': {
			char line[128];

			if (tickets_new_key_line(line, sizeof(line)) != 0)
				return 1;
			printf("%s\n", line);
			return 0;
		}
		case 'E':
			return ech_new_key(optarg, stdout) == 0 ? 0 : 1;
		case 'L':
			if (optind == argc) {
				fprintf(stderr, "tlsproxy: --ech-config-list needs "
				    "one or more ech files\n");
				return 2;
			}
			return ech_print_config_list(argv + optind, argc - optind,
			    stdout) == 0 ? 0 : 1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "tlsproxy: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr);
		return 2;
	}
	g = load(path, why, sizeof(why));
	if (g == NULL) {
		if (upgrade_fd >= 0)
			upgrade_fail(upgrade_fd, why);
		return 1;
	}
	if (upgrade) {
		int rc = upgrade_request(g->cfg);

		generation_unref(g);
		return rc;
	}
	if (test) {
		acme_check_disk(g);
		printf("tlsproxy: %s: configuration is valid (%zu listeners, "
		    "%zu contexts, %zu backends)\n", path, g->num_listeners,
		    g->shared.num_contexts, g->num_backends);
		generation_unref(g);
		return 0;
	}
	return daemon_run(path, g, upgrade_fd);
}
