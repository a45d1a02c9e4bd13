/* The recorded block order of ZeRO stage 3 on the GPU. See zero3_order.h. */
#include <errno.h>
#include <stdlib.h>

#include "zero3_order.h"

int
zinf_z3_order_init(zinf_z3_order *o, int cap)
{
	*o = (zinf_z3_order){0};
	o->cap = cap;
	o->trace = calloc((size_t)(cap > 0 ? cap : 1), sizeof(int));
	return o->trace ? 0 : -ENOMEM;
}

void
zinf_z3_order_free(zinf_z3_order *o)
{
	free(o->trace);
	*o = (zinf_z3_order){0};
}

void
zinf_z3_order_begin_forward(zinf_z3_order *o)
{
	if (o->recording && o->ntrace > 0) {
		o->valid = true;
		o->recording = false;
	} else if (!o->valid && !o->recording) {
		o->recording = true;
		o->ntrace = 0;
	}
	o->cursor = 0;
}

void
zinf_z3_order_needed(zinf_z3_order *o, int b)
{
	if (o->recording) {
		if (o->ntrace < o->cap)
			o->trace[o->ntrace++] = b;
		else
			o->recording = false; /* not a fwd/bwd pattern: no prefetch */
	} else if (o->valid) {
		if (o->cursor < o->ntrace && o->trace[o->cursor] == b)
			o->cursor++;
		else
			o->valid = false; /* the order changed: record it again */
	}
}

int64_t
zinf_z3_order_reuse_distance(const zinf_z3_order *o, int b, const int64_t *elems)
{
	if (!o->valid)
		return -1;
	int64_t d = 0;
	for (int k = 0; k < o->ntrace; k++) {
		int c = o->trace[(o->cursor + k) % o->ntrace];
		if (c == b)
			return d;
		d += elems[c];
	}
	return -1;
}

int
zinf_z3_order_victim(const zinf_z3_order *o, int nblocks, const bool *keepable,
                     const int64_t *elems)
{
	int victim = -1;
	int64_t far = -2;
	for (int b = 0; b < nblocks; b++) {
		if (!keepable[b])
			continue;
		int64_t d = zinf_z3_order_reuse_distance(o, b, elems);
		if (d < 0)
			d = INT64_MAX;
		if (d > far) {
			far = d;
			victim = b;
		}
	}
	return victim;
}
