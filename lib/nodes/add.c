/* lib/nodes/add.c -- element-wise sum y = a + b (residual connections).
 *
 * Both inputs must have the same shape and layout, so the sum is one flat
 * loop over n * sample_floats (padding lanes are 0 + 0). Backward copies dy
 * to both inputs; the JVP is ta + tb; no second-order term.
 */
#include <string.h>

#include "../graph/graph_internal.h"
#include "kernels.h"

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    (void)plan;
    dd__add2(x[0], x[1], y, dd__tensor_floats(&n->out, ctx->n), ctx->nthreads);
    return DD_OK;
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const float *dy, float *const *dx) {
    (void)plan;
    size_t bytes = dd__tensor_floats(&n->out, ctx->n) * sizeof(float);
    for (int k = 0; k < 2; k++)
        if (dx[k]) memcpy(dx[k], dy, bytes);
    return DD_OK;
}

const dd__node_ops dd__add_ops = {
    .type = DD_NODE_ADD,
    .name = "add",
    .forward = forward,
    .backward = backward,
    .jvp = forward,
};

dd_status dd_model_add_add(dd_model *m, dd_node a, dd_node b, const char *name, dd_node *out) {
    dd_node ins[2] = {a, b};
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_add", ins, 2, out));
    const dd__tensor *ta = &m->nodes[a].out, *tb = &m->nodes[b].out;
    DD_RETURN_IF(ta->ndims != tb->ndims || ta->c != tb->c || ta->h != tb->h || ta->w != tb->w,
                 DD_ERR_INVALID_ARGUMENT, "dd_model_add_add: shapes differ: (%d, %d, %d) vs (%d, %d, %d)",
                 ta->c, ta->h, ta->w, tb->c, tb->h, tb->w);
    DD_RETURN_IF(ta->layout != tb->layout, DD_ERR_UNSUPPORTED,
                 "dd_model_add_add: nodes %d and %d are stored in different layouts (e.g. the "
                 "image and a convolution output); add a normalize or conv node first",
                 (int)a, (int)b);
    dd__tensor t = *ta;
    int id, inputs[2] = {a, b};
    DD_FORWARD(dd__graph_append(m, &dd__add_ops, inputs, 2, name, NULL, &t, &id));
    *out = id;
    return DD_OK;
}
