/* engine/plan: memory per tier per rank and predicted step time for each ZeRO stage and
 * offload choice; the formulas are stated in engine/include/engine/plan.h. */
#define _GNU_SOURCE
#include "engine/plan.h"
#include "model_internal.h" /* zinf_model_fail: the message helper of engine/ */

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

const char *
zinf_plan_tier_name(zinf_plan_tier t)
{
	static const char *const n[] = {"gpu", "pinned", "pageable", "nvme"};
	return (unsigned)t < ZINF_PLAN_TIERS ? n[t] : "?";
}

void
zinf_plan_hw_init(zinf_plan_hw *hw)
{
	memset(hw, 0, sizeof(*hw));
	hw->gpus = 1;
	hw->gpu_mem = 80ull << 30;
	hw->host_mem = 256ull << 30;
	hw->tflops = 400;
	hw->pcie_bw = 25;
	hw->hbm_bw = 3000;
	hw->net_bw = 100;
}

void
zinf_plan_job_init(zinf_plan_job *job)
{
	memset(job, 0, sizeof(*job));
	job->micro_batch = 1;
	job->seq = 1024;
	job->grad_accum = 1;
	job->sub_group_size = 100000000;
	job->opt_buffer_count = 4;
	job->param_buffer_count = 5;
	job->param_buffer_size = 100000000;
	job->pin_memory = true;
	job->aio_block_size = 1 << 20;
	job->aio_queue_depth = 8;
	job->aio_thread_count = 1;
	job->aio_backend = ZINF_AIO_AUTO;
}

uint64_t
zinf_plan_layer_act_bytes(const zinf_model_config *m)
{
	uint64_t C = (uint64_t)m->d_model, F = (uint64_t)m->d_ff, hd = (uint64_t)m->head_dim;
	uint64_t H = (uint64_t)m->n_head, KV = (uint64_t)m->n_kv_head;
	if (m->arch == ZINF_ARCH_LLAMA)
		return 2 * (4 * C + (H + 2 * KV) * hd + (H + KV) * hd + H * hd + 3 * F) + 4 * H + 8;
	return 2 * (4 * C + (H + 2 * KV) * hd + H * hd + 2 * F) + 4 * H + 16;
}

uint64_t
zinf_plan_activation_bytes(const zinf_model_config *m, int B, int T, bool recompute)
{
	uint64_t bt = (uint64_t)B * (uint64_t)T, C = (uint64_t)m->d_model;
	uint64_t L = (uint64_t)m->n_layer, layer = zinf_plan_layer_act_bytes(m);
	if (recompute)
		return bt * (L * 2 * C + layer + 4 * C);
	return bt * (L * layer + 4 * C);
}

static const char *
dev_name(zinf_offload_device d)
{
	return d == ZINF_DEVICE_NVME ? "nvme" : d == ZINF_DEVICE_CPU ? "cpu" : "none";
}

static void
add(zinf_plan_option *o, const char *what, zinf_plan_tier t, uint64_t bytes)
{
	if (o->n_items >= ZINF_PLAN_OPT_ITEMS || !bytes)
		return;
	o->item[o->n_items].what = what;
	o->item[o->n_items].tier = t;
	o->item[o->n_items].bytes = bytes;
	o->n_items++;
	o->bytes[t] += bytes;
}

static uint64_t
umin(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Bytes per tier and step time of one option. */
static void
evaluate(zinf_plan_option *o, const zinf_plan *p, const zinf_model_config *m,
         const zinf_plan_hw *hw, const zinf_plan_job *job)
{
	uint64_t P = p->P, N = p->N, Lmax = p->Lmax, W = (uint64_t)hw->gpus;
	int s = o->stage;
	zinf_plan_tier host = job->pin_memory ? ZINF_PLAN_PINNED : ZINF_PLAN_PAGEABLE;
	uint64_t sg = umin(job->sub_group_size, N);
	uint64_t pb = job->param_buffer_size > Lmax ? job->param_buffer_size : Lmax;
	uint64_t opt_elems = s >= 1 ? N : P;

	/* zinf's ZeRO-3 path (engine.c: gathered blocks in slots, a packed shard) runs at W > 1 or
	 * with offload_param; stage 3 at W 1 without it keeps full params and gradients like
	 * stage 0 (and so do stages 1-2 at W 1, where the partition is everything) */
	bool z3 = s == 3 && (W > 1 || o->param != ZINF_DEVICE_NONE);
	bool poff = z3 && o->param != ZINF_DEVICE_NONE;

	zinf_plan_tier ptier = ZINF_PLAN_GPU;
	if (poff)
		ptier = o->param == ZINF_DEVICE_NVME ? ZINF_PLAN_NVME : host;
	add(o, "16-bit params", ptier, 2 * (z3 ? N : P));
	if (poff && o->param == ZINF_DEVICE_NVME)
		add(o, "param swap buffers", ZINF_PLAN_PINNED, (uint64_t)job->param_buffer_count * pb * 2);
	/* the slot pool at its smallest: the block in use and the one prefetched (2 x 2 B) plus
	 * one fp32 gradient slot (4 B), each W x per ~ Lmax elements of the largest block
	 * (embedding and head blocks included); stage3_max_live_parameters, prefetch_bucket_size
	 * and max_reuse_distance (DeepSpeed's defaults) may keep more blocks live */
	if (z3)
		add(o, "stage-3 gather buffers", ZINF_PLAN_GPU, 2 * 2 * Lmax + 4 * Lmax);
	/* gradients accumulate in fp32: the full vector (stage 2 reduce-scatters it in place), or
	 * on the zero3 path the packed partition, in pinned host memory (cudaMallocHost, whatever
	 * pin_memory says) with offload_param */
	if (z3)
		add(o, "fp32 grad partition", poff ? ZINF_PLAN_PINNED : ZINF_PLAN_GPU, 4 * N);
	else
		add(o, "fp32 grads", ZINF_PLAN_GPU, 4 * P);
	zinf_plan_tier otier = o->opt == ZINF_DEVICE_NVME  ? ZINF_PLAN_NVME
	                       : o->opt == ZINF_DEVICE_CPU ? host
	                                                   : ZINF_PLAN_GPU;
	add(o, "fp32 master + Adam m, v", otier, 12 * opt_elems);
	/* per GPU work slot: the 12 B state chunk; with offload_param also the gradient slice
	 * copied in from the host (4 B) and the 16-bit output (2 B), which leaves through as
	 * many pinned sink slots */
	if (o->opt != ZINF_DEVICE_NONE)
		add(o, "optimizer work buffers", ZINF_PLAN_GPU,
		    (uint64_t)job->opt_buffer_count * (poff ? 12 + 4 + 2 : 12) * sg);
	if (o->opt != ZINF_DEVICE_NONE && poff)
		add(o, "optimizer 16-bit sink", ZINF_PLAN_PINNED,
		    (uint64_t)job->opt_buffer_count * 2 * sg);
	if (o->opt == ZINF_DEVICE_NVME) {
		uint64_t full = 12 * sg;
		add(o, "optimizer swap buffers", ZINF_PLAN_PINNED,
		    ((uint64_t)job->opt_buffer_count + 1) * full +
		            (uint64_t)job->opt_buffer_count * umin(full, 16u << 20));
	}
	add(o, "activations", ZINF_PLAN_GPU, p->act_bytes);
	add(o, "logits (fp32)", ZINF_PLAN_GPU,
	    4ull * (uint64_t)job->micro_batch * (uint64_t)job->seq * (uint64_t)m->padded_vocab);
	add(o, "CUDA context, workspaces", ZINF_PLAN_GPU, ZINF_PLAN_GPU_RESERVE);

	/* Time. */
	double tokens = (double)job->micro_batch * job->seq * job->grad_accum;
	o->t_compute = p->flops_per_token * tokens * (job->recompute ? 4.0 / 3.0 : 1.0) /
	               (hw->tflops * 1e12);
	double pcie = hw->pcie_bw * 1e9 * (job->pin_memory ? 1.0 : 0.5);
	double nr = hw->nvme_read_bw * 1e9 / (double)W, nw = hw->nvme_write_bw * 1e9 / (double)W;
	o->t_param_io = 0;
	if (s == 3 && o->param != ZINF_DEVICE_NONE) {
		double rd = 2.0 * job->grad_accum * 2.0 * (double)N, wr = 2.0 * (double)N;
		if (o->param == ZINF_DEVICE_CPU)
			o->t_param_io = rd / pcie + wr / pcie;
		else /* NVMe is slower than PCIe: NVMe is the bound */
			o->t_param_io = rd / (nr < pcie ? nr : pcie) + wr / (nw < pcie ? nw : pcie);
	}
	o->t_comm = 0;
	if (W > 1) {
		double f = (double)(W - 1) / (double)W, bytes;
		if (s == 3)
			bytes = job->grad_accum * 3.0 * f * 2.0 * (double)P;
		else
			bytes = 2.0 * f * 2.0 * (double)P;
		o->t_comm = bytes / (hw->net_bw * 1e9);
	}
	double e = (double)opt_elems;
	if (o->opt == ZINF_DEVICE_NONE)
		o->t_opt = 28.0 * e / (hw->hbm_bw * 1e9);
	else if (o->opt == ZINF_DEVICE_CPU)
		o->t_opt = 12.0 * e / pcie;
	else if (hw->nvme_mixed_bw > 0)
		o->t_opt = 24.0 * e / (hw->nvme_mixed_bw * 1e9 / (double)W);
	else
		o->t_opt = 12.0 * e / nr + 12.0 * e / nw;
	double fb = o->t_compute > o->t_param_io ? o->t_compute : o->t_param_io;
	o->t_step = fb + o->t_comm + o->t_opt;
}

static void
check_fit(zinf_plan_option *o, const zinf_plan_hw *hw)
{
	uint64_t W = (uint64_t)hw->gpus;
	uint64_t host_rank = hw->host_mem / W;
	uint64_t host = o->bytes[ZINF_PLAN_PINNED] + o->bytes[ZINF_PLAN_PAGEABLE];
	bool uses_nvme = o->opt == ZINF_DEVICE_NVME || o->param == ZINF_DEVICE_NVME;
	char name[sizeof(o->name)];
	memcpy(name, o->name, sizeof(name)); /* o->why is written from it */
	o->fits = false;
	if (o->param != ZINF_DEVICE_NONE && o->opt == ZINF_DEVICE_NONE) {
		/* zinf_engine_create refuses it: the optimizer writes the 16-bit parameters
		 * straight to their offloaded home */
		snprintf(o->why, sizeof(o->why),
		         "%s: zinf runs offload_param only with offload_optimizer cpu or nvme too",
		         name);
		return;
	}
	if (uses_nvme && !hw->nvme_path[0]) {
		snprintf(o->why, sizeof(o->why),
		         "%s: needs an NVMe folder: pass --nvme_path DIR (or --tuned tuned.json)",
		         name);
		return;
	}
	if (uses_nvme && (hw->nvme_read_bw <= 0 || hw->nvme_write_bw <= 0)) {
		snprintf(o->why, sizeof(o->why),
		         "%s: NVMe bandwidth unknown: pass --nvme_bw GB/s or --tuned tuned.json "
		         "(zinf tune --nvme_path DIR measures it)",
		         name);
		return;
	}
	if (o->bytes[ZINF_PLAN_GPU] > hw->gpu_mem) {
		snprintf(o->why, sizeof(o->why),
		         "%s: %.1f GiB of GPU memory needed per rank, %.1f GiB available (--gpu_mem)",
		         name, (double)o->bytes[ZINF_PLAN_GPU] / GIB, (double)hw->gpu_mem / GIB);
		return;
	}
	if (host > host_rank) {
		snprintf(o->why, sizeof(o->why),
		         "%s: %.1f GiB of host memory needed per rank, %.1f GiB available "
		         "(--host_mem %.1f GiB over %d ranks)",
		         name, (double)host / GIB, (double)host_rank / GIB,
		         (double)hw->host_mem / GIB, hw->gpus);
		return;
	}
	if (uses_nvme && hw->nvme_cap && o->bytes[ZINF_PLAN_NVME] > hw->nvme_cap / W) {
		/* the path cut to what fits after a 63-byte name */
		snprintf(o->why, sizeof(o->why),
		         "%s: %.1f GiB of NVMe needed per rank, %.1f GiB free per rank under %.160s",
		         name, (double)o->bytes[ZINF_PLAN_NVME] / GIB,
		         (double)(hw->nvme_cap / W) / GIB, hw->nvme_path);
		return;
	}
	o->fits = true;
	snprintf(o->why, sizeof(o->why), "%s: fits", name);
}

int
zinf_plan_compute(const zinf_model_config *m, const zinf_plan_hw *hw, const zinf_plan_job *job,
                  zinf_plan *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	out->best = -1;
	if (hw->gpus < 1 || hw->gpus > 1024)
		return zinf_model_fail(err, errlen, -EINVAL, "--gpus %d: must be 1..1024", hw->gpus);
	if (!hw->gpu_mem || !hw->host_mem)
		return zinf_model_fail(err, errlen, -EINVAL,
		            "--gpu_mem and --host_mem must be > 0 (e.g. --gpu_mem 80G)");
	if (!(hw->tflops > 0) || !(hw->pcie_bw > 0) || !(hw->hbm_bw > 0) || !(hw->net_bw > 0))
		return zinf_model_fail(err, errlen, -EINVAL,
		            "--tflops, --pcie_bw, --hbm_bw and --net_bw must be > 0");
	if (job->micro_batch < 1 || job->seq < 1 || job->grad_accum < 1)
		return zinf_model_fail(err, errlen, -EINVAL, "--batch, --seq and --grad_accum must be >= 1");
	if (job->seq > m->max_seq)
		return zinf_model_fail(err, errlen, -EINVAL,
		            "--seq %d: longer than the model's %d positions: pass --seq %d or less",
		            job->seq, m->max_seq, m->max_seq);
	if (!job->sub_group_size || job->opt_buffer_count < 1 || job->param_buffer_count < 1)
		return zinf_model_fail(err, errlen, -EINVAL, "sub_group_size and buffer_count must be > 0");

	zinf_model_layout lay;
	int ret = zinf_model_layout_init(m, &lay, err, errlen);
	if (ret)
		return ret;
	out->P = (uint64_t)lay.total_numel;
	out->N = (out->P + (uint64_t)hw->gpus - 1) / (uint64_t)hw->gpus;
	for (int b = 0; b < lay.nblocks; b++)
		if ((uint64_t)lay.block_numel[b] > out->Lmax)
			out->Lmax = (uint64_t)lay.block_numel[b];
	zinf_model_layout_free(&lay);
	out->act_bytes = zinf_plan_activation_bytes(m, job->micro_batch, job->seq, job->recompute);
	out->flops_per_token = zinf_model_flops_per_token(m, job->seq);

	static const zinf_offload_device devs[] = {ZINF_DEVICE_NONE, ZINF_DEVICE_CPU,
	                                           ZINF_DEVICE_NVME};
	for (int s = 0; s <= 3; s++) {
		int nopt = s == 0 ? 1 : s < 3 ? 2 : 3, npar = s == 3 ? 3 : 1;
		for (int a = 0; a < nopt; a++) {
			for (int b = 0; b < npar; b++) {
				zinf_plan_option *o = &out->opt[out->n++];
				o->stage = s;
				o->opt = devs[a];
				o->param = devs[b];
				if (s == 3)
					snprintf(o->name, sizeof(o->name),
					         "stage 3, optimizer %s, params %s", dev_name(o->opt),
					         dev_name(o->param));
				else if (s > 0)
					snprintf(o->name, sizeof(o->name), "stage %d, optimizer %s", s,
					         dev_name(o->opt));
				else
					snprintf(o->name, sizeof(o->name), "stage 0");
				evaluate(o, out, m, hw, job);
				check_fit(o, hw);
				if (o->fits && (out->best < 0 ||
				                o->t_step < out->opt[out->best].t_step * (1 - 1e-9)))
					out->best = out->n - 1;
			}
		}
	}
	for (int i = 0; i < out->n; i++) {
		zinf_plan_option *o = &out->opt[i];
		char name[sizeof(o->name)];
		memcpy(name, o->name, sizeof(name));
		if (i == out->best)
			snprintf(o->why, sizeof(o->why), "%s: recommended (fastest that fits)",
			         name);
		else if (o->fits)
			snprintf(o->why, sizeof(o->why),
			         "%s: fits, but %.3f s/step predicted, slower than %.3f s of %s",
			         name, o->t_step, out->opt[out->best].t_step,
			         out->opt[out->best].name);
	}
	return 0;
}

/* ---- ds_config.json ---- */

static cJSON *
offload_obj(zinf_offload_device d, const zinf_plan_hw *hw, const zinf_plan_job *job, bool param,
            uint64_t Lmax)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "device", dev_name(d));
	if (d == ZINF_DEVICE_NVME)
		cJSON_AddStringToObject(o, "nvme_path", hw->nvme_path);
	cJSON_AddBoolToObject(o, "pin_memory", job->pin_memory);
	if (param) {
		uint64_t pb = job->param_buffer_size > Lmax ? job->param_buffer_size : Lmax;
		cJSON_AddNumberToObject(o, "buffer_count", job->param_buffer_count);
		cJSON_AddNumberToObject(o, "buffer_size", (double)pb);
	} else {
		cJSON_AddNumberToObject(o, "buffer_count", job->opt_buffer_count);
	}
	return o;
}

int
zinf_plan_write_config(const zinf_plan *p, int idx, const zinf_plan_hw *hw,
                       const zinf_plan_job *job, const char *path, char *err, size_t errlen)
{
	if (idx < 0 || idx >= p->n)
		return zinf_model_fail(err, errlen, -EINVAL, "no configuration fits: nothing to write to %s",
		            path);
	const zinf_plan_option *o = &p->opt[idx];
	static const char *const backends[] = {"auto", "io_uring", "libaio", "psync"};
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return -ENOMEM;
	cJSON_AddNumberToObject(j, "train_batch_size",
	                        (double)job->micro_batch * job->grad_accum * hw->gpus);
	cJSON_AddNumberToObject(j, "train_micro_batch_size_per_gpu", job->micro_batch);
	cJSON_AddNumberToObject(j, "gradient_accumulation_steps", job->grad_accum);
	cJSON *bf = cJSON_AddObjectToObject(j, "bf16");
	cJSON_AddBoolToObject(bf, "enabled", 1);
	cJSON *z = cJSON_AddObjectToObject(j, "zero_optimization");
	cJSON_AddNumberToObject(z, "stage", o->stage);
	cJSON_AddNumberToObject(z, "sub_group_size", (double)job->sub_group_size);
	if (o->opt != ZINF_DEVICE_NONE)
		cJSON_AddItemToObject(z, "offload_optimizer",
		                      offload_obj(o->opt, hw, job, false, p->Lmax));
	if (o->stage == 3 && o->param != ZINF_DEVICE_NONE)
		cJSON_AddItemToObject(z, "offload_param",
		                      offload_obj(o->param, hw, job, true, p->Lmax));
	cJSON *aio = cJSON_AddObjectToObject(j, "aio");
	cJSON_AddNumberToObject(aio, "block_size", (double)job->aio_block_size);
	cJSON_AddNumberToObject(aio, "queue_depth", (double)job->aio_queue_depth);
	cJSON_AddNumberToObject(aio, "thread_count", (double)job->aio_thread_count);
	if (job->aio_backend != ZINF_AIO_AUTO) /* "auto" is the loader's placeholder word */
		cJSON_AddStringToObject(aio, "backend", backends[job->aio_backend & 3]);
	char *text = cJSON_Print(j);
	cJSON_Delete(j);
	if (!text)
		return -ENOMEM;
	char tmp[ZINF_CONFIG_PATH_MAX + 32];
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	FILE *f = fopen(tmp, "w");
	int ret = 0;
	if (!f) {
		ret = -errno;
		zinf_model_fail(err, errlen, ret, "%s: cannot write: %s; pass --out with a writable folder",
		     tmp, strerror(errno));
	} else {
		bool bad = fprintf(f, "%s\n", text) < 0;
		bad |= fclose(f) != 0;
		if (bad || rename(tmp, path)) {
			ret = -EIO;
			zinf_model_fail(err, errlen, ret, "%s: write failed: %s", path, strerror(errno));
			unlink(tmp);
		}
	}
	free(text);
	return ret;
}

/* ---- zinf tune's output ---- */

static char *
slurp(const char *path, char *err, size_t errlen, int *rc)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		*rc = -errno;
		zinf_model_fail(err, errlen, *rc, "%s: %s (--tuned: pass the file zinf tune --out wrote)", path,
		     strerror(errno));
		return NULL;
	}
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			char *nb = cap > (64u << 20) ? NULL : realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				*rc = -EFBIG;
				zinf_model_fail(err, errlen, *rc, "%s: larger than 64 MiB, not a tune output",
				     path);
				return NULL;
			}
			buf = nb;
		}
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	fclose(f);
	buf[len] = 0;
	return buf;
}

static cJSON *
parse_file(const char *path, char *err, size_t errlen, int *rc)
{
	char *text = slurp(path, err, errlen, rc);
	if (!text)
		return NULL;
	cJSON *j = cJSON_Parse(text);
	free(text);
	if (!j || !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		*rc = -EINVAL;
		zinf_model_fail(err, errlen, *rc, "%s: not a JSON object (--tuned wants zinf tune's output)",
		     path);
	}
	return j;
}

static double
num(const cJSON *o, const char *key, double def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : def;
}

int
zinf_plan_load_tuned(const char *path, zinf_plan_hw *hw, zinf_plan_job *job, char *err,
                     size_t errlen)
{
	int rc = 0;
	cJSON *j = parse_file(path, err, errlen, &rc), *rep = NULL;
	if (!j)
		return rc;
	const cJSON *meas = cJSON_GetObjectItemCaseSensitive(j, "zinf_tune");
	const cJSON *frag = cJSON_GetObjectItemCaseSensitive(j, "config");
	if (!meas) {
		/* a fragment: its report sits next to it */
		char rpath[ZINF_CONFIG_PATH_MAX + 16];
		size_t n = strlen(path);
		if (n > 5 && !strcmp(path + n - 5, ".json"))
			n -= 5;
		snprintf(rpath, sizeof(rpath), "%.*s.report.json", (int)n, path);
		rep = parse_file(rpath, err, errlen, &rc);
		if (!rep) {
			char e2[512];
			snprintf(e2, sizeof(e2), "%s", err ? err : "");
			cJSON_Delete(j);
			return zinf_model_fail(err, errlen, rc,
			            "%s has no measurements and its report is unreadable: %s", path,
			            e2);
		}
		meas = cJSON_GetObjectItemCaseSensitive(rep, "zinf_tune");
		frag = j;
	}
	if (!meas || !frag) {
		cJSON_Delete(j);
		cJSON_Delete(rep);
		return zinf_model_fail(err, errlen, -EINVAL,
		            "%s: no \"zinf_tune\" measurements or no config: not zinf tune's output",
		            path);
	}
	hw->nvme_read_bw = num(meas, "read_GBps", 0);
	hw->nvme_write_bw = num(meas, "write_GBps", 0);
	hw->nvme_mixed_bw = num(meas, "mixed_GBps", 0);
	double pcie = num(meas, "pcie_GBps", 0);
	if (pcie > 0)
		hw->pcie_bw = pcie;
	double freeb = num(meas, "nvme_free_bytes", 0);
	if (freeb > 0)
		hw->nvme_cap = (uint64_t)freeb;
	const cJSON *np = cJSON_GetObjectItemCaseSensitive(meas, "nvme_path");
	if (cJSON_IsString(np))
		snprintf(hw->nvme_path, sizeof(hw->nvme_path), "%s", np->valuestring);

	const cJSON *z = cJSON_GetObjectItemCaseSensitive(frag, "zero_optimization");
	const cJSON *oo = cJSON_GetObjectItemCaseSensitive(z, "offload_optimizer");
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(z, "offload_param");
	const cJSON *aio = cJSON_GetObjectItemCaseSensitive(frag, "aio");
	job->sub_group_size = (uint64_t)num(z, "sub_group_size", (double)job->sub_group_size);
	job->opt_buffer_count = (unsigned)num(oo, "buffer_count", job->opt_buffer_count);
	job->param_buffer_count = (unsigned)num(op, "buffer_count", job->param_buffer_count);
	job->param_buffer_size = (uint64_t)num(op, "buffer_size", (double)job->param_buffer_size);
	const cJSON *pin = cJSON_GetObjectItemCaseSensitive(oo, "pin_memory");
	if (cJSON_IsBool(pin))
		job->pin_memory = cJSON_IsTrue(pin);
	job->aio_block_size = (int64_t)num(aio, "block_size", (double)job->aio_block_size);
	job->aio_queue_depth = (int64_t)num(aio, "queue_depth", (double)job->aio_queue_depth);
	job->aio_thread_count = (int64_t)num(aio, "thread_count", (double)job->aio_thread_count);
	const cJSON *be = cJSON_GetObjectItemCaseSensitive(aio, "backend");
	if (cJSON_IsString(be)) {
		static const char *const names[] = {"auto", "io_uring", "libaio", "psync"};
		for (int i = 0; i < 4; i++)
			if (!strcmp(be->valuestring, names[i]))
				job->aio_backend = (zinf_aio_backend)i;
	}
	bool bad = !(hw->nvme_read_bw > 0) || !(hw->nvme_write_bw > 0) || !job->sub_group_size ||
	           !job->opt_buffer_count;
	cJSON_Delete(j);
	cJSON_Delete(rep);
	if (bad)
		return zinf_model_fail(err, errlen, -EINVAL,
		            "%s: read_GBps, write_GBps, sub_group_size or buffer_count missing or 0: "
		            "rerun zinf tune",
		            path);
	return 0;
}
