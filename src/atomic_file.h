/* atomic_file.h: replace a file so that readers (and a crash) see either
 * the old contents or the new, never a half-written file: certificates
 * and private keys are written this way. */
#ifndef TLSPROXY_ATOMIC_FILE_H
#define TLSPROXY_ATOMIC_FILE_H

#include <stddef.h>
#include <sys/types.h>

/* atomic_file_write writes |len| bytes of |data| to a new temporary file
 * in |path|'s directory (created with O_EXCL and then given exactly
 * |mode|, whatever the umask), fsyncs it, renames it over |path| and
 * fsyncs the directory. Returns 0, or -1 with errno set and a message
 * naming the file and strerror() in |err|. On every failure before the
 * rename, |path| is untouched and the temporary file is removed; only
 * the final directory fsync can fail after |path| has been replaced
 * (the message says so). A symbolic link at |path| is replaced itself,
 * not followed. */
int atomic_file_write(const char *path, const void *data, size_t len,
    mode_t mode, char *err, size_t err_len);

#endif
