/* lib/nodes/add.c -- element-wise sum y = a + b (residual connections).
 *
 * Both inputs have the same shape. When they share a layout the sum is one
 * flat loop over n * sample_floats (padding lanes are 0 + 0). When they do
 * not (the NCHW image plus a convolution's blocked output), the output takes
 * the blocked layout, the other input is reordered straight into y and the
 * blocked one added in place; backward reorders dy back for that input.
 * Backward otherwise copies dy to both inputs; the JVP is ta + tb; no
 * second-order term. Fusion: a following ReLU runs in the same loop
 * (same-layout inputs only), forward and, in plain backward passes, backward.
 */
#include <string.h>

#include "../engine/engine.h"
#include "../graph/graph_internal.h"
#include "kernels.h"

typedef struct {
    int convert; /* index of the input whose layout differs from y's, or -1 */
} add_state;

typedef struct {
    dd__reorder to_out, from_out; /* input[convert] -> y's layout, and back */
} add_plan;

static void plan_destroy(void *p) {
    add_plan *a = p;
    if (!a) return;
    dd__reorder_destroy(&a->to_out);
    dd__reorder_destroy(&a->from_out);
    dd__free(a);
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **out) {
    const add_state *s = n->state;
    add_plan *a = dd__calloc(1, sizeof *a);
    DD_RETURN_IF(!a, DD_ERR_OUT_OF_MEMORY, "add plan");
    dd_status st = DD_OK;
    if (s->convert >= 0) {
        dnnl_memory_desc_t in_md, out_md;
        st = dd__tensor_md(dd__in(n, s->convert), ctx->n, &in_md);
        if (st == DD_OK) st = dd__tensor_md(&n->out, ctx->n, &out_md);
        if (st == DD_OK) st = dd__reorder_create(ctx, &a->to_out, &in_md, &out_md, 0);
        if (st == DD_OK) st = dd__reorder_create(ctx, &a->from_out, &out_md, &in_md, 0);
    }
    if (st != DD_OK) {
        plan_destroy(a);
        return st;
    }
    *out = a;
    return DD_OK;
}

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    const add_state *s = n->state;
    size_t count = dd__tensor_floats(&n->out, ctx->n);
    if (ctx->fuse && s->convert >= 0) return DD_ERR_UNSUPPORTED;
    if (s->convert < 0) {
        dd__add2(x[0], x[1], y, count, ctx->fuse != NULL, ctx->nthreads);
        return DD_OK;
    }
    DD_FORWARD(dd__reorder_run(ctx, &((add_plan *)plan)->to_out, x[s->convert], y));
    dd__axpy1(y, x[1 - s->convert], count, ctx->nthreads);
    return DD_OK;
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    const add_state *s = n->state;
    size_t bytes = dd__tensor_floats(&n->out, ctx->n) * sizeof(float);
    if (st->variant == DD__BV_MASKS_OUTPUT) { /* the ReLU after this add (same layouts, schedule.c) */
        dd__relu_bwd2(dx[0], dx[1], dy, st->mask, bytes / sizeof(float), ctx->nthreads);
        return DD_OK;
    }
    for (int k = 0; k < 2; k++) {
        if (!dx[k]) continue;
        if (k == s->convert)
            DD_FORWARD(dd__reorder_run(ctx, &((add_plan *)plan)->from_out, dy, dx[k]));
        else
            dd__copy(dx[k], dy, bytes / sizeof(float), ctx->nthreads);
    }
    return DD_OK;
}

const dd__node_ops dd__add_ops = {
    .type = DD_NODE_ADD,
    .name = "add",
    .plan_create = plan_create,
    .plan_destroy = plan_destroy,
    .forward = forward,
    .backward = backward,
    .jvp = forward,
    .fuse_caps = {DD__FUSE_RELU, DD__FUSE_RELU},
    .fuse_as = DD__FUSE_ADD,
    .caps = DD__CAP_BWD_MASKS_OUTPUT,
};

dd_status dd_model_add_add(dd_model *m, dd_node a, dd_node b, const char *name, dd_node *out) {
    dd_node ins[2] = {a, b};
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_add", ins, 2, out));
    const dd__tensor *ta = &m->nodes[a].out, *tb = &m->nodes[b].out;
    DD_RETURN_IF(ta->ndims != tb->ndims || ta->c != tb->c || ta->h != tb->h || ta->w != tb->w,
                 DD_ERR_INVALID_ARGUMENT, "dd_model_add_add: shapes differ: (%d, %d, %d) vs (%d, %d, %d)",
                 ta->c, ta->h, ta->w, tb->c, tb->h, tb->w);
    add_state *s = dd__malloc(sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "dd_model_add_add");
    dd__tensor t = *ta;
    s->convert = -1;
    if (ta->layout != tb->layout) {
        /* the output takes the blocked layout (fast primitives downstream) */
        s->convert = tb->layout == DD__BLOCKED ? 0 : 1;
        t = s->convert == 0 ? *tb : *ta;
    }
    int id, inputs[2] = {a, b};
    dd_status st = dd__graph_append(m, &dd__add_ops, inputs, 2, name, s, &t, &id);
    if (st != DD_OK) {
        dd__free(s);
        return st;
    }
    *out = id;
    return DD_OK;
}
