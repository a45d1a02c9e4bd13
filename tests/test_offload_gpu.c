/* offload tests that need a CUDA device (exit 77 without one): every tier pair through the
 * swapper with byte-exact checks (host <-> GPU, NVMe -> GPU and GPU -> NVMe through the staging
 * slots, chunks larger than buffer_size and of random sizes), injected I/O errors on the staged
 * paths (residency, data and space left as before), and the GPU arena's budget error.
 * Prints one line per case. */
#include "test_offload_common.h"

#include <cuda_runtime_api.h>

static int
check_gpu(void *dptr, uint64_t size, uint64_t seed, const char *what)
{
	unsigned char *got = malloc(size), *want = malloc(size);
	t_fill(want, size, seed);
	cudaError_t e = cudaMemcpy(got, dptr, size, cudaMemcpyDeviceToHost);
	int ok = e == cudaSuccess && !memcmp(got, want, size);
	T_CHECK(ok, "%s: GPU copy differs (%s)", what, cudaGetErrorString(e));
	free(got);
	free(want);
	return ok;
}

int
main(void)
{
	char why[256];
	if (!offload_gpu_probe(why, sizeof(why))) {
		printf("test_offload_gpu: skipped: %s\n", why);
		return T_EXIT_SKIP;
	}
	char *dir = t_mkdtemp("offload-gpu");
	const char *paths[1] = {dir};
	offload_swapper_opts o;
	offload_swapper_opts_init(&o);
	o.gpu_budget = 512ull << 20;
	o.host_budget = 512ull << 20;
	o.buffer_count = 4;
	o.buffer_size = 1 << 20;
	o.nvme_paths = paths;
	o.nvme_path_count = 1;
	o.nvme_capacity = 512ull << 20;
	o.aio.quiet = true;
	offload_swapper_t *sw;
	char err[512];
	int ret = offload_swapper_create(&o, &sw, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "create: %d %s\n", ret, err);
		return T_EXIT_FAIL;
	}
	uint64_t seed = 7;
	enum { N = 32 };
	int ids[N];
	uint64_t sizes[N];
	for (int i = 0; i < N; i++) {
		sizes[i] = 1 + t_rand(&seed) % (5u << 20); /* up to 5 pieces of buffer_size */
		ids[i] = offload_chunk_create(sw, "g", sizes[i]);
		void *h;
		T_CHECK(offload_chunk_alloc(sw, ids[i], OFFLOAD_TIER_HOST, &h) == 0, "alloc");
		t_fill(h, sizes[i], 900 + (uint64_t)i);
		/* host -> gpu */
		T_CHECK(t_fetch(sw, ids[i], OFFLOAD_TIER_GPU) == 0, "host->gpu %d: %s", i,
		        offload_swapper_last_error(sw));
		check_gpu(offload_chunk_ptr(sw, ids[i], OFFLOAD_TIER_GPU), sizes[i],
		          900 + (uint64_t)i, "host->gpu");
		/* only on the GPU now, then gpu -> nvme (staged) */
		T_CHECK(offload_chunk_drop(sw, ids[i], OFFLOAD_TIER_HOST) == 0, "drop host");
		T_CHECK(t_fetch(sw, ids[i], OFFLOAD_TIER_NVME) == 0, "gpu->nvme %d: %s", i,
		        offload_swapper_last_error(sw));
		T_CHECK(offload_chunk_drop(sw, ids[i], OFFLOAD_TIER_GPU) == 0, "drop gpu");
	}
	printf("gpu: host->gpu, gpu->nvme (staged): done\n");
	/* nvme -> gpu (staged), all in flight together, then gpu -> host */
	for (int i = 0; i < N; i++)
		T_CHECK(offload_chunk_fetch(sw, ids[i], OFFLOAD_TIER_GPU, (uint64_t)i) == 0,
		        "fetch");
	offload_event ev[N];
	int got = 0;
	while (got < N) {
		int n = offload_poll(sw, ev, N, 1, 60000);
		if (n <= 0)
			break;
		for (int k = 0; k < n; k++)
			T_CHECK(ev[k].res == 0, "nvme->gpu event %d: %s", ev[k].res,
			        offload_swapper_last_error(sw));
		got += n;
	}
	T_CHECK_EQ_I64(got, N);
	for (int i = 0; i < N; i++) {
		check_gpu(offload_chunk_ptr(sw, ids[i], OFFLOAD_TIER_GPU), sizes[i],
		          900 + (uint64_t)i, "nvme->gpu");
		T_CHECK(offload_chunk_drop(sw, ids[i], OFFLOAD_TIER_NVME) == 0, "drop nvme");
		T_CHECK(t_evict(sw, ids[i], OFFLOAD_TIER_GPU) == 0, "gpu->host evict");
		unsigned char *h = offload_chunk_ptr(sw, ids[i], OFFLOAD_TIER_HOST);
		unsigned char *want = malloc(sizes[i]);
		t_fill(want, sizes[i], 900 + (uint64_t)i);
		T_CHECK(h && !memcmp(h, want, sizes[i]), "gpu->host %d differs", i);
		free(want);
		offload_chunk_info ci;
		offload_chunk_info_get(sw, ids[i], &ci);
		T_CHECK(ci.valid == 1u << OFFLOAD_TIER_HOST, "residency %#x", ci.valid);
	}
	printf("gpu: nvme->gpu (staged, overlapped), gpu->host: done\n");
	offload_report rep;
	offload_swapper_report(sw, &rep);
	T_CHECK(rep.host_mode == OFFLOAD_HOST_PINNED_CUDA, "host mode %s",
	        offload_host_mode_name(rep.host_mode));
	char buf[1024];
	offload_report_format(&rep, buf, sizeof(buf));
	printf("%s", buf);
	offload_swapper_destroy(sw);

	/* Injected read error during NVMe -> GPU (staged) and write error during GPU -> NVMe: the
	 * failing chunk keeps its residency and data, the GPU/NVMe space it took is released. */
	for (int w = 0; w < 2; w++) {
		iosched_fault fault = {
		        .nth = 3, .err = EIO, .ops = w ? IOSCHED_OP_WRITE : IOSCHED_OP_READ};
		o.aio.fault = &fault;
		o.aio.block_size = 256 << 10;
		T_CHECK(offload_swapper_create(&o, &sw, err, sizeof(err)) == 0, "create: %s", err);
		if (!sw)
			break;
		enum { M = 6, SZ = 3 << 20 };
		int fid[M], failures = 0;
		for (int i = 0; i < M; i++) {
			fid[i] = offload_chunk_create(sw, "f", SZ);
			void *p;
			offload_chunk_alloc(sw, fid[i], w ? OFFLOAD_TIER_GPU : OFFLOAD_TIER_HOST,
			                    &p);
			if (w) {
				unsigned char *tmp = malloc(SZ);
				t_fill(tmp, SZ, 300 + (uint64_t)i);
				cudaMemcpy(p, tmp, SZ, cudaMemcpyHostToDevice);
				free(tmp);
			} else {
				t_fill(p, SZ, 300 + (uint64_t)i);
				T_CHECK(t_evict(sw, fid[i], OFFLOAD_TIER_HOST) == 0, "to nvme");
			}
		}
		for (int i = 0; i < M; i++) {
			offload_tier dst = w ? OFFLOAD_TIER_NVME : OFFLOAD_TIER_GPU;
			unsigned was = w ? 1u << OFFLOAD_TIER_GPU : 1u << OFFLOAD_TIER_NVME;
			offload_report r0, r1;
			offload_swapper_report(sw, &r0);
			ret = t_fetch(sw, fid[i], dst);
			offload_chunk_info ci;
			offload_chunk_info_get(sw, fid[i], &ci);
			if (ret) {
				failures++;
				offload_swapper_report(sw, &r1);
				T_CHECK(ret == -EIO, "fault %d: %d", w, ret);
				T_CHECK(ci.valid == was, "fault %d: residency %#x", w, ci.valid);
				T_CHECK(r1.usage[dst].in_use == r0.usage[dst].in_use,
				        "fault %d: space not released", w);
				T_CHECK(t_fetch(sw, fid[i], dst) == 0, "retry: %s",
				        offload_swapper_last_error(sw));
			}
			if (w) {
				T_CHECK(offload_chunk_drop(sw, fid[i], OFFLOAD_TIER_GPU) == 0,
				        "drop");
				T_CHECK(t_fetch(sw, fid[i], OFFLOAD_TIER_GPU) == 0, "back");
			}
			check_gpu(offload_chunk_ptr(sw, fid[i], OFFLOAD_TIER_GPU), SZ,
			          300 + (uint64_t)i, w ? "after write fault" : "after read fault");
		}
		T_CHECK_EQ_I64(failures, 1);
		offload_swapper_destroy(sw);
		printf("gpu: injected %s error: handled\n", w ? "write" : "read");
	}
	o.aio.fault = NULL;

	offload_gpu_arena_opts ao;
	offload_gpu_arena_opts_init(&ao);
	ao.budget = 1 << 20;
	offload_gpu_arena_t *a;
	T_CHECK(offload_gpu_arena_create(&ao, &a) == 0, "arena");
	void *p1, *p2;
	T_CHECK(offload_gpu_alloc(a, 768 << 10, &p1) == 0, "p1");
	ret = offload_gpu_alloc(a, 512 << 10, &p2);
	const char *e = offload_gpu_arena_last_error(a);
	T_CHECK(ret == -ENOBUFS && strstr(e, "gpu tier") && strstr(e, "524288 bytes) requested") &&
	                strstr(e, "free"),
	        "arena oom: %d %s", ret, e);
	offload_gpu_free(a, p1);
	T_CHECK(offload_gpu_alloc(a, 1 << 20, &p2) == 0, "after free");
	offload_gpu_arena_destroy(a);
	T_CHECK(t_dir_entries(dir) == 0, "swap files left");
	rmdir(dir);
	free(dir);
	return t_result("test_offload_gpu");
}
