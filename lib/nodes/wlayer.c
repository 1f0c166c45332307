/* lib/nodes/wlayer.c -- plans and passes of the weight layers (see wlayer.h).
 *
 * Passes, for input x, output y, master weights W (plain):
 *   forward        y  = op(x; W_fwd) + b
 *   backward       dW += bwd_w(x, dy) (reorder-accumulate), db += sum dy,
 *                  dx  = bwd_d(dy; W_bwd)
 *                  (GFA: pass 2 defers dW, pass 4 uses dy + G_y; see gfa.c;
 *                  input-gradient passes with an eval-mode batch norm after
 *                  the layer: dx = bwd_d(dy_bn; s[oc] * W_bwd))
 *   jvp (GFA)      ty  = op(tx; W_fwd)              (bias-free: zero bias)
 *   second order   dW += bwd_w(tx, gy)              (no bias term, no Xbar)
 *   fused forward  y  = relu(op(x; W') + b' + other) (see wlayer.h), with
 *                  W' = s[oc] * W, b' = s[oc] * b + t[oc] for a folded
 *                  batch norm y = s * x + t, else W' = W, b' = b
 */
#include "wlayer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "batchnorm.h"
#include "conv_fewc.h"
#include "kernels.h"

/* The fused forward of one mode (see wlayer.h). */
typedef struct dd__wfused {
    dd__prim prim; /* prim.prim NULL: not created yet */
    int binary;    /* the add is a binary post-op (else sum onto a copy) */
    dnnl_memory_t src, w, b, dst, other;
    float *w_buf;  /* weights in the primitive's layout */
    float *w_fold; /* plain folded weights (with a batch norm) */
    float *b_fold; /* 3 * OC: the bias (folded), the batch norm's scale, shift */
    dd__reorder r_w;
    uint64_t ver_p, ver_s; /* param_version, stats_version of w_buf */
} dd__wfused;

struct dd__wplan {
    dd__wl_cfg cfg;
    dd__prim fwd, bwdd, bwdw;
    int have_bwdd;
    dnnl_memory_t f_src, f_w, f_b, f_dst;
    dnnl_memory_t d_dsrc, d_w, d_ddst;
    dnnl_memory_t w_src, w_dw, w_db, w_ddst;
    float *w_fwd, *w_bwd, *dw, *db, *zero_bias;
    float *fsrc_tmp, *dsrc_tmp, *wsrc_tmp, *wddst_tmp; /* NULL: no layout conversion needed */
    float *dddst_tmp;                                  /* backward-data's diff_dst, if converted */
    dd__reorder r_wfwd, r_wbwd, r_dw, r_fsrc, r_dsrc, r_wsrc, r_wddst, r_dddst;
    uint64_t ver_fwd, ver_bwd;
    /* Backward-data weights with the eval-mode batch norm after the layer
     * folded in (see bwd_weights_folded), in w_bwd's layout and plain
     * (followed by OC scales and OC shifts); NULL until first needed, made
     * for versions ver_bfold_p (0: not yet) and ver_bfold_s. */
    float *w_bfold, *w_bfold_plain;
    uint64_t ver_bfold_p, ver_bfold_s;
    /* Image-layer convolutions: backward-data by our kernel (conv_fewc.c)
     * with these packed weights (then OC scales, OC shifts), made for the
     * parameter version ver_fewc_p (0: not yet) and the folded batch norm
     * fewc_bn (NULL: none) at its statistics version ver_fewc_s. */
    int fewc;
    float *w_fewc;
    const dd__node *fewc_bn;
    uint64_t ver_fewc_p, ver_fewc_s;
    dnnl_memory_desc_t src_md, dst_md, b_md, wplain_md;
    dd__wfused fz[2]; /* fused forwards for eval [0] and training [1] passes */
};

static void fused_destroy(dd__wfused *f) {
    dd__prim_destroy(&f->prim);
    dnnl_memory_t *mems[] = {&f->src, &f->w, &f->b, &f->dst, &f->other};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++) dd__mem_destroy(mems[i]);
    dd__free_aligned(f->w_buf);
    dd__free_aligned(f->w_fold);
    dd__free_aligned(f->b_fold);
    dd__reorder_destroy(&f->r_w);
    memset(f, 0, sizeof *f);
}

static dd_status buffer(float **p, const dnnl_memory_desc_t *md, const char *what) {
    size_t bytes = dnnl_memory_desc_get_size(md);
    *p = dd__aligned_alloc(bytes > 0 ? bytes : 64);
    DD_RETURN_IF(!*p, DD_ERR_OUT_OF_MEMORY, "%s: %zu bytes", what, bytes);
    return DD_OK;
}

void dd__wl_plan_destroy(void *plan) {
    dd__wplan *p = plan;
    if (!p) return;
    dd__prim_destroy(&p->fwd);
    dd__prim_destroy(&p->bwdd);
    dd__prim_destroy(&p->bwdw);
    dnnl_memory_t *mems[] = {&p->f_src,  &p->f_w,   &p->f_b,  &p->f_dst, &p->d_dsrc, &p->d_w,
                             &p->d_ddst, &p->w_src, &p->w_dw, &p->w_db,  &p->w_ddst};
    for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++) dd__mem_destroy(mems[i]);
    if (p->w_bwd != p->w_fwd) dd__free_aligned(p->w_bwd);
    float *bufs[] = {p->w_fwd,    p->dw,        p->db,        p->zero_bias, p->fsrc_tmp,      p->dsrc_tmp,
                     p->wsrc_tmp, p->wddst_tmp, p->dddst_tmp, p->w_bfold,   p->w_bfold_plain, p->w_fewc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) dd__free_aligned(bufs[i]);
    dd__reorder *rs[] = {&p->r_wfwd, &p->r_wbwd, &p->r_dw,    &p->r_fsrc,
                         &p->r_dsrc, &p->r_wsrc, &p->r_wddst, &p->r_dddst};
    for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) dd__reorder_destroy(rs[i]);
    fused_destroy(&p->fz[0]);
    fused_destroy(&p->fz[1]);
    dd__free(p);
}

/* The weights with the layout left to oneDNN. */
static dd_status weights_any(const dd__wplan *p, dnnl_memory_desc_t *md) {
    dnnl_dims_t wd;
    for (int i = 0; i < p->cfg.wndims; i++) wd[i] = p->cfg.wdims[i];
    DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(md, p->cfg.wndims, wd, dnnl_f32, dnnl_format_tag_any));
    return DD_OK;
}

/* Creates a primitive from the layer's descriptor callback. */
static dd_status make(dd__node *n, dd__ctx *ctx, dd__wplan *p, dd__wl_kind kind, int wino,
                      const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst, dd__prim *out) {
    union {
        dnnl_convolution_desc_t conv;
        dnnl_inner_product_desc_t ip;
    } desc;
    dnnl_memory_desc_t wany;
    DD_FORWARD(weights_any(p, &wany));
    static const char *what[] = {"forward", "backward-data", "backward-weights"};
    dnnl_status_t st = p->cfg.desc(n, kind, wino, src, &wany,
                                   p->cfg.bias && kind != DD__WL_BWD_DATA ? &p->b_md : NULL, dst, &desc);
    DD_RETURN_IF(st != dnnl_success, DD_ERR_BACKEND, "%s '%s': %s descriptor rejected", n->ops->name, n->name,
                 what[kind]);
    return dd__prim_create(ctx, out, &desc, NULL, kind == DD__WL_FWD ? NULL : &p->fwd, what[kind]);
}

static dd_status create_fwd(dd__node *n, dd__ctx *ctx, dd__wplan *p) {
    dd_status s = DD_ERR_UNSUPPORTED;
    ctx->has_alternative = 1;
    if (p->cfg.winograd) {
        s = make(n, ctx, p, DD__WL_FWD, 1, &p->src_md, &p->dst_md, &p->fwd);
        if (s != DD_OK) {
            p->cfg.winograd = 0;
            dd__clear_error();
        }
    }
    if (s != DD_OK) s = make(n, ctx, p, DD__WL_FWD, 0, &p->src_md, &p->dst_md, &p->fwd);
    ctx->has_alternative = 0;
    if (s != DD_OK) {
        /* no fast kernel for the input's layout (odd channel counts): let
         * oneDNN choose and reorder the input */
        dd__clear_error();
        dnnl_memory_desc_t sany;
        DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(&sany, p->src_md.ndims, p->src_md.dims, dnnl_f32,
                                                   dnnl_format_tag_any));
        DD_FORWARD(make(n, ctx, p, DD__WL_FWD, 0, &sany, &p->dst_md, &p->fwd));
    }
    const dnnl_memory_desc_t *fsmd = dd__prim_md(&p->fwd, dnnl_query_src_md, 0);
    if (!dnnl_memory_desc_equal(fsmd, &p->src_md)) {
        DD_FORWARD(buffer(&p->fsrc_tmp, fsmd, "forward src"));
        DD_FORWARD(dd__reorder_create(ctx, &p->r_fsrc, &p->src_md, fsmd, 0));
    }
    const dnnl_memory_desc_t *wmd = dd__prim_md(&p->fwd, dnnl_query_weights_md, 0);
    DD_FORWARD(buffer(&p->w_fwd, wmd, "forward weights"));
    DD_FORWARD(dd__reorder_create(ctx, &p->r_wfwd, &p->wplain_md, wmd, 0));
    DD_FORWARD(dd__mem_create(ctx, &p->f_src, fsmd));
    DD_FORWARD(dd__mem_create(ctx, &p->f_w, wmd));
    DD_FORWARD(dd__mem_create(ctx, &p->f_dst, &p->dst_md));
    if (p->cfg.bias) DD_FORWARD(dd__mem_create(ctx, &p->f_b, &p->b_md));
    DD_FORWARD(buffer(&p->zero_bias, &p->b_md, "zero bias"));
    return DD_OK;
}

/* Backward-weights, with the tensors' own layouts if oneDNN has a fast
 * kernel for them, else with its choice and input reorders. */
static dd_status create_bwdw(dd__node *n, dd__ctx *ctx, dd__wplan *p) {
    ctx->has_alternative = 1;
    dd_status s = make(n, ctx, p, DD__WL_BWD_WEIGHTS, p->cfg.winograd, &p->src_md, &p->dst_md, &p->bwdw);
    ctx->has_alternative = 0;
    if (s != DD_OK) {
        dd__clear_error();
        dnnl_memory_desc_t sany = p->src_md, dany = p->dst_md;
        DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(&sany, p->src_md.ndims, p->src_md.dims, dnnl_f32,
                                                   dnnl_format_tag_any));
        DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(&dany, p->dst_md.ndims, p->dst_md.dims, dnnl_f32,
                                                   dnnl_format_tag_any));
        DD_FORWARD(make(n, ctx, p, DD__WL_BWD_WEIGHTS, p->cfg.winograd, &sany, &dany, &p->bwdw));
    }
    const dnnl_memory_desc_t *smd = dd__prim_md(&p->bwdw, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dmd = dd__prim_md(&p->bwdw, dnnl_query_diff_dst_md, 0);
    const dnnl_memory_desc_t *wmd = dd__prim_md(&p->bwdw, dnnl_query_diff_weights_md, 0);
    if (!dnnl_memory_desc_equal(smd, &p->src_md)) {
        DD_FORWARD(buffer(&p->wsrc_tmp, smd, "backward-weights src"));
        DD_FORWARD(dd__reorder_create(ctx, &p->r_wsrc, &p->src_md, smd, 0));
    }
    if (!dnnl_memory_desc_equal(dmd, &p->dst_md)) {
        DD_FORWARD(buffer(&p->wddst_tmp, dmd, "backward-weights diff_dst"));
        DD_FORWARD(dd__reorder_create(ctx, &p->r_wddst, &p->dst_md, dmd, 0));
    }
    DD_FORWARD(buffer(&p->dw, wmd, "weight gradient"));
    DD_FORWARD(dd__reorder_create(ctx, &p->r_dw, wmd, &p->wplain_md, 1));
    DD_FORWARD(dd__mem_create(ctx, &p->w_src, smd));
    DD_FORWARD(dd__mem_create(ctx, &p->w_ddst, dmd));
    DD_FORWARD(dd__mem_create(ctx, &p->w_dw, wmd));
    if (p->cfg.bias) {
        DD_FORWARD(buffer(&p->db, &p->b_md, "bias gradient"));
        DD_FORWARD(dd__mem_create(ctx, &p->w_db, &p->b_md));
    }
    return DD_OK;
}

/* Frees whatever a failed create_bwdd left behind (it is retried on the next
 * backward that needs it). */
static void drop_bwdd(dd__wplan *p) {
    dd__prim_destroy(&p->bwdd);
    dd__mem_destroy(&p->d_dsrc);
    dd__mem_destroy(&p->d_w);
    dd__mem_destroy(&p->d_ddst);
    dd__reorder_destroy(&p->r_dsrc);
    dd__reorder_destroy(&p->r_dddst);
    dd__reorder_destroy(&p->r_wbwd);
    if (p->w_bwd != p->w_fwd) dd__free_aligned(p->w_bwd);
    dd__free_aligned(p->dsrc_tmp);
    dd__free_aligned(p->dddst_tmp);
    dd__free_aligned(p->w_bfold);
    dd__free_aligned(p->w_bfold_plain);
    dd__free_aligned(p->w_fewc);
    p->w_bwd = p->dsrc_tmp = p->dddst_tmp = p->w_bfold = p->w_bfold_plain = p->w_fewc = NULL;
    p->ver_bfold_p = p->ver_fewc_p = 0; /* 0: never (a built model's version is >= 1) */
    p->fewc = 0;
    p->have_bwdd = 0;
}

static dd_status create_bwdd_once(dd__node *n, dd__ctx *ctx, dd__wplan *p);

static dd_status create_bwdd(dd__node *n, dd__ctx *ctx, dd__wplan *p) {
    drop_bwdd(p);
    dd_status s = create_bwdd_once(n, ctx, p);
    if (s != DD_OK) drop_bwdd(p);
    return s;
}

static dd_status create_bwdd_once(dd__node *n, dd__ctx *ctx, dd__wplan *p) {
    const int64_t *wd = p->cfg.wdims;
    if (p->cfg.wndims == 4 && dd__conv_fewc_eligible(dd__in(n, 0), &n->out, (int)wd[2], (int)wd[3])) {
        size_t floats = dd__conv_fewc_pack_floats((int)wd[0], (int)wd[1], (int)wd[2], (int)wd[3]);
        p->w_fewc = dd__aligned_alloc((floats + 2 * (size_t)wd[0]) * sizeof(float));
        DD_RETURN_IF(!p->w_fewc, DD_ERR_OUT_OF_MEMORY, "%s '%s': packed weights", n->ops->name, n->name);
        p->fewc = 1;
        p->have_bwdd = 1;
        dd__log(DD_LOG_DEBUG, "%s '%s': backward-data by the image-layer kernel", n->ops->name, n->name);
        return DD_OK;
    }
    ctx->has_alternative = 1;
    dd_status s = make(n, ctx, p, DD__WL_BWD_DATA, p->cfg.winograd, &p->src_md, &p->dst_md, &p->bwdd);
    const dnnl_memory_desc_t *ddst_md = &p->dst_md;
    dnnl_memory_desc_t dplain;
    if (s != DD_OK && dd__in(n, 0)->layout == DD__NCHW && p->src_md.ndims == 4) {
        /* A plain input with more channels than conv_fewc.c takes: the
         * blocked backward-data kernels run it at ~60 GF/s; the all-plain
         * gemm kernel (~140 GF/s here) pays for the reorder of dy it needs. */
        dd__clear_error();
        DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(&dplain, 4, p->dst_md.dims, dnnl_f32, dnnl_nchw));
        s = make(n, ctx, p, DD__WL_BWD_DATA, 0, &p->src_md, &dplain, &p->bwdd);
        if (s == DD_OK) {
            ddst_md = &dplain;
            DD_FORWARD(buffer(&p->dddst_tmp, &dplain, "backward-data diff_dst"));
            DD_FORWARD(dd__reorder_create(ctx, &p->r_dddst, &p->dst_md, &dplain, 0));
        }
    }
    ctx->has_alternative = 0;
    if (s != DD_OK) {
        dd__clear_error();
        dnnl_memory_desc_t sany;
        DD_CHECK_DNNL(dnnl_memory_desc_init_by_tag(&sany, p->src_md.ndims, p->src_md.dims, dnnl_f32,
                                                   dnnl_format_tag_any));
        DD_FORWARD(make(n, ctx, p, DD__WL_BWD_DATA, p->cfg.winograd, &sany, &p->dst_md, &p->bwdd));
    }
    const dnnl_memory_desc_t *smd = dd__prim_md(&p->bwdd, dnnl_query_diff_src_md, 0);
    const dnnl_memory_desc_t *wmd = dd__prim_md(&p->bwdd, dnnl_query_weights_md, 0);
    if (!dnnl_memory_desc_equal(smd, &p->src_md)) {
        DD_FORWARD(buffer(&p->dsrc_tmp, smd, "backward-data diff_src"));
        DD_FORWARD(dd__reorder_create(ctx, &p->r_dsrc, smd, &p->src_md, 0));
    }
    if (dnnl_memory_desc_equal(wmd, dd__prim_md(&p->fwd, dnnl_query_weights_md, 0))) {
        p->w_bwd = p->w_fwd;
    } else {
        DD_FORWARD(buffer(&p->w_bwd, wmd, "backward-data weights"));
        DD_FORWARD(dd__reorder_create(ctx, &p->r_wbwd, &p->wplain_md, wmd, 0));
    }
    DD_FORWARD(dd__mem_create(ctx, &p->d_dsrc, smd));
    DD_FORWARD(dd__mem_create(ctx, &p->d_w, wmd));
    DD_FORWARD(dd__mem_create(ctx, &p->d_ddst, ddst_md));
    p->ver_bwd = 0;
    p->have_bwdd = 1;
    return DD_OK;
}

dd_status dd__wl_plan_create(dd__node *n, dd__ctx *ctx, const dd__wl_cfg *cfg, void **plan) {
    dd__wplan *p = dd__calloc(1, sizeof *p);
    DD_RETURN_IF(!p, DD_ERR_OUT_OF_MEMORY, "%s plan", n->ops->name);
    p->cfg = *cfg;
    dd_status s = dd__tensor_md(dd__in(n, 0), ctx->n, &p->src_md);
    if (s == DD_OK) s = dd__tensor_md(&n->out, ctx->n, &p->dst_md);
    if (s == DD_OK) s = dd__md_plain(&p->wplain_md, cfg->wndims, cfg->wdims);
    if (s == DD_OK) s = dd__md_plain(&p->b_md, 1, &cfg->wdims[0]);
    if (s == DD_OK) s = create_fwd(n, ctx, p);
    if (s == DD_OK) s = create_bwdw(n, ctx, p);
    if (s != DD_OK) {
        dd__wl_plan_destroy(p);
        return s;
    }
    *plan = p;
    return DD_OK;
}

const char *dd__wl_impl(const void *plan) {
    const dd__wplan *p = plan;
    const char *impl = "";
    dnnl_primitive_desc_query(p->fwd.pd, dnnl_query_impl_info_str, 0, &impl);
    return impl;
}

/* Reorders the master weights into a primitive's layout unless that copy is
 * already of the current parameter version. */
static dd_status refresh(dd__node *n, dd__ctx *ctx, const dd__reorder *r, float *dst, uint64_t *ver) {
    if (*ver == n->model->param_version) return DD_OK;
    DD_FORWARD(dd__reorder_run(ctx, r, dd__node_param(n, 0)->data, dst));
    *ver = n->model->param_version;
    return DD_OK;
}

static dd_status run_fwd(dd__node *n, dd__wplan *p, dd__ctx *ctx, const float *x, const float *bias,
                         float *y) {
    DD_FORWARD(refresh(n, ctx, &p->r_wfwd, p->w_fwd, &p->ver_fwd));
    if (p->fsrc_tmp) {
        DD_FORWARD(dd__reorder_run(ctx, &p->r_fsrc, x, p->fsrc_tmp));
        x = p->fsrc_tmp;
    }
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, dd__mem(p->f_src, x)},
                           {DNNL_ARG_WEIGHTS, dd__mem(p->f_w, p->w_fwd)},
                           {DNNL_ARG_DST, dd__mem(p->f_dst, y)},
                           {DNNL_ARG_BIAS, p->cfg.bias ? dd__mem(p->f_b, bias) : NULL}};
    return dd__exec(ctx, &p->fwd, p->cfg.bias ? 4 : 3, a);
}

/* Tries the fused primitive for chain f from desc with the add as a binary
 * (else sum) post-op: DD_OK, DD_ERR_UNSUPPORTED (no kernel for it, or one
 * that wants another source layout than smd) or DD_ERR_OUT_OF_MEMORY. */
static dd_status fused_try(dd__node *n, dd__ctx *ctx, const dd__fusion *f, const void *desc,
                           const dnnl_memory_desc_t *smd, const dnnl_memory_desc_t *dmd, int binary,
                           dd__prim *out) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    DD_CHECK_DNNL(dnnl_primitive_attr_create(&attr));
    dnnl_status_t st = dnnl_post_ops_create(&po);
    if (st == dnnl_success && f->add >= 0)
        st = binary ? dnnl_post_ops_append_binary(po, dnnl_binary_add, dmd)
                    : dnnl_post_ops_append_sum(po, 1.0f);
    if (st == dnnl_success && f->relu >= 0)
        st = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.f, 0.f);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(attr, po);
    if (po) dnnl_post_ops_destroy(po);
    dd_status s = DD_ERR_UNSUPPORTED;
    if (st == dnnl_success) {
        char what[160];
        snprintf(what, sizeof what, "%s '%s' fused forward%s%s%s", n->ops->name, n->name,
                 f->bn >= 0 ? " +batchnorm" : "", f->add >= 0 ? (binary ? " +add" : " +sum") : "",
                 f->relu >= 0 ? " +relu" : "");
        ctx->has_alternative = 1;
        s = dd__prim_create(ctx, out, desc, attr, NULL, what);
        ctx->has_alternative = 0;
    }
    dnnl_primitive_attr_destroy(attr);
    if (s == DD_OK && !dnnl_memory_desc_equal(dd__prim_md(out, dnnl_query_src_md, 0), smd)) {
        dd__prim_destroy(out);
        s = DD_ERR_UNSUPPORTED;
    }
    if (s != DD_OK && s != DD_ERR_OUT_OF_MEMORY) {
        dd__clear_error();
        s = DD_ERR_UNSUPPORTED;
    }
    return s;
}

/* Creates the fused primitive for chain f in this pass's mode; a chain
 * oneDNN has no kernel for gives DD_ERR_UNSUPPORTED. */
static dd_status fused_create_once(dd__node *n, dd__ctx *ctx, dd__wplan *p, const dd__fusion *f,
                                   dd__wfused *z) {
    dd__wl_kind kind = ctx->train ? DD__WL_FWD : DD__WL_FWD_INFER;
    const dnnl_memory_desc_t *smd = dd__prim_md(&p->fwd, dnnl_query_src_md, 0);
    dnnl_memory_desc_t wany;
    DD_FORWARD(weights_any(p, &wany));
    /* candidates, fastest first: the mode's algorithm, then direct; the add
     * as a binary post-op, then as a sum onto a copy */
    dd_status s = DD_ERR_UNSUPPORTED;
    for (int wino = p->cfg.winograd; wino >= 0 && s == DD_ERR_UNSUPPORTED; wino--) {
        union {
            dnnl_convolution_desc_t conv;
            dnnl_inner_product_desc_t ip;
        } desc;
        if (p->cfg.desc(n, kind, wino, smd, &wany, &p->b_md, &p->dst_md, &desc) != dnnl_success) continue;
        for (int binary = f->add >= 0; binary >= 0 && s == DD_ERR_UNSUPPORTED; binary--) {
            s = fused_try(n, ctx, f, &desc, smd, &p->dst_md, binary, &z->prim);
            if (s == DD_OK) z->binary = binary;
        }
    }
    if (s != DD_OK) return s;
    const dnnl_memory_desc_t *wmd = dd__prim_md(&z->prim, dnnl_query_weights_md, 0);
    DD_FORWARD(buffer(&z->w_buf, wmd, "fused forward weights"));
    if (f->bn >= 0) DD_FORWARD(buffer(&z->w_fold, &p->wplain_md, "folded weights"));
    z->b_fold = dd__aligned_alloc(3 * sizeof(float) * (size_t)p->cfg.wdims[0]);
    DD_RETURN_IF(!z->b_fold, DD_ERR_OUT_OF_MEMORY, "folded bias");
    DD_FORWARD(dd__reorder_create(ctx, &z->r_w, &p->wplain_md, wmd, 0));
    DD_FORWARD(dd__mem_create(ctx, &z->src, smd));
    DD_FORWARD(dd__mem_create(ctx, &z->w, wmd));
    DD_FORWARD(dd__mem_create(ctx, &z->b, &p->b_md));
    DD_FORWARD(dd__mem_create(ctx, &z->dst, &p->dst_md));
    if (z->binary) DD_FORWARD(dd__mem_create(ctx, &z->other, &p->dst_md));
    z->ver_p = z->ver_s = UINT64_MAX;
    return DD_OK;
}

/* out = the master weights with output row o scaled by scale[o] (a batch
 * norm's slope folded in), plain. */
static void scale_rows(const dd__node *n, size_t oc, const float *scale, float *out) {
    const dd__param *w = dd__node_param((dd__node *)n, 0);
    size_t per = w->count / oc;
    for (size_t o = 0; o < oc; o++)
        for (size_t j = 0; j < per; j++) out[o * per + j] = scale[o] * w->data[o * per + j];
}

/* Weights and bias of the fused primitive, refreshed when the parameters or
 * (for a folded batch norm) the running statistics changed. */
static dd_status fused_weights(dd__node *n, dd__ctx *ctx, dd__wplan *p, const dd__fusion *f, dd__wfused *z) {
    dd_model *m = n->model;
    if (z->ver_p == m->param_version && (f->bn < 0 || z->ver_s == m->stats_version)) return DD_OK;
    const dd__param *w = dd__node_param(n, 0);
    const float *b = p->cfg.bias ? dd__node_param(n, 1)->data : NULL;
    int oc = (int)p->cfg.wdims[0];
    const float *wsrc = w->data;
    if (f->bn >= 0) {
        float *scale = z->b_fold + oc, *shift = scale + oc;
        dd__bn_fold(&m->nodes[f->bn], scale, shift);
        scale_rows(n, (size_t)oc, scale, z->w_fold);
        for (int o = 0; o < oc; o++) z->b_fold[o] = scale[o] * (b ? b[o] : 0.0f) + shift[o];
        wsrc = z->w_fold;
    } else {
        for (int o = 0; o < oc; o++) z->b_fold[o] = b ? b[o] : 0.0f;
    }
    DD_FORWARD(dd__reorder_run(ctx, &z->r_w, wsrc, z->w_buf));
    z->ver_p = m->param_version;
    z->ver_s = m->stats_version;
    return DD_OK;
}

static dd_status fused_forward(dd__node *n, dd__wplan *p, dd__ctx *ctx, const float *x, float *y) {
    const dd__fusion *f = ctx->fuse;
    dd__wfused *z = &p->fz[ctx->train ? 1 : 0];
    if (!z->prim.prim) {
        dd_status s = fused_create_once(n, ctx, p, f, z);
        if (s != DD_OK) {
            fused_destroy(z);
            return s == DD_ERR_UNSUPPORTED ? s : DD_ERROR(s, "%s '%s': fused forward", n->ops->name, n->name);
        }
    }
    DD_FORWARD(fused_weights(n, ctx, p, f, z));
    if (p->fsrc_tmp) {
        DD_FORWARD(dd__reorder_run(ctx, &p->r_fsrc, x, p->fsrc_tmp));
        x = p->fsrc_tmp;
    }
    const float *other = f->add >= 0 ? n->model->nodes[f->add_other].out.data : NULL;
    if (other && !z->binary) dd__copy(y, other, dd__tensor_floats(&n->out, ctx->n), ctx->nthreads);
    dnnl_exec_arg_t a[] = {
        {DNNL_ARG_SRC, dd__mem(z->src, x)},
        {DNNL_ARG_WEIGHTS, dd__mem(z->w, z->w_buf)},
        {DNNL_ARG_BIAS, dd__mem(z->b, z->b_fold)},
        {DNNL_ARG_DST, dd__mem(z->dst, y)},
        {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, z->binary ? dd__mem(z->other, other) : NULL}};
    return dd__exec(ctx, &z->prim, z->binary ? 5 : 4, a);
}

dd_status dd__wl_forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    if (ctx->fuse) return fused_forward(n, plan, ctx, x[0], y);
    return run_fwd(n, plan, ctx, x[0], n->nparams > 1 ? dd__node_param(n, 1)->data : NULL, y);
}

dd_status dd__wl_jvp(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, float *ty) {
    dd__wplan *p = plan;
    return run_fwd(n, p, ctx, tx[0], p->zero_bias, ty);
}

/* dW += bwd_w(src, ddst); with_bias: db += sum ddst. */
static dd_status run_bwdw(dd__node *n, dd__wplan *p, dd__ctx *ctx, const float *src, const float *ddst,
                          int with_bias) {
    if (p->wsrc_tmp) {
        DD_FORWARD(dd__reorder_run(ctx, &p->r_wsrc, src, p->wsrc_tmp));
        src = p->wsrc_tmp;
    }
    if (p->wddst_tmp) {
        DD_FORWARD(dd__reorder_run(ctx, &p->r_wddst, ddst, p->wddst_tmp));
        ddst = p->wddst_tmp;
    }
    dnnl_exec_arg_t a[] = {{DNNL_ARG_SRC, dd__mem(p->w_src, src)},
                           {DNNL_ARG_DIFF_DST, dd__mem(p->w_ddst, ddst)},
                           {DNNL_ARG_DIFF_WEIGHTS, dd__mem(p->w_dw, p->dw)},
                           {DNNL_ARG_DIFF_BIAS, p->cfg.bias ? dd__mem(p->w_db, p->db) : NULL}};
    DD_FORWARD(dd__exec(ctx, &p->bwdw, p->cfg.bias ? 4 : 3, a));
    DD_FORWARD(dd__reorder_run(ctx, &p->r_dw, p->dw, dd__node_param(n, 0)->grad));
    if (with_bias && p->cfg.bias) {
        dd__param *b = dd__node_param(n, 1);
        for (size_t i = 0; i < b->count; i++) b->grad[i] += p->db[i];
    }
    return DD_OK;
}

/* Backward-data weights W'[oc] = s[oc] W[oc] with s the slope of the
 * eval-mode batch norm bn after this layer: W'^T dy_bn = W^T (s dy_bn), so
 * an input-gradient pass skips the batch norm's backward (passes.c).
 * Refreshed when the parameters or the running statistics change. */
static dd_status bwd_weights_folded(dd__node *n, dd__ctx *ctx, dd__wplan *p, const dd__node *bn,
                                    const float **w_out) {
    dd_model *m = n->model;
    const dd__param *w = dd__node_param(n, 0);
    size_t oc = (size_t)p->cfg.wdims[0];
    if (!p->w_bfold) {
        DD_FORWARD(buffer(&p->w_bfold, dd__prim_md(&p->bwdd, dnnl_query_weights_md, 0),
                          "folded backward-data weights"));
        p->w_bfold_plain = dd__aligned_alloc((w->count + 2 * oc) * sizeof(float));
        DD_RETURN_IF(!p->w_bfold_plain, DD_ERR_OUT_OF_MEMORY, "%s '%s': folded weights", n->ops->name,
                     n->name);
        dd__log(DD_LOG_DEBUG, "%s '%s': backward-data with batch norm '%s' folded in", n->ops->name, n->name,
                bn->name);
    }
    *w_out = p->w_bfold;
    if (p->ver_bfold_p == m->param_version && p->ver_bfold_s == m->stats_version) return DD_OK;
    float *scale = p->w_bfold_plain + w->count, *shift = scale + oc;
    dd__bn_fold(bn, scale, shift);
    scale_rows(n, oc, scale, p->w_bfold_plain);
    DD_FORWARD(
        dd__reorder_run(ctx, p->w_bwd == p->w_fwd ? &p->r_wfwd : &p->r_wbwd, p->w_bfold_plain, p->w_bfold));
    p->ver_bfold_p = m->param_version;
    p->ver_bfold_s = m->stats_version;
    return DD_OK;
}

/* Backward-data by the image-layer kernel (conv_fewc.c), the weights packed
 * (with ctx->fold_bn's slope folded in) when they or the statistics changed. */
static dd_status fewc_backward(dd__node *n, dd__ctx *ctx, dd__wplan *p, const dd__node *bn, const float *dy,
                               float *dx) {
    dd_model *m = n->model;
    const int64_t *wd = p->cfg.wdims;
    if (p->ver_fewc_p != m->param_version || p->fewc_bn != bn || (bn && p->ver_fewc_s != m->stats_version)) {
        float *scale = p->w_fewc + dd__conv_fewc_pack_floats((int)wd[0], (int)wd[1], (int)wd[2], (int)wd[3]);
        if (bn) dd__bn_fold(bn, scale, scale + wd[0]);
        dd__conv_fewc_pack(dd__node_param(n, 0)->data, bn ? scale : NULL, (int)wd[0], (int)wd[1], (int)wd[2],
                           (int)wd[3], p->w_fewc);
        p->fewc_bn = bn;
        p->ver_fewc_p = m->param_version;
        p->ver_fewc_s = m->stats_version;
    }
    const dd__tensor *in = dd__in(n, 0), *out = &n->out;
    dd__conv_fewc_geom g = {in->c,      in->h,      in->w,     out->c,    out->h,    out->w,
                            (int)wd[2], (int)wd[3], p->cfg.sh, p->cfg.sw, p->cfg.ph, p->cfg.pw};
    dd__conv_fewc_bwd_data(&g, ctx->n, p->w_fewc, dy, dx, ctx->nthreads);
    return DD_OK;
}

dd_status dd__wl_backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    dd__wplan *p = plan;
    const dd__node *bn = st->variant == DD__BV_FOLDS_BN ? st->fold_bn : NULL;
    if (st->param_grad && st->merge_gy) {
        /* bwd_w is linear in diff_dst: one call for the pass-2 gradient G_y
         * (deferred) and this pass's adjoint saves a third of GFA's
         * weight-gradient work. G_y is dead after this node. */
        float *gy = st->merge_gy;
        dd__axpy1(gy, dy, dd__tensor_floats(&n->out, ctx->n), ctx->nthreads);
        DD_FORWARD(run_bwdw(n, p, ctx, dd__in(n, 0)->data, gy, 1));
    } else if (st->param_grad && !st->defer_wgrad) {
        DD_FORWARD(run_bwdw(n, p, ctx, dd__in(n, 0)->data, dy, 1));
    }
    if (!dx[0]) return DD_OK;
    if (!p->have_bwdd) DD_FORWARD(create_bwdd(n, ctx, p));
    if (p->fewc) return fewc_backward(n, ctx, p, bn, dy, dx[0]);
    const float *wts = p->w_bwd;
    if (bn)
        DD_FORWARD(bwd_weights_folded(n, ctx, p, bn, &wts));
    else if (p->w_bwd == p->w_fwd)
        DD_FORWARD(refresh(n, ctx, &p->r_wfwd, p->w_fwd, &p->ver_fwd));
    else
        DD_FORWARD(refresh(n, ctx, &p->r_wbwd, p->w_bwd, &p->ver_bwd));
    float *out = p->dsrc_tmp ? p->dsrc_tmp : dx[0];
    if (p->dddst_tmp) {
        DD_FORWARD(dd__reorder_run(ctx, &p->r_dddst, dy, p->dddst_tmp));
        dy = p->dddst_tmp;
    }
    dnnl_exec_arg_t a[] = {{DNNL_ARG_DIFF_DST, dd__mem(p->d_ddst, dy)},
                           {DNNL_ARG_WEIGHTS, dd__mem(p->d_w, wts)},
                           {DNNL_ARG_DIFF_SRC, dd__mem(p->d_dsrc, out)}};
    DD_FORWARD(dd__exec(ctx, &p->bwdd, 3, a));
    if (p->dsrc_tmp) DD_FORWARD(dd__reorder_run(ctx, &p->r_dsrc, p->dsrc_tmp, dx[0]));
    return DD_OK;
}

dd_status dd__wl_second_order(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, const float *gy,
                              float *const *xbar, int xbar_fresh, int *xbar_written) {
    (void)xbar;
    (void)xbar_fresh;
    *xbar_written = 0;
    return run_bwdw(n, plan, ctx, tx[0], gy, 0);
}

void dd__wl_init_params(dd__node *n, dd__rng *rng, size_t fan_in) {
    dd__param *w = dd__node_param(n, 0);
    /* He: variance 2/fan_in keeps activations' scale through ReLUs; the
     * logits layer feeds no ReLU, so it takes gain 1 (variance 1/fan_in). */
    double gain = n->id == n->model->logits ? 1.0 : 2.0;
    double sd = sqrt(gain / (double)fan_in);
    for (size_t i = 0; i < w->count; i++) w->data[i] = (float)(sd * dd__rng_normal(rng));
    if (n->nparams > 1) memset(dd__node_param(n, 1)->data, 0, dd__node_param(n, 1)->count * sizeof(float));
}
