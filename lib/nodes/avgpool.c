/* lib/nodes/avgpool.c -- average pooling through oneDNN (padding counted in
 * the divisor: PyTorch's count_include_pad=True default).
 *
 * The map is linear: backward is oneDNN's pooling backward, the JVP is the
 * forward primitive applied to the tangent, no second-order term.
 */
#include "../engine/engine.h"
#include "pool.h"

typedef struct {
    dd__prim fwd, bwd;
    dnnl_memory_t src, dst;
} avgpool_plan;

static void plan_destroy(void *p) {
    avgpool_plan *a = p;
    if (!a) return;
    dd__prim_destroy(&a->fwd);
    dd__prim_destroy(&a->bwd);
    dd__mem_destroy(&a->src);
    dd__mem_destroy(&a->dst);
    dd__free(a);
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **out) {
    const dd__pool_cfg *c = n->state;
    avgpool_plan *a = dd__calloc(1, sizeof *a);
    DD_RETURN_IF(!a, DD_ERR_OUT_OF_MEMORY, "avgpool plan");
    dnnl_memory_desc_t smd, dmd;
    dnnl_dims_t k = {c->kh, c->kw}, st = {c->sh, c->sw}, pd = {c->ph, c->pw};
    dnnl_pooling_desc_t fd, bd;
    dd_status s = dd__tensor_md(dd__in(n, 0), ctx->n, &smd);
    if (s == DD_OK) s = dd__tensor_md(&n->out, ctx->n, &dmd);
    if (s == DD_OK &&
        dnnl_pooling_forward_desc_init(&fd, dnnl_forward_training, dnnl_pooling_avg_include_padding, &smd,
                                       &dmd, st, k, pd, pd) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "avgpool '%s': forward descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &a->fwd, &fd, NULL, NULL, "avgpool forward");
    if (s == DD_OK && dnnl_pooling_backward_desc_init(&bd, dnnl_pooling_avg_include_padding, &smd, &dmd, st,
                                                      k, pd, pd) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "avgpool '%s': backward descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &a->bwd, &bd, NULL, &a->fwd, "avgpool backward");
    if (s == DD_OK) s = dd__mem_create(ctx, &a->src, &smd);
    if (s == DD_OK) s = dd__mem_create(ctx, &a->dst, &dmd);
    if (s != DD_OK) {
        plan_destroy(a);
        return s;
    }
    *out = a;
    return DD_OK;
}

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    (void)n;
    avgpool_plan *a = plan;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, dd__mem(a->src, x[0])}, {DNNL_ARG_DST, dd__mem(a->dst, y)}};
    return dd__exec(ctx, &a->fwd, 2, args);
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    (void)st;
    (void)n;
    if (!dx[0]) return DD_OK;
    avgpool_plan *a = plan;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, dd__mem(a->dst, dy)},
                              {DNNL_ARG_DIFF_SRC, dd__mem(a->src, dx[0])}};
    return dd__exec(ctx, &a->bwd, 2, args);
}

const dd__node_ops dd__avgpool_ops = {
    .type = DD_NODE_AVGPOOL,
    .name = "avgpool",
    .plan_create = plan_create,
    .plan_destroy = plan_destroy,
    .forward = forward,
    .backward = backward,
    .jvp = forward,
    .describe = dd__pool_describe,
    .info = dd__pool_info,
};

dd_status dd_model_add_avgpool(dd_model *m, dd_node input, const dd_pool_options *opts, dd_node *out) {
    return dd__pool_append(m, &dd__avgpool_ops, input, opts, "dd_model_add_avgpool", out);
}
