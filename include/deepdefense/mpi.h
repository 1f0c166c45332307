/* deepdefense/mpi.h -- data-parallel training over MPI (libdeepdefense_mpi).
 *
 * A separate, optional library (link -ldeepdefense_mpi, pkg-config
 * deepdefense-mpi, CMake deepdefense::mpi); libdeepdefense itself has no
 * MPI dependency. Every rank holds a full copy of the model and trains on
 * its shard of each batch; after each backward pass the gradients are
 * averaged over the ranks with one MPI_Allreduce over the model's
 * contiguous gradient buffer (dd_model_grad_buffer), so every rank applies
 * the same update and the weights stay bitwise equal across ranks. A step:
 *
 *     dd_status s = dd_model_zero_grad(m);
 *     if (s == DD_OK) s = dd_model_forward(m, x, n, DD_TRAIN, NULL);
 *     if (s == DD_OK) s = dd_model_backward(m, y, &stats);   // GFA, any loss
 *     s = dd_mpi_allreduce_grads(d, m, s);   // every rank, whatever s is
 *     if (s == DD_OK) s = dd_optimizer_step(opt);
 *
 * GFA, PGD-AT and TRADES change only how the local gradient is computed:
 * for PGD-AT, dd_attack_run makes x_adv and the step above runs on it (not
 * dd_attack_train_step, which steps the optimizer itself); for TRADES,
 * dd_model_backward_trades is the backward. The mean over ranks of
 * the per-rank mean gradients equals the gradient of the global batch
 * when every rank has the same number of samples; batch-norm statistics
 * are per rank (as PyTorch's DistributedDataParallel), and
 * dd_mpi_average_buffers averages the running statistics (before a
 * checkpoint, say).
 *
 * Failures: every collective here first agrees on the callers' statuses,
 * so a rank that failed locally (bad input, a non-finite loss) passes its
 * status in and every rank returns: the failing one its own status, the
 * others DD_ERR_REMOTE, none blocks. MPI errors on the library's own
 * communicator (a duplicate of the one given, with MPI_ERRORS_RETURN)
 * come back as DD_ERR_BACKEND. A rank that dies is MPI's business (Open
 * MPI aborts the job).
 *
 * Threads: a dd_mpi handle is used by one thread at a time; MPI needs no
 * more than MPI_THREAD_FUNNELED (the library's OpenMP threads never call
 * MPI).
 */
#ifndef DEEPDEFENSE_MPI_H
#define DEEPDEFENSE_MPI_H

#include <mpi.h>

#include "data.h"
#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A data-parallel context: a private duplicate of a communicator. */
typedef struct dd_mpi dd_mpi;

/** CONSTRUCTOR of dd_mpi over communicator comm (collective over comm:
 *  every rank calls it). MPI must be initialised by the host (MPI_Init or
 *  MPI_Init_thread) and not finalised; comm is duplicated, so the host's
 *  own traffic on it never mixes with the library's. On failure *out is
 *  NULL. Returns DD_OK, DD_ERR_INVALID_ARGUMENT (out NULL), DD_ERR_STATE
 *  (MPI not initialised or already finalised), DD_ERR_BACKEND (an MPI call
 *  failed), DD_ERR_OUT_OF_MEMORY. */
DD_API dd_status dd_mpi_create(dd_mpi **out, MPI_Comm comm);

/** DESTRUCTOR: frees the duplicate communicator (collective; call it
 *  before MPI_Finalize). NULL is a no-op. */
DD_API void dd_mpi_destroy(dd_mpi *d);

/** METHOD: this process's rank and the number of ranks (either may be
 *  NULL). Returns DD_OK, DD_ERR_INVALID_ARGUMENT (d NULL). */
DD_API dd_status dd_mpi_info(const dd_mpi *d, int *rank, int *size);

/** METHOD (collective): agrees on the ranks' statuses. Returns local if it
 *  is not DD_OK; DD_ERR_REMOTE if local is DD_OK but another rank's is not
 *  (dd_last_error() then names the lowest failing rank and its status);
 *  DD_OK if every rank passed DD_OK; DD_ERR_BACKEND if MPI failed;
 *  DD_ERR_INVALID_ARGUMENT if d is NULL (no collective then). */
DD_API dd_status dd_mpi_agree(dd_mpi *d, dd_status local);

/** METHOD (collective): rank 0's parameters (trainable ones and batch-norm
 *  buffers) and, if opt is not NULL, its optimizer state overwrite every
 *  other rank's, so that all ranks start equal. Models must have the same
 *  architecture (the parameter counts are compared first). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (d or m NULL on this rank; architectures or
 *  optimizers that differ between ranks), DD_ERR_REMOTE, DD_ERR_BACKEND,
 *  DD_ERR_OUT_OF_MEMORY, DD_ERR_STATE (m not built), and the statuses of
 *  dd_model_param_write and dd_optimizer_state_write. */
DD_API dd_status dd_mpi_broadcast(dd_mpi *d, dd_model *m, dd_optimizer *opt);

/** METHOD (collective): agrees on local (this rank's status of the step so
 *  far, see dd_mpi_agree); if every rank is DD_OK, replaces the model's
 *  gradients by their mean over the ranks (one in-place MPI_Allreduce of
 *  dd_model_grad_buffer's floats, then a scale by 1/size). On any failure
 *  the gradients are left as they were. Returns as dd_mpi_agree, and
 *  DD_ERR_INVALID_ARGUMENT (d or m NULL, or model sizes that differ between
 *  ranks), DD_ERR_STATE (model not built). */
DD_API dd_status dd_mpi_allreduce_grads(dd_mpi *d, dd_model *m, dd_status local);

/** METHOD (collective): replaces the batch-norm running statistics of m by
 *  their mean over the ranks (a model without batch norm: nothing to do).
 *  Returns as dd_mpi_allreduce_grads with local = DD_OK, and
 *  DD_ERR_OUT_OF_MEMORY (the buffers' copy), DD_ERR_NUMERIC (as
 *  dd_model_param_write: a rank's statistics not finite). */
DD_API dd_status dd_mpi_average_buffers(dd_mpi *d, dd_model *m);

/** METHOD: sets opts->num_shards and opts->shard to this rank's shard of
 *  every epoch (data.h), so that iterators with the same seed see every
 *  sample once per epoch across the ranks. Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL, opts not from dd_batch_iter_options_init). */
DD_API dd_status dd_mpi_shard_options(const dd_mpi *d, dd_batch_iter_options *opts);

/** METHOD (collective): *value = the minimum of *value over the ranks (the
 *  number of batches every rank can run in an epoch, say). Returns DD_OK,
 *  DD_ERR_INVALID_ARGUMENT (NULL), DD_ERR_BACKEND. */
DD_API dd_status dd_mpi_min_int(dd_mpi *d, int *value);

#ifdef __cplusplus
}
#endif
#endif
