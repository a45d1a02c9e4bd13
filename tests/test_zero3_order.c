/* engine/zero3_order: the recorded block order ZeRO stage 3 follows on the GPU (prefetch and
 * reuse decisions come from it), tested without a GPU. One forward + backward of a tied 3-layer
 * model needs blocks 0 1 2 3 4 0 | 4 0 3 2 1 (embeddings, layers, head + tied embeddings, then
 * backward from the head down).
 *   record    the first forward starts recording, the next ends it; the trace is what was
 *             needed; following it moves the cursor; a forward puts the cursor back
 *   mismatch  a block out of order drops the trace, the next forward records it again
 *   overflow  a sequence longer than the capacity leaves no trace
 *   reuse     distances to the next use (elements in between, cyclic), -1 without a trace or
 *             for a block that never comes again
 *   victim    the keepable block used farthest ahead goes first; never-again before all;
 *             ties to the lowest index; none keepable: -1 */
#include "test_util.h"

#include <stdbool.h>

#include "zero3_order.h"

static const int seq[] = {0, 1, 2, 3, 4, 0, 4, 0, 3, 2, 1};
#define NSEQ ((int)(sizeof(seq) / sizeof(seq[0])))
static const int64_t elems[6] = {100, 10, 10, 10, 50, 7}; /* block 5 is never needed */

static void
feed(zinf_z3_order *o, int upto)
{
	for (int i = 0; i < upto; i++)
		zinf_z3_order_needed(o, seq[i]);
}

static void
recorded(zinf_z3_order *o)
{
	T_CHECK(zinf_z3_order_init(o, 64) == 0, "init");
	zinf_z3_order_begin_forward(o);
	T_CHECK(o->recording && !o->valid, "first forward records");
	feed(o, NSEQ);
	T_CHECK(!o->valid, "no trace while recording");
	zinf_z3_order_begin_forward(o);
	T_CHECK(o->valid && !o->recording && o->cursor == 0, "second forward: trace valid");
}

static void
test_record(void)
{
	zinf_z3_order o;
	recorded(&o);
	T_CHECK_EQ_I64(o.ntrace, NSEQ);
	for (int i = 0; i < NSEQ && i < o.ntrace; i++)
		T_CHECK(o.trace[i] == seq[i], "trace[%d] = %d, want %d", i, o.trace[i], seq[i]);
	feed(&o, 7);
	T_CHECK(o.valid && o.cursor == 7, "following: cursor %d valid %d", o.cursor, o.valid);
	for (int i = 7; i < NSEQ; i++)
		zinf_z3_order_needed(&o, seq[i]);
	T_CHECK(o.valid && o.cursor == NSEQ, "whole pass followed: cursor %d", o.cursor);
	zinf_z3_order_begin_forward(&o);
	T_CHECK(o.valid && o.cursor == 0, "next forward: cursor back to 0");
	/* an eval (forward only) then a training forward: still the same trace */
	feed(&o, 6);
	zinf_z3_order_begin_forward(&o);
	feed(&o, NSEQ);
	T_CHECK(o.valid && o.cursor == NSEQ, "after a forward-only pass: cursor %d", o.cursor);
	zinf_z3_order_free(&o);
}

static void
test_mismatch(void)
{
	zinf_z3_order o;
	recorded(&o);
	feed(&o, 3);
	zinf_z3_order_needed(&o, 4); /* 3 expected */
	T_CHECK(!o.valid, "out of order: trace dropped");
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 1, elems), -1);
	zinf_z3_order_begin_forward(&o);
	T_CHECK(o.recording && !o.valid, "the next forward records again");
	feed(&o, NSEQ);
	zinf_z3_order_begin_forward(&o);
	T_CHECK(o.valid && o.ntrace == NSEQ, "recorded again: %d entries", o.ntrace);
	zinf_z3_order_free(&o);
}

static void
test_overflow(void)
{
	zinf_z3_order o;
	T_CHECK(zinf_z3_order_init(&o, 4) == 0, "init");
	for (int pass = 0; pass < 3; pass++) {
		zinf_z3_order_begin_forward(&o);
		feed(&o, NSEQ);
		T_CHECK(!o.valid && !o.recording, "pass %d: too long, no trace", pass);
	}
	zinf_z3_order_free(&o);
}

static void
test_reuse(void)
{
	zinf_z3_order o;
	recorded(&o);
	feed(&o, 3); /* cursor 3: next come 3 4 0 4 0 3 2 1 */
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 3, elems), 0);
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 4, elems), 10);
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 2, elems), 10 + 50 + 100 + 50 + 100 + 10);
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 1, elems),
	               10 + 50 + 100 + 50 + 100 + 10 + 10);
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 5, elems), -1);
	/* at the end of the backward the next micro-step's forward comes next (cyclic) */
	for (int i = 3; i < NSEQ; i++)
		zinf_z3_order_needed(&o, seq[i]);
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 0, elems), 0);
	T_CHECK_EQ_I64(zinf_z3_order_reuse_distance(&o, 2, elems), 100 + 10);
	zinf_z3_order_free(&o);
}

static void
test_victim(void)
{
	zinf_z3_order o;
	recorded(&o);
	feed(&o, 3);
	bool keep[6] = {false, true, true, true, false, false};
	T_CHECK_EQ_I64(zinf_z3_order_victim(&o, 6, keep, elems), 1); /* 330 > 320 > 0 */
	keep[5] = true;
	T_CHECK_EQ_I64(zinf_z3_order_victim(&o, 6, keep, elems), 5); /* never needed again */
	keep[1] = keep[2] = keep[3] = keep[5] = false;
	T_CHECK_EQ_I64(zinf_z3_order_victim(&o, 6, keep, elems), -1);
	/* without a trace every block is "never again": the lowest index goes first */
	zinf_z3_order_needed(&o, 2); /* 3 expected: trace dropped */
	bool all[6] = {false, false, true, true, true, false};
	T_CHECK_EQ_I64(zinf_z3_order_victim(&o, 6, all, elems), 2);
	zinf_z3_order_free(&o);
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {{"record", test_record},     {"mismatch", test_mismatch},
	             {"overflow", test_overflow}, {"reuse", test_reuse},
	             {"victim", test_victim}};
	int ran = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (argc > 1 && strcmp(argv[1], cases[i].name))
			continue;
		cases[i].fn();
		ran++;
	}
	if (!ran) {
		fprintf(stderr, "usage: %s [record|mismatch|overflow|reuse|victim]\n", argv[0]);
		return 2;
	}
	if (t_failures) {
		fprintf(stderr, "test_zero3_order: %d check(s) failed\n", t_failures);
		return T_EXIT_FAIL;
	}
	printf("test_zero3_order: ok\n");
	return T_EXIT_PASS;
}
