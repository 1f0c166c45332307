/* lib/io/io_internal.h -- what the two checkpoint files share (internal).
 *
 * arch.c turns a model's graph into JSON and back; safetensors.c stores that
 * JSON in a checkpoint's metadata. When the JSON comes from a file, the
 * loader knows how many bytes of weights the file holds, and passes that as
 * a bound so that a few hostile bytes of header cannot make
 * dd_model_build() allocate gigabytes for weights that are not there.
 */
#ifndef DD_LIB_IO_INTERNAL_H
#define DD_LIB_IO_INTERNAL_H

#include "../graph/graph.h"

/* As dd__model_from_arch (graph.h), refusing with DD_ERR_FORMAT, before
 * anything is built, an architecture whose weights need more than
 * max_weight_bytes (UINT64_MAX: no bound). */
DD_INTERNAL dd_status dd__model_from_arch_limited(const char *json, size_t len, const dd_model_options *opts,
                                                  int max_batch, uint64_t max_weight_bytes, dd_model **out);

/* Test-only fault injection (declared for tests in tests/internal.h): the
 * next dd_model_save() on the calling thread fails at `stage` (1 = open of
 * the temporary file, 2 = write, 3 = fsync, 4 = rename) as if the system
 * call had failed with EIO. 0 clears it. One-shot: any save consumes it. */
DD_API void dd__io_fail_at(int stage);

#endif
