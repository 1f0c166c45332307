/* lib/nodes/batchnorm.h -- batch-norm internals shared with its GFA terms. */
#ifndef DD_LIB_NODES_BATCHNORM_H
#define DD_LIB_NODES_BATCHNORM_H

#include "../engine/engine.h"

typedef struct dd__bn_state {
    float eps, momentum;
} dd__bn_state;

typedef struct dd__bn_plan {
    dd__prim fwd_train, fwd_eval, bwd;
    dd__prim fwd_relu[2]; /* with a fused ReLU (eval, train), created on first use */
    dnnl_memory_t ws;     /* the fused training forward's workspace (unused after) */
    float *ws_buf;
    dnnl_memory_t src, dst, dsrc, ddst, scale, shift, mean, var, dscale, dshift;
    float *buf;            /* 8 * C floats: */
    float *bmean, *bvar;   /*   batch mean, biased batch variance (training forward) */
    float *dgamma, *dbeta; /*   backward outputs */
    float *chan_scale;     /*   eval slope gamma / sqrt(var + eps) */
    double *work;          /* channel reductions */
} dd__bn_plan;

DD_INTERNAL dd_status dd__bn_train_bwd(dd__node *n, dd__bn_plan *p, dd__ctx *ctx, const float *g, float *out);
DD_INTERNAL void dd__bn_eval_scale(dd__node *n, dd__bn_plan *p);
/* The eval-mode map as y = scale[c] * x + shift[c] (C floats each), for
 * folding into a preceding weight layer. */
DD_INTERNAL void dd__bn_fold(const dd__node *n, float *scale, float *shift);
/* GFA second-order terms in training mode (batchnorm_gfa.c): adds
 * d/dgamma <tx, bwd(gy)> into gamma's grad and d/dx <tx, bwd(gy)> into xbar
 * (overwriting it when xbar_fresh; *xbar_written = 1 when xbar != NULL). */
DD_INTERNAL dd_status dd__bn_train_second_order(dd__node *n, dd__bn_plan *p, dd__ctx *ctx, const float *tx,
                                                const float *gy, float *xbar, int xbar_fresh,
                                                int *xbar_written);

#endif
