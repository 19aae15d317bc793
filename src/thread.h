/* thread.h: starting threads that leave signals to the control thread. */
#ifndef TLSPROXY_THREAD_H
#define TLSPROXY_THREAD_H

#include <pthread.h>
#include <signal.h>

/* thread_create is pthread_create for a thread with every signal blocked.
 * The control thread alone takes signals: one delivered to another thread
 * while the control thread swaps its handlers (at exit) would meet the
 * default action and end the process. */
static inline int
thread_create(pthread_t *t, const pthread_attr_t *attr,
    void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(t, attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

#endif
