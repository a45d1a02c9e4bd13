/* engine/plan: which ZeRO stage and offload choice fits a model on given hardware, how many
 * bytes each tier holds per rank, and how long a step should take (`zinf plan`).
 *
 * Training is bf16 mixed precision (b = 2 bytes per 16-bit value) with AdamW, on W ranks of
 * one node. With P = the model's flat parameter vector (zinf_model_layout.total_numel, the
 * vector ZeRO partitions), N = ceil(P / W), L = n_layer, Lmax = the largest layout block,
 * s = stage, B = micro batch, T = sequence length, k_o / k_p = optimizer / parameter
 * buffer_count, sg = min(sub_group_size, N), pb = offload_param.buffer_size (elements):
 *
 * z3 = zinf's ZeRO-3 path: s == 3 with W > 1 or offload_param (engine.c; stage 3 at W 1
 * without offload_param keeps full params and gradients on the GPU like stage 0):
 *
 *   16-bit params            2 x (z3 ? N : P)       GPU; on the z3 path offload_param.device
 *                            (cpu: pinned, or pageable without pin_memory; nvme: NVMe)
 *   param swap buffers       k_p x pb x 2           pinned, offload_param nvme only
 *   stage-3 gather buffers   2 x 2 x Lmax + 4 x Lmax  GPU, z3: the slot pool at its least,
 *                            the block in use and the one prefetched (bf16) and one fp32
 *                            gradient slot (DeepSpeed's live / prefetch / reuse defaults
 *                            may keep more blocks)
 *   fp32 grads               4 x P                  GPU, not z3 (stage 2 at W > 1 too: the
 *                            full vector is reduce-scattered in place)
 *   fp32 grad partition      4 x N                  z3: GPU, or pinned with offload_param
 *   fp32 master, Adam m, v   12 x (s >= 1 ? N : P)  offload_optimizer.device (none: GPU)
 *   optimizer work buffers   k_o x 12 x sg          GPU when the optimizer is offloaded (zinf
 *                            steps Adam on the GPU on streamed sub-groups, engine/optstep.h);
 *                            k_o x (12 + 4 + 2) x sg with offload_param (the gradient slice
 *                            copied in and the 16-bit output per slot)
 *   optimizer 16-bit sink    k_o x 2 x sg           pinned, with offload_param
 *   optimizer swap buffers   (k_o + 1) x 12 x sg + k_o x min(12 x sg, 16 MiB)  pinned,
 *                            optimizer on NVMe (what engine/optstep.c asks the swapper for)
 *   activations              GPU, see zinf_plan_activation_bytes()
 *   logits                   4 x B x T x padded_vocab   GPU (fp32, gradient in place)
 *   CUDA context, workspaces ZINF_PLAN_GPU_RESERVE  GPU
 *
 * Step time (seconds), tokens = B x T x grad_accum per rank:
 *   compute   flops_per_token(T) x tokens x (recompute ? 4/3 : 1) / tflops
 *   param I/O stage 3 with offloaded params: 2N bytes read twice per micro step (forward,
 *             backward) and written once per step, over PCIe (cpu) or NVMe (nvme, the node's
 *             bandwidth shared by W ranks); prefetched, so it overlaps compute:
 *             forward+backward = max(compute, param I/O)
 *   comm      W > 1: bytes per rank / net_bw: stages 0-2 2(W-1)/W x 2P (all-reduce, or
 *             reduce-scatter + all-gather); stage 3 grad_accum x 3(W-1)/W x 2P (two
 *             all-gathers and one reduce-scatter per micro step); not overlapped
 *   optimizer none: 28 B per element of the optimizer partition over HBM; cpu: 12 B each way
 *             over PCIe at once (pageable: half the rate); nvme: 12 B read + 12 B written
 *             (at the tuned read+write rate when --tuned gives it, else read then write)
 *   step = forward+backward + comm + optimizer.
 *
 * Errors: 0 or -errno, `err` names the value and the fix. */
#ifndef ZINF_ENGINE_PLAN_H
#define ZINF_ENGINE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZINF_PLAN_GPU_RESERVE (1ull << 30) /* CUDA context, cuBLAS workspace */
#define ZINF_PLAN_MAX_OPTIONS 16
#define ZINF_PLAN_OPT_ITEMS   16

typedef enum zinf_plan_tier {
	ZINF_PLAN_GPU = 0,
	ZINF_PLAN_PINNED = 1,
	ZINF_PLAN_PAGEABLE = 2,
	ZINF_PLAN_NVME = 3,
	ZINF_PLAN_TIERS
} zinf_plan_tier;
const char *zinf_plan_tier_name(zinf_plan_tier t); /* "gpu", "pinned", "pageable", "nvme" */

/* The machine. Bandwidths in GB/s (1e9 bytes/s). */
typedef struct zinf_plan_hw {
	int gpus;             /* ranks on the node, W */
	uint64_t gpu_mem;     /* bytes per GPU */
	uint64_t host_mem;    /* bytes of host memory for all W ranks */
	uint64_t nvme_cap;    /* bytes free under nvme_path for all ranks; 0 = not checked */
	double tflops;        /* achieved bf16 TFLOP/s per GPU */
	double pcie_bw;       /* per GPU, each direction */
	double hbm_bw;        /* GPU memory */
	double net_bw;        /* per rank, collective bus bandwidth (W > 1) */
	double nvme_read_bw;  /* node; 0 = no NVMe known: NVMe options are rejected */
	double nvme_write_bw; /* node */
	double nvme_mixed_bw; /* node, reads + writes at once (zinf tune); 0 = unknown */
	char nvme_path[ZINF_CONFIG_PATH_MAX]; /* "" = none: NVMe options are rejected */
} zinf_plan_hw;

/* The job and the offload knobs (zinf tune's, or DeepSpeed's defaults). */
typedef struct zinf_plan_job {
	int micro_batch, seq, grad_accum;
	bool recompute;
	uint64_t sub_group_size;     /* elements */
	unsigned opt_buffer_count;   /* offload_optimizer.buffer_count */
	unsigned param_buffer_count; /* offload_param.buffer_count */
	uint64_t param_buffer_size;  /* elements; raised to Lmax when smaller */
	bool pin_memory;
	/* aio (written into the config as is) */
	int64_t aio_block_size, aio_queue_depth, aio_thread_count;
	zinf_aio_backend aio_backend;
} zinf_plan_job;

/* Defaults: H100-like numbers (80 GB GPU, 400 TFLOP/s, PCIe 25 GB/s, HBM 3000 GB/s, net 100
 * GB/s), no NVMe; batch 1, seq 1024, no recompute, DeepSpeed's offload and aio defaults
 * (sub_group_size 1e8 (DeepSpeed: 1e9, but the GPU holds buffer_count sub-groups of 12 B
 * per element), buffer_count 4 / 5, buffer_size 1e8, pin_memory, block 1 MiB, queue
 * depth 8, 1 thread). */
void zinf_plan_hw_init(zinf_plan_hw *hw);
void zinf_plan_job_init(zinf_plan_job *job);

typedef struct zinf_plan_option {
	int stage;
	zinf_offload_device opt, param;
	char name[64]; /* "stage 3, optimizer nvme, params cpu" */
	struct {
		const char *what;
		zinf_plan_tier tier;
		uint64_t bytes;
	} item[ZINF_PLAN_OPT_ITEMS];
	int n_items;
	uint64_t bytes[ZINF_PLAN_TIERS]; /* per rank */
	double t_compute, t_param_io, t_comm, t_opt, t_step;
	bool fits;
	char why[320]; /* rejection reason, or "fits" / "recommended" */
} zinf_plan_option;

typedef struct zinf_plan {
	int n;
	zinf_plan_option opt[ZINF_PLAN_MAX_OPTIONS];
	int best; /* index of the fastest option that fits, -1 when none does */
	uint64_t P, N, Lmax;
	uint64_t act_bytes;  /* activations per rank */
	double flops_per_token;
} zinf_plan;

/* Activation bytes per rank for one micro batch, bf16 (2-byte values), fp32 norm statistics
 * and softmax log-sum-exp, flash attention (no T x T scores stored). Per token per layer:
 *   GPT-2: 2 x (4C + (H + 2KV) hd + H hd + 2F) + 4H + 16
 *          (ln_1 in/out, ln_2 in/out, qkv, attention out, fc out, gelu out; lse; 2 x mean/rstd)
 *   LLaMA: 2 x (4C + (H + 2KV) hd + (H + KV) hd + H hd + 3F) + 4H + 8
 *          (the same with rotated q, k, and gate, up, silu(gate) x up; 2 x rstd)
 * Without recompute: B T (L x layer + 4C) (+ 4C: final norm in/out).
 * With recompute (a checkpoint per layer): B T (L x 2C + layer + 4C): each layer's input kept,
 * one layer's activations live while it is recomputed. Logits are counted separately. */
uint64_t zinf_plan_activation_bytes(const zinf_model_config *m, int B, int T, bool recompute);
/* The per-token per-layer figure above (bytes). */
uint64_t zinf_plan_layer_act_bytes(const zinf_model_config *m);

/* Every stage 0-3 x offload choice (stage 1/2: optimizer none|cpu; stage 3: optimizer and
 * params none|cpu|nvme), its bytes per tier per rank, predicted step time, and whether it fits
 * (offload_param without offload_optimizer never does: zinf_engine_create refuses it);
 * best = the fastest that fits (ties: the lower stage). -EINVAL for bad hw/job numbers. */
int zinf_plan_compute(const zinf_model_config *m, const zinf_plan_hw *hw, const zinf_plan_job *job,
                      zinf_plan *out, char *err, size_t errlen);

/* The option as a ds_config.json that zinf_config_load_file + resolve(gpus) accept: bf16,
 * AdamW, batch B x grad_accum x W, the stage, offload devices with hw->nvme_path, the job's
 * knobs and aio section. Written atomically (temp + rename). */
int zinf_plan_write_config(const zinf_plan *p, int idx, const zinf_plan_hw *hw,
                           const zinf_plan_job *job, const char *path, char *err, size_t errlen);

/* Reads `zinf tune`'s output: a report (tune's --report file, {"zinf_tune": {...measured},
 * "config": {fragment}}) or a fragment (then FILE with .json replaced by .report.json is read
 * for the measurements). Fills hw's NVMe rates, path (and PCIe when measured) and the job's
 * knobs from the fragment. */
int zinf_plan_load_tuned(const char *path, zinf_plan_hw *hw, zinf_plan_job *job, char *err,
                         size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
