/* The block order ZeRO stage 3 on the GPU follows (zero3_gpu.c): the sequence of
 * params_needed calls of one forward + backward, recorded once and then followed with a cursor,
 * and the decisions made from it (how far a block's next use is, which kept block goes first).
 * Host logic only, so CI tests it without a GPU (tests/test_zero3_order.c).
 *
 * Recording: the first zinf_z3_order_begin_forward starts it; the next one ends it (the trace
 * is then valid) and every later one puts the cursor back to 0. A params_needed that does not
 * match the trace at the cursor drops the trace; the forward after that records it again. A
 * trace longer than its capacity is not a forward/backward pattern: no trace (no prefetch). */
#ifndef ZINF_ENGINE_ZERO3_ORDER_H
#define ZINF_ENGINE_ZERO3_ORDER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct zinf_z3_order {
	int *trace;
	int ntrace, cap, cursor;
	bool valid, recording;
} zinf_z3_order;

/* cap: the longest trace kept (e.g. 4 x blocks). -ENOMEM or 0. */
int zinf_z3_order_init(zinf_z3_order *o, int cap);
void zinf_z3_order_free(zinf_z3_order *o);
void zinf_z3_order_begin_forward(zinf_z3_order *o);
/* params_needed(b): recorded, or the cursor moves past it (or the trace is dropped). */
void zinf_z3_order_needed(zinf_z3_order *o, int b);
/* Elements gathered between the cursor and block b's next use in the trace, cyclic (the next
 * micro-step's forward follows the backward), elems[c] per block; -1 when b does not come
 * again or there is no valid trace. */
int64_t zinf_z3_order_reuse_distance(const zinf_z3_order *o, int b, const int64_t *elems);
/* Among blocks with keepable[b], the one whose next use is farthest (no next use counts as
 * farthest; ties: the lowest index), or -1 when none is keepable. */
int zinf_z3_order_victim(const zinf_z3_order *o, int nblocks, const bool *keepable,
                         const int64_t *elems);

#endif
