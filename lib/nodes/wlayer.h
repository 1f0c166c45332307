/* lib/nodes/wlayer.h -- the machinery shared by the weight layers
 * (convolution and inner product) (internal).
 *
 * A weight layer has three oneDNN primitives per batch size: forward,
 * backward-data and backward-weights. Master weights and gradients are plain
 * (oihw / oi); each primitive's preferred weight layout is a cached reorder
 * of the master, refreshed when m->param_version changes. Weight gradients
 * come out in the backward-weights layout and are reordered into the plain
 * gradient with a sum post-op (accumulation for free). Backward-data is
 * created on first need (the first layer rarely needs it). Where a primitive
 * has no fast kernel for the tensor's own layout (the 3-channel image for
 * backward-data, odd channel counts for backward-weights) the helper lets
 * oneDNN pick the layout and reorders through a temporary buffer.
 *
 * Fusion (lib/graph/fusion.c): with ctx->fuse set, the forward is one
 * primitive per mode that also applies an eval-mode batch norm (folded into
 * weights and bias), a residual add (binary post-op, or a sum post-op onto
 * a copy of the other operand where the kernel has no binary post-op, as
 * Winograd) and a ReLU (eltwise post-op).
 */
#ifndef DD_LIB_NODES_WLAYER_H
#define DD_LIB_NODES_WLAYER_H

#include "../engine/engine.h"
#include "../graph/graph_internal.h"

/* DD__WL_FWD_INFER: forward with dnnl_forward_inference (fused eval kernels). */
typedef enum {
    DD__WL_FWD = 0,
    DD__WL_BWD_DATA = 1,
    DD__WL_BWD_WEIGHTS = 2,
    DD__WL_FWD_INFER = 3
} dd__wl_kind;

/* Fills *desc (a dnnl_convolution_desc_t or dnnl_inner_product_desc_t) for
 * `kind`; bias may be NULL (none); winograd selects the algorithm. */
typedef dnnl_status_t (*dd__wl_desc_fn)(const dd__node *n, dd__wl_kind kind, int winograd,
                                        const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *w,
                                        const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *dst,
                                        void *desc);

typedef struct dd__wl_cfg {
    dd__wl_desc_fn desc;
    int wndims;
    int64_t wdims[4];   /* master weight shape (OC, IC[, KH, KW]) */
    int bias;           /* 1 if the layer has a bias (parameter 1) */
    int winograd;       /* try Winograd first */
    int sh, sw, ph, pw; /* convolutions: stride and padding (0 for linear) */
} dd__wl_cfg;

typedef struct dd__wplan dd__wplan;

DD_INTERNAL dd_status dd__wl_plan_create(dd__node *n, dd__ctx *ctx, const dd__wl_cfg *cfg, void **plan);
DD_INTERNAL void dd__wl_plan_destroy(void *plan);
DD_INTERNAL dd_status dd__wl_forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y);
DD_INTERNAL dd_status dd__wl_backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st,
                                      const float *dy, float *const *dx);
DD_INTERNAL dd_status dd__wl_jvp(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, float *ty);
DD_INTERNAL dd_status dd__wl_second_order(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx,
                                          const float *gy, float *const *xbar, int xbar_fresh,
                                          int *xbar_written);
/* Name of the forward implementation (for logs and tests). */
DD_INTERNAL const char *dd__wl_impl(const void *plan);
/* He-normal weights N(0, 2 / fan_in) (1 / fan_in for the logits layer), zero bias. */
DD_INTERNAL void dd__wl_init_params(dd__node *n, dd__rng *rng, size_t fan_in);

#endif
