/* lib/nodes/relu.c -- y = max(x, 0) through oneDNN eltwise primitives.
 *
 * Backward and the JVP take the mask from the output (eltwise
 * relu_use_dst_for_bwd): dx = dy * [y > 0], ty = tx * [y > 0], the same as
 * [x > 0]; so the input need not be kept, which lets a producer compute
 * the ReLU as a post-op (lib/graph/fusion.c) without materialising x. The
 * derivative at exactly 0 is 0, as in PyTorch. No second-order term (ReLU is
 * piecewise linear).
 */
#include <string.h>

#include "../engine/engine.h"
#include "../graph/graph_internal.h"

typedef struct {
    dd__prim fwd, bwd;
    dnnl_memory_t src, dst, diff_dst, diff_src;
} relu_plan;

static void plan_destroy(void *p) {
    relu_plan *r = p;
    if (!r) return;
    dd__prim_destroy(&r->fwd);
    dd__prim_destroy(&r->bwd);
    dd__mem_destroy(&r->src);
    dd__mem_destroy(&r->dst);
    dd__mem_destroy(&r->diff_dst);
    dd__mem_destroy(&r->diff_src);
    dd__free(r);
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **out) {
    relu_plan *r = dd__calloc(1, sizeof *r);
    DD_RETURN_IF(!r, DD_ERR_OUT_OF_MEMORY, "relu plan");
    dnnl_memory_desc_t md;
    dnnl_eltwise_desc_t fd, bd;
    dd_status s = dd__tensor_md(&n->out, ctx->n, &md);
    const dnnl_alg_kind_t alg = dnnl_eltwise_relu_use_dst_for_bwd;
    if (s == DD_OK &&
        dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, alg, &md, 0.f, 0.f) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "relu '%s': forward descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &r->fwd, &fd, NULL, NULL, "relu forward");
    if (s == DD_OK && dnnl_eltwise_backward_desc_init(&bd, alg, &md, &md, 0.f, 0.f) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "relu '%s': backward descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &r->bwd, &bd, NULL, &r->fwd, "relu backward");
    if (s == DD_OK) s = dd__mem_create(ctx, &r->src, &md);
    if (s == DD_OK) s = dd__mem_create(ctx, &r->dst, &md);
    if (s == DD_OK) s = dd__mem_create(ctx, &r->diff_dst, &md);
    if (s == DD_OK) s = dd__mem_create(ctx, &r->diff_src, &md);
    if (s != DD_OK) {
        plan_destroy(r);
        return s;
    }
    *out = r;
    return DD_OK;
}

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    (void)n;
    relu_plan *r = plan;
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, dd__mem(r->src, x[0])}, {DNNL_ARG_DST, dd__mem(r->dst, y)}};
    return dd__exec(ctx, &r->fwd, 2, a);
}

/* out = g * [y > 0] with y the forward output. */
static dd_status masked(dd__node *n, relu_plan *r, dd__ctx *ctx, const float *g, float *out) {
    dnnl_exec_arg_t a[] = {{DNNL_ARG_DST, dd__mem(r->dst, n->out.data)},
                           {DNNL_ARG_DIFF_DST, dd__mem(r->diff_dst, g)},
                           {DNNL_ARG_DIFF_SRC, dd__mem(r->diff_src, out)}};
    return dd__exec(ctx, &r->bwd, 3, a);
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    (void)st;
    if (!dx[0]) return DD_OK;
    return masked(n, plan, ctx, dy, dx[0]);
}

static dd_status jvp(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, float *ty) {
    return masked(n, plan, ctx, tx[0], ty);
}

const dd__node_ops dd__relu_ops = {
    .type = DD_NODE_RELU,
    .name = "relu",
    .plan_create = plan_create,
    .plan_destroy = plan_destroy,
    .forward = forward,
    .backward = backward,
    .jvp = jvp,
    .fuse_as = DD__FUSE_RELU,
    .caps = DD__CAP_MASK_FROM_OUTPUT,
};

dd_status dd_model_add_relu(dd_model *m, dd_node input, const char *name, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_relu", &input, 1, out));
    dd__tensor t = m->nodes[input].out;
    int id, inputs[1] = {input};
    DD_FORWARD(dd__graph_append(m, &dd__relu_ops, inputs, 1, name, NULL, &t, &id));
    *out = id;
    return DD_OK;
}
