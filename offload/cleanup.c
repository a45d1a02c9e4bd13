/* Signal-time removal of swap files: the one global of offload (see offload/cleanup.h).
 *
 * DESIGN. Slots are written by offload_cleanup_add under a mutex and published by setting
 * `state` last (release); the handler only reads slots whose state says "file" or "dir", and
 * uses nothing but unlink, rmdir, sigaction and raise. A slot being removed is unpublished
 * first, so the handler never sees a half-written path. */
#define _GNU_SOURCE
#include "offload/cleanup.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

enum { SLOT_FREE = 0, SLOT_FILE = 1, SLOT_DIR = 2 };

static struct {
	pthread_mutex_t lock;
	bool installed;
	struct sigaction prev_int, prev_term;
	atomic_int state[OFFLOAD_CLEANUP_MAX];
	unsigned seq[OFFLOAD_CLEANUP_MAX]; /* registration order, for deepest-folder-first */
	unsigned next_seq;
	char path[OFFLOAD_CLEANUP_MAX][OFFLOAD_CLEANUP_PATH_MAX];
} g_cleanup = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void
cleanup_handler(int sig)
{
	int saved = errno;
	for (unsigned i = 0; i < OFFLOAD_CLEANUP_MAX; i++)
		if (atomic_load_explicit(&g_cleanup.state[i], memory_order_acquire) == SLOT_FILE)
			unlink(g_cleanup.path[i]);
	/* Folders in reverse registration order: rank folders before run folders. */
	for (;;) {
		int best = -1;
		for (unsigned i = 0; i < OFFLOAD_CLEANUP_MAX; i++)
			if (atomic_load_explicit(&g_cleanup.state[i], memory_order_acquire) ==
			            SLOT_DIR &&
			    (best < 0 || g_cleanup.seq[i] > g_cleanup.seq[best]))
				best = (int)i;
		if (best < 0)
			break;
		rmdir(g_cleanup.path[best]);
		atomic_store_explicit(&g_cleanup.state[best], SLOT_FREE, memory_order_release);
	}
	sigaction(SIGINT, &g_cleanup.prev_int, NULL);
	sigaction(SIGTERM, &g_cleanup.prev_term, NULL);
	errno = saved;
	raise(sig);
}

static int
install_locked(void)
{
	if (g_cleanup.installed)
		return 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cleanup_handler;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGINT);
	sigaddset(&sa.sa_mask, SIGTERM);
	if (sigaction(SIGINT, &sa, &g_cleanup.prev_int))
		return -errno;
	if (sigaction(SIGTERM, &sa, &g_cleanup.prev_term)) {
		int e = -errno;
		sigaction(SIGINT, &g_cleanup.prev_int, NULL);
		return e;
	}
	g_cleanup.installed = true;
	return 0;
}

int
offload_cleanup_add(const char *path, bool is_dir)
{
	size_t n = strlen(path);
	if (n >= OFFLOAD_CLEANUP_PATH_MAX)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&g_cleanup.lock);
	int ret = install_locked();
	if (ret)
		goto out;
	ret = -ENOSPC;
	for (unsigned i = 0; i < OFFLOAD_CLEANUP_MAX; i++) {
		if (atomic_load_explicit(&g_cleanup.state[i], memory_order_relaxed) != SLOT_FREE)
			continue;
		memcpy(g_cleanup.path[i], path, n + 1);
		g_cleanup.seq[i] = ++g_cleanup.next_seq;
		atomic_store_explicit(&g_cleanup.state[i], is_dir ? SLOT_DIR : SLOT_FILE,
		                      memory_order_release);
		ret = (int)i;
		break;
	}
out:
	pthread_mutex_unlock(&g_cleanup.lock);
	return ret;
}

void
offload_cleanup_remove(int slot)
{
	if (slot < 0 || slot >= OFFLOAD_CLEANUP_MAX)
		return;
	pthread_mutex_lock(&g_cleanup.lock);
	atomic_store_explicit(&g_cleanup.state[slot], SLOT_FREE, memory_order_release);
	pthread_mutex_unlock(&g_cleanup.lock);
}
