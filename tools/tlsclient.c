/* tlsclient.c: tlsproxy-tlsclient, a BoringSSL client for tlsproxy's
 * tests. It runs any number of connections concurrently from one thread:
 * non-blocking sockets in a level-triggered epoll set, each SSL driven
 * straight on its fd and parked on whatever WANT_READ/WANT_WRITE says.
 * Every connection sends a deterministic stream (or a file, or a request),
 * half-closes TLS and TCP, reads to the end and prints one result line
 * with sizes and SHA-256s, so a test compares hashes instead of data. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cli.h"
#include "prng.h"
#include "tlsopt.h"

/* Bytes handed to one SSL_write: one full TLS record. */
#define TLSCLIENT_CHUNK 16384
/* SSL_read/SSL_write calls per wakeup and direction before yielding to the
 * other connections; the connection is then re-run from the again list,
 * since data buffered inside the SSL would not wake epoll. */
#define TLSCLIENT_ROUNDS 32
/* --send-raw reads for this long after sending when the peer stays open. */
#define TLSCLIENT_RAW_WAIT_MS 5000

enum tlsclient_send {
	SEND_NONE,
	SEND_BYTES,
	SEND_FILE,
	SEND_REQUEST,
};

enum tlsclient_phase {
	PHASE_CONNECTING,
	PHASE_HANDSHAKE,
	PHASE_RUNNING,
	PHASE_RAW,
	PHASE_DONE,
};

struct tlsclient_opts {
	char host[256];
	char port[16];
	const char *servername;
	uint8_t alpn[512];
	size_t alpn_len;
	uint16_t version; /* 0: BoringSSL's default range */
	const char *cafile;
	bool status; /* send status_request, report the stapled response */
	struct sockaddr_storage source; /* --source, ss_family 0 if unset */
	socklen_t source_len;
	enum tlsclient_send send;
	uint64_t send_bytes;
	int file_fd;
	bool file_stream; /* a pipe or the like: read as it comes, no offsets */
	char *request; /* unescaped --request, or --send-raw data */
	size_t request_len;
	bool raw;
	bool half_close;
	bool no_read;
	double hold;
	double timeout;
	unsigned conns;
	bool expect_sha_set;
	uint8_t expect_sha[SHA256_DIGEST_LENGTH];
	bool expect_bytes_set;
	uint64_t expect_bytes;
	const char *groups_arg; /* --groups as given */
	uint16_t groups[8];
	size_t num_groups;
	uint16_t shares[8];
	size_t num_shares;
	bool shares_set;
	uint8_t *ech_config; /* --ech-config-list, decoded; NULL if unset */
	size_t ech_config_len;
	bool ech_grease;
	int wire_fd; /* --wire, -1 if unset */
};

struct tlsclient_conn {
	unsigned idx;
	int fd;
	SSL *ssl;
	enum tlsclient_phase phase;
	const struct addrinfo *ai; /* address being tried */
	uint32_t events;           /* epoll interest; 0 also means unregistered */
	bool registered;
	struct tlsclient_conn *again_next;
	bool in_again;
	/* sending */
	struct prng prng;
	uint64_t send_left; /* SEND_BYTES */
	uint64_t file_off;  /* SEND_FILE */
	bool request_queued;
	bool stream_wait; /* the send side waits for the --send-file pipe */
	uint8_t *sbuf;
	const uint8_t *sptr; /* pending chunk: retried as is after WANT_* */
	size_t slen;
	bool send_done, shutdown_sent, wr_closed;
	/* receiving */
	bool rd_done, close_notify;
	uint64_t raw_deadline_ms;
	/* result */
	uint64_t sent, received;
	SHA256_CTX sent_sha, recv_sha;
	bool ok;
	char error[192];
	const char *version, *cipher; /* static strings from BoringSSL */
	const char *group;
	int hrr;
	char alpn[64];
	size_t ocsp_len; /* stapled OCSP response, with --status */
	const char *ech; /* "accepted", "rejected" or "-" (not offered) */
	bool ech_retry;  /* failed with ECH_REJECTED: print retry_configs */
	char *retry_configs; /* their base64, NULL if the server sent none */
};

struct tlsclient {
	struct tlsclient_opts o;
	struct addrinfo *addrs;
	SSL_CTX *ctx;
	int epfd;
	struct tlsclient_conn *conns;
	struct tlsclient_conn *again;
	unsigned remaining;
	bool stream_watched; /* o.file_fd is in the epoll set */
	uint8_t rbuf[TLSCLIENT_CHUNK];
};

/* epoll_event.data.ptr of the --send-file pipe; connections use their own
 * address. */
static int tlsclient_stream_tag;

/* --wire: the file, and the BIO that connections then use instead of
 * BoringSSL's socket BIO so that everything crossing a socket is copied
 * there. */
static int tlsclient_wire_fd = -1;
static bool tlsclient_wire_failed;
static BIO_METHOD *tlsclient_wire_method;

static void
tlsclient_hex(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

static void
tlsclient_usage(FILE *f)
{
	fprintf(f,
	    "usage: tlsproxy-tlsclient [options] HOST:PORT\n"
	    "  HOST is an IPv4 literal, [IPv6] literal or a name (localhost)\n"
	    "  --servername NAME   send SNI NAME (default: none)\n"
	    "  --alpn LIST         offer ALPN protocols, comma separated\n"
	    "  --tls12 | --tls13   pin the protocol version\n"
	    "  --cafile FILE       verify the server chain against FILE (default: no verification)\n"
	    "  --status            ask for a stapled OCSP response; report its size as ocsp=N\n"
	    "  --source IP         connect from this local address (e.g. 127.0.0.2)\n"
	    "  --send-bytes N      send N bytes of the xorshift64 stream (seed 1)\n"
	    "  --send-file FILE    send FILE's contents\n"
	    "  --request STRING    send STRING (\\r \\n \\t \\\\ \\xHH escapes)\n"
	    "  --no-half-close     after sending, do not close_notify + shutdown(SHUT_WR)\n"
	    "  --no-read           never read after the handshake\n"
	    "  --expect-bytes N    fail (error=mismatch) unless N bytes are received\n"
	    "  --expect-sha256 HEX fail (error=mismatch) unless received data hash to HEX\n"
	    "  --conns N           run N connections concurrently (default 1)\n"
	    "  --hold SECONDS      once all are finished, keep connections open this long\n"
	    "  --timeout SECONDS   overall deadline (default 30)\n"
	    "  --send-raw STRING   plain TCP: send STRING, read until EOF or 5s\n"
	    "  --groups LIST       offer these key-exchange groups, colon separated\n"
	    "                      (X25519MLKEM768, X25519, P-256, P-384)\n"
	    "  --key-shares LIST   send key shares for exactly these groups (may be empty)\n"
	    "  --ech-config-list B64|@FILE\n"
	    "                      offer ECH with this ECHConfigList: base64 as in an HTTPS\n"
	    "                      record's ech=, or @FILE holding the raw list; every line\n"
	    "                      reports ech=accepted|rejected|-, and error=ECH_REJECTED\n"
	    "                      lines the server's retry_configs=B64 (- if none)\n"
	    "  --ech-grease        send a GREASE ECH extension when not offering ECH\n"
	    "  --wire FILE         append every byte sent and received on the sockets (TLS\n"
	    "                      records as on the wire) to FILE\n"
	    "prints one line per connection; exits 0 if all are ok=1, 1 if not, 2 on usage errors\n");
}

/* tlsclient_parse_alpn turns "h2,http/1.1" into ALPN wire format. */
static int
tlsclient_parse_alpn(const char *list, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = 0;
	const char *p = list;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t l = comma != NULL ? (size_t)(comma - p) : strlen(p);

		if (l == 0 || l > 255 || n + 1 + l > cap)
			return -1;
		out[n++] = (uint8_t)l;
		memcpy(out + n, p, l);
		n += l;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	*len = n;
	return 0;
}

/* tlsclient_set_groups applies --groups and --key-shares; BoringSSL
 * wants the groups first, the shares being a subsequence of them. */
static int
tlsclient_set_groups(const struct tlsclient_opts *o, SSL *ssl)
{
#ifdef SSL_GROUP_X25519_MLKEM768
	if (o->num_groups > 0 && SSL_set1_group_ids(ssl, o->groups, o->num_groups) != 1)
		return -1;
	if (o->shares_set && SSL_set1_client_key_shares(ssl, o->shares, o->num_shares) != 1)
		return -1;
#else
	if (o->num_groups > 0 && SSL_set1_curves_list(ssl, o->groups_arg) != 1)
		return -1;
	if (o->shares_set)
		return -1; /* this BoringSSL cannot choose key shares */
#endif
	return 0;
}

static int
tlsclient_parse_source(const char *s, struct tlsclient_opts *o)
{
	struct sockaddr_in *in = (struct sockaddr_in *)&o->source;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&o->source;

	memset(&o->source, 0, sizeof(o->source));
	if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		o->source_len = sizeof(*in);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		o->source_len = sizeof(*in6);
		return 0;
	}
	return -1;
}

static int
tlsclient_parse_args(struct tlsclient_opts *o, int argc, char **argv)
{
	enum {
		OPT_SERVERNAME = 256, OPT_ALPN, OPT_TLS12, OPT_TLS13, OPT_CAFILE,
		OPT_SEND_BYTES, OPT_SEND_FILE, OPT_NO_HALF_CLOSE, OPT_CONNS,
		OPT_EXPECT_SHA, OPT_EXPECT_BYTES, OPT_NO_READ, OPT_HOLD, OPT_SEND_RAW,
		OPT_TIMEOUT, OPT_REQUEST, OPT_STATUS, OPT_SOURCE, OPT_HELP, OPT_GROUPS,
		OPT_KEY_SHARES, OPT_ECH_CONFIG_LIST, OPT_ECH_GREASE, OPT_WIRE,
	};
	static const struct option opts[] = {
		{ "servername", required_argument, NULL, OPT_SERVERNAME },
		{ "alpn", required_argument, NULL, OPT_ALPN },
		{ "tls12", no_argument, NULL, OPT_TLS12 },
		{ "tls13", no_argument, NULL, OPT_TLS13 },
		{ "cafile", required_argument, NULL, OPT_CAFILE },
		{ "send-bytes", required_argument, NULL, OPT_SEND_BYTES },
		{ "send-file", required_argument, NULL, OPT_SEND_FILE },
		{ "no-half-close", no_argument, NULL, OPT_NO_HALF_CLOSE },
		{ "conns", required_argument, NULL, OPT_CONNS },
		{ "expect-sha256", required_argument, NULL, OPT_EXPECT_SHA },
		{ "expect-bytes", required_argument, NULL, OPT_EXPECT_BYTES },
		{ "no-read", no_argument, NULL, OPT_NO_READ },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "send-raw", required_argument, NULL, OPT_SEND_RAW },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "request", required_argument, NULL, OPT_REQUEST },
		{ "status", no_argument, NULL, OPT_STATUS },
		{ "source", required_argument, NULL, OPT_SOURCE },
		{ "help", no_argument, NULL, OPT_HELP },
		{ "groups", required_argument, NULL, OPT_GROUPS },
		{ "key-shares", required_argument, NULL, OPT_KEY_SHARES },
		{ "ech-config-list", required_argument, NULL, OPT_ECH_CONFIG_LIST },
		{ "ech-grease", no_argument, NULL, OPT_ECH_GREASE },
		{ "wire", required_argument, NULL, OPT_WIRE },
		{ NULL, 0, NULL, 0 },
	};
	unsigned send_opts = 0;
	uint64_t v;
	int ch;

	o->half_close = true;
	o->timeout = 30;
	o->conns = 1;
	o->file_fd = -1;
	o->wire_fd = -1;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case OPT_SERVERNAME:
			o->servername = optarg;
			break;
		case OPT_ALPN:
			if (tlsclient_parse_alpn(optarg, o->alpn, sizeof(o->alpn), &o->alpn_len) != 0) {
				fprintf(stderr, "tlsproxy-tlsclient: bad --alpn %s\n", optarg);
				return -1;
			}
			break;
		case OPT_STATUS:
			o->status = true;
			break;
		case OPT_GROUPS:
		case OPT_KEY_SHARES:
			if (tlsopt_parse_groups(optarg, ch == OPT_GROUPS ? o->groups : o->shares, 8,
			    ch == OPT_GROUPS ? &o->num_groups : &o->num_shares) != 0) {
				fprintf(stderr, "tlsproxy-tlsclient: bad group list %s\n", optarg);
				return -1;
			}
			if (ch == OPT_GROUPS)
				o->groups_arg = optarg;
			else
				o->shares_set = true;
			break;
		case OPT_ECH_CONFIG_LIST:
			if (tlsopt_load_ech("tlsproxy-tlsclient", optarg, &o->ech_config,
			    &o->ech_config_len) != 0)
				return -1;
			break;
		case OPT_ECH_GREASE:
			o->ech_grease = true;
			break;
		case OPT_WIRE:
			if (o->wire_fd >= 0)
				close(o->wire_fd);
			o->wire_fd = open(optarg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
			if (o->wire_fd < 0) {
				fprintf(stderr, "tlsproxy-tlsclient: --wire %s: %s\n", optarg,
				    strerror(errno));
				return -1;
			}
			break;
		case OPT_SOURCE:
			if (tlsclient_parse_source(optarg, o) != 0) {
				fprintf(stderr, "tlsproxy-tlsclient: --source wants an "
				    "IPv4 or IPv6 literal\n");
				return -1;
			}
			break;
		case OPT_TLS12:
			o->version = TLS1_2_VERSION;
			break;
		case OPT_TLS13:
			o->version = TLS1_3_VERSION;
			break;
		case OPT_CAFILE:
			o->cafile = optarg;
			break;
		case OPT_SEND_BYTES:
			if (cli_parse_u64(optarg, &o->send_bytes) != 0) {
				fprintf(stderr, "tlsproxy-tlsclient: bad --send-bytes %s\n", optarg);
				return -1;
			}
			o->send = SEND_BYTES;
			send_opts++;
			break;
		case OPT_SEND_FILE:
			o->file_fd = open(optarg, O_RDONLY | O_CLOEXEC);
			if (o->file_fd < 0) {
				fprintf(stderr, "tlsproxy-tlsclient: --send-file %s: %s\n", optarg,
				    strerror(errno));
				return -1;
			}
			o->send = SEND_FILE;
			send_opts++;
			break;
		case OPT_REQUEST:
		case OPT_SEND_RAW:
			free(o->request);
			o->request = cli_unescape("tlsproxy-tlsclient", optarg, &o->request_len);
			if (o->request == NULL)
				return -1;
			if (ch == OPT_REQUEST)
				o->send = SEND_REQUEST;
			else
				o->raw = true;
			send_opts++;
			break;
		case OPT_NO_HALF_CLOSE:
			o->half_close = false;
			break;
		case OPT_NO_READ:
			o->no_read = true;
			break;
		case OPT_CONNS:
			if (cli_parse_u64(optarg, &v) != 0 || v == 0 || v > 1000000) {
				fprintf(stderr, "tlsproxy-tlsclient: bad --conns %s\n", optarg);
				return -1;
			}
			o->conns = (unsigned)v;
			break;
		case OPT_EXPECT_SHA:
			if (strlen(optarg) != 2 * SHA256_DIGEST_LENGTH)
				goto bad_sha;
			for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
				int hi = cli_hexval(optarg[2 * i]);
				int lo = cli_hexval(optarg[2 * i + 1]);

				if (hi < 0 || lo < 0)
					goto bad_sha;
				o->expect_sha[i] = (uint8_t)(hi * 16 + lo);
			}
			o->expect_sha_set = true;
			break;
		case OPT_EXPECT_BYTES:
			if (cli_parse_u64(optarg, &o->expect_bytes) != 0) {
				fprintf(stderr, "tlsproxy-tlsclient: bad --expect-bytes %s\n", optarg);
				return -1;
			}
			o->expect_bytes_set = true;
			break;
		case OPT_HOLD:
		case OPT_TIMEOUT:
			if (cli_parse_seconds(optarg, ch == OPT_HOLD ? &o->hold : &o->timeout) != 0) {
				fprintf(stderr, "tlsproxy-tlsclient: bad number of seconds %s\n", optarg);
				return -1;
			}
			break;
		case OPT_HELP:
		case 'h':
			tlsclient_usage(stdout);
			exit(0);
		default:
			tlsclient_usage(stderr);
			return -1;
		}
	}
	if (send_opts > 1) {
		fprintf(stderr, "tlsproxy-tlsclient: use one of --send-bytes, --send-file, "
		    "--request, --send-raw\n");
		return -1;
	}
	if (optind != argc - 1 || cli_parse_target(argv[optind], o->host, sizeof(o->host),
	    o->port, sizeof(o->port)) != 0) {
		tlsclient_usage(stderr);
		return -1;
	}
	return 0;
bad_sha:
	fprintf(stderr, "tlsproxy-tlsclient: --expect-sha256 wants 64 hex digits\n");
	return -1;
}

/* tlsclient_set_reason stores |s| as the error, spaces made underscores so
 * the result line stays one token per field. */
static void
tlsclient_set_reason(struct tlsclient_conn *c, const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i + 1 < sizeof(c->error); i++)
		c->error[i] = s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ? '_' : s[i];
	c->error[i] = '\0';
}

/* tlsclient_note_ech records, for a failed handshake, whether the server
 * turned ECH down: BoringSSL then names the public name to verify the
 * certificate against. With SSL_R_ECH_REJECTED the connection also keeps
 * the retry configs the server sent, so a test can try again with them. */
static void
tlsclient_note_ech(struct tlsclient_conn *c, bool ech_rejected)
{
	const char *name;
	const uint8_t *rc;
	size_t name_len, rc_len, b64_len;

	SSL_get0_ech_name_override(c->ssl, &name, &name_len);
	if (name_len > 0 || ech_rejected)
		c->ech = "rejected";
	/* SSL_get0_ech_retry_configs is only defined after ECH_REJECTED. */
	if (!ech_rejected)
		return;
	c->ech_retry = true;
	SSL_get0_ech_retry_configs(c->ssl, &rc, &rc_len);
	if (rc_len == 0 || !EVP_EncodedLength(&b64_len, rc_len) ||
	    (c->retry_configs = malloc(b64_len)) == NULL)
		return;
	EVP_EncodeBlock((uint8_t *)c->retry_configs, rc, rc_len);
}

/* tlsclient_ssl_reason explains a failed SSL call. |ret| is its return
 * value and |saved_errno| errno right after it. */
static void
tlsclient_ssl_reason(struct tlsclient_conn *c, int ret, int saved_errno)
{
	int err = SSL_get_error(c->ssl, ret);
	uint32_t e = ERR_peek_error();
	char buf[192];

	if (c->phase == PHASE_HANDSHAKE)
		tlsclient_note_ech(c, err == SSL_ERROR_SSL && ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_ECH_REJECTED);
	if (err == SSL_ERROR_SSL) {
		const char *r = ERR_reason_error_string(e);
		long vr = SSL_get_verify_result(c->ssl);

		/* Say why the chain failed; without --cafile there is no
		 * verification and its result means nothing. */
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && vr != X509_V_OK)
			snprintf(buf, sizeof(buf), "%s:%s", r != NULL ? r : "SSL_ERROR",
			    X509_verify_cert_error_string(vr));
		else
			snprintf(buf, sizeof(buf), "%s", r != NULL ? r : "SSL_ERROR");
	} else if (err == SSL_ERROR_SYSCALL) {
		snprintf(buf, sizeof(buf), "%s",
		    ret == 0 || saved_errno == 0 ? "unexpected_eof" : strerror(saved_errno));
	} else if (err == SSL_ERROR_ZERO_RETURN) {
		snprintf(buf, sizeof(buf), "close_notify_during_handshake");
	} else {
		snprintf(buf, sizeof(buf), "ssl_error_%d", err);
	}
	ERR_clear_error();
	tlsclient_set_reason(c, buf);
}

static void
tlsclient_conn_release(struct tlsclient_conn *c)
{
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->registered = false;
	c->events = 0;
	free(c->sbuf);
	c->sbuf = NULL;
}

static void tlsclient_stream_watch(struct tlsclient *t, bool on);

/* tlsclient_conn_end records the result. A successful connection stays
 * open (out of the epoll set) when --hold asks for it. */
static void
tlsclient_conn_end(struct tlsclient *t, struct tlsclient_conn *c, bool ok, const char *reason)
{
	if (c->phase == PHASE_DONE)
		return;
	if (ok && !t->o.raw) {
		uint8_t md[SHA256_DIGEST_LENGTH];
		SHA256_CTX copy = c->recv_sha;

		SHA256_Final(md, &copy);
		if ((t->o.expect_bytes_set && c->received != t->o.expect_bytes) ||
		    (t->o.expect_sha_set && memcmp(md, t->o.expect_sha, sizeof(md)) != 0)) {
			ok = false;
			reason = "mismatch";
		}
	}
	c->ok = ok;
	c->stream_wait = false;
	tlsclient_stream_watch(t, false);
	if (!ok && reason != NULL)
		tlsclient_set_reason(c, reason);
	c->phase = PHASE_DONE;
	t->remaining--;
	if (!ok || t->o.hold <= 0) {
		tlsclient_conn_release(c);
	} else if (c->registered) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		c->registered = false;
	}
}

/* tlsclient_conn_fail ends |c| with the reason already in c->error. */
static void
tlsclient_conn_fail(struct tlsclient *t, struct tlsclient_conn *c)
{
	tlsclient_conn_end(t, c, false, NULL);
}

static void
tlsclient_conn_watch(struct tlsclient *t, struct tlsclient_conn *c, uint32_t ev)
{
	struct epoll_event e;

	if (c->registered && ev == c->events)
		return;
	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.ptr = c;
	if (epoll_ctl(t->epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) != 0) {
		tlsclient_set_reason(c, strerror(errno));
		tlsclient_conn_fail(t, c);
		return;
	}
	c->registered = true;
	c->events = ev;
}

static void
tlsclient_conn_again(struct tlsclient *t, struct tlsclient_conn *c)
{
	if (c->in_again)
		return;
	c->in_again = true;
	c->again_next = t->again;
	t->again = c;
}

/* tlsclient_stream_watch keeps the --send-file pipe in the epoll set only
 * while the connection waits for it: a readable pipe would otherwise wake
 * us over and over while the socket is the bottleneck. */
static void
tlsclient_stream_watch(struct tlsclient *t, bool on)
{
	struct epoll_event e;

	if (!t->o.file_stream || on == t->stream_watched)
		return;
	memset(&e, 0, sizeof(e));
	e.events = EPOLLIN;
	e.data.ptr = &tlsclient_stream_tag;
	if (epoll_ctl(t->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, t->o.file_fd, &e) == 0)
		t->stream_watched = on;
}

/* tlsclient_conn_connect starts a connect to c->ai, moving on to the next
 * address when one fails at once (localhost may be ::1 and 127.0.0.1). */
static void tlsclient_conn_connected(struct tlsclient *t, struct tlsclient_conn *c);

static void
tlsclient_conn_connect(struct tlsclient *t, struct tlsclient_conn *c)
{
	int err = ECONNREFUSED;

	for (; c->ai != NULL; c->ai = c->ai->ai_next) {
		c->fd = socket(c->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd < 0) {
			/* Out of descriptors: no other address will do better. */
			tlsclient_set_reason(c, strerror(errno));
			tlsclient_conn_fail(t, c);
			return;
		}
		if (t->o.source_len != 0 &&
		    (t->o.source.ss_family != c->ai->ai_family ||
		    bind(c->fd, (struct sockaddr *)&t->o.source,
		    t->o.source_len) != 0)) {
			err = t->o.source.ss_family != c->ai->ai_family ?
			    EAFNOSUPPORT : errno;
			close(c->fd);
			c->fd = -1;
			continue;
		}
		if (connect(c->fd, c->ai->ai_addr, c->ai->ai_addrlen) == 0) {
			tlsclient_conn_connected(t, c);
			return;
		}
		if (errno == EINPROGRESS) {
			c->phase = PHASE_CONNECTING;
			tlsclient_conn_watch(t, c, EPOLLOUT);
			return;
		}
		err = errno;
		close(c->fd);
		c->fd = -1;
	}
	tlsclient_set_reason(c, strerror(err));
	tlsclient_conn_fail(t, c);
}

static void tlsclient_conn_run(struct tlsclient *t, struct tlsclient_conn *c);

/* tlsclient_wire_log appends to the --wire file. errno is kept for the
 * caller, which reads it after the socket call. */
static void
tlsclient_wire_log(const void *p, size_t n)
{
	const char *q = p;
	int saved_errno = errno;

	while (tlsclient_wire_fd >= 0 && !tlsclient_wire_failed && n > 0) {
		ssize_t w = write(tlsclient_wire_fd, q, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "tlsproxy-tlsclient: --wire: %s\n",
			    w < 0 ? strerror(errno) : "short write");
			tlsclient_wire_failed = true;
			break;
		}
		q += w;
		n -= (size_t)w;
	}
	errno = saved_errno;
}

static int
tlsclient_wire_read(BIO *b, char *out, int len)
{
	const struct tlsclient_conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = recv(c->fd, out, (size_t)len, 0);
	if (n > 0)
		tlsclient_wire_log(out, (size_t)n);
	else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		BIO_set_retry_read(b);
	return (int)n;
}

static int
tlsclient_wire_write(BIO *b, const char *in, int len)
{
	const struct tlsclient_conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = send(c->fd, in, (size_t)len, MSG_NOSIGNAL);
	if (n > 0)
		tlsclient_wire_log(in, (size_t)n);
	else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		BIO_set_retry_write(b);
	return (int)n;
}

static long
tlsclient_wire_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	/* Writes go straight to the socket: nothing to flush. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
tlsclient_wire_setup(void)
{
	tlsclient_wire_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
	    "tlsclient wire");
	return tlsclient_wire_method != NULL &&
	    BIO_meth_set_read(tlsclient_wire_method, tlsclient_wire_read) &&
	    BIO_meth_set_write(tlsclient_wire_method, tlsclient_wire_write) &&
	    BIO_meth_set_ctrl(tlsclient_wire_method, tlsclient_wire_ctrl) ? 0 : -1;
}

/* tlsclient_set_io puts c->ssl on the socket: directly, or with --wire
 * through the copying BIO. */
static int
tlsclient_set_io(struct tlsclient_conn *c)
{
	BIO *bio;

	if (tlsclient_wire_method == NULL)
		return SSL_set_fd(c->ssl, c->fd);
	if ((bio = BIO_new(tlsclient_wire_method)) == NULL)
		return 0;
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);
	SSL_set_bio(c->ssl, bio, bio);
	return 1;
}

static void
tlsclient_conn_connected(struct tlsclient *t, struct tlsclient_conn *c)
{
	int one = 1;

	/* Small writes (requests, close_notify) should leave at once. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (t->o.raw) {
		c->phase = PHASE_RAW;
		c->sptr = (const uint8_t *)t->o.request;
		c->slen = t->o.request_len;
	} else {
		c->ssl = SSL_new(t->ctx);
		if (c->ssl == NULL || !tlsclient_set_io(c) ||
		    (t->o.servername != NULL &&
		     !SSL_set_tlsext_host_name(c->ssl, t->o.servername))) {
			tlsclient_set_reason(c, "SSL_new_failed");
			tlsclient_conn_fail(t, c);
			return;
		}
		if (tlsclient_set_groups(&t->o, c->ssl) != 0) {
			tlsclient_set_reason(c, "groups_rejected");
			tlsclient_conn_fail(t, c);
			return;
		}
		if (t->o.ech_config != NULL &&
		    !SSL_set1_ech_config_list(c->ssl, t->o.ech_config, t->o.ech_config_len)) {
			tlsclient_set_reason(c, "ech_config_list_rejected");
			tlsclient_conn_fail(t, c);
			return;
		}
		if (t->o.ech_grease)
			SSL_set_enable_ech_grease(c->ssl, 1);
		SSL_set_connect_state(c->ssl);
		c->phase = PHASE_HANDSHAKE;
	}
	tlsclient_conn_run(t, c);
}

/* tlsclient_conn_check_connect finishes a non-blocking connect. */
static void
tlsclient_conn_check_connect(struct tlsclient *t, struct tlsclient_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == 0) {
		tlsclient_conn_connected(t, c);
		return;
	}
	close(c->fd);
	c->fd = -1;
	c->registered = false;
	c->ai = c->ai->ai_next;
	if (c->ai == NULL) {
		tlsclient_set_reason(c, strerror(err));
		tlsclient_conn_fail(t, c);
		return;
	}
	tlsclient_conn_connect(t, c);
}

/* tlsclient_refill queues the next chunk to send; an empty chunk means
 * everything is sent. Returns 0 when it did that, 1 when a --send-file pipe
 * has nothing yet, -1 on a read error. */
static int
tlsclient_refill(struct tlsclient *t, struct tlsclient_conn *c)
{
	ssize_t n;

	switch (t->o.send) {
	case SEND_NONE:
		break;
	case SEND_REQUEST:
		if (!c->request_queued) {
			c->sptr = (const uint8_t *)t->o.request;
			c->slen = t->o.request_len;
			c->request_queued = true;
		}
		break;
	case SEND_BYTES:
	case SEND_FILE:
		if (c->sbuf == NULL && (c->sbuf = malloc(TLSCLIENT_CHUNK)) == NULL) {
			tlsclient_set_reason(c, "out_of_memory");
			return -1;
		}
		if (t->o.send == SEND_BYTES) {
			n = c->send_left < TLSCLIENT_CHUNK ? (ssize_t)c->send_left : TLSCLIENT_CHUNK;
			prng_fill(&c->prng, c->sbuf, (size_t)n);
			c->send_left -= (uint64_t)n;
		} else if (t->o.file_stream) {
			n = read(t->o.file_fd, c->sbuf, TLSCLIENT_CHUNK);
			c->stream_wait = false;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
				/* Once the peer has finished, more input could only
				 * be refused: take the pipe's silence as its end
				 * rather than wait for a writer that may never
				 * close. */
				if (!c->rd_done) {
					c->stream_wait = true;
					return 1;
				}
				n = 0;
			}
			if (n < 0) {
				tlsclient_set_reason(c, strerror(errno));
				return -1;
			}
		} else {
			/* pread: every connection has its own offset into the
			 * one shared descriptor. */
			n = pread(t->o.file_fd, c->sbuf, TLSCLIENT_CHUNK, (off_t)c->file_off);
			if (n < 0) {
				tlsclient_set_reason(c, strerror(errno));
				return -1;
			}
			c->file_off += (uint64_t)n;
		}
		c->sptr = c->sbuf;
		c->slen = (size_t)n;
		break;
	}
	return 0;
}

/* tlsclient_tls_run moves an established TLS connection forward: sending,
 * then half-closing, and reading all along (so an echoing peer never
 * deadlocks on full buffers). */
static void
tlsclient_tls_run(struct tlsclient *t, struct tlsclient_conn *c)
{
	uint32_t rd_want = 0, wr_want = 0;
	bool again = false;
	int r, se, rounds;

	for (rounds = 0; !c->send_done; rounds++) {
		if (c->slen == 0) {
			r = tlsclient_refill(t, c);
			if (r < 0) {
				tlsclient_conn_fail(t, c);
				return;
			}
			if (r > 0)
				break;
			if (c->slen == 0) {
				c->send_done = true;
				break;
			}
		}
		if (rounds == TLSCLIENT_ROUNDS) {
			again = true;
			break;
		}
		ERR_clear_error();
		r = SSL_write(c->ssl, c->sptr, c->slen > INT_MAX ? INT_MAX : (int)c->slen);
		se = errno;
		if (r > 0) {
			SHA256_Update(&c->sent_sha, c->sptr, (size_t)r);
			c->sent += (uint64_t)r;
			c->sptr += r;
			c->slen -= (size_t)r;
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_WRITE:
			wr_want = EPOLLOUT;
			break;
		case SSL_ERROR_WANT_READ:
			wr_want = EPOLLIN;
			break;
		default:
			tlsclient_ssl_reason(c, r, se);
			tlsclient_conn_fail(t, c);
			return;
		}
		break;
	}
	if (c->send_done && t->o.half_close && !c->shutdown_sent) {
		/* One SSL_shutdown call only sends close_notify; waiting for
		 * the peer's is left to SSL_read, which also takes data. */
		ERR_clear_error();
		r = SSL_shutdown(c->ssl);
		se = errno;
		if (r >= 0) {
			c->shutdown_sent = true;
			if (shutdown(c->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
				tlsclient_set_reason(c, strerror(errno));
				tlsclient_conn_fail(t, c);
				return;
			}
			c->wr_closed = true;
		} else {
			switch (SSL_get_error(c->ssl, r)) {
			case SSL_ERROR_WANT_WRITE:
				wr_want = EPOLLOUT;
				break;
			case SSL_ERROR_WANT_READ:
				wr_want = EPOLLIN;
				break;
			case SSL_ERROR_SYSCALL:
				/* The peer already ended its side and may have
				 * closed the socket: our close_notify has no one
				 * left to tell, which is no failure. */
				if (c->rd_done) {
					c->shutdown_sent = true;
					c->wr_closed = true;
					break;
				}
				/* FALLTHROUGH */
			default:
				tlsclient_ssl_reason(c, r, se);
				tlsclient_conn_fail(t, c);
				return;
			}
		}
	}
	for (rounds = 0; !t->o.no_read && !c->rd_done; rounds++) {
		if (rounds == TLSCLIENT_ROUNDS) {
			again = true;
			break;
		}
		ERR_clear_error();
		r = SSL_read(c->ssl, t->rbuf, sizeof(t->rbuf));
		se = errno;
		if (r > 0) {
			SHA256_Update(&c->recv_sha, t->rbuf, (size_t)r);
			c->received += (uint64_t)r;
			continue;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_ZERO_RETURN:
			c->close_notify = true;
			c->rd_done = true;
			break;
		case SSL_ERROR_WANT_READ:
			rd_want = EPOLLIN;
			break;
		case SSL_ERROR_WANT_WRITE:
			rd_want = EPOLLOUT;
			break;
		case SSL_ERROR_SYSCALL:
			/* EOF without close_notify still ends the stream
			 * normally (close_notify=0 tells the difference). */
			if (r == 0 || se == 0) {
				c->rd_done = true;
				break;
			}
			/* FALLTHROUGH */
		default:
			tlsclient_ssl_reason(c, r, se);
			tlsclient_conn_fail(t, c);
			return;
		}
		break;
	}
	if (c->send_done && (!t->o.half_close || c->wr_closed) &&
	    (t->o.no_read || c->rd_done)) {
		tlsclient_conn_end(t, c, true, NULL);
		return;
	}
	/* The read side just ended while we wait on the pipe: run again so
	 * that tlsclient_refill stops waiting. */
	if (c->stream_wait && c->rd_done)
		again = true;
	if (again)
		tlsclient_conn_again(t, c);
	tlsclient_conn_watch(t, c, rd_want | wr_want);
}

static void
tlsclient_raw_run(struct tlsclient *t, struct tlsclient_conn *c)
{
	for (;;) {
		ssize_t n;

		if (c->slen > 0) {
			n = send(c->fd, c->sptr, c->slen, MSG_NOSIGNAL);
			if (n > 0) {
				tlsclient_wire_log(c->sptr, (size_t)n);
				c->sent += (uint64_t)n;
				c->sptr += n;
				c->slen -= (size_t)n;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				tlsclient_conn_watch(t, c, EPOLLOUT);
				return;
			}
			/* The server hung up on our bytes: what it said
			 * before that is still worth reading. */
			c->slen = 0;
		}
		if (c->raw_deadline_ms == 0)
			c->raw_deadline_ms = cli_now_ms() + TLSCLIENT_RAW_WAIT_MS;
		n = recv(c->fd, t->rbuf, sizeof(t->rbuf), 0);
		if (n > 0) {
			tlsclient_wire_log(t->rbuf, (size_t)n);
			c->received += (uint64_t)n;
			continue;
		}
		if (n == 0 || errno == ECONNRESET) {
			tlsclient_conn_end(t, c, true, NULL);
			return;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			tlsclient_conn_watch(t, c, EPOLLIN);
			return;
		}
		tlsclient_set_reason(c, strerror(errno));
		tlsclient_conn_fail(t, c);
		return;
	}
}

static void
tlsclient_conn_run(struct tlsclient *t, struct tlsclient_conn *c)
{
	if (c->phase == PHASE_HANDSHAKE) {
		int r, se;

		ERR_clear_error();
		r = SSL_do_handshake(c->ssl);
		se = errno;
		if (r != 1) {
			switch (SSL_get_error(c->ssl, r)) {
			case SSL_ERROR_WANT_READ:
				tlsclient_conn_watch(t, c, EPOLLIN);
				return;
			case SSL_ERROR_WANT_WRITE:
				tlsclient_conn_watch(t, c, EPOLLOUT);
				return;
			default:
				tlsclient_ssl_reason(c, r, se);
				tlsclient_conn_fail(t, c);
				return;
			}
		} else {
			const uint8_t *alpn = NULL;
			unsigned alpn_len = 0;

			c->version = SSL_get_version(c->ssl);
			c->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
			c->group = tlsopt_group_name(SSL_get_curve_id(c->ssl));
			c->hrr = SSL_used_hello_retry_request(c->ssl);
			/* A rejected offer never gets here: BoringSSL fails the
			 * handshake with ECH_REJECTED. Not accepted is not
			 * offered (TLS 1.2 only, no usable config, GREASE). */
			c->ech = SSL_ech_accepted(c->ssl) ? "accepted" : "-";
			SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
			if (alpn_len == 0 || alpn_len >= sizeof(c->alpn)) {
				strcpy(c->alpn, "-");
			} else {
				memcpy(c->alpn, alpn, alpn_len);
				c->alpn[alpn_len] = '\0';
			}
			if (t->o.status) {
				const uint8_t *resp;

				SSL_get0_ocsp_response(c->ssl, &resp, &c->ocsp_len);
			}
			c->phase = PHASE_RUNNING;
		}
	}
	if (c->phase == PHASE_RUNNING)
		tlsclient_tls_run(t, c);
	else if (c->phase == PHASE_RAW)
		tlsclient_raw_run(t, c);
	tlsclient_stream_watch(t, c->phase == PHASE_RUNNING && c->stream_wait);
}

static SSL_CTX *
tlsclient_ctx(const struct tlsclient_opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	if (ctx == NULL)
		return NULL;
	if (o->version != 0 &&
	    (!SSL_CTX_set_min_proto_version(ctx, o->version) ||
	     !SSL_CTX_set_max_proto_version(ctx, o->version)))
		goto err;
	/* Partial writes let SSL_write return after each record instead of
	 * holding the whole chunk until the socket takes it. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);
	if (o->status)
		SSL_CTX_enable_ocsp_stapling(ctx);
	/* SSL_CTX_set_alpn_protos returns 0 on success, unlike the rest. */
	if (o->alpn_len > 0 && SSL_CTX_set_alpn_protos(ctx, o->alpn, o->alpn_len) != 0)
		goto err;
	if (o->cafile != NULL) {
		if (!SSL_CTX_load_verify_locations(ctx, o->cafile, NULL)) {
			fprintf(stderr, "tlsproxy-tlsclient: --cafile %s: cannot load\n", o->cafile);
			goto err;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
err:
	SSL_CTX_free(ctx);
	return NULL;
}

static void
tlsclient_print(const struct tlsclient *t, const struct tlsclient_conn *c)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	char sent_hex[2 * SHA256_DIGEST_LENGTH + 1], recv_hex[2 * SHA256_DIGEST_LENGTH + 1];
	SHA256_CTX copy;

	if (!c->ok) {
		printf("conn=%u ok=0 error=%s ech=%s", c->idx,
		    c->error[0] != '\0' ? c->error : "unknown", c->ech);
		if (c->ech_retry)
			printf(" retry_configs=%s", c->retry_configs != NULL ? c->retry_configs : "-");
		putchar('\n');
		return;
	}
	if (t->o.raw) {
		printf("conn=%u ok=1 raw_received=%" PRIu64 " ech=%s\n", c->idx, c->received,
		    c->ech);
		return;
	}
	copy = c->sent_sha;
	SHA256_Final(md, &copy);
	tlsclient_hex(md, sizeof(md), sent_hex);
	copy = c->recv_sha;
	SHA256_Final(md, &copy);
	tlsclient_hex(md, sizeof(md), recv_hex);
	printf("conn=%u ok=1 version=%s cipher=%s group=%s hrr=%d alpn=%s sent=%" PRIu64
	    " sent_sha256=%s received=%" PRIu64 " received_sha256=%s close_notify=%d ech=%s",
	    c->idx, c->version, c->cipher, c->group, c->hrr, c->alpn, c->sent, sent_hex, c->received,
	    recv_hex, c->close_notify ? 1 : 0, c->ech);
	if (t->o.status)
		printf(" ocsp=%zu", c->ocsp_len);
	putchar('\n');
}

static void
tlsclient_sleep(double seconds)
{
	struct timespec ts;

	ts.tv_sec = (time_t)seconds;
	ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int
main(int argc, char **argv)
{
	static struct tlsclient t;
	struct addrinfo hints;
	struct epoll_event evs[256];
	uint64_t deadline;
	int rc, status = 0;

	if (tlsclient_parse_args(&t.o, argc, argv) != 0)
		return 2;
	if (t.o.send == SEND_FILE) {
		struct stat st;

		/* Regular files (and block devices) are read with pread, so
		 * any number of connections can send them; a pipe can only
		 * be consumed once and must not block the loop. */
		if (fstat(t.o.file_fd, &st) != 0) {
			perror("tlsproxy-tlsclient: --send-file");
			return 2;
		}
		if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
			if (t.o.conns != 1) {
				fprintf(stderr, "tlsproxy-tlsclient: --send-file from a pipe "
				    "or socket needs --conns 1\n");
				return 2;
			}
			t.o.file_stream = true;
			fcntl(t.o.file_fd, F_SETFL, fcntl(t.o.file_fd, F_GETFL) | O_NONBLOCK);
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (t.o.wire_fd >= 0) {
		tlsclient_wire_fd = t.o.wire_fd;
		if (tlsclient_wire_setup() != 0) {
			fprintf(stderr, "tlsproxy-tlsclient: cannot set up --wire\n");
			return 2;
		}
	}
	cli_raise_nofile();
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(t.o.host, t.o.port, &hints, &t.addrs);
	if (rc != 0) {
		fprintf(stderr, "tlsproxy-tlsclient: %s: %s\n", t.o.host, gai_strerror(rc));
		return 2;
	}
	if (!t.o.raw && (t.ctx = tlsclient_ctx(&t.o)) == NULL) {
		fprintf(stderr, "tlsproxy-tlsclient: cannot set up TLS\n");
		return 2;
	}
	t.epfd = epoll_create1(EPOLL_CLOEXEC);
	t.conns = calloc(t.o.conns, sizeof(*t.conns));
	if (t.epfd < 0 || t.conns == NULL) {
		perror("tlsproxy-tlsclient");
		return 2;
	}
	deadline = cli_now_ms() + (uint64_t)(t.o.timeout * 1000 + 0.5);
	t.remaining = t.o.conns;
	for (unsigned i = 0; i < t.o.conns; i++) {
		struct tlsclient_conn *c = &t.conns[i];

		c->idx = i;
		c->fd = -1;
		c->ai = t.addrs;
		c->send_left = t.o.send_bytes;
		c->ech = "-";
		prng_init(&c->prng);
		SHA256_Init(&c->sent_sha);
		SHA256_Init(&c->recv_sha);
		tlsclient_conn_connect(&t, c);
	}

	while (t.remaining > 0) {
		uint64_t now = cli_now_ms(), wake = deadline;
		struct tlsclient_conn *list;
		int n;

		/* --send-raw's per-connection 5 s waits; a linear scan is fine
		 * next to the cost of the connections themselves. */
		if (t.o.raw) {
			for (unsigned i = 0; i < t.o.conns; i++) {
				const struct tlsclient_conn *c = &t.conns[i];

				if (c->phase != PHASE_DONE && c->raw_deadline_ms != 0 &&
				    c->raw_deadline_ms < wake)
					wake = c->raw_deadline_ms;
			}
		}
		n = epoll_wait(t.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])),
		    t.again != NULL ? 0 : wake > now ? (int)(wake - now) : 0);
		if (n < 0 && errno != EINTR) {
			perror("tlsproxy-tlsclient: epoll_wait");
			return 2;
		}
		for (int i = 0; i < n; i++) {
			struct tlsclient_conn *c = evs[i].data.ptr;

			/* Only one connection may read a pipe (see main). */
			if (evs[i].data.ptr == &tlsclient_stream_tag)
				c = &t.conns[0];
			if (c->phase == PHASE_CONNECTING)
				tlsclient_conn_check_connect(&t, c);
			else if (c->phase != PHASE_DONE)
				tlsclient_conn_run(&t, c);
		}
		/* Take the list whole: connections that yield again go on a
		 * fresh one, for the next round. */
		list = t.again;
		t.again = NULL;
		for (struct tlsclient_conn *c = list, *next; c != NULL; c = next) {
			next = c->again_next;
			c->in_again = false;
			if (c->phase == PHASE_RUNNING)
				tlsclient_conn_run(&t, c);
		}
		now = cli_now_ms();
		for (unsigned i = 0; (now >= deadline || t.o.raw) && i < t.o.conns; i++) {
			struct tlsclient_conn *c = &t.conns[i];

			if (c->phase == PHASE_DONE)
				continue;
			if (now >= deadline)
				tlsclient_conn_end(&t, c, false, "timeout");
			else if (c->phase == PHASE_RAW && c->raw_deadline_ms != 0 &&
			    now >= c->raw_deadline_ms)
				tlsclient_conn_end(&t, c, true, NULL);
		}
	}

	for (unsigned i = 0; i < t.o.conns; i++) {
		tlsclient_print(&t, &t.conns[i]);
		if (!t.conns[i].ok)
			status = 1;
	}
	/* A --wire file with gaps would prove nothing. */
	if (tlsclient_wire_failed)
		status = 1;
	fflush(stdout);
	if (t.o.hold > 0)
		tlsclient_sleep(t.o.hold);
	for (unsigned i = 0; i < t.o.conns; i++) {
		tlsclient_conn_release(&t.conns[i]);
		free(t.conns[i].retry_configs);
	}
	free(t.conns);
	freeaddrinfo(t.addrs);
	SSL_CTX_free(t.ctx);
	free(t.o.request);
	free(t.o.ech_config);
	BIO_meth_free(tlsclient_wire_method);
	return status;
}
