/* lib/gfa/gfa.h -- GFA internals used by the graph (internal). */
#ifndef DD_LIB_GFA_H
#define DD_LIB_GFA_H

#include <deepdefense/gfa.h>

#include "../graph/graph.h"

typedef struct dd__gfa_args {
    const int32_t *labels;
    dd_step_stats *stats;
} dd__gfa_args;

/* dd_model_backward with hooks: passes 2-4 after the cross-entropy seed
 * (arg is a dd__gfa_args). Accumulates dJ/dtheta into the gradients. */
DD_INTERNAL dd_status dd__gfa_backward(dd_model *m, void *arg);
/* Whether tensor i needs a bar buffer: hooked, or read by a batch norm. */
DD_INTERNAL int dd__gfa_needs_bar(const dd_model *m, int i);

/* Per-sample alignment of one hook (align.c): from G = dL/dY (grad) and
 * h = Y (data), n samples of `floats` each, mode, lambda: writes the initial
 * tangent Gbar into tan and Ybar into bar (both overwritten), and returns the
 * batch means of r and |c| in *reg and *align. work: 8 doubles per sample. */
DD_INTERNAL void dd__gfa_align(const float *grad, const float *data, float *tan, float *bar, int n,
                               size_t floats, int mode, double lambda, double *work, int nthreads,
                               double *reg, double *align);

#endif
