/* lib/nodes/pool.c -- options, validation and metadata common to max and
 * average pooling. Padding is at most half the kernel (as in PyTorch), so
 * every window holds at least one real element. */
#include <jansson.h>
#include <string.h>

#include "pool.h"

void dd_pool_options_init_sized(dd_pool_options *opts, size_t size) {
    dd_pool_options d;
    memset(&d, 0, sizeof d);
    d.kernel_h = d.kernel_w = 2;
    d.stride_h = d.stride_w = 2;
    dd__struct_fill(opts, size, &d, sizeof d);
}

dd_status dd__pool_config(const dd__tensor *in, const dd_pool_options *o, const char *what,
                          dd__pool_cfg *cfg) {
    DD_RETURN_IF(in->ndims != 4, DD_ERR_INVALID_ARGUMENT, "%s: input is not 4-D", what);
    DD_RETURN_IF(o->kernel_h < 1 || o->kernel_w < 1 || o->stride_h < 1 || o->stride_w < 1 || o->pad_h < 0 ||
                     o->pad_w < 0 || o->kernel_h > 4096 || o->kernel_w > 4096 || o->stride_h > 4096 ||
                     o->stride_w > 4096,
                 DD_ERR_INVALID_ARGUMENT, "%s: kernel %dx%d, stride %dx%d, pad %dx%d", what, o->kernel_h,
                 o->kernel_w, o->stride_h, o->stride_w, o->pad_h, o->pad_w);
    DD_RETURN_IF(2 * o->pad_h > o->kernel_h || 2 * o->pad_w > o->kernel_w, DD_ERR_INVALID_ARGUMENT,
                 "%s: padding %dx%d exceeds half the kernel %dx%d", what, o->pad_h, o->pad_w, o->kernel_h,
                 o->kernel_w);
    DD_RETURN_IF(in->h + 2 * o->pad_h < o->kernel_h || in->w + 2 * o->pad_w < o->kernel_w,
                 DD_ERR_INVALID_ARGUMENT, "%s: kernel %dx%d larger than the padded input %dx%d", what,
                 o->kernel_h, o->kernel_w, in->h + 2 * o->pad_h, in->w + 2 * o->pad_w);
    cfg->kh = o->kernel_h;
    cfg->kw = o->kernel_w;
    cfg->sh = o->stride_h;
    cfg->sw = o->stride_w;
    cfg->ph = o->pad_h;
    cfg->pw = o->pad_w;
    cfg->oh = (in->h + 2 * o->pad_h - o->kernel_h) / o->stride_h + 1;
    cfg->ow = (in->w + 2 * o->pad_w - o->kernel_w) / o->stride_w + 1;
    return DD_OK;
}

dd_status dd__pool_append(dd_model *m, const dd__node_ops *ops, dd_node input, const dd_pool_options *user,
                          const char *what, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, what, &input, 1, out));
    DD_RETURN_IF(!user, DD_ERR_INVALID_ARGUMENT, "%s: options are NULL", what);
    dd_pool_options full;
    dd_pool_options_init(&full);
    DD_FORWARD(DD__STRUCT_READ(&full, user, DD_POOL_OPTIONS_SIZE_V1, what, "dd_pool_options"));
    const dd_pool_options *opts = &full;
    const dd__tensor *in = &m->nodes[input].out;
    dd__pool_cfg cfg;
    DD_FORWARD(dd__pool_config(in, opts, what, &cfg));
    dd__pool_cfg *s = dd__malloc(sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "%s", what);
    *s = cfg;
    dd__tensor t = *in;
    t.h = cfg.oh;
    t.w = cfg.ow;
    int id, inputs[1] = {input};
    dd_status st = dd__graph_append(m, ops, inputs, 1, opts->name, s, &t, &id);
    if (st != DD_OK) {
        dd__free(s);
        return st;
    }
    *out = id;
    return DD_OK;
}

static json_t *pair(int a, int b) { return json_pack("[ii]", a, b); }

dd_status dd__pool_describe(const dd__node *n, void *obj) {
    const dd__pool_cfg *c = n->state;
    json_object_set_new(obj, "kernel", pair(c->kh, c->kw));
    json_object_set_new(obj, "stride", pair(c->sh, c->sw));
    json_object_set_new(obj, "pad", pair(c->ph, c->pw));
    return DD_OK;
}

void dd__pool_info(const dd__node *n, dd_node_info *i) {
    const dd__pool_cfg *c = n->state;
    i->kernel_h = c->kh;
    i->kernel_w = c->kw;
    i->stride_h = c->sh;
    i->stride_w = c->sw;
    i->pad_h = c->ph;
    i->pad_w = c->pw;
}
