/* upgrade_cli.c: `tlsproxy --upgrade`, which asks the running daemon
 * through its admin endpoint to upgrade and waits for the outcome. */
#include "upgrade_cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "addr.h"
#include "clock.h"
#include "config.h"

/* Replies of the admin endpoint are small; /status with many contexts
 * stays well under this. */
#define CLI_REPLY_MAX (4 << 20)
#define CLI_POLL_MS 200

/* cli_http sends one request to |a| and reads the whole reply. Returns
 * the HTTP status with the body in |*body| (caller frees), or -1 with the
 * reason on stderr. */
static int
cli_http(const struct addr *a, const char *method, const char *path,
    char **body)
{
	struct timeval tv = { 10, 0 };
	char req[256], *buf = NULL, *p;
	size_t len = 0, cap = 0;
	int fd, status = -1;
	ssize_t n;

	*body = NULL;
	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0)
		goto fail;
	n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: tlsproxy\r\n"
	    "Content-Length: 0\r\nConnection: close\r\n\r\n", method, path);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
		goto fail;
	for (;;) {
		if (cap - len < 4096) {
			char *nb;

			if (cap >= CLI_REPLY_MAX || (nb = realloc(buf, cap +
			    65536 + 1)) == NULL) {
				errno = EMSGSIZE;
				goto fail;
			}
			buf = nb;
			cap += 65536;
		}
		n = recv(fd, buf + len, cap - len, 0);
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (sscanf(buf, "HTTP/1.%*c %d", &status) != 1 ||
	    (p = strstr(buf, "\r\n\r\n")) == NULL) {
		fprintf(stderr, "tlsproxy: the admin endpoint sent a malformed "
		    "reply\n");
		status = -1;
	} else if ((*body = strdup(p + 4)) == NULL) {
		status = -1;
	}
	free(buf);
	close(fd);
	return status;
fail:
	fprintf(stderr, "tlsproxy: admin endpoint: %s %s: %s\n", method, path,
	    strerror(errno));
	free(buf);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* cli_json_num returns the number after "|key|": in |json|, or -1. */
static long
cli_json_num(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	if ((p = strstr(json, pat)) == NULL)
		return -1;
	return strtol(p + strlen(pat), NULL, 10);
}

/* cli_json_str copies the string after "|key|": in |json| (escapes kept
 * as they are: it is only shown). */
static void
cli_json_str(const char *json, const char *key, char *out, size_t len)
{
	char pat[64];
	const char *p;
	size_t i = 0;

	out[0] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	if ((p = strstr(json, pat)) == NULL)
		return;
	for (p += strlen(pat); *p != '\0' && *p != '"' && i + 1 < len; p++) {
		if (*p == '\\' && p[1] != '\0')
			p++;
		out[i++] = *p;
	}
	out[i] = '\0';
}

/* cli_status reads the daemon's pid and failed-upgrade count. */
static int
cli_status(const struct addr *a, long *pid, long *failed, char *last,
    size_t last_len)
{
	char *body;
	int st = cli_http(a, "GET", "/status", &body);

	if (st != 200) {
		if (st > 0)
			fprintf(stderr, "tlsproxy: GET /status: HTTP %d\n", st);
		free(body);
		return -1;
	}
	*pid = cli_json_num(body, "pid");
	*failed = cli_json_num(body, "upgrades_failed");
	if (last != NULL)
		cli_json_str(body, "last_upgrade", last, last_len);
	free(body);
	return *pid > 0 ? 0 : -1;
}

int
upgrade_request(const struct config *cfg)
{
	const struct addr *a = &cfg->global.admin_addr;
	uint64_t deadline;
	long pid, failed, now_pid, now_failed;
	char *body, last[512];
	int st;

	if (cfg->global.admin == NULL) {
		fprintf(stderr, "tlsproxy: --upgrade talks to the admin endpoint, "
		    "and %s sets no [global] admin; send SIGUSR2 to the main "
		    "process instead\n", cfg->path);
		return 1;
	}
	if (cli_status(a, &pid, &failed, NULL, 0) != 0) {
		fprintf(stderr, "tlsproxy: no daemon answers on %s\n",
		    cfg->global.admin);
		return 1;
	}
	st = cli_http(a, "POST", "/upgrade", &body);
	if (st != 202) {
		if (st > 0)
			fprintf(stderr, "tlsproxy: upgrade refused: %s",
			    body != NULL ? body : "\n");
		free(body);
		return 1;
	}
	free(body);
	printf("tlsproxy: process %ld is upgrading\n", pid);
	fflush(stdout);
	deadline = clock_mono_ms() + cfg->global.upgrade_timeout_ms + 5000;
	while (clock_mono_ms() < deadline) {
		usleep(CLI_POLL_MS * 1000);
		if (cli_status(a, &now_pid, &now_failed, last,
		    sizeof(last)) != 0)
			continue;
		if (now_pid != pid) {
			printf("tlsproxy: process %ld took over; process %ld "
			    "drains\n", now_pid, pid);
			return 0;
		}
		if (now_failed > failed) {
			fprintf(stderr, "tlsproxy: %s\n", last);
			return 1;
		}
	}
	fprintf(stderr, "tlsproxy: no outcome within %llums; see the "
	    "daemon's log\n", (unsigned long long)cfg->global.upgrade_timeout_ms +
	    5000);
	return 1;
}
