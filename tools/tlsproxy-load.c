/* tlsproxy-load.c: tlsproxy-load, the load generator of tlsproxy's benchmarks. One
 * thread drives any number of non-blocking BoringSSL client connections
 * from a level-triggered epoll set, in one of four modes:
 *
 *   handshake  a new TCP+TLS connection per request (full or resumed)
 *   bulk       keep-alive connections downloading a large body
 *   idle       connections that handshake, make one request, then idle
 *   rate       an open-loop request schedule with latency percentiles
 *
 * or with --plain the same four over plain TCP (a handshake is then just
 * a new TCP connection), for a baseline without TLS such as the load
 * straight at the backend. It prints one line of key=value pairs at the
 * end. Every phase has a deadline and every inner loop a round limit, so a
 * run always ends by itself; per-connection state is fixed in size, so
 * memory is bounded by --conns. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cli.h"
#include "tlsopt.h"

#define PROG "tlsproxy-load"

/* SSL_read/SSL_write calls per wakeup and connection before yielding to
 * the others; the connection is then run again from the again list, since
 * data already inside its SSL would not wake epoll. */
#define LOAD_ROUNDS 32
/* How often failed slots are reopened and stalled connections timed out:
 * a closed port then costs a bounded number of attempts per second. */
#define LOAD_TICK_NS 20000000ull
/* Bytes kept of each response header line: enough for the status line
 * and Content-Length; longer lines are scanned, not stored. */
#define LOAD_LINE_MAX 96
/* A response head longer than this is refused (err_http). */
#define LOAD_HEAD_MAX 65536
/* rate: how long after the window responses to its requests are awaited. */
#define LOAD_DRAIN_NS 2000000000ull
/* Read-ahead per connection: a whole TLS record with its header fits. */
#define LOAD_RA_SIZE (5 + 16384 + 2048)
/* --cpu-pid may be given this many times. */
#define LOAD_MAX_PIDS 16
/* Latency histogram: exact below 2 * 2^LOAD_SUB_BITS ns, then 2^SUB_BITS
 * linear buckets per power of two (relative error under 1/128), up to
 * 2^LOAD_MAX_BITS ns (about 18 minutes); memory is fixed at 34 KiB. */
#define LOAD_SUB_BITS 7
#define LOAD_SUB (1u << LOAD_SUB_BITS)
#define LOAD_MAX_BITS 40
#define LOAD_BUCKETS (2 * LOAD_SUB + (LOAD_MAX_BITS - LOAD_SUB_BITS - 1) * LOAD_SUB)

enum load_mode { MODE_HANDSHAKE, MODE_BULK, MODE_IDLE, MODE_RATE };
enum load_resume { RESUME_NONE, RESUME_TICKET, RESUME_SESSION_ID };
enum load_err { ERR_CONNECT, ERR_TLS, ERR_EOF, ERR_TIMEOUT, ERR_HTTP, ERR_KINDS };

static const char *const load_err_names[ERR_KINDS] = {
	"err_connect", "err_tls", "err_eof", "err_timeout", "err_http",
};

enum load_phase {
	PH_FREE,       /* no connection in this slot */
	PH_HANDSHAKE,  /* from connect() on: see load_conn_open() */
	PH_SEND,       /* writing the request */
	PH_RECV,       /* reading the reply */
	PH_READY,      /* established, no request outstanding */
};

struct load_opts {
	enum load_mode mode;
	char host[256];
	char port[16];
	unsigned conns;
	unsigned parallel;
	char *request;
	size_t request_len;
	const char *path;
	bool expect_set;
	uint64_t expect_bytes;
	enum load_resume resume;
	bool plain;
	bool tls_opts;      /* an option that only means something with TLS */
	double rate;
	const char *ready_file;
	double hold, duration, warmup, timeout;
	uint64_t max_requests, max_errors;
	uint16_t version;
	const char *groups_arg;
	uint16_t groups[8];
	size_t num_groups;
	const char *servername;
	const char *cafile;
	uint8_t *ech_config;
	size_t ech_config_len;
	int pids[LOAD_MAX_PIDS];
	unsigned num_pids;
};

/* The response parser of the keep-alive modes: a state machine fed any
 * slice of the stream, so a connection needs no head buffer. */
struct load_http {
	char line[LOAD_LINE_MAX];
	unsigned line_len;  /* bytes kept of the current line */
	unsigned head_len;  /* bytes of head so far */
	bool status_seen, have_length, in_body, close;
	uint64_t body_left;
};

struct load_conn {
	int fd;
	SSL *ssl;
	enum load_phase phase;
	uint32_t events;          /* epoll interest; 0 and !registered: none */
	bool registered;
	bool in_again;
	struct load_conn *again_next;
	bool busy;                /* a request is in flight (l->inflight) */
	bool established;         /* idle: counted in l->established */
	bool record;              /* rate: the request was scheduled in the window */
	unsigned ready_pos;       /* rate: index in l->ready while PH_READY */
	uint64_t progress;        /* last progress (ns), for --timeout */
	uint64_t sched;           /* rate: scheduled send time (ns) */
	size_t req_off;           /* request bytes written */
	uint8_t *ra;              /* read-ahead: bytes read, not yet taken */
	size_t ra_off, ra_len;
	int io_errno;             /* errno of the last failed socket call */
	uint64_t received;        /* handshake: reply bytes */
	struct load_http http;
};

struct load_hist {
	uint64_t count, sum, max;
	uint64_t bucket[LOAD_BUCKETS];
};

struct load_cpu {
	uint64_t t;
	double client;
	double proxy; /* < 0: a PID could not be read */
};

struct load {
	struct load_opts o;
	struct addrinfo *addrs;
	SSL_CTX *ctx;
	SSL_SESSION *session;      /* offered by new connections when resuming */
	int epfd, sigfd;
	struct load_conn *conns;
	struct load_conn *again;
	struct load_conn **ready;  /* rate: connections free for a request */
	unsigned nready;
	unsigned cursor;           /* slots below it have been opened once */
	unsigned live;             /* slots not PH_FREE */
	uint64_t now, next_tick;
	bool window, stopping, interrupted;
	bool priming;              /* load_prime's connection is running */
	bool count_limited;        /* rate: --max-requests ended the schedule */
	uint64_t t_win, t_end;
	/* counters: requests of the window, errors of the whole run */
	uint64_t started, inflight, ok, bytes, handshakes, resumed;
	uint64_t err[ERR_KINDS];
	/* idle */
	unsigned established, ready_count, dropped;
	bool holding;
	/* rate */
	uint64_t t0, interval, next_idx, sched_end, unfinished;
	struct load_hist *hist;
	/* the first handshake */
	bool first_seen;
	char tls[16], cipher[64], group[24], ech[16];
	struct load_cpu cpu0, cpu1;
	uint8_t rbuf[65536];  /* TLS reads a record at a time, plain TCP more */
};

static BIO_METHOD *load_bio_method;
/* Where the read-ahead BIO reads to first; one thread, one buffer. */
static uint8_t load_scratch[LOAD_RA_SIZE];

/* --- options ------------------------------------------------------- */

static const char load_default_request[] =
    "GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

static void
load_usage(FILE *f)
{
	fprintf(f,
	    "usage: " PROG " --mode MODE [options] HOST:PORT\n"
	    "modes:\n"
	    "  handshake  a new TCP+TLS connection per request, --conns in flight;\n"
	    "             sends --request, reads the reply to EOF (or --expect-bytes)\n"
	    "  bulk       --conns keep-alive connections GET --path over and over; MB/s\n"
	    "  idle       open --conns connections (handshake + one GET), write \"ready N\"\n"
	    "             to --ready-file, hold them for --hold seconds or until SIGTERM\n"
	    "  rate       --conns keep-alive connections, --rate requests/s on a fixed\n"
	    "             schedule; latency counts from the scheduled time\n"
	    "options:\n"
	    "  --conns N           connections (default 32)\n"
	    "  --duration S        measurement window (default 10; idle: opening deadline)\n"
	    "  --warmup S          run this long before the window (default 1; not idle)\n"
	    "  --max-requests N    end the window after N requests (default 100000000)\n"
	    "  --max-errors N      errors a valid run tolerates (default 0)\n"
	    "  --timeout S         a connection without progress this long fails (default 10)\n"
	    "  --request STRING    handshake: what to send (\\r \\n \\t \\\\ \\xHH escapes;\n"
	    "                      default a GET /small with Connection: close);\n"
	    "                      other modes: replaces the GET of --path\n"
	    "  --expect-bytes N    handshake: the reply is complete after N bytes\n"
	    "  --resume MODE       handshake: none (default), ticket (TLS 1.3) or\n"
	    "                      session-id (TLS 1.2, no tickets); offers the newest session\n"
	    "  --path PATH         bulk: default /big; idle, rate: default /small\n"
	    "  --rate R            rate: requests per second in all (default 1000)\n"
	    "  --ready-file F      idle: where \"ready N\" goes\n"
	    "  --hold S            idle: how long to hold the connections (default 10)\n"
	    "  --parallel N        idle: connections being opened at once (default 64)\n"
	    "  --plain             no TLS: the same modes over plain TCP (handshake: a new\n"
	    "                      TCP connection per request), e.g. straight at a backend\n"
	    "  --tls12 | --tls13   pin the protocol version\n"
	    "  --groups LIST       key-exchange groups, colon separated (default\n"
	    "                      X25519:P-256; X25519MLKEM768, X25519, P-256, P-384)\n"
	    "  --servername NAME   SNI, and Host of the GET of --path (default localhost)\n"
	    "  --cafile FILE       verify the server against FILE (default: no verification)\n"
	    "  --ech-config-list B64|@FILE  offer ECH with this ECHConfigList\n"
	    "  --cpu-pid PID       report this process's CPU use (repeatable)\n"
	    "prints one line of key=value pairs; exits 0 if the run is valid, 1 if not,\n"
	    "2 on usage errors\n");
}

static int
load_parse_mode(const char *s, struct load_opts *o)
{
	static const char *const names[] = { "handshake", "bulk", "idle", "rate" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i]) == 0) {
			o->mode = (enum load_mode)i;
			return 0;
		}
	}
	return -1;
}

static int
load_parse_resume(const char *s, struct load_opts *o)
{
	if (strcmp(s, "none") == 0)
		o->resume = RESUME_NONE;
	else if (strcmp(s, "ticket") == 0)
		o->resume = RESUME_TICKET;
	else if (strcmp(s, "session-id") == 0)
		o->resume = RESUME_SESSION_ID;
	else
		return -1;
	return 0;
}

static int
load_parse_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	return cli_parse_u64(s, out) != 0 || *out < min || *out > max ? -1 : 0;
}

enum {
	OPT_MODE = 256, OPT_CONNS, OPT_DURATION, OPT_WARMUP, OPT_MAX_REQUESTS,
	OPT_MAX_ERRORS, OPT_TIMEOUT, OPT_REQUEST, OPT_EXPECT_BYTES, OPT_RESUME,
	OPT_PATH, OPT_RATE, OPT_READY_FILE, OPT_HOLD, OPT_PARALLEL, OPT_TLS12,
	OPT_TLS13, OPT_GROUPS, OPT_SERVERNAME, OPT_CAFILE, OPT_ECH, OPT_CPU_PID,
	OPT_PLAIN, OPT_HELP,
};

static const struct option load_longopts[] = {
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "conns", required_argument, NULL, OPT_CONNS },
	{ "duration", required_argument, NULL, OPT_DURATION },
	{ "warmup", required_argument, NULL, OPT_WARMUP },
	{ "max-requests", required_argument, NULL, OPT_MAX_REQUESTS },
	{ "max-errors", required_argument, NULL, OPT_MAX_ERRORS },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "request", required_argument, NULL, OPT_REQUEST },
	{ "expect-bytes", required_argument, NULL, OPT_EXPECT_BYTES },
	{ "resume", required_argument, NULL, OPT_RESUME },
	{ "path", required_argument, NULL, OPT_PATH },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "ready-file", required_argument, NULL, OPT_READY_FILE },
	{ "hold", required_argument, NULL, OPT_HOLD },
	{ "parallel", required_argument, NULL, OPT_PARALLEL },
	{ "tls12", no_argument, NULL, OPT_TLS12 },
	{ "tls13", no_argument, NULL, OPT_TLS13 },
	{ "groups", required_argument, NULL, OPT_GROUPS },
	{ "servername", required_argument, NULL, OPT_SERVERNAME },
	{ "cafile", required_argument, NULL, OPT_CAFILE },
	{ "ech-config-list", required_argument, NULL, OPT_ECH },
	{ "cpu-pid", required_argument, NULL, OPT_CPU_PID },
	{ "plain", no_argument, NULL, OPT_PLAIN },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* load_parse_opt applies one option; returns 0 or -1 (already said why). */
static int
load_parse_opt(struct load_opts *o, int ch, const char *arg)
{
	uint64_t v;
	double *secs = ch == OPT_DURATION ? &o->duration : ch == OPT_WARMUP ? &o->warmup :
	    ch == OPT_TIMEOUT ? &o->timeout : &o->hold;

	if (ch == OPT_TLS12 || ch == OPT_TLS13 || ch == OPT_GROUPS || ch == OPT_CAFILE ||
	    ch == OPT_ECH)
		o->tls_opts = true;
	switch (ch) {
	case OPT_PLAIN:
		o->plain = true;
		return 0;
	case OPT_MODE:
		if (load_parse_mode(arg, o) == 0)
			return 0;
		break;
	case OPT_CONNS:
	case OPT_PARALLEL:
		if (load_parse_count(arg, 1, 1000000, &v) != 0)
			break;
		*(ch == OPT_CONNS ? &o->conns : &o->parallel) = (unsigned)v;
		return 0;
	case OPT_DURATION:
	case OPT_WARMUP:
	case OPT_TIMEOUT:
	case OPT_HOLD:
		if (cli_parse_seconds(arg, secs) == 0)
			return 0;
		break;
	case OPT_MAX_REQUESTS:
		if (load_parse_count(arg, 1, UINT64_MAX, &o->max_requests) == 0)
			return 0;
		break;
	case OPT_MAX_ERRORS:
		if (cli_parse_u64(arg, &o->max_errors) == 0)
			return 0;
		break;
	case OPT_REQUEST:
		free(o->request);
		o->request = cli_unescape(PROG, arg, &o->request_len);
		if (o->request == NULL)
			return -1;
		if (o->request_len > 0)
			return 0;
		break;
	case OPT_EXPECT_BYTES:
		if (load_parse_count(arg, 1, UINT64_MAX, &o->expect_bytes) != 0)
			break;
		o->expect_set = true;
		return 0;
	case OPT_RESUME:
		if (load_parse_resume(arg, o) == 0)
			return 0;
		break;
	case OPT_PATH:
		if (arg[0] != '/' || strlen(arg) > 2048 || strpbrk(arg, " \r\n") != NULL)
			break;
		o->path = arg;
		return 0;
	case OPT_RATE: {
		char *end;

		o->rate = strtod(arg, &end);
		if (end != arg && *end == '\0' && o->rate >= 0.001 && o->rate <= 1e7)
			return 0;
		break;
	}
	case OPT_READY_FILE:
		o->ready_file = arg;
		return 0;
	case OPT_TLS12:
	case OPT_TLS13:
		o->version = ch == OPT_TLS12 ? TLS1_2_VERSION : TLS1_3_VERSION;
		return 0;
	case OPT_GROUPS:
		o->groups_arg = arg;
		if (tlsopt_parse_groups(arg, o->groups, 8, &o->num_groups) == 0 &&
		    o->num_groups > 0)
			return 0;
		break;
	case OPT_SERVERNAME:
		if (arg[0] == '\0' || strlen(arg) > 253 || strpbrk(arg, " \r\n") != NULL)
			break;
		o->servername = arg;
		return 0;
	case OPT_CAFILE:
		o->cafile = arg;
		return 0;
	case OPT_ECH:
		return tlsopt_load_ech(PROG, arg, &o->ech_config, &o->ech_config_len);
	case OPT_CPU_PID:
		if (o->num_pids == LOAD_MAX_PIDS || load_parse_count(arg, 1, INT32_MAX, &v) != 0)
			break;
		o->pids[o->num_pids++] = (int)v;
		return 0;
	}
	/* load_longopts lists the options in the order of their enum. */
	fprintf(stderr, PROG ": bad value for --%s: %s\n", load_longopts[ch - OPT_MODE].name, arg);
	return -1;
}

/* load_check_opts rejects combinations that cannot mean anything and fills
 * in the defaults that depend on the mode. */
static int
load_check_opts(struct load_opts *o, bool mode_set)
{
	if (!mode_set) {
		fprintf(stderr, PROG ": --mode is required\n");
		return -1;
	}
	if (o->plain && (o->tls_opts || o->resume != RESUME_NONE)) {
		fprintf(stderr, PROG ": --plain takes no TLS options\n");
		return -1;
	}
	if (o->resume != RESUME_NONE && o->mode != MODE_HANDSHAKE) {
		fprintf(stderr, PROG ": --resume is for --mode handshake\n");
		return -1;
	}
	if ((o->resume == RESUME_TICKET && o->version == TLS1_2_VERSION) ||
	    (o->resume == RESUME_SESSION_ID && o->version == TLS1_3_VERSION)) {
		fprintf(stderr, PROG ": --resume ticket is TLS 1.3, session-id TLS 1.2\n");
		return -1;
	}
	if (o->resume == RESUME_TICKET)
		o->version = TLS1_3_VERSION;
	else if (o->resume == RESUME_SESSION_ID)
		o->version = TLS1_2_VERSION;
	if (o->expect_set && o->mode != MODE_HANDSHAKE) {
		fprintf(stderr, PROG ": --expect-bytes is for --mode handshake\n");
		return -1;
	}
	if (o->duration <= 0) {
		fprintf(stderr, PROG ": --duration must be above 0\n");
		return -1;
	}
	if (o->path == NULL)
		o->path = o->mode == MODE_BULK ? "/big" : "/small";
	return 0;
}

/* load_build_request makes the keep-alive modes' GET unless --request
 * gave one. */
static int
load_build_request(struct load_opts *o)
{
	int n;

	if (o->request != NULL)
		return 0;
	if (o->mode == MODE_HANDSHAKE) {
		o->request = strdup(load_default_request);
		o->request_len = sizeof(load_default_request) - 1;
		return o->request != NULL ? 0 : -1;
	}
	n = asprintf(&o->request, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", o->path, o->servername);
	if (n < 0) {
		o->request = NULL;
		return -1;
	}
	o->request_len = (size_t)n;
	return 0;
}

static int
load_parse_args(struct load_opts *o, int argc, char **argv)
{
	bool mode_set = false;
	int ch;

	o->conns = 32;
	o->parallel = 64;
	o->duration = 10;
	o->warmup = 1;
	o->timeout = 10;
	o->hold = 10;
	o->rate = 1000;
	o->max_requests = 100000000;
	o->servername = "localhost";
	/* P-256 is offered too, without a key share: a TLS 1.2 server with
	 * an ECDSA P-256 key needs it listed. */
	o->groups_arg = "X25519:P-256";
	o->groups[0] = SSL_CURVE_X25519;
	o->groups[1] = SSL_CURVE_SECP256R1;
	o->num_groups = 2;
	while ((ch = getopt_long(argc, argv, "h", load_longopts, NULL)) != -1) {
		if (ch == OPT_HELP || ch == 'h') {
			load_usage(stdout);
			exit(0);
		}
		if (ch < OPT_MODE) {
			load_usage(stderr);
			return -1;
		}
		if (ch == OPT_MODE)
			mode_set = true;
		if (load_parse_opt(o, ch, optarg) != 0)
			return -1;
	}
	if (optind != argc - 1 || cli_parse_target(argv[optind], o->host, sizeof(o->host),
	    o->port, sizeof(o->port)) != 0) {
		load_usage(stderr);
		return -1;
	}
	if (load_check_opts(o, mode_set) != 0)
		return -1;
	return load_build_request(o);
}

/* --- CPU accounting ------------------------------------------------ */

/* load_proc_cpu returns utime + stime of |pid| in seconds, or -1. The
 * process's own stat line already sums all its threads, those that have
 * exited included, which reading each /proc/PID/task would miss. */
static double
load_proc_cpu(int pid)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	const char *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields are
	 * counted from the last ')'. utime and stime are fields 14 and 15,
	 * the 12th and 13th after it. */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
	    &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void
load_cpu_snap(const struct load *l, struct load_cpu *s)
{
	struct rusage ru;

	s->t = cli_now_ns();
	getrusage(RUSAGE_SELF, &ru);
	s->client = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	s->proxy = 0;
	for (unsigned i = 0; i < l->o.num_pids; i++) {
		double v = load_proc_cpu(l->o.pids[i]);

		if (v < 0) {
			s->proxy = -1;
			return;
		}
		s->proxy += v;
	}
}

/* --- latency histogram --------------------------------------------- */

static unsigned
load_hist_index(uint64_t v)
{
	unsigned msb, shift;

	if (v >= (1ull << LOAD_MAX_BITS))
		v = (1ull << LOAD_MAX_BITS) - 1;
	if (v < 2 * LOAD_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - LOAD_SUB_BITS;
	return 2 * LOAD_SUB + (shift - 1) * LOAD_SUB + (unsigned)((v >> shift) - LOAD_SUB);
}

/* load_hist_value is the highest value that lands in bucket |i|. */
static uint64_t
load_hist_value(unsigned i)
{
	unsigned k, shift;

	if (i < 2 * LOAD_SUB)
		return i;
	k = i - 2 * LOAD_SUB;
	shift = k / LOAD_SUB + 1;
	return (((uint64_t)(k % LOAD_SUB + LOAD_SUB)) << shift) + (1ull << shift) - 1;
}

static void
load_hist_add(struct load_hist *h, uint64_t ns)
{
	h->bucket[load_hist_index(ns)]++;
	h->count++;
	h->sum += ns;
	if (ns > h->max)
		h->max = ns;
}

/* load_hist_pct returns the |p|-th percentile in ns: the value below
 * which at least p% of the samples fall, never above the maximum. */
static uint64_t
load_hist_pct(const struct load_hist *h, double p)
{
	double exact = p / 100 * (double)h->count;
	uint64_t want = (uint64_t)exact, seen = 0;

	if (h->count == 0)
		return 0;
	if ((double)want < exact || want == 0)
		want++;
	for (unsigned i = 0; i < LOAD_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= want) {
			uint64_t v = load_hist_value(i);

			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}

/* --- HTTP responses ------------------------------------------------ */

static void
load_http_reset(struct load_http *h)
{
	memset(h, 0, sizeof(*h));
}

/* load_http_line takes one complete header line (without CRLF); returns
 * 1 at the end of the head, 0 to go on, -1 for a response we cannot use
 * (not 2xx, no Content-Length, chunked). */
static int
load_http_line(struct load_http *h)
{
	char *v;

	h->line[h->line_len] = '\0';
	if (!h->status_seen) {
		h->status_seen = true;
		return strncmp(h->line, "HTTP/1.", 7) == 0 && h->line_len >= 12 &&
		    h->line[8] == ' ' && h->line[9] == '2' ? 0 : -1;
	}
	if (h->line_len == 0)
		return h->have_length ? 1 : -1;
	if ((v = strchr(h->line, ':')) == NULL)
		return -1;
	*v++ = '\0';
	while (*v == ' ' || *v == '\t')
		v++;
	if (strcasecmp(h->line, "content-length") == 0) {
		char *end;

		errno = 0;
		h->body_left = strtoull(v, &end, 10);
		if (errno != 0 || end == v)
			return -1;
		h->have_length = true;
	} else if (strcasecmp(h->line, "transfer-encoding") == 0) {
		return -1;
	} else if (strcasecmp(h->line, "connection") == 0 && strcasestr(v, "close") != NULL) {
		h->close = true;
	}
	return 0;
}

/* load_http_feed consumes response bytes; returns 1 once the response is
 * complete (|*used| bytes were its last ones), 0 for more, -1 on a
 * response we cannot use. Body bytes are added to |*body|. */
static int
load_http_feed(struct load_http *h, const uint8_t *p, size_t n, size_t *used, uint64_t *body)
{
	size_t i = 0;

	while (i < n) {
		if (h->in_body) {
			size_t take = n - i < h->body_left ? n - i : (size_t)h->body_left;

			h->body_left -= take;
			*body += take;
			i += take;
			if (h->body_left == 0)
				break;
			continue;
		}
		if (++h->head_len > LOAD_HEAD_MAX)
			return -1;
		if (p[i] == '\n') {
			int r;

			if (h->line_len > 0 && h->line[h->line_len - 1] == '\r')
				h->line_len--;
			r = load_http_line(h);
			h->line_len = 0;
			i++;
			if (r < 0)
				return -1;
			if (r > 0) {
				h->in_body = true;
				if (h->body_left == 0)
					break;
			}
			continue;
		}
		if (h->line_len < LOAD_LINE_MAX - 1)
			h->line[h->line_len++] = (char)p[i];
		i++;
	}
	*used = i;
	return h->in_body && h->body_left == 0 ? 1 : 0;
}

/* --- connections --------------------------------------------------- */

static void load_conn_run(struct load *l, struct load_conn *c);
static void load_conn_open(struct load *l, struct load_conn *c);

static void
load_watch(struct load *l, struct load_conn *c, uint32_t ev)
{
	struct epoll_event e;

	if (c->registered && ev == c->events)
		return;
	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.ptr = c;
	/* Adding a fresh socket cannot fail short of memory; the timeout
	 * would catch a connection left unwatched. */
	if (epoll_ctl(l->epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) == 0) {
		c->registered = true;
		c->events = ev;
	}
}

static void
load_again(struct load *l, struct load_conn *c)
{
	if (c->in_again)
		return;
	c->in_again = true;
	c->again_next = l->again;
	l->again = c;
}

static void
load_ready_push(struct load *l, struct load_conn *c)
{
	c->ready_pos = l->nready;
	l->ready[l->nready++] = c;
}

static void
load_ready_remove(struct load *l, struct load_conn *c)
{
	struct load_conn *last = l->ready[--l->nready];

	l->ready[c->ready_pos] = last;
	last->ready_pos = c->ready_pos;
}

/* load_may_start says whether a new request may begin: not once the run
 * is stopping, nor past --max-requests in the window. */
static bool
load_may_start(const struct load *l)
{
	return !l->stopping && (!l->window || l->started < l->o.max_requests);
}

static void
load_note_start(struct load *l, struct load_conn *c)
{
	if (l->window)
		l->started++;
	l->inflight++;
	c->busy = true;
}

static void
load_note_end(struct load *l, struct load_conn *c)
{
	if (!c->busy)
		return;
	c->busy = false;
	l->inflight--;
}

/* load_conn_close frees the slot. No close_notify: the peer is either
 * done already or being abandoned, and the write would only cost CPU. */
static void
load_conn_close(struct load *l, struct load_conn *c)
{
	if (c->phase == PH_FREE)
		return;
	if (c->phase == PH_READY && l->o.mode == MODE_RATE)
		load_ready_remove(l, c);
	if (c->established) {
		c->established = false;
		l->established--;
	}
	load_note_end(l, c);
	SSL_free(c->ssl);
	c->ssl = NULL;
	free(c->ra);
	c->ra = NULL;
	c->ra_len = 0;
	close(c->fd); /* also takes it out of the epoll set */
	c->fd = -1;
	c->registered = false;
	c->events = 0;
	c->phase = PH_FREE;
	l->live--;
}

/* load_fail counts an error and frees the slot; the tick reopens it. */
static void
load_fail(struct load *l, struct load_conn *c, enum load_err kind)
{
	l->err[kind]++;
	if (l->holding && c->established)
		l->dropped++;
	load_conn_close(l, c);
}

/* load_ssl_fail sorts a failed SSL call into an error kind: a peer that
 * went away is err_eof, anything the TLS stack refused is err_tls. */
static void
load_ssl_fail(struct load *l, struct load_conn *c, int err)
{
	ERR_clear_error();
	load_fail(l, c, err == SSL_ERROR_SSL ? ERR_TLS : ERR_EOF);
}

/* load_begin_request starts the next request on an established
 * connection, or parks it when no more may start. */
static void
load_begin_request(struct load *l, struct load_conn *c)
{
	if (l->o.mode != MODE_IDLE && !load_may_start(l)) {
		c->phase = PH_READY;
		load_watch(l, c, EPOLLIN);
		return;
	}
	load_note_start(l, c);
	load_http_reset(&c->http);
	c->req_off = 0;
	c->phase = PH_SEND;
	/* Sent from the loop: we may be deep inside the last read. */
	load_again(l, c);
}

/* load_slot_restart reuses a slot at once for the next connection
 * (handshake mode's next request, a keep-alive connection the server
 * ended cleanly). */
static void
load_slot_restart(struct load *l, struct load_conn *c)
{
	load_conn_close(l, c);
	if (l->priming)
		return;
	if (l->o.mode == MODE_HANDSHAKE) {
		if (!load_may_start(l))
			return;
		load_note_start(l, c);
	} else if (l->stopping) {
		return;
	}
	load_conn_open(l, c);
}

static void
load_note_first(struct load *l, SSL *ssl)
{
	const char *cipher;

	l->first_seen = true;
	if (ssl == NULL) {
		snprintf(l->tls, sizeof(l->tls), "plain");
		snprintf(l->cipher, sizeof(l->cipher), "-");
		snprintf(l->group, sizeof(l->group), "-");
		snprintf(l->ech, sizeof(l->ech), "-");
		return;
	}
	cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
	snprintf(l->tls, sizeof(l->tls), "%s", SSL_get_version(ssl));
	snprintf(l->cipher, sizeof(l->cipher), "%s", cipher != NULL ? cipher : "-");
	snprintf(l->group, sizeof(l->group), "%s", tlsopt_group_name(SSL_get_curve_id(ssl)));
	snprintf(l->ech, sizeof(l->ech), "%s", SSL_ech_accepted(ssl) ? "accepted" : "-");
}

static void
load_handshake_done(struct load *l, struct load_conn *c)
{
	if (!l->first_seen)
		load_note_first(l, c->ssl);
	if (l->window) {
		l->handshakes++;
		if (c->ssl != NULL && SSL_session_reused(c->ssl))
			l->resumed++;
	}
	switch (l->o.mode) {
	case MODE_HANDSHAKE:
		c->req_off = 0;
		c->received = 0;
		c->phase = PH_SEND;
		break;
	case MODE_RATE:
		c->phase = PH_READY;
		load_ready_push(l, c);
		load_watch(l, c, EPOLLIN);
		break;
	default:
		load_begin_request(l, c);
		break;
	}
}

/* load_handshake_fail sorts a failed handshake: the connect's own
 * failures (the handshake starts before the connect is known to be done)
 * are err_connect, the rest as load_ssl_fail does. */
static void
load_handshake_fail(struct load *l, struct load_conn *c, int e)
{
	switch (e == SSL_ERROR_SYSCALL ? c->io_errno : 0) {
	case ECONNREFUSED:
	case EADDRNOTAVAIL:
	case ENETUNREACH:
	case EHOSTUNREACH:
	case ETIMEDOUT:
	case EPIPE: /* closed before it was ever connected */
		ERR_clear_error();
		load_fail(l, c, ERR_CONNECT);
		return;
	}
	load_ssl_fail(l, c, e);
}

/* load_plain_connected is --plain's handshake: the connect is done when
 * the socket has a peer, and failed when it has an error. */
static void
load_plain_connected(struct load *l, struct load_conn *c)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int err = 0;

	if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
		load_handshake_done(l, c);
		return;
	}
	len = sizeof(err);
	if (errno != ENOTCONN || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err == 0) {
		load_watch(l, c, EPOLLOUT);
		return;
	}
	c->io_errno = err;
	load_handshake_fail(l, c, SSL_ERROR_SYSCALL);
}

static void
load_do_handshake(struct load *l, struct load_conn *c)
{
	int r, e;

	if (c->ssl == NULL) {
		load_plain_connected(l, c);
		return;
	}
	ERR_clear_error();
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		load_handshake_done(l, c);
		return;
	}
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		load_watch(l, c, EPOLLIN);
	else if (e == SSL_ERROR_WANT_WRITE)
		load_watch(l, c, EPOLLOUT);
	else
		load_handshake_fail(l, c, e);
}

/* load_io_write writes like SSL_write, over TLS or plain TCP; when it
 * returns 0 or less, |*e| is what SSL_get_error would say. */
static int
load_io_write(struct load_conn *c, const char *p, size_t n, int *e)
{
	ssize_t w;
	int r;

	if (c->ssl != NULL) {
		ERR_clear_error();
		r = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
		if (r <= 0)
			*e = SSL_get_error(c->ssl, r);
		return r;
	}
	w = send(c->fd, p, n > INT32_MAX ? INT32_MAX : n, MSG_NOSIGNAL);
	if (w > 0)
		return (int)w;
	c->io_errno = errno;
	*e = errno == EAGAIN || errno == EINTR ? SSL_ERROR_WANT_WRITE : SSL_ERROR_SYSCALL;
	return -1;
}

/* load_io_read reads into l->rbuf like SSL_read, over TLS or plain TCP:
 * plain TCP's end of stream is SSL_ERROR_ZERO_RETURN, a failed read
 * SSL_ERROR_SYSCALL with c->io_errno set. */
static int
load_io_read(struct load *l, struct load_conn *c, int *e)
{
	ssize_t n;
	int r;

	c->io_errno = 0;
	if (c->ssl != NULL) {
		ERR_clear_error();
		r = SSL_read(c->ssl, l->rbuf, (int)sizeof(l->rbuf));
		if (r <= 0)
			*e = SSL_get_error(c->ssl, r);
		return r;
	}
	n = read(c->fd, l->rbuf, sizeof(l->rbuf));
	if (n > 0)
		return (int)n;
	if (n == 0) {
		*e = SSL_ERROR_ZERO_RETURN;
		return 0;
	}
	c->io_errno = errno;
	*e = errno == EAGAIN || errno == EINTR ? SSL_ERROR_WANT_READ : SSL_ERROR_SYSCALL;
	return -1;
}

static void
load_do_send(struct load *l, struct load_conn *c)
{
	int r, e = 0;

	while (c->req_off < l->o.request_len) {
		r = load_io_write(c, l->o.request + c->req_off, l->o.request_len - c->req_off, &e);
		if (r > 0) {
			c->req_off += (size_t)r;
			continue;
		}
		if (e == SSL_ERROR_WANT_WRITE)
			load_watch(l, c, EPOLLOUT);
		else if (e == SSL_ERROR_WANT_READ)
			load_watch(l, c, EPOLLIN);
		else
			load_ssl_fail(l, c, e);
		return;
	}
	c->phase = PH_RECV;
}

/* load_reply_done ends a handshake-mode request: complete means the reply
 * reached --expect-bytes, or without it that some reply came and the
 * server then closed cleanly. */
static void
load_reply_done(struct load *l, struct load_conn *c, bool clean)
{
	bool complete = l->o.expect_set ? c->received >= l->o.expect_bytes :
	    clean && c->received > 0;

	if (!complete) {
		load_fail(l, c, ERR_EOF);
		return;
	}
	if (l->window)
		l->ok++;
	load_slot_restart(l, c);
}

/* load_response_done ends a keep-alive request. */
static void
load_response_done(struct load *l, struct load_conn *c)
{
	load_note_end(l, c);
	if (l->window)
		l->ok++;
	if (l->o.mode == MODE_RATE && c->record)
		load_hist_add(l->hist, cli_now_ns() - c->sched);
	if (c->http.close) {
		/* Not an error: the server may cap requests per connection. */
		load_slot_restart(l, c);
		return;
	}
	switch (l->o.mode) {
	case MODE_IDLE:
		c->established = true;
		l->established++;
		c->phase = PH_READY;
		load_watch(l, c, EPOLLIN);
		break;
	case MODE_RATE:
		c->phase = PH_READY;
		load_ready_push(l, c);
		load_watch(l, c, EPOLLIN);
		break;
	default:
		load_begin_request(l, c);
		break;
	}
}

/* load_consume hands read bytes to the mode; returns false once |c| has
 * moved on (reply done, failed). */
static bool
load_consume(struct load *l, struct load_conn *c, int n)
{
	uint64_t body = 0;
	size_t used = 0;
	int r;

	if (l->o.mode == MODE_HANDSHAKE) {
		c->received += (uint64_t)n;
		if (l->window)
			l->bytes += (uint64_t)n;
		if (l->o.expect_set && c->received >= l->o.expect_bytes) {
			load_reply_done(l, c, true);
			return false;
		}
		return true;
	}
	r = load_http_feed(&c->http, l->rbuf, (size_t)n, &used, &body);
	if (l->window)
		l->bytes += body;
	/* One request at a time: bytes past the response are a protocol
	 * error, as is a response we cannot frame. */
	if (r < 0 || (r > 0 && used != (size_t)n)) {
		load_fail(l, c, ERR_HTTP);
		return false;
	}
	if (r > 0) {
		load_response_done(l, c);
		return false;
	}
	return true;
}

/* load_read_end handles SSL_read's end of stream or failure |e|. */
static void
load_read_end(struct load *l, struct load_conn *c, int r, int e, int saved_errno)
{
	bool eof = e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && (r == 0 || saved_errno == 0));

	ERR_clear_error();
	if (c->phase == PH_RECV && l->o.mode == MODE_HANDSHAKE && (eof || e == SSL_ERROR_SYSCALL)) {
		load_reply_done(l, c, eof);
		return;
	}
	/* A keep-alive connection ended between requests: reopen it, but
	 * count it, since the benchmark wanted it kept. */
	load_fail(l, c, e == SSL_ERROR_SSL ? ERR_TLS : ERR_EOF);
}

static void
load_do_read(struct load *l, struct load_conn *c)
{
	for (unsigned rounds = 0; rounds < LOAD_ROUNDS; rounds++) {
		int r, e = 0;

		r = load_io_read(l, c, &e);
		if (r > 0) {
			c->progress = l->now;
			if (c->phase != PH_RECV) {
				/* Data nobody asked for. */
				load_fail(l, c, ERR_HTTP);
				return;
			}
			if (!load_consume(l, c, r))
				return;
			continue;
		}
		if (e == SSL_ERROR_WANT_READ) {
			load_watch(l, c, EPOLLIN);
			return;
		}
		if (e == SSL_ERROR_WANT_WRITE) {
			load_watch(l, c, EPOLLOUT);
			return;
		}
		load_read_end(l, c, r, e, c->io_errno);
		return;
	}
	load_again(l, c);
}

/* --- the socket BIO ------------------------------------------------ */

/* BoringSSL asks its BIO for each record's 5-byte header and then for its
 * body, which with a plain socket BIO is two read(2) calls per record and
 * a dozen per handshake. This BIO reads whatever the socket has and keeps
 * the rest for the next ask. The rest is held only while there is one, so
 * quiet connections hold nothing. Leftover bytes do not wake epoll, but
 * every path that waits on a read runs SSL_read until WANT_READ first. */
static int
load_bio_read(BIO *b, char *out, int len)
{
	struct load_conn *c = BIO_get_data(b);
	size_t want = (size_t)len;
	ssize_t n;

	BIO_clear_retry_flags(b);
	if (c->ra_len > 0) {
		size_t take = want < c->ra_len ? want : c->ra_len;

		memcpy(out, c->ra + c->ra_off, take);
		c->ra_off += take;
		c->ra_len -= take;
		if (c->ra_len == 0) {
			free(c->ra);
			c->ra = NULL;
		}
		return (int)take;
	}
	n = read(c->fd, load_scratch, sizeof(load_scratch));
	if (n <= 0) {
		c->io_errno = n < 0 ? errno : 0;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			BIO_set_retry_read(b);
		return (int)n;
	}
	if ((size_t)n > want) {
		if ((c->ra = malloc((size_t)n - want)) == NULL) {
			c->io_errno = ENOMEM;
			return -1;
		}
		memcpy(c->ra, load_scratch + want, (size_t)n - want);
		c->ra_off = 0;
		c->ra_len = (size_t)n - want;
		n = (ssize_t)want;
	}
	memcpy(out, load_scratch, (size_t)n);
	return (int)n;
}

static int
load_bio_write(BIO *b, const char *in, int len)
{
	struct load_conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = send(c->fd, in, (size_t)len, MSG_NOSIGNAL);
	if (n < 0) {
		c->io_errno = errno;
		if (errno == EAGAIN || errno == EINTR)
			BIO_set_retry_write(b);
	}
	return (int)n;
}

static long
load_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	/* Writes go straight to the socket: nothing to flush. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
load_bio_setup(void)
{
	load_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
	    "tlsproxy-load socket");
	return load_bio_method != NULL &&
	    BIO_meth_set_read(load_bio_method, load_bio_read) &&
	    BIO_meth_set_write(load_bio_method, load_bio_write) &&
	    BIO_meth_set_ctrl(load_bio_method, load_bio_ctrl) ? 0 : -1;
}

/* load_conn_tls puts a new SSL on the socket. */
static int
load_conn_tls(struct load *l, struct load_conn *c)
{
	const struct load_opts *o = &l->o;
	BIO *bio;

	if ((c->ssl = SSL_new(l->ctx)) == NULL || (bio = BIO_new(load_bio_method)) == NULL)
		return -1;
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);
	SSL_set_bio(c->ssl, bio, bio);
	SSL_set_connect_state(c->ssl);
	if (!SSL_set_tlsext_host_name(c->ssl, o->servername) ||
	    (o->ech_config != NULL &&
	    !SSL_set1_ech_config_list(c->ssl, o->ech_config, o->ech_config_len)) ||
	    (l->session != NULL && !SSL_set_session(c->ssl, l->session)))
		return -1;
	return 0;
}

/* load_conn_open starts a connection in a free slot. The handshake starts
 * at once, without waiting for the connect to be reported: on loopback it
 * is usually done already, and if not the ClientHello waits on EAGAIN like
 * any write. A refused connect then surfaces in the handshake, where
 * load_handshake_fail counts it as err_connect. */
static void
load_conn_open(struct load *l, struct load_conn *c)
{
	const struct addrinfo *ai = l->addrs;
	int one = 1;

	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		l->err[ERR_CONNECT]++;
		load_note_end(l, c);
		return;
	}
	l->live++;
	c->phase = PH_HANDSHAKE;
	c->progress = l->now;
	c->established = false;
	/* Requests are single small writes: never hold them for Nagle. */
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
		load_fail(l, c, ERR_CONNECT);
		return;
	}
	if (!l->o.plain && load_conn_tls(l, c) != 0) {
		load_ssl_fail(l, c, SSL_ERROR_SSL);
		return;
	}
	/* Run from the loop, not from here: a server quick enough to answer
	 * at once would otherwise have each finished request open the next
	 * one a stack frame deeper. */
	load_again(l, c);
}

/* load_conn_run moves a connection as far as it goes without waiting. */
static void
load_conn_run(struct load *l, struct load_conn *c)
{
	if (c->phase == PH_HANDSHAKE)
		load_do_handshake(l, c);
	if (c->phase == PH_SEND)
		load_do_send(l, c);
	if (c->phase == PH_RECV || c->phase == PH_READY)
		load_do_read(l, c);
}

/* --- the loop ------------------------------------------------------ */

/* load_open_slot opens slot |c| if the mode allows a new connection now. */
static void
load_open_slot(struct load *l, struct load_conn *c)
{
	if (l->o.mode == MODE_HANDSHAKE) {
		if (!load_may_start(l))
			return;
		load_note_start(l, c);
	} else if (l->stopping || l->holding) {
		return;
	}
	load_conn_open(l, c);
}

/* load_refill opens slots never used yet and, with |retry|, slots whose
 * connection failed. Only idle mode limits how many are opening at once
 * (--parallel); the others start all --conns together. */
static void
load_refill(struct load *l, bool retry)
{
	unsigned limit = l->o.mode == MODE_IDLE ? l->o.parallel : l->o.conns;

	if (l->priming)
		return;
	while (l->cursor < l->o.conns && l->live - l->established < limit &&
	    !l->stopping && !l->holding)
		load_open_slot(l, &l->conns[l->cursor++]);
	for (unsigned i = 0; retry && i < l->cursor && l->live - l->established < limit; i++) {
		if (l->conns[i].phase == PH_FREE)
			load_open_slot(l, &l->conns[i]);
	}
}

/* load_tick times out stalled connections and retries failed slots. */
static void
load_tick(struct load *l)
{
	uint64_t limit = (uint64_t)(l->o.timeout * 1e9);

	for (unsigned i = 0; i < l->cursor; i++) {
		struct load_conn *c = &l->conns[i];

		if (c->phase != PH_FREE && c->phase != PH_READY && l->now - c->progress > limit)
			load_fail(l, c, ERR_TIMEOUT);
	}
	load_refill(l, true);
}

static void
load_on_signal(struct load *l)
{
	struct signalfd_siginfo si;

	while (read(l->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		;
	l->interrupted = true;
}

/* load_poll waits for events until |until| (ns) at most, then runs what
 * is ready: connections with events, those that yielded, and the tick. */
static void
load_poll(struct load *l, uint64_t until)
{
	struct epoll_event evs[256];
	struct timespec ts = { 0, 0 };
	struct load_conn *list;
	uint64_t now = cli_now_ns(), wake = until < l->next_tick ? until : l->next_tick;
	int n;

	if (l->again == NULL && wake > now) {
		ts.tv_sec = (time_t)((wake - now) / 1000000000u);
		ts.tv_nsec = (long)((wake - now) % 1000000000u);
	}
	n = epoll_pwait2(l->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), &ts, NULL);
	l->now = cli_now_ns();
	for (int i = 0; i < n; i++) {
		struct load_conn *c = evs[i].data.ptr;

		if (evs[i].data.ptr == &l->sigfd)
			load_on_signal(l);
		else if (c->phase != PH_FREE)
			load_conn_run(l, c);
	}
	/* Take the list whole: connections that yield again go on a fresh
	 * one, for the next round. */
	list = l->again;
	l->again = NULL;
	for (struct load_conn *c = list, *next; c != NULL; c = next) {
		next = c->again_next;
		c->in_again = false;
		if (c->phase != PH_FREE)
			load_conn_run(l, c);
	}
	if (l->now >= l->next_tick) {
		l->next_tick = l->now + LOAD_TICK_NS;
		load_tick(l);
	}
}

static void
load_window_open(struct load *l)
{
	l->window = true;
	l->t_win = cli_now_ns();
	load_cpu_snap(l, &l->cpu0);
}

static void
load_window_close(struct load *l)
{
	load_cpu_snap(l, &l->cpu1);
	if (l->t_end == 0)
		l->t_end = l->cpu1.t;
	l->window = false;
	l->stopping = true;
}

/* load_prime makes one full handshake before anything is timed, so that
 * resumption modes have a session to offer from the first request on. */
static int
load_prime(struct load *l)
{
	uint64_t deadline = cli_now_ns() + (uint64_t)(l->o.timeout * 1e9);
	struct load_conn *c = &l->conns[0];

	l->priming = true;
	load_note_start(l, c);
	load_conn_open(l, c);
	/* Its reply carries TLS 1.3 tickets: run it to the end. */
	while (c->phase != PH_FREE && !l->interrupted && cli_now_ns() < deadline)
		load_poll(l, deadline);
	load_conn_close(l, c);
	l->priming = false;
	l->next_tick = 0;
	if (l->session != NULL)
		return 0;
	fprintf(stderr, PROG ": no session to resume from the first connection\n");
	return -1;
}

/* load_run_closed runs handshake and bulk: every slot busy all the time,
 * a warm-up, then the window until the time or the count runs out. */
static void
load_run_closed(struct load *l)
{
	uint64_t start = cli_now_ns();
	uint64_t win_at = start + (uint64_t)(l->o.warmup * 1e9);
	uint64_t end = win_at + (uint64_t)(l->o.duration * 1e9);

	while (!l->interrupted) {
		uint64_t now = cli_now_ns();

		if (!l->window && now >= win_at)
			load_window_open(l);
		/* First pass only; later the tick refills. */
		if (l->cursor == 0)
			load_refill(l, false);
		if (l->window && (now >= end ||
		    (l->started >= l->o.max_requests && l->inflight == 0)))
			break;
		load_poll(l, l->window ? end : win_at);
	}
	if (!l->window)
		load_window_open(l);
	load_window_close(l);
}

static int
load_write_ready(const struct load *l)
{
	char tmp[4096];
	FILE *f;

	if (l->o.ready_file == NULL)
		return 0;
	/* Written aside and renamed, so a reader never sees half of it. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", l->o.ready_file);
	if ((f = fopen(tmp, "w")) == NULL) {
		fprintf(stderr, PROG ": %s: %s\n", tmp, strerror(errno));
		return -1;
	}
	fprintf(f, "ready %u\n", l->established);
	if (fclose(f) != 0 || rename(tmp, l->o.ready_file) != 0) {
		fprintf(stderr, PROG ": %s: %s\n", l->o.ready_file, strerror(errno));
		return -1;
	}
	return 0;
}

/* load_run_idle opens the connections (the window is that opening),
 * reports ready, then holds them quietly. */
static int
load_run_idle(struct load *l)
{
	uint64_t end, hold_end;

	load_window_open(l);
	end = l->t_win + (uint64_t)(l->o.duration * 1e9);
	load_refill(l, false);
	while (!l->interrupted && l->established < l->o.conns && cli_now_ns() < end)
		load_poll(l, end);
	l->ok = l->established;
	l->ready_count = l->established;
	load_window_close(l);
	l->stopping = false;
	/* Slots still opening are given up: the count is what was ready. */
	for (unsigned i = 0; i < l->o.conns; i++) {
		if (l->conns[i].phase != PH_FREE && !l->conns[i].established)
			load_conn_close(l, &l->conns[i]);
	}
	l->holding = true;
	if (load_write_ready(l) != 0)
		return -1;
	hold_end = cli_now_ns() + (uint64_t)(l->o.hold * 1e9);
	while (!l->interrupted && cli_now_ns() < hold_end)
		load_poll(l, hold_end);
	return 0;
}

static uint64_t
load_sched_time(const struct load *l, uint64_t idx)
{
	return l->t0 + idx * l->interval;
}

/* load_dispatch sends every request whose time has come while there is a
 * connection free for it; the rest wait, and their latency keeps running
 * from their scheduled time. */
static void
load_dispatch(struct load *l, uint64_t now)
{
	while (l->nready > 0 && l->next_idx < l->sched_end &&
	    load_sched_time(l, l->next_idx) <= now) {
		uint64_t t = load_sched_time(l, l->next_idx);
		struct load_conn *c = l->ready[l->nready - 1];

		if (t >= l->t_win && l->window && l->started >= l->o.max_requests) {
			l->sched_end = l->next_idx;
			l->count_limited = true;
			break;
		}
		load_ready_remove(l, c);
		/* The window and --max-requests count scheduled times, not
		 * when a late request finally left. */
		c->record = l->window && t >= l->t_win;
		c->sched = t;
		c->progress = now;
		l->next_idx++;
		l->inflight++;
		c->busy = true;
		if (c->record)
			l->started++;
		load_http_reset(&c->http);
		c->req_off = 0;
		c->phase = PH_SEND;
		load_conn_run(l, c);
	}
}

/* load_rate_wake is when the loop must look at the schedule again. */
static uint64_t
load_rate_wake(const struct load *l, uint64_t limit)
{
	uint64_t t;

	if (l->nready == 0 || l->next_idx >= l->sched_end)
		return limit;
	t = load_sched_time(l, l->next_idx);
	return t < limit ? t : limit;
}

/* load_run_rate: connect everything, then the schedule runs through the
 * warm-up and the window; responses still due are awaited a little. */
static void
load_run_rate(struct load *l)
{
	uint64_t setup_end = cli_now_ns() + (uint64_t)(l->o.timeout * 1e9);
	uint64_t win_at, end, drain_end;

	load_refill(l, false);
	while (!l->interrupted && l->nready < l->o.conns && cli_now_ns() < setup_end)
		load_poll(l, setup_end);
	l->t0 = cli_now_ns();
	l->interval = (uint64_t)(1e9 / l->o.rate);
	if (l->interval == 0)
		l->interval = 1;
	win_at = l->t0 + (uint64_t)(l->o.warmup * 1e9);
	end = win_at + (uint64_t)(l->o.duration * 1e9);
	/* Scheduling stops at the end of the window. */
	l->sched_end = (end - l->t0 + l->interval - 1) / l->interval;
	while (!l->interrupted) {
		uint64_t now = cli_now_ns();

		if (!l->window && now >= win_at) {
			load_window_open(l);
			l->t_win = win_at; /* the schedule's boundary, to the ns */
		}
		if (now >= end || l->count_limited)
			break;
		load_dispatch(l, now);
		load_poll(l, load_rate_wake(l, l->window ? end : win_at));
	}
	if (!l->window)
		load_window_open(l);
	/* A count-limited window ends with its schedule, not the clock. */
	if (l->count_limited)
		l->t_end = load_sched_time(l, l->sched_end);
	if (l->t_end != 0 && l->t_end < l->t_win)
		l->t_end = l->t_win;
	load_window_close(l);
	drain_end = cli_now_ns() + LOAD_DRAIN_NS;
	while (!l->interrupted && l->inflight > 0 && cli_now_ns() < drain_end)
		load_poll(l, drain_end);
	/* Requests of the window that never got an answer, sent or not. */
	l->unfinished = l->inflight + (l->sched_end - l->next_idx);
}

/* --- setup and report ---------------------------------------------- */

static int
load_new_session(SSL *ssl, SSL_SESSION *session)
{
	struct load *l = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

	/* The newest session, tickets and session IDs alike: a server may
	 * drop a session from its cache at any time (evicted, expired), and
	 * the full handshake that follows gives the one to offer next. */
	SSL_SESSION_free(l->session);
	l->session = session;
	return 1;
}

/* load_accept_any stands in for verification without --cafile: the
 * buffers-only method then never parses certificates into X509 at all. */
static enum ssl_verify_result_t
load_accept_any(SSL *ssl, uint8_t *alert)
{
	(void)ssl;
	(void)alert;
	return ssl_verify_ok;
}

static int
load_set_groups(const struct load_opts *o, SSL_CTX *ctx)
{
#ifdef SSL_GROUP_X25519_MLKEM768
	return SSL_CTX_set1_group_ids(ctx, o->groups, o->num_groups) == 1 ? 0 : -1;
#else
	return SSL_CTX_set1_curves_list(ctx, o->groups_arg) == 1 ? 0 : -1;
#endif
}

static SSL_CTX *
load_ctx(struct load *l)
{
	const struct load_opts *o = &l->o;
	SSL_CTX *ctx = SSL_CTX_new(o->cafile != NULL ? TLS_method() : TLS_with_buffers_method());

	if (ctx == NULL)
		return NULL;
	if ((o->version != 0 && (!SSL_CTX_set_min_proto_version(ctx, o->version) ||
	    !SSL_CTX_set_max_proto_version(ctx, o->version))) || load_set_groups(o, ctx) != 0)
		goto err;
	if (o->cafile != NULL) {
		if (!SSL_CTX_load_verify_locations(ctx, o->cafile, NULL)) {
			fprintf(stderr, PROG ": --cafile %s: cannot load\n", o->cafile);
			goto err;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_custom_verify(ctx, SSL_VERIFY_PEER, load_accept_any);
	}
	SSL_CTX_set_app_data(ctx, l);
	if (o->resume == RESUME_NONE) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_sess_set_new_cb(ctx, load_new_session);
	}
	/* Session IDs only: a ticket would be preferred over the ID. */
	if (o->resume == RESUME_SESSION_ID)
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
err:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* load_setup resolves the target and makes the context, the epoll set
 * with its signal descriptor, and the fixed per-connection state. */
static int
load_setup(struct load *l)
{
	struct addrinfo hints;
	struct epoll_event e;
	sigset_t sigs;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((rc = getaddrinfo(l->o.host, l->o.port, &hints, &l->addrs)) != 0) {
		fprintf(stderr, PROG ": %s: %s\n", l->o.host, gai_strerror(rc));
		return -1;
	}
	if (!l->o.plain && (load_bio_setup() != 0 || (l->ctx = load_ctx(l)) == NULL)) {
		fprintf(stderr, PROG ": cannot set up TLS with these options\n");
		return -1;
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	l->conns = calloc(l->o.conns, sizeof(*l->conns));
	l->ready = calloc(l->o.conns, sizeof(*l->ready));
	l->hist = calloc(1, sizeof(*l->hist));
	memset(&e, 0, sizeof(e));
	e.events = EPOLLIN;
	e.data.ptr = &l->sigfd;
	if (l->epfd < 0 || l->sigfd < 0 || l->conns == NULL || l->ready == NULL ||
	    l->hist == NULL || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->sigfd, &e) != 0) {
		perror(PROG);
		return -1;
	}
	for (unsigned i = 0; i < l->o.conns; i++)
		l->conns[i].fd = -1;
	return 0;
}

static const char *const load_mode_names[] = { "handshake", "bulk", "idle", "rate" };
static const char *const load_units[] = { "conn/s", "MB/s", "conns", "us" };

static uint64_t
load_errors(const struct load *l)
{
	uint64_t n = 0;

	for (int k = 0; k < ERR_KINDS; k++)
		n += l->err[k];
	return n;
}

static double
load_elapsed(const struct load *l)
{
	return l->t_end > l->t_win ? (double)(l->t_end - l->t_win) / 1e9 : 0;
}

/* load_value is the mode's headline number. */
static double
load_value(const struct load *l)
{
	double el = load_elapsed(l);

	switch (l->o.mode) {
	case MODE_HANDSHAKE:
		return el > 0 ? (double)l->ok / el : 0;
	case MODE_BULK:
		return el > 0 ? (double)l->bytes / el / 1e6 : 0;
	case MODE_IDLE:
		return l->ready_count;
	case MODE_RATE:
		return (double)load_hist_pct(l->hist, 50) / 1e3;
	}
	return 0;
}

static double
load_achieved(const struct load *l)
{
	double el = load_elapsed(l);

	return el > 0 ? (double)l->hist->count / el : 0;
}

/* load_verdict says whether the run measured what it was asked to:
 * "ok", or why not. */
static const char *
load_verdict(const struct load *l)
{
	if (load_errors(l) > l->o.max_errors)
		return "errors";
	if (l->cpu1.proxy < 0 || l->cpu0.proxy < 0)
		return "cpu_pid_gone";
	switch (l->o.mode) {
	case MODE_HANDSHAKE:
		if (l->ok == 0)
			return "no_requests";
		/* A server's cache may miss a session offered the moment it
		 * was issued (OpenSSL's, under load, a percent or two); the
		 * run still measures resumption, and says how much. */
		if (l->o.resume != RESUME_NONE && l->resumed * 100 < l->handshakes * 95)
			return "not_resumed";
		break;
	case MODE_BULK:
		if (l->bytes == 0)
			return "no_bytes";
		break;
	case MODE_IDLE:
		if (l->ready_count < l->o.conns)
			return "not_established";
		break;
	case MODE_RATE:
		if (l->hist->count == 0)
			return "no_requests";
		if (load_achieved(l) < 0.95 * l->o.rate)
			return "rate_not_achieved";
		break;
	}
	return "ok";
}

static void
load_print_mode(const struct load *l)
{
	const struct load_hist *h = l->hist;

	switch (l->o.mode) {
	case MODE_HANDSHAKE:
		printf(" handshakes=%" PRIu64 " resumed=%.4f bytes=%" PRIu64, l->handshakes,
		    l->handshakes > 0 ? (double)l->resumed / (double)l->handshakes : 0.0, l->bytes);
		break;
	case MODE_BULK:
		printf(" bytes=%" PRIu64, l->bytes);
		break;
	case MODE_IDLE:
		printf(" established=%u dropped=%u", l->ready_count, l->dropped);
		break;
	case MODE_RATE:
		printf(" rate=%.1f achieved=%.1f samples=%" PRIu64 " unfinished=%" PRIu64
		    " p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f",
		    l->o.rate, load_achieved(l), h->count, l->unfinished,
		    (double)load_hist_pct(h, 50) / 1e3, (double)load_hist_pct(h, 90) / 1e3,
		    (double)load_hist_pct(h, 99) / 1e3, (double)load_hist_pct(h, 99.9) / 1e3,
		    (double)h->max / 1e3, h->count > 0 ? (double)h->sum / (double)h->count / 1e3 : 0);
		break;
	}
}

static void
load_print_cpu(const struct load *l, double value)
{
	double wall = (double)(l->cpu1.t - l->cpu0.t) / 1e9;
	double client = l->cpu1.client - l->cpu0.client;
	double proxy = l->cpu1.proxy - l->cpu0.proxy;

	if (wall <= 0)
		wall = 1e-9;
	printf(" client_cpu=%.3f", client / wall);
	if (l->ok > 0)
		printf(" client_us_per_op=%.1f", client / (double)l->ok * 1e6);
	else
		printf(" client_us_per_op=-");
	if (l->o.num_pids == 0 || l->cpu0.proxy < 0 || l->cpu1.proxy < 0)
		printf(" proxy_cpu=- per_proxy_cpu_s=-");
	else if (proxy <= 0)
		printf(" proxy_cpu=0.000 per_proxy_cpu_s=-");
	else
		printf(" proxy_cpu=%.3f per_proxy_cpu_s=%.1f", proxy / wall, value / (proxy / wall));
}

static int
load_report(const struct load *l)
{
	const char *verdict = load_verdict(l);
	double value = load_value(l);

	printf("mode=%s tls=%s cipher=%s group=%s ech=%s conns=%u ok=%" PRIu64
	    " errors=%" PRIu64, load_mode_names[l->o.mode], l->first_seen ? l->tls : "-",
	    l->first_seen ? l->cipher : "-", l->first_seen ? l->group : "-",
	    l->first_seen ? l->ech : "-", l->o.conns, l->ok, load_errors(l));
	for (int k = 0; k < ERR_KINDS; k++)
		printf(" %s=%" PRIu64, load_err_names[k], l->err[k]);
	printf(" elapsed_s=%.3f value=%.1f unit=%s", load_elapsed(l), value, load_units[l->o.mode]);
	load_print_mode(l);
	load_print_cpu(l, value);
	printf(" status=%s\n", verdict);
	fflush(stdout);
	return strcmp(verdict, "ok") == 0 ? 0 : 1;
}

static void
load_cleanup(struct load *l)
{
	for (unsigned i = 0; l->conns != NULL && i < l->o.conns; i++)
		load_conn_close(l, &l->conns[i]);
	free(l->conns);
	free(l->ready);
	free(l->hist);
	SSL_SESSION_free(l->session);
	SSL_CTX_free(l->ctx);
	if (l->addrs != NULL)
		freeaddrinfo(l->addrs);
	free(l->o.request);
	free(l->o.ech_config);
	BIO_meth_free(load_bio_method);
}

int
main(int argc, char **argv)
{
	static struct load l;
	int status;

	if (load_parse_args(&l.o, argc, argv) != 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	cli_raise_nofile();
	/* The rate schedule wants wakeups to the microsecond, not the
	 * default 50 us of slack. */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	if (load_setup(&l) != 0)
		return 2;
	for (unsigned i = 0; i < l.o.num_pids; i++) {
		if (load_proc_cpu(l.o.pids[i]) < 0) {
			fprintf(stderr, PROG ": --cpu-pid %d: no such process\n", l.o.pids[i]);
			return 2;
		}
	}
	l.now = cli_now_ns();
	if (l.o.resume != RESUME_NONE && load_prime(&l) != 0) {
		load_window_open(&l);
		load_window_close(&l);
	} else if (l.o.mode == MODE_IDLE) {
		if (load_run_idle(&l) != 0)
			return 1;
	} else if (l.o.mode == MODE_RATE) {
		load_run_rate(&l);
	} else {
		load_run_closed(&l);
	}
	status = load_report(&l);
	load_cleanup(&l);
	return status;
}
