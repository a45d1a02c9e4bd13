/* Helpers shared by the offload tests: a swapper over temp folders, waiting for one event,
 * comparing a chunk with its pattern. */
#ifndef ZINF_TEST_OFFLOAD_COMMON_H
#define ZINF_TEST_OFFLOAD_COMMON_H

#include "test_util.h"

#include <dirent.h>
#include <sys/stat.h>

#include "offload/offload.h"

/* Waits for the one event of an operation and returns its res. */
static inline int
t_wait_one(offload_swapper_t *sw, offload_event *ev)
{
	int n = offload_poll(sw, ev, 1, 1, 60000);
	if (n != 1) {
		fprintf(stderr, "offload_poll returned %d\n", n);
		return -ETIMEDOUT;
	}
	return ev->res;
}

static inline int
t_fetch(offload_swapper_t *sw, int id, offload_tier t)
{
	offload_event ev;
	int ret = offload_chunk_fetch(sw, id, t, (uint64_t)id);
	return ret ? ret : t_wait_one(sw, &ev);
}

static inline int
t_evict(offload_swapper_t *sw, int id, offload_tier t)
{
	offload_event ev;
	int ret = offload_chunk_evict(sw, id, t, (uint64_t)id);
	return ret ? ret : t_wait_one(sw, &ev);
}

/* Number of entries in a folder other than . and .., or -1 if it does not exist. */
static inline int
t_dir_entries(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

#endif
