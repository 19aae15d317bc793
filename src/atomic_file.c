/* atomic_file.c: write-to-temporary, fsync, rename, fsync the directory. */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

/* How many temporary names are tried before giving up on EEXIST. */
#define ATOMIC_TRIES 16

int
atomic_file_write(const char *path, const void *data, size_t len,
    mode_t mode, char *err, size_t err_len)
{
	char dir[PATH_MAX], tmp[PATH_MAX];
	const char *slash = strrchr(path, '/'), *base;
	const uint8_t *p = data;
	size_t done = 0, dir_len;
	int fd = -1, dfd, e = 0;

	if (err_len > 0)
		err[0] = '\0';
	base = slash != NULL ? slash + 1 : path;
	if (*base == '\0') {
		snprintf(err, err_len, "'%s': not a file name", path);
		errno = EISDIR;
		return -1;
	}
	if (slash == NULL) {
		dir_len = 1;
		memcpy(dir, ".", 2);
	} else {
		dir_len = slash == path ? 1 : (size_t)(slash - path);
		if (dir_len >= sizeof(dir)) {
			snprintf(err, err_len, "'%s': %s", path,
			    strerror(ENAMETOOLONG));
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(dir, path, dir_len);
		dir[dir_len] = '\0';
	}
	/* The directory is opened first: a failure here changes nothing,
	 * and the final fsync then cannot fail for want of a descriptor. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		e = errno;
		snprintf(err, err_len, "cannot write '%s': directory '%s': %s",
		    path, dir, strerror(e));
		errno = e;
		return -1;
	}
	for (int i = 0; i < ATOMIC_TRIES && fd < 0; i++) {
		uint8_t r[6];

		RAND_bytes(r, sizeof(r));
		if (snprintf(tmp, sizeof(tmp), "%s/.%s.%02x%02x%02x%02x%02x%02x"
		    ".tmp", dir, base, r[0], r[1], r[2], r[3], r[4], r[5]) >=
		    (int)sizeof(tmp)) {
			e = ENAMETOOLONG;
			break;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
		    O_NOFOLLOW, mode & 07777);
		e = fd < 0 ? errno : 0;
		if (fd < 0 && e != EEXIST)
			break;
	}
	if (fd < 0) {
		snprintf(err, err_len, "cannot write '%s': cannot create a "
		    "temporary file in '%s': %s", path, dir, strerror(e));
		close(dfd);
		errno = e;
		return -1;
	}
	/* Exactly |mode|: the umask may have taken bits away. */
	if (fchmod(fd, mode & 07777) != 0)
		e = errno;
	while (e == 0 && done < len) {
		ssize_t n = write(fd, p + done, len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno != EINTR)
			e = errno;
		else if (n == 0)
			e = EIO;
	}
	if (e == 0 && fsync(fd) != 0)
		e = errno;
	/* One close whatever happens: closing the number again could close
	 * what another thread has opened since. */
	if (close(fd) != 0 && e == 0)
		e = errno;
	if (e == 0 && rename(tmp, path) != 0)
		e = errno;
	if (e != 0) {
		snprintf(err, err_len, "cannot write '%s': %s", path,
		    strerror(e));
		unlink(tmp);
		close(dfd);
		errno = e;
		return -1;
	}
	/* Some file systems cannot sync a directory at all (EINVAL): the
	 * rename is as durable there as it will get. */
	if (fsync(dfd) != 0 && errno != EINVAL) {
		e = errno;
		snprintf(err, err_len, "'%s' was replaced, but syncing its "
		    "directory '%s' failed: %s", path, dir, strerror(e));
	}
	close(dfd);
	if (e == 0)
		return 0;
	errno = e;
	return -1;
}
