/* CUDA error checks for library code (private to kernels/). Every CUDA runtime call goes
 * through ZINF_CUDA_CHECK_RETURN, which records the statement text, file:line and device,
 * clears the sticky error, and makes the *calling function return* -EIO. Nothing here exits.
 * Build with -DZINF_CUDA_SYNC_LAUNCHES=1 to synchronise the stream after every launch, so an
 * asynchronous fault is reported at the kernel that caused it. */
#ifndef ZINF_KERNELS_CUDA_CHECK_H
#define ZINF_KERNELS_CUDA_CHECK_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prints "zinf cuda: <stmt> failed at file:line on device d: <name>: <string>", clears the
 * sticky error with cudaGetLastError and returns -EIO. */
int zinf_cuda_report(cudaError_t err, const char *stmt, const char *file, int line);

#ifdef __cplusplus
}
#endif

#define ZINF_CUDA_CHECK_RETURN(stmt)                                                         \
	do {                                                                                 \
		cudaError_t zinf_err_ = (stmt);                                              \
		if (zinf_err_ != cudaSuccess)                                                \
			return zinf_cuda_report(zinf_err_, #stmt, __FILE__, __LINE__);       \
	} while (0)

/* After a <<<>>> launch: the launch error, and in ZINF_CUDA_SYNC_LAUNCHES builds the run. */
#if defined(ZINF_CUDA_SYNC_LAUNCHES) && ZINF_CUDA_SYNC_LAUNCHES
#define ZINF_CUDA_CHECK_LAUNCH_RETURN(what, stream)                                          \
	do {                                                                                 \
		ZINF_CUDA_CHECK_RETURN(cudaGetLastError());                                  \
		ZINF_CUDA_CHECK_RETURN(cudaStreamSynchronize(stream));                       \
	} while (0)
#else
#define ZINF_CUDA_CHECK_LAUNCH_RETURN(what, stream) ZINF_CUDA_CHECK_RETURN(cudaGetLastError())
#endif

#endif
