/* Host pool: exact-size host buffers under a byte budget.
 *
 * pin_memory: each buffer is its own mmap (4 KiB-rounded), page-locked once at allocation:
 * cudaHostRegister when a CUDA device is usable (the GPU can DMA from it), else mlock. A refusal
 * for lack of locked memory (RLIMIT_MEMLOCK) is an error naming `ulimit -l`, unless the caller
 * allowed pageable fallback. pin_memory false: pageable buffers from a private jemalloc arena
 * (arenas.create + mallocx), so they do not share pages with the rest of the process.
 *
 * Page-locking is slow (cudaHostRegister of 64 MiB takes milliseconds: it faults in and pins
 * every page), so a freed pinned buffer is kept, still locked, and handed out again to the next
 * request of the same rounded size. Pageable buffers are kept the same way: a large jemalloc
 * allocation gets fresh pages once its predecessor's were purged, and faulting them in on first
 * write ran at about 1 GB/s (ZeRO-3's parameter store copying into a new buffer for every
 * block, pin_memory false, DeepSpeed's default for offload_param). Kept buffers count against
 * the budget together with live ones; when a new buffer would not fit, kept ones are released
 * first, so the cache never makes an allocation fail that would have succeeded without it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <jemalloc/jemalloc.h>

#ifdef ZINF_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "offload_internal.h"

#define SUBSYS "offload: host pool"

typedef struct host_buf {
	void *ptr;
	uint64_t len;
	offload_host_mode mode;
	bool kept; /* freed by the caller, still page-locked, waiting for reuse */
} host_buf;

struct offload_host_pool {
	offload_host_pool_opts opts;
	bool cuda; /* a CUDA device is usable: pin with cudaHostRegister */
	bool arena_made;
	unsigned arena;
	offload_host_mode mode;
	bool warned_fallback;
	host_buf *bufs;
	unsigned nbufs, cap;
	uint64_t kept_bytes; /* page-locked bytes held for reuse, not in u.in_use */
	offload_tier_usage u;
	char err[OFF_ERR_LEN];
};

const char *
offload_host_mode_name(offload_host_mode m)
{
	switch (m) {
	case OFFLOAD_HOST_PINNED_CUDA:
		return "pinned (cudaHostRegister)";
	case OFFLOAD_HOST_PINNED_MLOCK:
		return "pinned (mlock)";
	case OFFLOAD_HOST_PAGEABLE:
		return "pageable (jemalloc arena)";
	}
	return "?";
}

void
offload_host_pool_opts_init(offload_host_pool_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->budget = 1ull << 30;
	opts->pin_memory = true;
}

static int
make_arena(offload_host_pool_t *p)
{
	size_t sz = sizeof(p->arena);
	int e = mallctl("arenas.create", &p->arena, &sz, NULL, 0);
	if (e) {
		off_set_err(p->err, SUBSYS, "jemalloc arenas.create failed: %s", strerror(e));
		return -e;
	}
	p->arena_made = true;
	return 0;
}

int
offload_host_pool_create(const offload_host_pool_opts *opts, offload_host_pool_t **out)
{
	*out = NULL;
	offload_host_pool_t *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->opts = *opts;
	if (!opts->budget) {
		off_set_err(p->err, SUBSYS, "host budget is 0: set a host budget > 0");
		free(p);
		return -EINVAL;
	}
	p->u.budget = opts->budget;
	if (opts->pin_memory) {
		p->cuda = offload_gpu_probe(NULL, 0);
		p->mode = p->cuda ? OFFLOAD_HOST_PINNED_CUDA : OFFLOAD_HOST_PINNED_MLOCK;
	} else {
		p->mode = OFFLOAD_HOST_PAGEABLE;
		int ret = make_arena(p);
		if (ret) {
			free(p);
			return ret;
		}
	}
	*out = p;
	return 0;
}

static void
release_buf(offload_host_pool_t *p, const host_buf *b)
{
	switch (b->mode) {
	case OFFLOAD_HOST_PINNED_CUDA:
#ifdef ZINF_HAVE_CUDA
		cudaHostUnregister(b->ptr);
#endif
		munmap(b->ptr, b->len);
		break;
	case OFFLOAD_HOST_PINNED_MLOCK:
		munlock(b->ptr, b->len);
		munmap(b->ptr, b->len);
		break;
	case OFFLOAD_HOST_PAGEABLE:
		dallocx(b->ptr, MALLOCX_TCACHE_NONE);
		break;
	}
}

void
offload_host_pool_destroy(offload_host_pool_t *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nbufs; i++)
		release_buf(p, &p->bufs[i]);
	free(p->bufs);
	if (p->arena_made) {
		char name[64];
		snprintf(name, sizeof(name), "arena.%u.destroy", p->arena);
		mallctl(name, NULL, NULL, NULL, 0);
	}
	free(p);
}

static int
alloc_pageable(offload_host_pool_t *p, uint64_t len, void **out)
{
	if (!p->arena_made) {
		int ret = make_arena(p);
		if (ret)
			return ret;
	}
	void *ptr = mallocx(len, MALLOCX_ARENA(p->arena) | MALLOCX_ALIGN(OFFLOAD_ALIGN) |
	                                 MALLOCX_TCACHE_NONE);
	if (!ptr)
		return -ENOMEM;
	*out = ptr;
	return 0;
}

static void
memlock_limit(char *buf, size_t len)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) || rl.rlim_cur == RLIM_INFINITY)
		snprintf(buf, len, "unlimited");
	else
		off_fmt_bytes((uint64_t)rl.rlim_cur, buf, len);
}

/* Page-locks [ptr, len) with the pool's method; 0 or -errno with the message set. */
static int
pin(offload_host_pool_t *p, void *ptr, uint64_t len)
{
	char a[64], b[64], c[64];
#ifdef ZINF_HAVE_CUDA
	if (p->cuda) {
		cudaError_t e = cudaHostRegister(ptr, len, cudaHostRegisterDefault);
		if (e == cudaSuccess)
			return 0;
		(void)cudaGetLastError();
		off_set_err(p->err, SUBSYS,
		            "cudaHostRegister of %s failed: %s (%s); %s already pinned; lower "
		            "buffer_count/buffer_size or the host budget, or set pin_memory false",
		            off_fmt_bytes(len, a, sizeof(a)), cudaGetErrorString(e),
		            cudaGetErrorName(e), off_fmt_bytes(p->u.in_use, b, sizeof(b)));
		return -ENOMEM;
	}
#endif
	int ret = p->opts.lock_hook ? p->opts.lock_hook(ptr, len) : (mlock(ptr, len) ? -errno : 0);
	if (!ret)
		return 0;
	memlock_limit(c, sizeof(c));
	off_set_err(p->err, SUBSYS,
	            "mlock of %s failed: %s; %s already pinned, RLIMIT_MEMLOCK is %s: raise it "
	            "(ulimit -l unlimited, or memlock in /etc/security/limits.conf), lower "
	            "buffer_count/buffer_size, or set pin_memory false",
	            off_fmt_bytes(len, a, sizeof(a)), strerror(-ret),
	            off_fmt_bytes(p->u.in_use, b, sizeof(b)), c);
	return ret == -EPERM || ret == -EAGAIN ? -ENOMEM : ret;
}

int
offload_host_alloc(offload_host_pool_t *p, uint64_t size, void **out)
{
	*out = NULL;
	if (!size)
		return -EINVAL;
	uint64_t len = off_round_up(size, OFFLOAD_ALIGN);
	if (p->u.in_use + len > p->u.budget || p->u.in_use + len < len) {
		char a[64], b[64], c[64];
		off_set_err(p->err, SUBSYS,
		            "host tier over budget: %s requested, %s in use, budget %s: raise the "
		            "host budget or lower buffer_count/buffer_size",
		            off_fmt_bytes(len, a, sizeof(a)),
		            off_fmt_bytes(p->u.in_use, b, sizeof(b)),
		            off_fmt_bytes(p->u.budget, c, sizeof(c)));
		return -ENOBUFS;
	}
	if (p->nbufs == p->cap) {
		unsigned cap = p->cap ? p->cap * 2 : 64;
		host_buf *nb = realloc(p->bufs, cap * sizeof(*nb));
		if (!nb)
			return -ENOMEM;
		p->bufs = nb;
		p->cap = cap;
	}
	/* Reuse a kept buffer of the same size, newest first. */
	for (unsigned i = p->nbufs; i-- > 0;) {
		host_buf *k = &p->bufs[i];
		if (k->kept && k->len == len) {
			k->kept = false;
			p->kept_bytes -= len;
			p->u.in_use += len;
			p->u.allocs++;
			if (p->u.in_use > p->u.peak)
				p->u.peak = p->u.in_use;
			*out = k->ptr;
			return 0;
		}
	}
	/* Make room: release kept buffers until the new one fits the budget. */
	for (unsigned i = p->nbufs; i-- > 0 && p->u.in_use + p->kept_bytes + len > p->u.budget;) {
		if (!p->bufs[i].kept)
			continue;
		release_buf(p, &p->bufs[i]);
		p->kept_bytes -= p->bufs[i].len;
		p->bufs[i] = p->bufs[--p->nbufs];
	}
	host_buf b = {NULL, len, OFFLOAD_HOST_PAGEABLE, false};
	if (!p->opts.pin_memory) {
		int ret = alloc_pageable(p, len, &b.ptr);
		if (ret) {
			char a[64];
			off_set_err(p->err, SUBSYS, "pageable allocation of %s failed",
			            off_fmt_bytes(len, a, sizeof(a)));
			return ret;
		}
	} else {
		b.mode = p->cuda ? OFFLOAD_HOST_PINNED_CUDA : OFFLOAD_HOST_PINNED_MLOCK;
		b.ptr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b.ptr == MAP_FAILED) {
			char a[64];
			int e = errno;
			off_set_err(p->err, SUBSYS, "mmap of %s failed: %s",
			            off_fmt_bytes(len, a, sizeof(a)), strerror(e));
			return -e;
		}
		/* Huge pages where the kernel has them: fewer pages to pin and to map for DMA. */
		(void)madvise(b.ptr, len, MADV_HUGEPAGE);
		int ret = pin(p, b.ptr, len);
		if (ret) {
			munmap(b.ptr, len);
			if (!p->opts.allow_unpinned || ret != -ENOMEM)
				return ret;
			if (!p->warned_fallback)
				zinf_log(ZINF_LOG_WARN, SUBSYS,
				         "falling back to pageable host buffers (allow_unpinned): "
				         "%s",
				         p->err);
			p->warned_fallback = true;
			b.mode = OFFLOAD_HOST_PAGEABLE;
			if ((ret = alloc_pageable(p, len, &b.ptr)))
				return ret;
		}
	}
	p->mode = b.mode;
	p->bufs[p->nbufs++] = b;
	p->u.in_use += len;
	p->u.allocs++;
	if (p->u.in_use > p->u.peak)
		p->u.peak = p->u.in_use;
	*out = b.ptr;
	return 0;
}

void
offload_host_free(offload_host_pool_t *p, void *ptr)
{
	if (!ptr)
		return;
	for (unsigned i = p->nbufs; i-- > 0;) {
		host_buf *b = &p->bufs[i];
		if (b->ptr != ptr)
			continue;
		if (b->kept)
			break; /* freed twice */
		p->u.in_use -= b->len;
		p->u.allocs--;
		b->kept = true; /* for the next request of this size (see the top) */
		p->kept_bytes += b->len;
		return;
	}
	zinf_log(ZINF_LOG_ERROR, SUBSYS, "free of %p, which this pool did not allocate or already freed", ptr);
}

offload_host_mode
offload_host_pool_mode(const offload_host_pool_t *p)
{
	return p->mode;
}

void
offload_host_pool_usage(const offload_host_pool_t *p, offload_tier_usage *u)
{
	*u = p->u;
}

const char *
offload_host_pool_last_error(const offload_host_pool_t *p)
{
	return p ? p->err : "no host pool";
}
