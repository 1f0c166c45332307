/* lib/nodes/linear.c -- fully connected layer y = x W^T + b on (N, IN).
 *
 * oneDNN inner product (brgemm kernels with weights in their preferred
 * layout; master weights plain (OUT, IN) as PyTorch). The passes are in
 * wlayer.c. Parameters: weight (OUT, IN), He-normal; bias (OUT), zero.
 */
#include <jansson.h>
#include <string.h>

#include "wlayer.h"

typedef struct {
    int out, bias;
} linear_state;

static dnnl_status_t desc(const dd__node *n, dd__wl_kind kind, int wino, const dnnl_memory_desc_t *src,
                          const dnnl_memory_desc_t *w, const dnnl_memory_desc_t *b,
                          const dnnl_memory_desc_t *dst, void *out) {
    (void)n;
    (void)wino;
    dnnl_inner_product_desc_t *d = out;
    switch (kind) {
    case DD__WL_FWD:
        return dnnl_inner_product_forward_desc_init(d, dnnl_forward_training, src, w, b, dst);
    case DD__WL_FWD_INFER:
        return dnnl_inner_product_forward_desc_init(d, dnnl_forward_inference, src, w, b, dst);
    case DD__WL_BWD_DATA:
        return dnnl_inner_product_backward_data_desc_init(d, src, w, dst);
    default:
        return dnnl_inner_product_backward_weights_desc_init(d, src, w, b, dst);
    }
}

static dd_status declare_params(dd__node *n) {
    const linear_state *l = n->state;
    int64_t wd[2] = {l->out, dd__in(n, 0)->c};
    DD_FORWARD(dd__node_add_param(n, "weight", 2, wd, 1, 1));
    if (l->bias) DD_FORWARD(dd__node_add_param(n, "bias", 1, wd, 1, 0));
    return DD_OK;
}

static void init_params(dd__node *n, dd__rng *rng) { dd__wl_init_params(n, rng, (size_t)dd__in(n, 0)->c); }

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **plan) {
    const linear_state *l = n->state;
    dd__wl_cfg cfg = {desc, 2, {l->out, dd__in(n, 0)->c, 0, 0}, l->bias, 0, 0, 0, 0, 0};
    return dd__wl_plan_create(n, ctx, &cfg, plan);
}

static dd_status describe(const dd__node *n, void *obj) {
    const linear_state *l = n->state;
    json_object_set_new(obj, "out_features", json_integer(l->out));
    json_object_set_new(obj, "bias", json_integer(l->bias));
    return DD_OK;
}

const dd__node_ops dd__linear_ops = {
    .type = DD_NODE_LINEAR,
    .name = "linear",
    .declare_params = declare_params,
    .init_params = init_params,
    .plan_create = plan_create,
    .plan_destroy = dd__wl_plan_destroy,
    .forward = dd__wl_forward,
    .backward = dd__wl_backward,
    .jvp = dd__wl_jvp,
    .second_order = dd__wl_second_order,
    .fuse_caps = {DD__FUSE_BN | DD__FUSE_ADD | DD__FUSE_RELU, DD__FUSE_RELU},
    .caps = DD__CAP_WEIGHT_LAYER | DD__CAP_BWD_FOLDS_BN,
    .describe = describe,
};

dd_status dd_model_add_linear(dd_model *m, dd_node input, int out_features, int bias, const char *name,
                              dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_linear", &input, 1, out));
    const dd__tensor *in = &m->nodes[input].out;
    DD_RETURN_IF(in->ndims != 2, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_add_linear: input node %d is (%d, %d, %d); add a flatten node first", (int)input,
                 in->c, in->h, in->w);
    DD_RETURN_IF(out_features < 1 || out_features > (1 << 20) || (bias != 0 && bias != 1),
                 DD_ERR_INVALID_ARGUMENT, "dd_model_add_linear: out_features %d, bias %d", out_features,
                 bias);
    linear_state *l = dd__malloc(sizeof *l);
    DD_RETURN_IF(!l, DD_ERR_OUT_OF_MEMORY, "dd_model_add_linear");
    l->out = out_features;
    l->bias = bias;
    dd__tensor t;
    memset(&t, 0, sizeof t);
    t.ndims = 2;
    t.c = out_features;
    t.h = t.w = 1;
    t.layout = DD__NC;
    int id, inputs[1] = {input};
    dd_status s = dd__graph_append(m, &dd__linear_ops, inputs, 1, name, l, &t, &id);
    if (s != DD_OK) {
        dd__free(l);
        return s;
    }
    *out = id;
    return DD_OK;
}
