/* lib/nodes/conv2d.c -- 2-D convolution (cross-correlation, as PyTorch).
 *
 * Output always in nChw16c; the input in its own layout (the image stays
 * NCHW: oneDNN's first-layer kernel takes it directly). Algorithm: Winograd
 * (jit_wino_4x3, 1.7-2.8x faster here) for 3x3 stride-1 layers with at
 * least 32 input channels under DD_CONV_AUTO (resnet20's 32->32 16x16 layer,
 * batch 128, 2 threads: fwd + bwd_d + bwd_w 4.05 ms vs 4.61 direct; its
 * 16-channel layers run slower with it: 6.97 vs 5.30), wherever oneDNN
 * offers it under DD_CONV_WINOGRAD, direct otherwise (and as the fallback).
 * The passes themselves are in wlayer.c. Parameters: weight (OC, IC, KH, KW),
 * He-normal; bias (OC), zero.
 */
#include <jansson.h>
#include <string.h>

#include "wlayer.h"

typedef struct {
    int oc, kh, kw, sh, sw, ph, pw, bias;
} conv_state;

void dd_conv2d_options_init_sized(dd_conv2d_options *opts, size_t size) {
    dd_conv2d_options d;
    memset(&d, 0, sizeof d);
    d.kernel_h = d.kernel_w = 3;
    d.stride_h = d.stride_w = 1;
    d.bias = 1;
    dd__struct_fill(opts, size, &d, sizeof d);
}

static dnnl_status_t desc(const dd__node *n, dd__wl_kind kind, int wino, const dnnl_memory_desc_t *src,
                          const dnnl_memory_desc_t *w, const dnnl_memory_desc_t *b,
                          const dnnl_memory_desc_t *dst, void *out) {
    const conv_state *c = n->state;
    dnnl_dims_t st = {c->sh, c->sw}, pd = {c->ph, c->pw};
    dnnl_alg_kind_t alg = wino ? dnnl_convolution_winograd : dnnl_convolution_direct;
    dnnl_convolution_desc_t *d = out;
    switch (kind) {
    case DD__WL_FWD:
    case DD__WL_FWD_INFER:
        return dnnl_convolution_forward_desc_init(
            d, kind == DD__WL_FWD ? dnnl_forward_training : dnnl_forward_inference, alg, src, w, b, dst, st,
            pd, pd);
    case DD__WL_BWD_DATA:
        return dnnl_convolution_backward_data_desc_init(d, alg, src, w, dst, st, pd, pd);
    default:
        return dnnl_convolution_backward_weights_desc_init(d, alg, src, w, b, dst, st, pd, pd);
    }
}

static dd_status declare_params(dd__node *n) {
    const conv_state *c = n->state;
    int64_t wd[4] = {c->oc, dd__in(n, 0)->c, c->kh, c->kw};
    DD_FORWARD(dd__node_add_param(n, "weight", 4, wd, 1, 1));
    if (c->bias) DD_FORWARD(dd__node_add_param(n, "bias", 1, wd, 1, 0));
    return DD_OK;
}

static void init_params(dd__node *n, dd__rng *rng) {
    const conv_state *c = n->state;
    dd__wl_init_params(n, rng, (size_t)dd__in(n, 0)->c * c->kh * c->kw);
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **plan) {
    const conv_state *c = n->state;
    const dd__tensor *in = dd__in(n, 0);
    dd__wl_cfg cfg = {desc, 4, {c->oc, in->c, c->kh, c->kw}, c->bias, 0, c->sh, c->sw, c->ph, c->pw};
    int wino_shape = c->kh == 3 && c->kw == 3 && c->sh == 1 && c->sw == 1 && in->layout == DD__BLOCKED;
    dd_conv_algo algo = n->model->opts.conv_algo;
    cfg.winograd =
        (algo == DD_CONV_WINOGRAD && wino_shape) || (algo == DD_CONV_AUTO && wino_shape && in->c >= 32);
    return dd__wl_plan_create(n, ctx, &cfg, plan);
}

static dd_status describe(const dd__node *n, void *obj) {
    const conv_state *c = n->state;
    json_object_set_new(obj, "out_channels", json_integer(c->oc));
    json_object_set_new(obj, "kernel", json_pack("[ii]", c->kh, c->kw));
    json_object_set_new(obj, "stride", json_pack("[ii]", c->sh, c->sw));
    json_object_set_new(obj, "pad", json_pack("[ii]", c->ph, c->pw));
    json_object_set_new(obj, "bias", json_integer(c->bias));
    return DD_OK;
}

static void info(const dd__node *n, dd_node_info *i) {
    const conv_state *c = n->state;
    i->kernel_h = c->kh;
    i->kernel_w = c->kw;
    i->stride_h = c->sh;
    i->stride_w = c->sw;
    i->pad_h = c->ph;
    i->pad_w = c->pw;
}

const dd__node_ops dd__conv2d_ops = {
    .type = DD_NODE_CONV2D,
    .name = "conv2d",
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
    .info = info,
};

dd_status dd_model_add_conv2d(dd_model *m, dd_node input, const dd_conv2d_options *user, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_conv2d", &input, 1, out));
    DD_RETURN_IF(!user, DD_ERR_INVALID_ARGUMENT, "dd_model_add_conv2d: options are NULL");
    dd_conv2d_options full;
    dd_conv2d_options_init(&full);
    DD_FORWARD(
        DD__STRUCT_READ(&full, user, DD_CONV2D_OPTIONS_SIZE_V1, "dd_model_add_conv2d", "dd_conv2d_options"));
    const dd_conv2d_options *o = &full;
    const dd__tensor *in = &m->nodes[input].out;
    DD_RETURN_IF(in->ndims != 4, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_add_conv2d: input node %d is 2-D (%d features); conv2d needs (C, H, W)",
                 (int)input, in->c);
    DD_RETURN_IF(o->out_channels < 1 || o->out_channels > 65536 || o->kernel_h < 1 || o->kernel_w < 1 ||
                     o->stride_h < 1 || o->stride_w < 1 || o->pad_h < 0 || o->pad_w < 0 || o->kernel_h > 64 ||
                     o->kernel_w > 64 || o->stride_h > 64 || o->stride_w > 64 || o->pad_h >= o->kernel_h ||
                     o->pad_w >= o->kernel_w || (o->bias != 0 && o->bias != 1),
                 DD_ERR_INVALID_ARGUMENT,
                 "dd_model_add_conv2d: out_channels %d, kernel %dx%d, stride %dx%d, pad %dx%d, bias %d",
                 o->out_channels, o->kernel_h, o->kernel_w, o->stride_h, o->stride_w, o->pad_h, o->pad_w,
                 o->bias);
    DD_RETURN_IF(in->h + 2 * o->pad_h < o->kernel_h || in->w + 2 * o->pad_w < o->kernel_w,
                 DD_ERR_INVALID_ARGUMENT,
                 "dd_model_add_conv2d: kernel %dx%d larger than the padded "
                 "input %dx%d",
                 o->kernel_h, o->kernel_w, in->h + 2 * o->pad_h, in->w + 2 * o->pad_w);
    conv_state *c = dd__malloc(sizeof *c);
    DD_RETURN_IF(!c, DD_ERR_OUT_OF_MEMORY, "dd_model_add_conv2d");
    *c = (conv_state){o->out_channels, o->kernel_h, o->kernel_w, o->stride_h,
                      o->stride_w,     o->pad_h,    o->pad_w,    o->bias};
    dd__tensor t;
    memset(&t, 0, sizeof t);
    t.ndims = 4;
    t.c = o->out_channels;
    t.h = (in->h + 2 * o->pad_h - o->kernel_h) / o->stride_h + 1;
    t.w = (in->w + 2 * o->pad_w - o->kernel_w) / o->stride_w + 1;
    t.layout = DD__BLOCKED;
    t.blk = m->act_block;
    int id, inputs[1] = {input};
    dd_status s = dd__graph_append(m, &dd__conv2d_ops, inputs, 1, o->name, c, &t, &id);
    if (s != DD_OK) {
        dd__free(c);
        return s;
    }
    *out = id;
    return DD_OK;
}
