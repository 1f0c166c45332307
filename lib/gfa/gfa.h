/* lib/gfa/gfa.h -- GFA internals (lib/gfa only: the graph code does not
 * call GFA; GFA reaches the backward passes through the planner's pass
 * description and inject callback, lib/graph/graph_internal.h). */
#ifndef DD_LIB_GFA_H
#define DD_LIB_GFA_H

#include <deepdefense/gfa.h>

#include "../graph/graph.h"

typedef struct dd__gfa_args {
    const int32_t *labels;
    dd_step_stats *stats;
} dd__gfa_args;

/* dd_model_backward with hooks (objective.c): passes 2-4 after the
 * cross-entropy seed (arg is a dd__gfa_args), for dd__guarded_grads.
 * Accumulates dJ/dtheta into the gradients. */
DD_INTERNAL dd_status dd__gfa_backward(dd_model *m, void *arg);

/* Per-sample alignment of one hook (align.c): from G = dL/dY (grad) and
 * h = Y (data), n samples of `floats` each, mode, lambda: writes per sample
 * i four coefficients coef[4i..4i+3] = (tg, th, bg, bh) with
 *   Gbar[i] = tg G[i] + th h[i]   and   Ybar[i] = bg G[i] + bh h[i],
 * and returns the batch means of r and |c| in *reg and *align.
 * work: 2 doubles per sample. */
DD_INTERNAL void dd__gfa_align(const float *grad, const float *data, int n, size_t floats, int mode,
                               double lambda, float *coef, double *work, int nthreads, double *reg,
                               double *align);
/* out[i] (+)= coef[4i + 2w] G[i] + coef[4i + 2w + 1] h[i] for each sample i
 * (w = 0: Gbar, 1: Ybar); accumulate selects += over =. */
DD_INTERNAL void dd__gfa_affine(float *out, const float *G, const float *h, const float *coef, int w, int n,
                                size_t floats, int accumulate, int nthreads);

#endif
