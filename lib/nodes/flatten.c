/* lib/nodes/flatten.c -- (N, C, H, W) -> (N, C*H*W) in C, H, W order.
 *
 * From plain NCHW (or an already 2-D tensor) this is a copy. From nChw<b>c it
 * is a oneDNN reorder to plain nchw written straight into the 2-D output;
 * backward is the reverse reorder (which restores zero padding lanes). The
 * JVP is the forward map applied to the tangent.
 */
#include <string.h>

#include "../engine/engine.h"
#include "../graph/graph_internal.h"

typedef struct {
    dd__reorder fwd, bwd;
} flatten_plan;

static void plan_destroy(void *p) {
    flatten_plan *f = p;
    if (!f) return;
    dd__reorder_destroy(&f->fwd);
    dd__reorder_destroy(&f->bwd);
    dd__free(f);
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **out) {
    flatten_plan *f = dd__calloc(1, sizeof *f);
    DD_RETURN_IF(!f, DD_ERR_OUT_OF_MEMORY, "flatten plan");
    const dd__tensor *in = dd__in(n, 0);
    dnnl_memory_desc_t from, plain;
    dd_status s = dd__tensor_md(in, ctx->n, &from);
    if (s == DD_OK) {
        if (in->layout == DD__NC)
            plain = from;
        else
            s = dd__md_tag(&plain, 4, (int64_t[]){ctx->n, in->c, in->h, in->w}, dnnl_nchw);
    }
    if (s == DD_OK) s = dd__reorder_create(ctx, &f->fwd, &from, &plain, 0);
    if (s == DD_OK) s = dd__reorder_create(ctx, &f->bwd, &plain, &from, 0);
    if (s != DD_OK) {
        plan_destroy(f);
        return s;
    }
    *out = f;
    return DD_OK;
}

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    (void)n;
    return dd__reorder_run(ctx, &((flatten_plan *)plan)->fwd, x[0], y);
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    (void)st;
    (void)n;
    if (!dx[0]) return DD_OK;
    return dd__reorder_run(ctx, &((flatten_plan *)plan)->bwd, dy, dx[0]);
}

const dd__node_ops dd__flatten_ops = {
    .type = DD_NODE_FLATTEN,
    .name = "flatten",
    .plan_create = plan_create,
    .plan_destroy = plan_destroy,
    .forward = forward,
    .backward = backward,
    .jvp = forward,
};

dd_status dd_model_add_flatten(dd_model *m, dd_node input, const char *name, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_flatten", &input, 1, out));
    const dd__tensor *in = &m->nodes[input].out;
    dd__tensor t;
    memset(&t, 0, sizeof t);
    t.ndims = 2;
    t.c = in->c * in->h * in->w;
    t.h = t.w = 1;
    t.layout = DD__NC;
    int id, inputs[1] = {input};
    DD_FORWARD(dd__graph_append(m, &dd__flatten_ops, inputs, 1, name, NULL, &t, &id));
    *out = id;
    return DD_OK;
}
