/* lib/nodes/gavgpool.c -- global average pooling (N, C, H, W) -> (N, C).
 *
 * Our own kernel in any input layout: y[s][c] = mean over (h, w). Backward
 * spreads dy[s][c] / (H*W) over the plane (padding lanes get 0). The map is
 * linear: the JVP is the forward applied to the tangent.
 */
#include <string.h>

#include "../graph/graph_internal.h"

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    (void)plan;
    const dd__tensor *in = dd__in(n, 0);
    int C = in->c, H = in->h, W = in->w, nt = ctx->nthreads;
    float inv = 1.0f / (float)(H * W);
    if ((size_t)ctx->n * in->sample_floats < 32768) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int s = 0; s < ctx->n; s++) {
        const float *xs = x[0] + (size_t)s * in->sample_floats;
        for (int c = 0; c < C; c++) {
            float acc = 0;
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) acc += xs[dd__tensor_offset(in, c, yy, xx)];
            y[(size_t)s * C + c] = acc * inv;
        }
    }
    return DD_OK;
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    (void)st;
    (void)plan;
    if (!dx[0]) return DD_OK;
    const dd__tensor *in = dd__in(n, 0);
    int C = in->c, H = in->h, W = in->w, nt = ctx->nthreads;
    float inv = 1.0f / (float)(H * W);
    if ((size_t)ctx->n * in->sample_floats < 32768) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int s = 0; s < ctx->n; s++) {
        float *xs = dx[0] + (size_t)s * in->sample_floats;
        memset(xs, 0, in->sample_floats * sizeof(float));
        for (int c = 0; c < C; c++) {
            float g = dy[(size_t)s * C + c] * inv;
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) xs[dd__tensor_offset(in, c, yy, xx)] = g;
        }
    }
    return DD_OK;
}

const dd__node_ops dd__gavgpool_ops = {
    .type = DD_NODE_GLOBAL_AVGPOOL,
    .name = "global_avgpool",
    .forward = forward,
    .backward = backward,
    .jvp = forward,
};

dd_status dd_model_add_global_avgpool(dd_model *m, dd_node input, const char *name, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_global_avgpool", &input, 1, out));
    const dd__tensor *in = &m->nodes[input].out;
    DD_RETURN_IF(in->ndims != 4, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_add_global_avgpool: input node %d is not 4-D", (int)input);
    dd__tensor t;
    memset(&t, 0, sizeof t);
    t.ndims = 2;
    t.c = in->c;
    t.h = t.w = 1;
    t.layout = DD__NC;
    int id, inputs[1] = {input};
    DD_FORWARD(dd__graph_append(m, &dd__gavgpool_ops, inputs, 1, name, NULL, &t, &id));
    *out = id;
    return DD_OK;
}
