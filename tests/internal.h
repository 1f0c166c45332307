/* tests/internal.h -- test-only hooks exported by libdeepdefense.
 *
 * These are not part of the public API (they live in no installed header,
 * and the installed libdeepdefense does not export them: its version
 * script, cmake/deepdefense.map, keeps dd__ symbols local). The build
 * tree's libdeepdefense_testhooks, linked from the same objects, exports
 * them, so that the test programs, which link it, can inject allocation
 * failures (see lib/core/alloc.c):
 *   dd__alloc_fail_after(k)  the next k allocations on the calling thread
 *                            succeed, every later one fails; -1 disables.
 *   dd__alloc_count()        allocations that succeeded on this thread since
 *                            the last dd__alloc_fail_after() call.
 * An OOM sweep: dd__alloc_fail_after(-1); op(); n = dd__alloc_count(); then
 * for k = 0 .. n-1: dd__alloc_fail_after(k), op() must return
 * DD_ERR_OUT_OF_MEMORY and leak nothing; finally dd__alloc_fail_after(-1).
 */
#ifndef DD_TESTS_INTERNAL_H
#define DD_TESTS_INTERNAL_H

#include <deepdefense/status.h>

DD_API void dd__alloc_fail_after(long count);
DD_API long dd__alloc_count(void);

/* Checkpoint durability (lib/io/safetensors.c): the next dd_model_save() on
 * the calling thread fails at `stage` as if the system call had failed with
 * EIO: 1 = creating the temporary file, 2 = writing it (after the header),
 * 3 = fsync, 4 = rename over the target. 0 clears; one-shot (any save
 * consumes it). The save returns DD_ERR_IO and removes its temporary file. */
DD_API void dd__io_fail_at(int stage);

#endif
