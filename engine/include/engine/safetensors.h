/* A small reader and writer for the safetensors format (huggingface/safetensors):
 *
 *   u64 LE header length N | N bytes of JSON header | data
 *
 * The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the data section) plus an optional "__metadata__" object of strings.
 *
 * The reader parses and checks the whole header on open (header length within the file and
 * below ZINF_ST_HEADER_MAX, JSON object, known dtypes, non-negative shapes, offsets in range,
 * end - begin == numel * element size, no two tensors overlapping) and then reads tensor bytes
 * with pread, so files larger than RAM are fine. The writer streams tensors in the order given
 * into a temporary file next to the target, then fsyncs and renames it into place.
 *
 * Errors: 0 or -errno; err gets one line naming the file and the tensor. */
#ifndef ZINF_ENGINE_SAFETENSORS_H
#define ZINF_ENGINE_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZINF_ST_HEADER_MAX (100u << 20) /* the reference implementation's limit */
#define ZINF_ST_MAX_DIMS 8

typedef enum zinf_st_dtype {
	ZINF_ST_BOOL,
	ZINF_ST_U8,
	ZINF_ST_I8,
	ZINF_ST_F8_E4M3,
	ZINF_ST_F8_E5M2,
	ZINF_ST_I16,
	ZINF_ST_U16,
	ZINF_ST_F16,
	ZINF_ST_BF16,
	ZINF_ST_I32,
	ZINF_ST_U32,
	ZINF_ST_F32,
	ZINF_ST_I64,
	ZINF_ST_U64,
	ZINF_ST_F64,
	ZINF_ST_NDTYPES,
} zinf_st_dtype;

/* "F32" etc.; element size in bytes. */
const char *zinf_st_dtype_name(zinf_st_dtype d);
size_t zinf_st_dtype_size(zinf_st_dtype d);
/* -1 when the name is not a safetensors dtype. */
int zinf_st_dtype_parse(const char *name);

typedef struct zinf_st_tensor {
	char *name;
	zinf_st_dtype dtype;
	int ndim;
	int64_t shape[ZINF_ST_MAX_DIMS];
	int64_t numel;
	uint64_t offset; /* absolute file offset of the first byte */
	uint64_t nbytes;
} zinf_st_tensor;

typedef struct zinf_st_file {
	char *path;
	int fd;
	uint64_t file_size;
	uint64_t data_start; /* 8 + header length */
	int ntensors;
	zinf_st_tensor *tensors; /* in header order */
} zinf_st_file;

int zinf_st_open(const char *path, zinf_st_file *f, char *err, size_t errlen);
void zinf_st_close(zinf_st_file *f);
/* NULL when absent. */
const zinf_st_tensor *zinf_st_find(const zinf_st_file *f, const char *name);
/* len bytes at byte `at` inside tensor t. A short read (file truncated since open) is -EIO
 * naming the tensor. */
int zinf_st_read(const zinf_st_file *f, const zinf_st_tensor *t, uint64_t at, void *buf,
		 size_t len, char *err, size_t errlen);

/* ---- writer ---- */

typedef struct zinf_st_spec {
	const char *name;
	zinf_st_dtype dtype;
	int ndim;
	int64_t shape[ZINF_ST_MAX_DIMS];
} zinf_st_spec;

typedef struct zinf_st_writer {
	char *path, *tmp;
	int fd;
	uint64_t pos, end; /* bytes written, bytes the header promises */
} zinf_st_writer;

/* Creates path's temporary sibling and writes the header for tensors specs[0..n) laid out in
 * that order; metadata: NULL or NULL-terminated key, value pairs for "__metadata__". The data
 * of each tensor is then appended with zinf_st_writer_write, in order. */
int zinf_st_writer_open(zinf_st_writer *w, const char *path, const zinf_st_spec *specs, int n,
			const char *const *metadata, char *err, size_t errlen);
int zinf_st_writer_write(zinf_st_writer *w, const void *data, size_t len, char *err,
			 size_t errlen);
/* All promised bytes written: fsync, rename over path, fsync the folder. Else -EINVAL. */
int zinf_st_writer_finish(zinf_st_writer *w, char *err, size_t errlen);
/* Removes the temporary file (after an error, or to cancel). Safe after finish. */
void zinf_st_writer_abort(zinf_st_writer *w);

/* ---- atomic small files (config.json) ---- */

/* Writes len bytes to path through a temporary sibling, fsync and rename. */
int zinf_write_file_atomic(const char *path, const void *data, size_t len, char *err,
			   size_t errlen);
/* Reads a whole file of at most max bytes into a NUL-terminated malloc'd buffer. */
int zinf_read_file(const char *path, size_t max, char **out, size_t *len, char *err,
		   size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
