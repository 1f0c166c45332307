/* lib/nodes/normalize.c -- per-channel standardisation y = (x - mean[c]) / std[c].
 *
 * Lets the model take [0, 1] pixels, so attacks work in pixel space. It is
 * affine with constant coefficients: backward and JVP are both the scaling
 * by 1/std[c] (shift-free), with no second-order term. Our own kernel
 * (kernels.c), any layout. mean and std are configuration (saved in the
 * architecture metadata), not parameters.
 */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "../graph/graph_internal.h"
#include "kernels.h"

typedef struct {
    int c;
    float *mean, *std, *inv_std, *shift; /* C each, one allocation */
} normalize_state;

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    (void)plan;
    normalize_state *s = n->state;
    dd__chan_affine(&n->out, ctx->n, x[0], y, s->inv_std, s->shift, ctx->nthreads);
    return DD_OK;
}

/* dx = dy / std; also the JVP (same linear map). */
static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    (void)st;
    (void)plan;
    normalize_state *s = n->state;
    if (dx[0]) dd__chan_affine(&n->out, ctx->n, dy, dx[0], s->inv_std, NULL, ctx->nthreads);
    return DD_OK;
}

static dd_status jvp(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, float *ty) {
    (void)plan;
    normalize_state *s = n->state;
    dd__chan_affine(&n->out, ctx->n, tx[0], ty, s->inv_std, NULL, ctx->nthreads);
    return DD_OK;
}

static dd_status describe(const dd__node *n, void *obj) {
    const normalize_state *s = n->state;
    json_t *mean = json_array(), *std = json_array();
    for (int c = 0; c < s->c; c++) {
        json_array_append_new(mean, json_real(s->mean[c]));
        json_array_append_new(std, json_real(s->std[c]));
    }
    json_object_set_new(obj, "mean", mean);
    json_object_set_new(obj, "std", std);
    return DD_OK;
}

static void info(const dd__node *n, dd_node_info *i) {
    const normalize_state *s = n->state;
    i->mean = s->mean;
    i->std = s->std;
}

static void destroy(dd__node *n) {
    normalize_state *s = n->state;
    if (s) dd__free(s->mean);
    dd__free(s);
    n->state = NULL;
}

const dd__node_ops dd__normalize_ops = {
    .type = DD_NODE_NORMALIZE,
    .name = "normalize",
    .forward = forward,
    .backward = backward,
    .jvp = jvp,
    .describe = describe,
    .info = info,
    .destroy = destroy,
};

dd_status dd_model_add_normalize(dd_model *m, dd_node input, const float *mean, const float *std, int count,
                                 const char *name, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_normalize", &input, 1, out));
    DD_RETURN_IF(!mean || !std, DD_ERR_INVALID_ARGUMENT, "dd_model_add_normalize: mean/std is NULL");
    const dd__tensor *in = &m->nodes[input].out;
    DD_RETURN_IF(count != in->c, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_add_normalize: %d values for a tensor of %d channels", count, in->c);
    for (int c = 0; c < count; c++)
        DD_RETURN_IF(!isfinite(mean[c]) || !isfinite(std[c]) || !(std[c] > 0), DD_ERR_INVALID_ARGUMENT,
                     "dd_model_add_normalize: channel %d: mean %g, std %g (std must be > 0)", c,
                     (double)mean[c], (double)std[c]);
    normalize_state *s = dd__calloc(1, sizeof *s);
    float *buf = dd__calloc(4 * (size_t)count, sizeof(float));
    if (!s || !buf) {
        dd__free(s);
        dd__free(buf);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "dd_model_add_normalize");
    }
    s->c = count;
    s->mean = buf;
    s->std = buf + count;
    s->inv_std = buf + 2 * count;
    s->shift = buf + 3 * count;
    for (int c = 0; c < count; c++) {
        s->mean[c] = mean[c];
        s->std[c] = std[c];
        s->inv_std[c] = 1.0f / std[c];
        s->shift[c] = -mean[c] / std[c];
    }
    dd__tensor t = *in;
    int id;
    int inputs[1] = {input};
    dd_status st = dd__graph_append(m, &dd__normalize_ops, inputs, 1, name, s, &t, &id);
    if (st != DD_OK) {
        dd__free(buf);
        dd__free(s);
        return st;
    }
    *out = id;
    return DD_OK;
}
