/* lib/nodes/batchnorm.c -- batch normalisation per channel over (N, H, W).
 *
 * Training: oneDNN forward with batch statistics (biased variance), whose
 * mean/variance the plan keeps for backward; we update the running
 * statistics ourselves as PyTorch does: running = (1 - momentum) * running
 * + momentum * batch, with the unbiased variance (M / (M - 1), M = N*H*W).
 * Eval: oneDNN inference with the running statistics (use_global_stats);
 * its backward is a per-channel scaling, done by our own kernels.
 * Parameters: weight (gamma, 1), bias (beta, 0); buffers running_mean (0),
 * running_var (1).
 *
 * GFA: in eval mode the layer is affine (JVP: gamma/sqrt(var+eps) * tx;
 * second order: d/dgamma of <tx, dx(gy)> = inv * sum(tx * gy)). In training
 * mode the JVP is the batch-norm backward-data operator applied to tx (it is
 * symmetric); the second-order terms are in batchnorm_gfa.c.
 *
 * Fusion (lib/graph/fusion.c): a following ReLU runs inside the forward
 * primitive (dnnl_fuse_norm_relu); backward is unchanged (it reads only x).
 * In eval passes a preceding convolution or linear layer usually absorbs
 * the whole layer instead (dd__bn_fold).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../engine/engine.h"
#include "../graph/graph_internal.h"
#include "batchnorm.h"
#include "kernels.h"

void dd_batchnorm_options_init_sized(dd_batchnorm_options *opts, size_t size) {
    dd_batchnorm_options d;
    memset(&d, 0, sizeof d);
    d.eps = 1e-5f;
    d.momentum = 0.1f;
    dd__struct_fill(opts, size, &d, sizeof d);
}

static void plan_destroy(void *plan) {
    dd__bn_plan *p = plan;
    if (!p) return;
    dd__prim_destroy(&p->fwd_train);
    dd__prim_destroy(&p->fwd_eval);
    dd__prim_destroy(&p->bwd);
    dd__prim_destroy(&p->fwd_relu[0]);
    dd__prim_destroy(&p->fwd_relu[1]);
    dnnl_memory_t *mems[] = {&p->src,  &p->dst, &p->dsrc,   &p->ddst,   &p->scale, &p->shift,
                             &p->mean, &p->var, &p->dscale, &p->dshift, &p->ws};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++) dd__mem_destroy(mems[i]);
    dd__free_aligned(p->buf);
    dd__free_aligned(p->work);
    dd__free_aligned(p->ws_buf);
    dd__free(p);
}

/* The forward primitive with a fused ReLU for this mode; DD_ERR_UNSUPPORTED
 * if oneDNN has none. */
static dd_status relu_prim(dd__node *n, dd__bn_plan *p, dd__ctx *ctx, const dd__prim **out) {
    int train = ctx->train ? 1 : 0;
    dd__prim *r = &p->fwd_relu[train];
    *out = r;
    if (r->prim) return DD_OK;
    const dd__bn_state *st = n->state;
    dnnl_memory_desc_t md;
    dnnl_batch_normalization_desc_t d;
    unsigned flags = dnnl_use_scale | dnnl_use_shift | dnnl_fuse_norm_relu;
    if (!train) flags |= dnnl_use_global_stats;
    dnnl_prop_kind_t prop = train ? dnnl_forward_training : dnnl_forward_inference;
    DD_FORWARD(dd__tensor_md(&n->out, ctx->n, &md));
    if (dnnl_batch_normalization_forward_desc_init(&d, prop, &md, st->eps, flags) != dnnl_success)
        return DD_ERR_UNSUPPORTED;
    char what[128];
    snprintf(what, sizeof what, "batchnorm '%s' fused forward +relu", n->name);
    dd_status s = dd__prim_create(ctx, r, &d, NULL, NULL, what);
    if (s != DD_OK) {
        dd__clear_error();
        return s == DD_ERR_OUT_OF_MEMORY ? DD_ERROR(s, "batchnorm+relu forward") : DD_ERR_UNSUPPORTED;
    }
    const dnnl_memory_desc_t *wmd = dd__prim_md(r, dnnl_query_workspace_md, 0);
    if (!train || !wmd || dnnl_memory_desc_get_size(wmd) == 0 || p->ws) return DD_OK;
    size_t bytes = dnnl_memory_desc_get_size(wmd);
    p->ws_buf = dd__aligned_alloc(bytes);
    s = p->ws_buf ? dd__mem_create(ctx, &p->ws, wmd)
                  : DD_ERROR(DD_ERR_OUT_OF_MEMORY, "batchnorm+relu workspace of %zu bytes", bytes);
    if (s != DD_OK) {
        dd__prim_destroy(r);
        dd__free_aligned(p->ws_buf);
        p->ws_buf = NULL;
    }
    return s;
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **out) {
    const dd__bn_state *st = n->state;
    dd__bn_plan *p = dd__calloc(1, sizeof *p);
    DD_RETURN_IF(!p, DD_ERR_OUT_OF_MEMORY, "batchnorm plan");
    int C = n->out.c;
    p->buf = dd__aligned_alloc(sizeof(float) * 8 * (size_t)C);
    p->work =
        dd__aligned_alloc(sizeof(double) * (dd__chan_work_doubles(&n->out, ctx->nthreads) + 6 * (size_t)C));
    dnnl_memory_desc_t md, cmd;
    dnnl_batch_normalization_desc_t fd, bd, id;
    unsigned flags = dnnl_use_scale | dnnl_use_shift;
    dd_status s = p->buf && p->work ? DD_OK : DD_ERROR(DD_ERR_OUT_OF_MEMORY, "batchnorm plan buffers");
    if (s == DD_OK) s = dd__tensor_md(&n->out, ctx->n, &md);
    if (s == DD_OK) s = dd__md_plain(&cmd, 1, (int64_t[]){C});
    if (s == DD_OK && dnnl_batch_normalization_forward_desc_init(&fd, dnnl_forward_training, &md, st->eps,
                                                                 flags) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "batchnorm '%s': forward descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &p->fwd_train, &fd, NULL, NULL, "batchnorm forward");
    if (s == DD_OK && dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &md, &md, st->eps,
                                                                  flags) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "batchnorm '%s': backward descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &p->bwd, &bd, NULL, &p->fwd_train, "batchnorm backward");
    if (s == DD_OK &&
        dnnl_batch_normalization_forward_desc_init(&id, dnnl_forward_inference, &md, st->eps,
                                                   flags | dnnl_use_global_stats) != dnnl_success)
        s = DD_ERROR(DD_ERR_BACKEND, "batchnorm '%s': inference descriptor", n->name);
    if (s == DD_OK) s = dd__prim_create(ctx, &p->fwd_eval, &id, NULL, NULL, "batchnorm inference");
    dnnl_memory_t *data[] = {&p->src, &p->dst, &p->dsrc, &p->ddst};
    for (int i = 0; i < 4 && s == DD_OK; i++) s = dd__mem_create(ctx, data[i], &md);
    dnnl_memory_t *chan[] = {&p->scale, &p->shift, &p->mean, &p->var, &p->dscale, &p->dshift};
    for (int i = 0; i < 6 && s == DD_OK; i++) s = dd__mem_create(ctx, chan[i], &cmd);
    if (s != DD_OK) {
        plan_destroy(p);
        return s;
    }
    p->bmean = p->buf;
    p->bvar = p->buf + C;
    p->dgamma = p->buf + 2 * C;
    p->dbeta = p->buf + 3 * C;
    p->chan_scale = p->buf + 4 * C;
    *out = p;
    return DD_OK;
}

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    dd__bn_plan *p = plan;
    const dd__bn_state *st = n->state;
    float *gamma = dd__node_param(n, 0)->data, *beta = dd__node_param(n, 1)->data;
    float *rm = dd__node_param(n, 2)->data, *rv = dd__node_param(n, 3)->data;
    const dd__prim *prim = ctx->train ? &p->fwd_train : &p->fwd_eval;
    if (ctx->fuse) DD_FORWARD(relu_prim(n, p, ctx, &prim));
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, dd__mem(p->src, x[0])},
                           {DNNL_ARG_DST, dd__mem(p->dst, y)},
                           {DNNL_ARG_SCALE, dd__mem(p->scale, gamma)},
                           {DNNL_ARG_SHIFT, dd__mem(p->shift, beta)},
                           {DNNL_ARG_MEAN, dd__mem(p->mean, ctx->train ? p->bmean : rm)},
                           {DNNL_ARG_VARIANCE, dd__mem(p->var, ctx->train ? p->bvar : rv)},
                           {DNNL_ARG_WORKSPACE, p->ws ? dd__mem(p->ws, p->ws_buf) : NULL}};
    int with_ws = ctx->fuse && ctx->train && p->ws;
    DD_FORWARD(dd__exec(ctx, prim, with_ws ? 7 : 6, a));
    if (!ctx->train) return DD_OK;
    double count = (double)ctx->n * n->out.h * n->out.w;
    double unbias = count > 1 ? count / (count - 1) : 1.0;
    float mom = st->momentum;
    for (int c = 0; c < n->out.c; c++) {
        rm[c] = (1 - mom) * rm[c] + mom * p->bmean[c];
        rv[c] = (float)((1 - mom) * rv[c] + mom * p->bvar[c] * unbias);
    }
    return DD_OK;
}

/* The batch-norm backward primitive (training statistics): out = backward-data
 * of g; dgamma/dbeta of g into the plan's buffers. */
dd_status dd__bn_train_bwd(dd__node *n, dd__bn_plan *p, dd__ctx *ctx, const float *g, float *out) {
    const float *x = dd__in(n, 0)->data;
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, dd__mem(p->src, x)},
                           {DNNL_ARG_MEAN, dd__mem(p->mean, p->bmean)},
                           {DNNL_ARG_VARIANCE, dd__mem(p->var, p->bvar)},
                           {DNNL_ARG_DIFF_DST, dd__mem(p->ddst, g)},
                           {DNNL_ARG_SCALE, dd__mem(p->scale, dd__node_param(n, 0)->data)},
                           {DNNL_ARG_SHIFT, dd__mem(p->shift, dd__node_param(n, 1)->data)},
                           {DNNL_ARG_DIFF_SRC, dd__mem(p->dsrc, out)},
                           {DNNL_ARG_DIFF_SCALE, dd__mem(p->dscale, p->dgamma)},
                           {DNNL_ARG_DIFF_SHIFT, dd__mem(p->dshift, p->dbeta)}};
    return dd__exec(ctx, &p->bwd, 9, a);
}

/* chan_scale[c] = gamma[c] / sqrt(running_var[c] + eps): the eval-mode slope. */
void dd__bn_eval_scale(dd__node *n, dd__bn_plan *p) {
    const dd__bn_state *st = n->state;
    const float *gamma = dd__node_param(n, 0)->data, *rv = dd__node_param(n, 3)->data;
    for (int c = 0; c < n->out.c; c++) p->chan_scale[c] = gamma[c] / sqrtf(rv[c] + st->eps);
}

void dd__bn_fold(const dd__node *n, float *scale, float *shift) {
    const dd__bn_state *st = n->state;
    dd__node *bn = (dd__node *)n;
    const float *gamma = dd__node_param(bn, 0)->data, *beta = dd__node_param(bn, 1)->data;
    const float *rm = dd__node_param(bn, 2)->data, *rv = dd__node_param(bn, 3)->data;
    for (int c = 0; c < n->out.c; c++) {
        double s = (double)gamma[c] / sqrt((double)rv[c] + st->eps);
        scale[c] = (float)s;
        shift[c] = (float)(beta[c] - s * rm[c]);
    }
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    dd__bn_plan *p = plan;
    const dd__bn_state *cfg = n->state;
    int C = n->out.c;
    dd__param *gamma = dd__node_param(n, 0), *beta = dd__node_param(n, 1);
    if (ctx->train) {
        /* The primitive always writes diff_src; without a consumer for it the
         * model's second scratch (unused by single-input nodes) takes it. */
        DD_FORWARD(dd__bn_train_bwd(n, p, ctx, dy, dx[0] ? dx[0] : n->model->scratch2));
        if (st->param_grad)
            for (int c = 0; c < C; c++) {
                gamma->grad[c] += p->dgamma[c];
                beta->grad[c] += p->dbeta[c];
            }
        return DD_OK;
    }
    dd__bn_eval_scale(n, p);
    if (dx[0]) dd__chan_affine(&n->out, ctx->n, dy, dx[0], p->chan_scale, NULL, ctx->nthreads);
    if (st->param_grad) {
        double *sdx = p->work + dd__chan_work_doubles(&n->out, ctx->nthreads), *sd = sdx + C;
        dd__chan_sums(&n->out, ctx->n, dy, dd__in(n, 0)->data, sdx, sd, p->work, ctx->nthreads);
        const float *rm = dd__node_param(n, 2)->data, *rv = dd__node_param(n, 3)->data;
        for (int c = 0; c < C; c++) {
            double inv = 1.0 / sqrt((double)rv[c] + cfg->eps);
            gamma->grad[c] += (float)(inv * (sdx[c] - rm[c] * sd[c]));
            beta->grad[c] += (float)sd[c];
        }
    }
    return DD_OK;
}

static dd_status jvp(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, float *ty) {
    dd__bn_plan *p = plan;
    if (ctx->train) return dd__bn_train_bwd(n, p, ctx, tx[0], ty);
    dd__bn_eval_scale(n, p);
    dd__chan_affine(&n->out, ctx->n, tx[0], ty, p->chan_scale, NULL, ctx->nthreads);
    return DD_OK;
}

static dd_status second_order(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, const float *gy,
                              float *const *xbar, int xbar_fresh, int *xbar_written) {
    dd__bn_plan *p = plan;
    *xbar_written = 0;
    if (ctx->train) return dd__bn_train_second_order(n, p, ctx, tx[0], gy, xbar[0], xbar_fresh, xbar_written);
    const dd__bn_state *st = n->state;
    int C = n->out.c;
    double *s = p->work + dd__chan_work_doubles(&n->out, ctx->nthreads);
    dd__chan_sums(&n->out, ctx->n, tx[0], gy, s, NULL, p->work, ctx->nthreads);
    dd__param *gamma = dd__node_param(n, 0);
    const float *rv = dd__node_param(n, 3)->data;
    for (int c = 0; c < C; c++) gamma->grad[c] += (float)(s[c] / sqrt((double)rv[c] + st->eps));
    return DD_OK;
}

static dd_status declare_params(dd__node *n) {
    int64_t d[1] = {n->out.c};
    DD_FORWARD(dd__node_add_param(n, "weight", 1, d, 1, 0));
    DD_FORWARD(dd__node_add_param(n, "bias", 1, d, 1, 0));
    DD_FORWARD(dd__node_add_param(n, "running_mean", 1, d, 0, 0));
    DD_FORWARD(dd__node_add_param(n, "running_var", 1, d, 0, 0));
    return DD_OK;
}

static void init_params(dd__node *n, dd__rng *rng) {
    (void)rng;
    for (int c = 0; c < n->out.c; c++) {
        dd__node_param(n, 0)->data[c] = 1.0f;
        dd__node_param(n, 1)->data[c] = 0.0f;
        dd__node_param(n, 2)->data[c] = 0.0f;
        dd__node_param(n, 3)->data[c] = 1.0f;
    }
}

static dd_status describe(const dd__node *n, void *obj) {
    const dd__bn_state *st = n->state;
    json_object_set_new(obj, "eps", json_real(st->eps));
    json_object_set_new(obj, "momentum", json_real(st->momentum));
    return DD_OK;
}

static void info(const dd__node *n, dd_node_info *i) {
    const dd__bn_state *st = n->state;
    i->eps = st->eps;
    i->momentum = st->momentum;
}

const dd__node_ops dd__batchnorm_ops = {
    .type = DD_NODE_BATCHNORM,
    .name = "batchnorm",
    .declare_params = declare_params,
    .init_params = init_params,
    .plan_create = plan_create,
    .plan_destroy = plan_destroy,
    .forward = forward,
    .backward = backward,
    .jvp = jvp,
    .second_order = second_order,
    .fuse_caps = {DD__FUSE_RELU, DD__FUSE_RELU},
    .fuse_as = DD__FUSE_BN,
    .caps = DD__CAP_EVAL_AFFINE | DD__CAP_XBAR,
    .describe = describe,
    .info = info,
};

dd_status dd_model_add_batchnorm(dd_model *m, dd_node input, const dd_batchnorm_options *user, dd_node *out) {
    DD_FORWARD(dd__graph_check_add(m, "dd_model_add_batchnorm", &input, 1, out));
    DD_RETURN_IF(!user, DD_ERR_INVALID_ARGUMENT, "dd_model_add_batchnorm: options are NULL");
    dd_batchnorm_options full;
    dd_batchnorm_options_init(&full);
    DD_FORWARD(DD__STRUCT_READ(&full, user, DD_BATCHNORM_OPTIONS_SIZE_V1, "dd_model_add_batchnorm",
                               "dd_batchnorm_options"));
    const dd_batchnorm_options *o = &full;
    DD_RETURN_IF(!(o->eps > 0) || !(o->eps < 1) || !(o->momentum >= 0) || !(o->momentum <= 1),
                 DD_ERR_INVALID_ARGUMENT, "dd_model_add_batchnorm: eps %g, momentum %g", (double)o->eps,
                 (double)o->momentum);
    dd__bn_state *st = dd__malloc(sizeof *st);
    DD_RETURN_IF(!st, DD_ERR_OUT_OF_MEMORY, "dd_model_add_batchnorm");
    st->eps = o->eps;
    st->momentum = o->momentum;
    dd__tensor t = m->nodes[input].out;
    int id, inputs[1] = {input};
    dd_status s = dd__graph_append(m, &dd__batchnorm_ops, inputs, 1, o->name, st, &t, &id);
    if (s != DD_OK) {
        dd__free(st);
        return s;
    }
    *out = id;
    return DD_OK;
}
