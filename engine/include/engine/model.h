/* Decoder-only transformer models: GPT-2 and LLaMA families defined by an HF config.json.
 *
 * This header is the contract shared by the CPU path (model_cpu.h), the GPU path
 * (model_gpu.h), the weights I/O (HF safetensors) and the training engine:
 *
 *   config  zinf_model_config, filled from a preset name or an HF config.json
 *   layout  where every tensor lives inside ONE flat parameter vector (fp32 on the CPU, bf16
 *           on the GPU, same element offsets): block 0 = embeddings, blocks 1..n_layer = the
 *           layers, block n_layer+1 = final norm (+ untied lm_head). Each block is contiguous
 *           and starts at a multiple of ZINF_BLOCK_ALIGN elements, so ZeRO can partition,
 *           gather and swap per layer and kernels may use 16-byte vector loads.
 *
 * Tensor layout inside zinf (row-major):
 *   - every linear weight is [out_features, in_features] (nn.Linear). GPT-2's HF Conv1D
 *     weights are [in, out] in the file and are transposed on load/save.
 *   - attention q, k, v weights (and biases) are adjacent: rows [0, H*hd) q, then KV*hd rows
 *     of k, then KV*hd rows of v, so the three form one fused QKV weight [(H+2KV)*hd, C].
 *   - LLaMA gate_proj then up_proj rows are adjacent: one fused [2F, C] weight (gate first).
 *   - embedding (and untied lm_head) have padded_vocab rows; rows >= vocab_size are zero,
 *     never read by lookups, excluded from the loss and from saved files.
 *
 * Errors: functions return 0 or -errno and write a one-line message into err (naming the
 * file, the field or tensor, the value, the limit and the fix). */
#ifndef ZINF_ENGINE_MODEL_H
#define ZINF_ENGINE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZINF_BLOCK_ALIGN 64 /* elements: 256 B of fp32, 128 B of bf16 */
#define ZINF_VOCAB_PAD 128  /* padded_vocab = vocab_size rounded up to this */

typedef enum zinf_arch {
	ZINF_ARCH_GPT2 = 0,  /* learned positions, LayerNorm, GELU (tanh), biases, tied */
	ZINF_ARCH_LLAMA = 1, /* RoPE, RMSNorm, SwiGLU, GQA, no biases, tied or untied */
} zinf_arch;

typedef enum zinf_rope_scaling {
	ZINF_ROPE_NONE = 0,
	ZINF_ROPE_LLAMA3 = 1, /* rope_scaling.rope_type "llama3" (Llama 3.1/3.2) */
} zinf_rope_scaling;

typedef struct zinf_model_config {
	zinf_arch arch;
	char name[64];    /* preset name, or the folder's config.json "_name_or_path"/folder */
	int vocab_size;   /* HF vocab_size */
	int padded_vocab; /* vocab_size rounded up to ZINF_VOCAB_PAD */
	int max_seq;      /* n_positions / max_position_embeddings */
	int n_layer;      /* n_layer / num_hidden_layers */
	int n_head;       /* n_head / num_attention_heads */
	int n_kv_head;    /* num_key_value_heads (GPT-2: n_head) */
	int d_model;      /* n_embd / hidden_size */
	int d_ff;         /* n_inner (GPT-2 null -> 4*d_model) / intermediate_size */
	int head_dim;     /* d_model / n_head (LLaMA: head_dim if given) */
	float norm_eps;   /* layer_norm_epsilon / rms_norm_eps */
	float init_std;   /* initializer_range */
	bool tied;        /* tie_word_embeddings (GPT-2: always true) */
	float rope_theta; /* LLaMA */
	zinf_rope_scaling rope_scaling;
	float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
	int rope_original_max_pos;
	int bos_token_id, eos_token_id; /* -1 when absent */
} zinf_model_config;

/* Presets: gpt2-124m gpt2-350m gpt2-1.5b llama-1b llama-3b llama-7b, and tiny ones for tests:
 * gpt2-tiny llama-tiny (head_dim 64 so the GPU kernels run them). Unknown name: -ENOENT with
 * the list. */
int zinf_model_preset(const char *name, zinf_model_config *cfg, char *err, size_t errlen);
/* NULL-terminated list of preset names. */
const char *const *zinf_model_preset_names(void);

/* Parse an HF config.json (model_type "gpt2" or "llama"; anything else is refused naming the
 * field). Unsupported options (e.g. attention_bias true, a rope_scaling type other than
 * llama3) are errors naming the field and value. */
int zinf_model_config_load(const char *config_json_path, zinf_model_config *cfg, char *err,
			   size_t errlen);
/* Write an HF config.json that transformers loads (GPT2LMHeadModel / LlamaForCausalLM). */
int zinf_model_config_save(const zinf_model_config *cfg, const char *config_json_path, char *err,
			   size_t errlen);

/* MODEL as given on the command line: a preset name, or a folder holding config.json and
 * optionally model.safetensors (or a sharded model.safetensors.index.json). weights gets the
 * path of the one present ("" when none). */
int zinf_model_resolve(const char *model, zinf_model_config *cfg, char *weights, size_t weightslen,
		       char *err, size_t errlen);
/* Check the config's numbers (positive dims, n_head % n_kv_head == 0, ...). */
int zinf_model_config_validate(const zinf_model_config *cfg, char *err, size_t errlen);

/* ---- layout ---- */

typedef struct zinf_tensor_desc {
	char hf_name[96];    /* "transformer.h.3.attn.c_attn.weight", "model.norm.weight" */
	int block;           /* 0 embed, 1..n_layer layers, n_layer+1 head */
	int ndim;            /* 1 or 2 */
	int64_t shape[2];    /* zinf shape (linear weights [out, in]; vocab rows padded) */
	int64_t hf_shape[2]; /* shape in the HF file (Conv1D transposed, vocab rows unpadded) */
	bool hf_transposed;  /* GPT-2 Conv1D weight */
	int64_t hf_rows;     /* rows that exist in the file (vocab_size for embeddings) */
	int64_t offset;      /* element offset in the flat parameter vector */
	int64_t numel;       /* shape[0]*shape[1] */
	bool decay;          /* weight decay applies (2-D weights; not norms, biases) */
} zinf_tensor_desc;

/* Offsets of a layer's tensors relative to the start of its block; -1 where the family has no
 * such tensor (LLaMA has no biases). The same for every layer. */
typedef struct zinf_layer_offsets {
	int64_t ln1_w, ln1_b;   /* ln_1 / input_layernorm */
	int64_t qkv_w, qkv_b;   /* fused [(H+2KV)*hd, C] / [(H+2KV)*hd] */
	int64_t o_w, o_b;       /* attn.c_proj / o_proj [C, H*hd] */
	int64_t ln2_w, ln2_b;   /* ln_2 / post_attention_layernorm */
	int64_t fc_w, fc_b;     /* GPT-2 c_fc [F, C]; LLaMA gate+up [2F, C] */
	int64_t proj_w, proj_b; /* GPT-2 mlp.c_proj / LLaMA down_proj [C, F] */
} zinf_layer_offsets;

typedef struct zinf_model_layout {
	int nblocks;           /* n_layer + 2 */
	int64_t *block_offset; /* [nblocks] element offset of each block (ZINF_BLOCK_ALIGN) */
	int64_t *block_numel;  /* [nblocks] elements in each block (incl. alignment tail) */
	int64_t total_numel;   /* length of the flat vector */
	int64_t n_params;      /* parameters as HF counts them (no padding, tied once) */
	int ntensors;
	zinf_tensor_desc *tensors; /* in block order, then the order above */
	zinf_layer_offsets layer;  /* relative to a layer block's start */
	int64_t layer_numel;       /* block_numel of a layer */
	/* absolute offsets; -1 when absent */
	int64_t wte;    /* [padded_vocab, C] */
	int64_t wpe;    /* [max_seq, C] (GPT-2) */
	int64_t lnf_w, lnf_b;
	int64_t lm_head; /* [padded_vocab, C]; -1 when tied (use wte) */
} zinf_model_layout;

int zinf_model_layout_init(const zinf_model_config *cfg, zinf_model_layout *lay, char *err,
			   size_t errlen);
void zinf_model_layout_free(zinf_model_layout *lay);
/* Absolute offset of layer l's block (0-based layer index). */
static inline int64_t zinf_layer_base(const zinf_model_layout *lay, int l)
{
	return lay->block_offset[1 + l];
}

/* ---- weights ---- */

/* The family's usual init, deterministic in seed and independent of thread count:
 * GPT-2 (HF): N(0, init_std) for linear and embedding weights, c_proj weights (attn and mlp)
 * N(0, init_std/sqrt(2*n_layer)), biases 0, LayerNorm weight 1 bias 0.
 * LLaMA (HF): N(0, init_std) for all linear and embedding weights, norm weights 1.
 * Padding rows and alignment tails are 0. params has lay->total_numel floats. */
void zinf_model_init_params(const zinf_model_config *cfg, const zinf_model_layout *lay,
			    uint64_t seed, float *params);
/* Elements [offset, offset + n) of what zinf_model_init_params writes, into dst[0 .. n): the
 * same bits, without the whole vector (fast_init of offloaded state, one sub-group at a time). */
void zinf_model_init_range(const zinf_model_config *cfg, const zinf_model_layout *lay,
			   uint64_t seed, int64_t offset, int64_t n, float *dst);

/* Load model.safetensors, or the shards named by a path ending in ".index.json" (HF
 * names, or GPT-2 hub names without "transformer."; F32, F16 or BF16 converted to fp32; GPT-2
 * Conv1D transposed; a missing lm_head with tied embeddings is fine). Missing tensor, wrong
 * shape, wrong dtype, truncated file or bad header: error naming the file and the tensor.
 * Buffers HF keeps in state dicts (GPT-2's attn.bias / attn.masked_bias, rotary inv_freq, a
 * tied lm_head copy) are ignored; any other tensor the model lacks is an error (the config
 * does not match the weights). All checks run before params is written. */
int zinf_model_load_safetensors(const char *path, const zinf_model_config *cfg,
				const zinf_model_layout *lay, float *params, char *err,
				size_t errlen);

typedef enum zinf_save_dtype { ZINF_SAVE_F32 = 0, ZINF_SAVE_BF16 = 1, ZINF_SAVE_F16 = 2 } zinf_save_dtype;
/* Write model.safetensors with HF names and layouts (atomic: temp file + fsync + rename). */
int zinf_model_save_safetensors(const char *path, const zinf_model_config *cfg,
				const zinf_model_layout *lay, const float *params,
				zinf_save_dtype dtype, char *err, size_t errlen);
/* The same file from tensors fetched one at a time (zinf ckpt consolidate: the vector never
 * exists whole): source fills *data with t->numel floats in zinf layout (the tensor's own
 * elements, as at params + t->offset), valid until its next call; a non-zero return (with
 * err filled) stops the write and removes the temporary file. */
typedef int (*zinf_tensor_source)(void *ctx, const zinf_tensor_desc *t, const float **data,
				  char *err, size_t errlen);
int zinf_model_save_safetensors_from(const char *path, const zinf_model_config *cfg,
				     const zinf_model_layout *lay, zinf_tensor_source source,
				     void *ctx, zinf_save_dtype dtype, char *err, size_t errlen);

/* FLOPs of one forward+backward per token at sequence length T, PaLM's formula (as llm.c
 * reports MFU): 6*N + 12*n_layer*T*n_head*head_dim, N = every matmul weight (incl. lm_head,
 * excluding position embeddings and norms/biases). Recompute adds a forward: callers that
 * report hardware FLOP/s with --recompute say so; the model FLOP/s uses this number. */
double zinf_model_flops_per_token(const zinf_model_config *cfg, int T);

#ifdef __cplusplus
}
#endif

#endif
