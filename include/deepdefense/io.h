/* deepdefense/io.h -- checkpoints as safetensors files.
 *
 * A checkpoint holds every parameter and batch-norm statistic as an F32
 * tensor named like "conv1.weight" in PyTorch's shape, and in
 * "__metadata__" the architecture (key "deepdefense.arch", JSON), so that
 * dd_model_load() rebuilds the model from the file alone. The file is
 * readable by the safetensors Python package. Saving is atomic: the data
 * goes to "<path>.tmp.<pid>", is fsync'ed, then renamed over path, so an
 * interrupted save leaves any previous file intact.
 */
#ifndef DEEPDEFENSE_IO_H
#define DEEPDEFENSE_IO_H

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/** METHOD of dd_model: saves a built model to path (borrowed). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (not built), DD_ERR_IO,
 *  DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_model_save(const dd_model *m, const char *path);

/** CONSTRUCTOR of dd_model: loads the checkpoint at path and builds the
 *  model it describes, with the max_batch it was saved with and default
 *  options. Returns DD_OK, DD_ERR_INVALID_ARGUMENT, DD_ERR_IO (cannot open
 *  or read), DD_ERR_FORMAT (truncated or malformed; dd_last_error says
 *  where), DD_ERR_OUT_OF_MEMORY, DD_ERR_BACKEND (as dd_model_create). On
 *  failure *out is NULL. */
DD_API dd_status dd_model_load(const char *path, dd_model **out);

/** As dd_model_load with options (copied; NULL = defaults) and a max_batch
 *  (0 = the saved one). Returns the statuses of dd_model_load. */
DD_API dd_status dd_model_load_ex(const char *path, const dd_model_options *opts, int max_batch,
                                  dd_model **out);

/** Loads only the tensors of path into an existing built model of the same
 *  architecture (names, shapes must match). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL), DD_ERR_STATE (not built), DD_ERR_IO,
 *  DD_ERR_FORMAT (malformed, or names or shapes that differ),
 *  DD_ERR_OUT_OF_MEMORY; on failure the model's parameters are as they
 *  were or partly loaded (load again). */
DD_API dd_status dd_model_load_weights(dd_model *m, const char *path);

#ifdef __cplusplus
}
#endif
#endif
