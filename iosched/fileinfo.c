/* Direct-I/O alignment of a file. Kept apart because it uses the kernel's struct statx (with
 * the DIO fields glibc 2.36 lacks), which cannot share a translation unit with <sys/stat.h>. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "iosched_internal.h"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

void
ios_dio_alignment(int fd, unsigned *off_align, unsigned *mem_align)
{
	/* Unknown (kernel < 6.1 or a filesystem that does not say): 4 KiB is safe everywhere. */
	*off_align = 4096;
	*mem_align = 4096;
	struct statx stx = {0};
	long rc = syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx);
	if (rc == 0 && (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align &&
	    stx.stx_dio_mem_align) {
		*off_align = stx.stx_dio_offset_align;
		*mem_align = stx.stx_dio_mem_align;
	}
}
