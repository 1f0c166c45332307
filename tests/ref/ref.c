/* tests/ref/ref.c -- the double-precision reference graph (see ref.h).
 *
 * One ref_node per library node, with its per-sample output shape and its
 * configuration read through dd_model_node_info. Every tensor keeps a value
 * and a gradient array of max_batch * C*H*W doubles in plain NCHW. The
 * passes are loops over the node array: forward in creation order,
 * backward in reverse, each node adding its input gradients (+=) so that
 * tensors with several consumers sum their contributions.
 *
 * Parameters are matched to nodes by dd_param_info.node and to their role
 * by the name's last component (weight, bias, running_mean, running_var).
 * Everything here is deliberately naive: the point is to be obviously
 * right, not fast. Loops are written straight from the definitions
 * (PyTorch's, where the library follows PyTorch).
 */
#include "ref.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_node {
    dd_node_type type;
    int nin;
    int in[2];
    int c, h, w; /* output per-sample shape */
    size_t size; /* c*h*w */
    int kh, kw, sh, sw, ph, pw;
    double eps, momentum;
    double *nmean, *nstd;                 /* normalize */
    int pw_idx, pb_idx, prm_idx, prv_idx; /* parameter indices or -1 */
    double *val, *grad;                   /* [max_batch * size] */
    int *argmax;                          /* maxpool: input offset (within the sample) per output */
    unsigned char *mask;                  /* relu: [x > 0] of the last unfrozen forward */
    const double *pert;                   /* ref_reg_grad: val += pert_scale * pert after the forward */
    double *bmean, *bvar;                 /* batchnorm: statistics used by the last forward */
} ref_node;

typedef struct ref_prm {
    size_t count;
    int trainable;
    int node;
    double *v, *g;
} ref_prm;

struct ref_model {
    int nnodes, k, max_batch, logits;
    ref_node *nodes;
    int nparams;
    ref_prm *params;
    int n, train; /* last forward */
    int have_forward;
    int frozen; /* forward reuses the stored ReLU masks and max-pool argmaxes */
    double pert_scale;
    int mse; /* training loss: 1 = MSE on probabilities, 0 = CE */
};

static char ref_msg[512];

const char *ref_error(void) { return ref_msg; }

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ref_msg, sizeof ref_msg, fmt, ap);
    va_end(ap);
    return -1;
}

static void *xcalloc(size_t n, size_t sz) { return calloc(n ? n : 1, sz); }

void ref_model_destroy(ref_model *r) {
    if (!r) return;
    for (int i = 0; i < r->nnodes; i++) {
        ref_node *nd = &r->nodes[i];
        free(nd->nmean);
        free(nd->nstd);
        free(nd->val);
        free(nd->grad);
        free(nd->argmax);
        free(nd->bmean);
        free(nd->bvar);
        free(nd->mask);
    }
    free(r->nodes);
    for (int i = 0; i < r->nparams; i++) {
        free(r->params[i].v);
        free(r->params[i].g);
    }
    free(r->params);
    free(r);
}

static const char *last_component(const char *name) {
    const char *d = strrchr(name, '.');
    return d ? d + 1 : name;
}

static int out_dim(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* Checks the node's output shape against its inputs and configuration. */
static int check_shape(const ref_model *r, int id) {
    const ref_node *nd = &r->nodes[id];
    const ref_node *a = nd->nin > 0 ? &r->nodes[nd->in[0]] : NULL;
    switch (nd->type) {
    case DD_NODE_INPUT:
        return 0;
    case DD_NODE_NORMALIZE:
    case DD_NODE_RELU:
    case DD_NODE_BATCHNORM:
        if (a->c != nd->c || a->h != nd->h || a->w != nd->w)
            return fail("node %d: shape differs from its input", id);
        return 0;
    case DD_NODE_CONV2D:
    case DD_NODE_MAXPOOL:
    case DD_NODE_AVGPOOL:
        if (nd->kh < 1 || nd->kw < 1 || nd->sh < 1 || nd->sw < 1)
            return fail("node %d: kernel/stride not reported (dd_node_info)", id);
        if (out_dim(a->h, nd->kh, nd->sh, nd->ph) != nd->h || out_dim(a->w, nd->kw, nd->sw, nd->pw) != nd->w)
            return fail("node %d: output %dx%d inconsistent with input %dx%d k%dx%d s%dx%d p%dx%d", id, nd->h,
                        nd->w, a->h, a->w, nd->kh, nd->kw, nd->sh, nd->sw, nd->ph, nd->pw);
        if (nd->type != DD_NODE_CONV2D && a->c != nd->c) return fail("node %d: pooling changes channels", id);
        return 0;
    case DD_NODE_GLOBAL_AVGPOOL:
        if (a->c != nd->c || nd->size != (size_t)nd->c) return fail("node %d: global avgpool shape", id);
        return 0;
    case DD_NODE_LINEAR:
        if (nd->size != (size_t)nd->c) return fail("node %d: linear output not 2-D", id);
        return 0;
    case DD_NODE_ADD: {
        const ref_node *b = &r->nodes[nd->in[1]];
        if (a->size != nd->size || b->size != nd->size) return fail("node %d: add sizes", id);
        return 0;
    }
    case DD_NODE_FLATTEN:
        if (a->size != nd->size) return fail("node %d: flatten size", id);
        return 0;
    }
    return fail("node %d: unknown type %d", id, (int)nd->type);
}

int ref_model_create(ref_model **out, const dd_model *m) {
    *out = NULL;
    ref_model *r = xcalloc(1, sizeof *r);
    if (!r) return fail("out of memory");
    int count = 0, np = 0;
    if (dd_model_num_nodes(m, &count) != DD_OK || count < 1) {
        free(r);
        return fail("num_nodes");
    }
    if (dd_model_num_classes(m, &r->k) != DD_OK) {
        free(r);
        return fail("num_classes");
    }
    if (dd_model_max_batch(m, &r->max_batch) != DD_OK || r->max_batch < 1) {
        free(r);
        return fail("max_batch (model not built?)");
    }
    if (dd_model_num_params(m, &np) != DD_OK) {
        free(r);
        return fail("num_params");
    }
    dd_loss_kind lk;
    if (dd_model_get_loss(m, &lk) != DD_OK) {
        free(r);
        return fail("get_loss");
    }
    r->mse = lk == DD_LOSS_MSE;
    if (r->mse && r->k > 4096) {
        free(r);
        return fail("MSE with more than 4096 classes");
    }
    r->nnodes = count;
    r->nodes = xcalloc((size_t)count, sizeof *r->nodes);
    r->nparams = np;
    r->params = xcalloc((size_t)np, sizeof *r->params);
    if (!r->nodes || !r->params) {
        ref_model_destroy(r);
        return fail("out of memory");
    }
    r->logits = -1;
    for (int i = 0; i < count; i++) {
        dd_node_info info;
        memset(&info, 0, sizeof info);
        ref_node *nd = &r->nodes[i];
        nd->pw_idx = nd->pb_idx = nd->prm_idx = nd->prv_idx = -1;
        if (dd_model_node_info(m, i, &info) != DD_OK) {
            ref_model_destroy(r);
            return fail("node_info %d: %s", i, dd_last_error());
        }
        nd->type = info.type;
        nd->nin = info.num_inputs;
        if (nd->nin < 0 || nd->nin > 2) {
            ref_model_destroy(r);
            return fail("node %d: %d inputs", i, nd->nin);
        }
        for (int j = 0; j < nd->nin; j++) {
            nd->in[j] = info.inputs[j];
            if (nd->in[j] < 0 || nd->in[j] >= i) {
                ref_model_destroy(r);
                return fail("node %d: input %d not earlier", i, nd->in[j]);
            }
        }
        nd->c = info.channels;
        nd->h = info.ndims == 4 ? info.height : 1;
        nd->w = info.ndims == 4 ? info.width : 1;
        nd->size = (size_t)nd->c * nd->h * nd->w;
        nd->kh = info.kernel_h;
        nd->kw = info.kernel_w;
        nd->sh = info.stride_h;
        nd->sw = info.stride_w;
        nd->ph = info.pad_h;
        nd->pw = info.pad_w;
        nd->eps = info.eps;
        nd->momentum = info.momentum;
        nd->val = xcalloc((size_t)r->max_batch * nd->size, sizeof(double));
        nd->grad = xcalloc((size_t)r->max_batch * nd->size, sizeof(double));
        if (!nd->val || !nd->grad) {
            ref_model_destroy(r);
            return fail("out of memory");
        }
        if (nd->type == DD_NODE_NORMALIZE) {
            if (!info.mean || !info.std) {
                ref_model_destroy(r);
                return fail("normalize %d: mean/std not reported", i);
            }
            nd->nmean = xcalloc((size_t)nd->c, sizeof(double));
            nd->nstd = xcalloc((size_t)nd->c, sizeof(double));
            if (!nd->nmean || !nd->nstd) {
                ref_model_destroy(r);
                return fail("out of memory");
            }
            for (int c = 0; c < nd->c; c++) {
                nd->nmean[c] = info.mean[c];
                nd->nstd[c] = info.std[c];
            }
        }
        if (nd->type == DD_NODE_MAXPOOL) {
            nd->argmax = xcalloc((size_t)r->max_batch * nd->size, sizeof(int));
            if (!nd->argmax) {
                ref_model_destroy(r);
                return fail("out of memory");
            }
        }
        if (nd->type == DD_NODE_RELU) {
            nd->mask = xcalloc((size_t)r->max_batch * nd->size, 1);
            if (!nd->mask) {
                ref_model_destroy(r);
                return fail("out of memory");
            }
        }
        if (nd->type == DD_NODE_BATCHNORM) {
            if (!(nd->eps > 0)) {
                ref_model_destroy(r);
                return fail("batchnorm %d: eps not reported", i);
            }
            nd->bmean = xcalloc((size_t)nd->c, sizeof(double));
            nd->bvar = xcalloc((size_t)nd->c, sizeof(double));
            if (!nd->bmean || !nd->bvar) {
                ref_model_destroy(r);
                return fail("out of memory");
            }
        }
        if (check_shape(r, i)) {
            ref_model_destroy(r);
            return -1;
        }
    }
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        if (dd_model_param_info(m, p, &pi) != DD_OK) {
            ref_model_destroy(r);
            return fail("param_info %d", p);
        }
        ref_prm *rp = &r->params[p];
        rp->count = pi.count;
        rp->trainable = pi.trainable;
        rp->node = pi.node;
        rp->v = xcalloc(pi.count, sizeof(double));
        rp->g = xcalloc(pi.count, sizeof(double));
        if (!rp->v || !rp->g) {
            ref_model_destroy(r);
            return fail("out of memory");
        }
        if (pi.node < 0 || pi.node >= count) {
            ref_model_destroy(r);
            return fail("param %d: node %d", p, pi.node);
        }
        ref_node *nd = &r->nodes[pi.node];
        const char *role = last_component(pi.name);
        int *slot = !strcmp(role, "weight")         ? &nd->pw_idx
                    : !strcmp(role, "bias")         ? &nd->pb_idx
                    : !strcmp(role, "running_mean") ? &nd->prm_idx
                    : !strcmp(role, "running_var")  ? &nd->prv_idx
                                                    : NULL;
        if (!slot || *slot >= 0) {
            ref_model_destroy(r);
            return fail("param %d: unexpected name '%s'", p, pi.name);
        }
        *slot = p;
    }
    /* Check every parametric node got what it needs, with the right sizes. */
    for (int i = 0; i < count; i++) {
        ref_node *nd = &r->nodes[i];
        size_t insz = nd->nin ? r->nodes[nd->in[0]].size : 0;
        int ic = nd->nin ? r->nodes[nd->in[0]].c : 0;
        size_t want_w = 0, want_b = 0;
        if (nd->type == DD_NODE_CONV2D) {
            want_w = (size_t)nd->c * ic * nd->kh * nd->kw;
            want_b = (size_t)nd->c;
        }
        if (nd->type == DD_NODE_LINEAR) {
            want_w = (size_t)nd->c * insz;
            want_b = (size_t)nd->c;
        }
        if (nd->type == DD_NODE_BATCHNORM) {
            want_w = want_b = (size_t)nd->c;
            if (nd->prm_idx < 0 || nd->prv_idx < 0 || nd->pb_idx < 0 ||
                r->params[nd->prm_idx].count != want_b || r->params[nd->prv_idx].count != want_b) {
                ref_model_destroy(r);
                return fail("batchnorm %d: parameters missing", i);
            }
        }
        if (want_w) {
            if (nd->pw_idx < 0 || r->params[nd->pw_idx].count != want_w) {
                ref_model_destroy(r);
                return fail("node %d: weight missing or of the wrong size", i);
            }
            if (nd->pb_idx >= 0 && r->params[nd->pb_idx].count != want_b) {
                ref_model_destroy(r);
                return fail("node %d: bias of the wrong size", i);
            }
        } else if (nd->pw_idx >= 0 || nd->pb_idx >= 0) {
            ref_model_destroy(r);
            return fail("node %d: parameters on a parameter-free node", i);
        }
    }
    /* The logits: the 2-D tensor of K features consumed by nobody, last. */
    for (int i = count - 1; i >= 0; i--) {
        int used = 0;
        for (int j = i + 1; j < count; j++)
            for (int q = 0; q < r->nodes[j].nin; q++) used |= r->nodes[j].in[q] == i;
        if (!used && r->nodes[i].size == (size_t)r->k && r->nodes[i].h == 1 && r->nodes[i].w == 1) {
            r->logits = i;
            break;
        }
    }
    if (r->logits < 0) {
        ref_model_destroy(r);
        return fail("no logits node");
    }
    if (ref_model_load_params(r, m)) {
        ref_model_destroy(r);
        return -1;
    }
    *out = r;
    return 0;
}

int ref_model_load_params(ref_model *r, const dd_model *m) {
    for (int p = 0; p < r->nparams; p++) {
        ref_prm *rp = &r->params[p];
        float *tmp = xcalloc(rp->count, sizeof(float));
        if (!tmp) return fail("out of memory");
        if (dd_model_param_read(m, p, tmp, rp->count) != DD_OK) {
            free(tmp);
            return fail("param_read %d: %s", p, dd_last_error());
        }
        for (size_t i = 0; i < rp->count; i++) rp->v[i] = tmp[i];
        free(tmp);
    }
    return 0;
}

int ref_num_nodes(const ref_model *r) { return r->nnodes; }
int ref_num_classes(const ref_model *r) { return r->k; }
int ref_max_batch(const ref_model *r) { return r->max_batch; }
size_t ref_node_size(const ref_model *r, dd_node node) { return r->nodes[node].size; }
dd_node_type ref_node_type(const ref_model *r, dd_node node) { return r->nodes[node].type; }
int ref_num_params(const ref_model *r) { return r->nparams; }
size_t ref_param_count(const ref_model *r, int index) { return r->params[index].count; }
int ref_param_trainable(const ref_model *r, int index) { return r->params[index].trainable; }
double *ref_param(ref_model *r, int index) { return r->params[index].v; }
const double *ref_param_grad(const ref_model *r, int index) { return r->params[index].g; }
const double *ref_node_value(const ref_model *r, dd_node node) { return r->nodes[node].val; }
const double *ref_node_grad(const ref_model *r, dd_node node) { return r->nodes[node].grad; }
const double *ref_logits(const ref_model *r) { return r->nodes[r->logits].val; }

size_t ref_trainable_count(const ref_model *r) {
    size_t t = 0;
    for (int p = 0; p < r->nparams; p++)
        if (r->params[p].trainable) t += r->params[p].count;
    return t;
}

/* ---- forward ------------------------------------------------------------- */

static const double *pv(const ref_model *r, int idx) { return idx >= 0 ? r->params[idx].v : NULL; }

/* Output columns [*lo, *hi) of a row whose input column ox*sw - pw + kx is
 * inside [0, iw). */
static void col_range(int ow, int iw, int sw, int pw, int kx, int *lo, int *hi) {
    int l = 0, h = ow;
    while (l < h && l * sw - pw + kx < 0) l++;
    while (h > l && (h - 1) * sw - pw + kx >= iw) h--;
    *lo = l;
    *hi = h;
}

/* Loops ordered (sample, out channel, in channel, tap, row, column) so the
 * innermost runs along a row: the same sums as the textbook seven loops,
 * in a different order (the reference is double; order does not matter at
 * the 1e-12 level the tests need). */
static void fwd_conv(const ref_model *r, ref_node *nd, int n) {
    const ref_node *a = &r->nodes[nd->in[0]];
    const double *W = pv(r, nd->pw_idx), *B = pv(r, nd->pb_idx);
    int ic = a->c;
    size_t plane = (size_t)nd->h * nd->w;
    for (int s = 0; s < n; s++) {
        const double *x = a->val + (size_t)s * a->size;
        for (int o = 0; o < nd->c; o++) {
            double *y = nd->val + (size_t)s * nd->size + o * plane;
            for (size_t i = 0; i < plane; i++) y[i] = B ? B[o] : 0.0;
            for (int c = 0; c < ic; c++)
                for (int ky = 0; ky < nd->kh; ky++)
                    for (int kx = 0; kx < nd->kw; kx++) {
                        double wv = W[((o * ic + c) * nd->kh + ky) * nd->kw + kx];
                        int lo, hi;
                        col_range(nd->w, a->w, nd->sw, nd->pw, kx, &lo, &hi);
                        for (int oy = 0; oy < nd->h; oy++) {
                            int iy = oy * nd->sh - nd->ph + ky;
                            if (iy < 0 || iy >= a->h) continue;
                            long xb = ((long)c * a->h + iy) * a->w - nd->pw + kx;
                            double *yr = y + (size_t)oy * nd->w;
                            for (int ox = lo; ox < hi; ox++) yr[ox] += wv * x[xb + (long)ox * nd->sw];
                        }
                    }
        }
    }
}

static void bwd_conv(ref_model *r, ref_node *nd, int n) {
    ref_node *a = &r->nodes[nd->in[0]];
    const double *W = pv(r, nd->pw_idx);
    double *gW = r->params[nd->pw_idx].g;
    double *gB = nd->pb_idx >= 0 ? r->params[nd->pb_idx].g : NULL;
    int ic = a->c;
    size_t plane = (size_t)nd->h * nd->w;
    for (int s = 0; s < n; s++) {
        const double *x = a->val + (size_t)s * a->size;
        double *gx = a->grad + (size_t)s * a->size;
        for (int o = 0; o < nd->c; o++) {
            const double *gy = nd->grad + (size_t)s * nd->size + o * plane;
            if (gB)
                for (size_t i = 0; i < plane; i++) gB[o] += gy[i];
            for (int c = 0; c < ic; c++)
                for (int ky = 0; ky < nd->kh; ky++)
                    for (int kx = 0; kx < nd->kw; kx++) {
                        size_t wi = ((size_t)(o * ic + c) * nd->kh + ky) * nd->kw + kx;
                        double wv = W[wi], acc = 0.0;
                        int lo, hi;
                        col_range(nd->w, a->w, nd->sw, nd->pw, kx, &lo, &hi);
                        for (int oy = 0; oy < nd->h; oy++) {
                            int iy = oy * nd->sh - nd->ph + ky;
                            if (iy < 0 || iy >= a->h) continue;
                            long xb = ((long)c * a->h + iy) * a->w - nd->pw + kx;
                            const double *gr = gy + (size_t)oy * nd->w;
                            for (int ox = lo; ox < hi; ox++) {
                                long xi = xb + (long)ox * nd->sw;
                                acc += gr[ox] * x[xi];
                                gx[xi] += gr[ox] * wv;
                            }
                        }
                        gW[wi] += acc;
                    }
        }
    }
}

static void fwd_linear(const ref_model *r, ref_node *nd, int n) {
    const ref_node *a = &r->nodes[nd->in[0]];
    const double *W = pv(r, nd->pw_idx), *B = pv(r, nd->pb_idx);
    for (int s = 0; s < n; s++) {
        const double *x = a->val + (size_t)s * a->size;
        double *y = nd->val + (size_t)s * nd->size;
        for (int o = 0; o < nd->c; o++) {
            double acc = B ? B[o] : 0.0;
            for (size_t i = 0; i < a->size; i++) acc += W[(size_t)o * a->size + i] * x[i];
            y[o] = acc;
        }
    }
}

static void bwd_linear(ref_model *r, ref_node *nd, int n) {
    ref_node *a = &r->nodes[nd->in[0]];
    const double *W = pv(r, nd->pw_idx);
    double *gW = r->params[nd->pw_idx].g;
    double *gB = nd->pb_idx >= 0 ? r->params[nd->pb_idx].g : NULL;
    for (int s = 0; s < n; s++) {
        const double *x = a->val + (size_t)s * a->size;
        double *gx = a->grad + (size_t)s * a->size;
        const double *gy = nd->grad + (size_t)s * nd->size;
        for (int o = 0; o < nd->c; o++) {
            if (gB) gB[o] += gy[o];
            for (size_t i = 0; i < a->size; i++) {
                gW[(size_t)o * a->size + i] += gy[o] * x[i];
                gx[i] += gy[o] * W[(size_t)o * a->size + i];
            }
        }
    }
}

/* Max pooling: padding never wins; the first maximum in row-major window
 * order wins (strict >), as PyTorch. argmax is the input offset. */
static void fwd_maxpool(const ref_model *r, ref_node *nd, int n) {
    const ref_node *a = &r->nodes[nd->in[0]];
    for (int s = 0; s < n; s++) {
        const double *x = a->val + (size_t)s * a->size;
        double *y = nd->val + (size_t)s * nd->size;
        int *am = nd->argmax + (size_t)s * nd->size;
        if (r->frozen) { /* the stored winners (ref_reg_grad) */
            for (size_t i = 0; i < nd->size; i++) y[i] = am[i] >= 0 ? x[am[i]] : 0.0;
            continue;
        }
        for (int c = 0; c < nd->c; c++)
            for (int oy = 0; oy < nd->h; oy++)
                for (int ox = 0; ox < nd->w; ox++) {
                    double best = -INFINITY;
                    int bi = -1;
                    for (int ky = 0; ky < nd->kh; ky++) {
                        int iy = oy * nd->sh - nd->ph + ky;
                        if (iy < 0 || iy >= a->h) continue;
                        for (int kx = 0; kx < nd->kw; kx++) {
                            int ix = ox * nd->sw - nd->pw + kx;
                            if (ix < 0 || ix >= a->w) continue;
                            int xi = (c * a->h + iy) * a->w + ix;
                            if (bi < 0 || x[xi] > best) {
                                best = x[xi];
                                bi = xi;
                            }
                        }
                    }
                    size_t yi = ((size_t)c * nd->h + oy) * nd->w + ox;
                    y[yi] = bi >= 0 ? best : 0.0;
                    am[yi] = bi;
                }
    }
}

static void bwd_maxpool(ref_model *r, ref_node *nd, int n) {
    ref_node *a = &r->nodes[nd->in[0]];
    for (int s = 0; s < n; s++) {
        double *gx = a->grad + (size_t)s * a->size;
        const double *gy = nd->grad + (size_t)s * nd->size;
        const int *am = nd->argmax + (size_t)s * nd->size;
        for (size_t i = 0; i < nd->size; i++)
            if (am[i] >= 0) gx[am[i]] += gy[i];
    }
}

/* Average pooling with count_include_pad (PyTorch's default): the divisor
 * is the window clipped to the padded input, (hend-hstart)*(wend-wstart). */
static double avg_divisor(const ref_node *nd, const ref_node *a, int oy, int ox) {
    int hs = oy * nd->sh - nd->ph, ws = ox * nd->sw - nd->pw;
    int he = hs + nd->kh, we = ws + nd->kw;
    if (he > a->h + nd->ph) he = a->h + nd->ph;
    if (we > a->w + nd->pw) we = a->w + nd->pw;
    return (double)(he - hs) * (double)(we - ws);
}

static void fwd_avgpool(const ref_model *r, ref_node *nd, int n) {
    const ref_node *a = &r->nodes[nd->in[0]];
    for (int s = 0; s < n; s++) {
        const double *x = a->val + (size_t)s * a->size;
        double *y = nd->val + (size_t)s * nd->size;
        for (int c = 0; c < nd->c; c++)
            for (int oy = 0; oy < nd->h; oy++)
                for (int ox = 0; ox < nd->w; ox++) {
                    double acc = 0.0;
                    for (int ky = 0; ky < nd->kh; ky++) {
                        int iy = oy * nd->sh - nd->ph + ky;
                        if (iy < 0 || iy >= a->h) continue;
                        for (int kx = 0; kx < nd->kw; kx++) {
                            int ix = ox * nd->sw - nd->pw + kx;
                            if (ix < 0 || ix >= a->w) continue;
                            acc += x[((size_t)c * a->h + iy) * a->w + ix];
                        }
                    }
                    y[((size_t)c * nd->h + oy) * nd->w + ox] = acc / avg_divisor(nd, a, oy, ox);
                }
    }
}

static void bwd_avgpool(ref_model *r, ref_node *nd, int n) {
    ref_node *a = &r->nodes[nd->in[0]];
    for (int s = 0; s < n; s++) {
        double *gx = a->grad + (size_t)s * a->size;
        const double *gy = nd->grad + (size_t)s * nd->size;
        for (int c = 0; c < nd->c; c++)
            for (int oy = 0; oy < nd->h; oy++)
                for (int ox = 0; ox < nd->w; ox++) {
                    double d = gy[((size_t)c * nd->h + oy) * nd->w + ox] / avg_divisor(nd, a, oy, ox);
                    for (int ky = 0; ky < nd->kh; ky++) {
                        int iy = oy * nd->sh - nd->ph + ky;
                        if (iy < 0 || iy >= a->h) continue;
                        for (int kx = 0; kx < nd->kw; kx++) {
                            int ix = ox * nd->sw - nd->pw + kx;
                            if (ix < 0 || ix >= a->w) continue;
                            gx[((size_t)c * a->h + iy) * a->w + ix] += d;
                        }
                    }
                }
    }
}

/* Batch norm. Training: batch mean and biased variance over N, H, W;
 * optionally running = (1-m) running + m batch with the unbiased variance.
 * Inference: the running statistics. */
static void fwd_batchnorm(ref_model *r, ref_node *nd, int n, int train, int update_running) {
    const ref_node *a = &r->nodes[nd->in[0]];
    const double *gam = pv(r, nd->pw_idx), *bet = pv(r, nd->pb_idx);
    double *rm = r->params[nd->prm_idx].v, *rv = r->params[nd->prv_idx].v;
    size_t hw = (size_t)nd->h * nd->w;
    double cnt = (double)n * (double)hw;
    for (int c = 0; c < nd->c; c++) {
        double mean, var;
        if (train) {
            double s1 = 0.0, s2 = 0.0;
            for (int s = 0; s < n; s++)
                for (size_t i = 0; i < hw; i++) s1 += a->val[(size_t)s * a->size + c * hw + i];
            mean = s1 / cnt;
            for (int s = 0; s < n; s++)
                for (size_t i = 0; i < hw; i++) {
                    double d = a->val[(size_t)s * a->size + c * hw + i] - mean;
                    s2 += d * d;
                }
            var = s2 / cnt;
            if (update_running) {
                double unb = cnt > 1 ? var * cnt / (cnt - 1.0) : var;
                rm[c] = (1.0 - nd->momentum) * rm[c] + nd->momentum * mean;
                rv[c] = (1.0 - nd->momentum) * rv[c] + nd->momentum * unb;
            }
        } else {
            mean = rm[c];
            var = rv[c];
        }
        nd->bmean[c] = mean;
        nd->bvar[c] = var;
        double inv = 1.0 / sqrt(var + nd->eps);
        double g = gam ? gam[c] : 1.0, b = bet ? bet[c] : 0.0;
        for (int s = 0; s < n; s++)
            for (size_t i = 0; i < hw; i++) {
                size_t off = (size_t)s * a->size + c * hw + i;
                nd->val[off] = g * (a->val[off] - mean) * inv + b;
            }
    }
}

static void bwd_batchnorm(ref_model *r, ref_node *nd, int n, int train) {
    ref_node *a = &r->nodes[nd->in[0]];
    const double *gam = pv(r, nd->pw_idx);
    double *gg = nd->pw_idx >= 0 ? r->params[nd->pw_idx].g : NULL;
    double *gb = nd->pb_idx >= 0 ? r->params[nd->pb_idx].g : NULL;
    size_t hw = (size_t)nd->h * nd->w;
    double cnt = (double)n * (double)hw;
    for (int c = 0; c < nd->c; c++) {
        double mean = nd->bmean[c], inv = 1.0 / sqrt(nd->bvar[c] + nd->eps);
        double g = gam ? gam[c] : 1.0;
        double sdy = 0.0, sdyx = 0.0;
        for (int s = 0; s < n; s++)
            for (size_t i = 0; i < hw; i++) {
                size_t off = (size_t)s * a->size + c * hw + i;
                double xh = (a->val[off] - mean) * inv;
                sdy += nd->grad[off];
                sdyx += nd->grad[off] * xh;
            }
        if (gg) gg[c] += sdyx;
        if (gb) gb[c] += sdy;
        for (int s = 0; s < n; s++)
            for (size_t i = 0; i < hw; i++) {
                size_t off = (size_t)s * a->size + c * hw + i;
                double dy = nd->grad[off];
                if (train) {
                    double xh = (a->val[off] - mean) * inv;
                    a->grad[off] += g * inv * (dy - sdy / cnt - xh * sdyx / cnt);
                } else {
                    a->grad[off] += g * inv * dy;
                }
            }
    }
}

int ref_forward(ref_model *r, const double *x, int n, int train, int update_running) {
    if (n < 1 || n > r->max_batch) return fail("batch %d outside [1, %d]", n, r->max_batch);
    r->n = n;
    r->train = train;
    memcpy(r->nodes[0].val, x, (size_t)n * r->nodes[0].size * sizeof(double));
    if (r->nodes[0].pert)
        for (size_t e = 0; e < (size_t)n * r->nodes[0].size; e++)
            r->nodes[0].val[e] += r->pert_scale * r->nodes[0].pert[e];
    for (int i = 1; i < r->nnodes; i++) {
        ref_node *nd = &r->nodes[i];
        const ref_node *a = &r->nodes[nd->in[0]];
        size_t tot = (size_t)n * nd->size;
        switch (nd->type) {
        case DD_NODE_INPUT:
            break;
        case DD_NODE_NORMALIZE: {
            size_t hw = (size_t)nd->h * nd->w;
            for (size_t e = 0; e < tot; e++) {
                int c = (int)((e % nd->size) / hw);
                nd->val[e] = (a->val[e] - nd->nmean[c]) / nd->nstd[c];
            }
            break;
        }
        case DD_NODE_CONV2D:
            fwd_conv(r, nd, n);
            break;
        case DD_NODE_LINEAR:
            fwd_linear(r, nd, n);
            break;
        case DD_NODE_RELU:
            if (!r->frozen)
                for (size_t e = 0; e < tot; e++) nd->mask[e] = a->val[e] > 0.0;
            for (size_t e = 0; e < tot; e++) nd->val[e] = nd->mask[e] ? a->val[e] : 0.0;
            break;
        case DD_NODE_MAXPOOL:
            fwd_maxpool(r, nd, n);
            break;
        case DD_NODE_AVGPOOL:
            fwd_avgpool(r, nd, n);
            break;
        case DD_NODE_GLOBAL_AVGPOOL: {
            size_t hw = (size_t)a->h * a->w;
            for (int s = 0; s < n; s++)
                for (int c = 0; c < nd->c; c++) {
                    double acc = 0.0;
                    for (size_t i = 0; i < hw; i++) acc += a->val[(size_t)s * a->size + c * hw + i];
                    nd->val[(size_t)s * nd->size + c] = acc / (double)hw;
                }
            break;
        }
        case DD_NODE_BATCHNORM:
            fwd_batchnorm(r, nd, n, train, update_running);
            break;
        case DD_NODE_ADD: {
            const ref_node *b = &r->nodes[nd->in[1]];
            for (size_t e = 0; e < tot; e++) nd->val[e] = a->val[e] + b->val[e];
            break;
        }
        case DD_NODE_FLATTEN:
            memcpy(nd->val, a->val, tot * sizeof(double));
            break;
        }
        if (nd->pert)
            for (size_t e = 0; e < tot; e++) nd->val[e] += r->pert_scale * nd->pert[e];
    }
    r->have_forward = 1;
    return 0;
}

int ref_forward_f(ref_model *r, const float *x, int n, int train, int update_running) {
    if (n < 1 || n > r->max_batch) return fail("batch %d outside [1, %d]", n, r->max_batch);
    size_t tot = (size_t)n * r->nodes[0].size;
    double *xd = xcalloc(tot, sizeof(double));
    if (!xd) return fail("out of memory");
    ref_to_double(x, xd, tot);
    int rc = ref_forward(r, xd, n, train, update_running);
    free(xd);
    return rc;
}

/* MSE of the probabilities: L = (1/(nK)) sum (p - e_y)^2; its gradient by
 * the chain rule through the softmax Jacobian, written out entry by entry
 * (dL/dz_j = sum_i dL/dp_i dp_i/dz_j, dp_i/dz_j = p_i (delta_ij - p_j)) so
 * that it shares no formula with the library's closed form. */
static double mse_row(const double *p, int k, int y, double scale, double *d) {
    double l = 0.0;
    for (int i = 0; i < k; i++) l += (p[i] - (i == y)) * (p[i] - (i == y));
    if (d)
        for (int j = 0; j < k; j++) {
            double g = 0.0;
            for (int i = 0; i < k; i++) g += 2.0 * (p[i] - (i == y)) * p[i] * ((i == j) - p[j]);
            d[j] = scale * g;
        }
    return l;
}

double ref_loss(const ref_model *r, const int32_t *labels, double *dlogits, int *correct) {
    const double *z = ref_logits(r);
    int n = r->n, k = r->k, ok = 0;
    double loss = 0.0;
    double p[4096];
    for (int s = 0; s < n; s++) {
        const double *zs = z + (size_t)s * k;
        double mx = zs[0];
        int am = 0;
        for (int j = 1; j < k; j++)
            if (zs[j] > mx) {
                mx = zs[j];
                am = j;
            }
        double se = 0.0;
        for (int j = 0; j < k; j++) se += exp(zs[j] - mx);
        double lse = mx + log(se);
        ok += am == labels[s];
        if (r->mse) {
            for (int j = 0; j < k; j++) p[j] = exp(zs[j] - lse);
            loss += mse_row(p, k, labels[s], 1.0 / ((double)n * k), dlogits ? dlogits + (size_t)s * k : NULL);
            continue;
        }
        loss += lse - zs[labels[s]];
        if (dlogits)
            for (int j = 0; j < k; j++)
                dlogits[(size_t)s * k + j] = (exp(zs[j] - lse) - (j == labels[s] ? 1.0 : 0.0)) / n;
    }
    if (correct) *correct = ok;
    return r->mse ? loss / ((double)n * k) : loss / n;
}

int ref_backward(ref_model *r, const double *dlogits) { return ref_backward_inject(r, dlogits, NULL); }

int ref_backward_inject(ref_model *r, const double *dlogits, const double *const *inject) {
    if (!r->have_forward) return fail("backward before forward");
    int n = r->n;
    for (int i = 0; i < r->nnodes; i++)
        memset(r->nodes[i].grad, 0, (size_t)n * r->nodes[i].size * sizeof(double));
    for (int p = 0; p < r->nparams; p++) memset(r->params[p].g, 0, r->params[p].count * sizeof(double));
    memcpy(r->nodes[r->logits].grad, dlogits, (size_t)n * r->k * sizeof(double));
    /* every contribution is added, so seeds can go in before the loop */
    for (int i = 0; inject && i < r->nnodes; i++)
        if (inject[i])
            for (size_t e = 0; e < (size_t)n * r->nodes[i].size; e++) r->nodes[i].grad[e] += inject[i][e];
    for (int i = r->nnodes - 1; i >= 1; i--) {
        ref_node *nd = &r->nodes[i];
        ref_node *a = &r->nodes[nd->in[0]];
        size_t tot = (size_t)n * nd->size;
        switch (nd->type) {
        case DD_NODE_INPUT:
            break;
        case DD_NODE_NORMALIZE: {
            size_t hw = (size_t)nd->h * nd->w;
            for (size_t e = 0; e < tot; e++) {
                int c = (int)((e % nd->size) / hw);
                a->grad[e] += nd->grad[e] / nd->nstd[c];
            }
            break;
        }
        case DD_NODE_CONV2D:
            bwd_conv(r, nd, n);
            break;
        case DD_NODE_LINEAR:
            bwd_linear(r, nd, n);
            break;
        case DD_NODE_RELU:
            for (size_t e = 0; e < tot; e++)
                if (nd->mask[e]) a->grad[e] += nd->grad[e];
            break;
        case DD_NODE_MAXPOOL:
            bwd_maxpool(r, nd, n);
            break;
        case DD_NODE_AVGPOOL:
            bwd_avgpool(r, nd, n);
            break;
        case DD_NODE_GLOBAL_AVGPOOL: {
            size_t hw = (size_t)a->h * a->w;
            for (int s = 0; s < n; s++)
                for (int c = 0; c < nd->c; c++) {
                    double d = nd->grad[(size_t)s * nd->size + c] / (double)hw;
                    for (size_t i = 0; i < hw; i++) a->grad[(size_t)s * a->size + c * hw + i] += d;
                }
            break;
        }
        case DD_NODE_BATCHNORM:
            bwd_batchnorm(r, nd, n, r->train);
            break;
        case DD_NODE_ADD: {
            ref_node *b = &r->nodes[nd->in[1]];
            for (size_t e = 0; e < tot; e++) a->grad[e] += nd->grad[e];
            for (size_t e = 0; e < tot; e++) b->grad[e] += nd->grad[e];
            break;
        }
        case DD_NODE_FLATTEN:
            for (size_t e = 0; e < tot; e++) a->grad[e] += nd->grad[e];
            break;
        }
    }
    return 0;
}

/* ---- GFA objective ------------------------------------------------------- */

double ref_objective(ref_model *r, const double *x, int n, const int32_t *labels, int train,
                     const ref_hooks *hooks, double *loss, double *reg, double *align) {
    if (ref_forward(r, x, n, train, 0)) return NAN;
    double *dz = xcalloc((size_t)n * r->k, sizeof(double));
    if (!dz) {
        fail("out of memory");
        return NAN;
    }
    double L = ref_loss(r, labels, dz, NULL);
    int rc = ref_backward(r, dz);
    free(dz);
    if (rc) return NAN;
    if (loss) *loss = L;
    double J = L;
    const double eps = 1e-12;
    for (int t = 0; hooks && t < hooks->count; t++) {
        const ref_node *nd = &r->nodes[hooks->node[t]];
        double R = 0.0, A = 0.0;
        for (int s = 0; s < n; s++) {
            const double *G = nd->grad + (size_t)s * nd->size;
            const double *h = nd->val + (size_t)s * nd->size;
            double a = 0.0, gg = 0.0, hh = 0.0;
            for (size_t i = 0; i < nd->size; i++) {
                double g = n * G[i];
                a += g * h[i];
                gg += g * g;
                hh += h[i] * h[i];
            }
            double P = gg + eps, Q = hh + eps;
            double c = a / sqrt(P * Q);
            double ri;
            if (hooks->mode == REF_GFA_TANGENT) {
                double sc = a / Q;
                ri = 0.0;
                for (size_t i = 0; i < nd->size; i++) {
                    double u = n * G[i] - sc * h[i];
                    ri += u * u;
                }
            } else if (hooks->mode == REF_GFA_COS) {
                ri = 1.0 - c;
            } else {
                ri = 1.0 - c * c;
            }
            R += ri;
            A += fabs(c);
        }
        R /= n;
        A /= n;
        if (reg) reg[t] = R;
        if (align) align[t] = A;
        J += hooks->lambda[t] * R;
    }
    return J;
}

/* ---- the regulariser's gradient ---------------------------------------------
 *
 * sum_t lambda_t dR_t/dtheta by a route independent of the library's four
 * passes. With Gbar_t = lambda_t dR_t/dG_t and Ybar_t = lambda_t dR_t/dY_t
 * (GFA.md's closed-form partials, evaluated here in double):
 *   dR/dtheta = d/dtheta <Gbar, G(theta)> + d/dtheta <Ybar, Y(theta)>.
 * The first term is d/de of dL/dtheta (theta; Y_t -> Y_t + e Gbar_t at every
 * hook) at e = 0, since <Gbar_t, G_t> is the derivative of L along that
 * perturbation: a central difference of two ordinary backward passes. The
 * forward passes of the difference reuse the unperturbed ReLU masks and
 * max-pool winners (the derivative GFA defines holds them fixed), so no unit
 * flips and the difference is smooth in e (only softmax and training-mode
 * batch norm are non-linear). The second term is one ordinary backward seeded
 * with Ybar_t at each hook (and nothing at the logits). */
static void partials(int mode, double lambda, int n, size_t size, const double *G, const double *h,
                     double *gbar, double *ybar) {
    const double eps = 1e-12;
    for (int s = 0; s < n; s++) {
        const double *Gs = G + (size_t)s * size, *hs = h + (size_t)s * size;
        double *gb = gbar + (size_t)s * size, *yb = ybar + (size_t)s * size;
        double a = 0.0, gg = 0.0, hh = 0.0;
        for (size_t i = 0; i < size; i++) {
            double g = n * Gs[i];
            a += g * hs[i];
            gg += g * g;
            hh += hs[i] * hs[i];
        }
        double P = gg + eps, Q = hh + eps;
        if (mode == REF_GFA_TANGENT) {
            double sc = a / Q, k = 0.0;
            for (size_t i = 0; i < size; i++) k += (n * Gs[i] - sc * hs[i]) * hs[i];
            for (size_t i = 0; i < size; i++) {
                double g = n * Gs[i], u = g - sc * hs[i];
                gb[i] = lambda * (2.0 * u - 2.0 * k / Q * hs[i]);
                yb[i] = lambda / n * (-2.0 * sc * u - 2.0 * k / Q * (g - 2.0 * sc * hs[i]));
            }
        } else if (mode == REF_GFA_COS) {
            double S = sqrt(P * Q);
            for (size_t i = 0; i < size; i++) {
                double g = n * Gs[i];
                gb[i] = -lambda * (hs[i] - a / P * g) / S;
                yb[i] = -lambda / n * (g - a / Q * hs[i]) / S;
            }
        } else {
            double f = -2.0 * a / (P * Q);
            for (size_t i = 0; i < size; i++) {
                double g = n * Gs[i];
                gb[i] = lambda * f * (hs[i] - a / P * g);
                yb[i] = lambda / n * f * (g - a / Q * hs[i]);
            }
        }
    }
}

static void trainable_grads(const ref_model *r, double *out) {
    size_t k = 0;
    for (int p = 0; p < r->nparams; p++) {
        if (!r->params[p].trainable) continue;
        memcpy(out + k, r->params[p].g, r->params[p].count * sizeof(double));
        k += r->params[p].count;
    }
}

/* Forward (frozen pattern, perturbation scale e) + loss + backward; the
 * trainable gradients into out. */
static int perturbed_grads(ref_model *r, const double *x, int n, const int32_t *labels, int train, double e,
                           double *dz, double *out) {
    r->pert_scale = e;
    if (ref_forward(r, x, n, train, 0)) return -1;
    ref_loss(r, labels, dz, NULL);
    if (ref_backward(r, dz)) return -1;
    trainable_grads(r, out);
    return 0;
}

int ref_reg_grad(ref_model *r, const double *x, int n, const int32_t *labels, int train,
                 const ref_hooks *hooks, double *out) {
    if (!hooks || hooks->count < 1) return fail("ref_reg_grad: no hooks");
    size_t nt = ref_trainable_count(r);
    double *dz = xcalloc((size_t)n * r->k, sizeof(double));
    double *gp = xcalloc(nt, sizeof(double)), *gm = xcalloc(nt, sizeof(double));
    double **gbar = xcalloc((size_t)r->nnodes, sizeof(double *));
    double **ybar = xcalloc((size_t)r->nnodes, sizeof(double *));
    int rc = -1;
    if (!dz || !gp || !gm || !gbar || !ybar) {
        fail("out of memory");
        goto done;
    }
    if (ref_forward(r, x, n, train, 0)) goto done;
    ref_loss(r, labels, dz, NULL);
    if (ref_backward(r, dz)) goto done;
    double ymax = 0.0, gmax = 0.0;
    for (int t = 0; t < hooks->count; t++) {
        int id = hooks->node[t];
        if (id < 0 || id >= r->nnodes || gbar[id]) {
            fail("ref_reg_grad: hook %d on node %d", t, id);
            goto done;
        }
        size_t tot = (size_t)n * r->nodes[id].size;
        gbar[id] = xcalloc(tot, sizeof(double));
        ybar[id] = xcalloc(tot, sizeof(double));
        if (!gbar[id] || !ybar[id]) {
            fail("out of memory");
            goto done;
        }
        partials(hooks->mode, hooks->lambda[t], n, r->nodes[id].size, r->nodes[id].grad, r->nodes[id].val,
                 gbar[id], ybar[id]);
        ymax = fmax(ymax, ref_max_abs(r->nodes[id].val, tot));
        gmax = fmax(gmax, ref_max_abs(gbar[id], tot));
    }
    /* second term: a backward seeded with Ybar over the unperturbed forward */
    memset(dz, 0, (size_t)n * r->k * sizeof(double));
    if (ref_backward_inject(r, dz, (const double *const *)ybar)) goto done;
    trainable_grads(r, out);
    /* first term: perturbations of 1e-5 of the largest hooked activation */
    double e = gmax > 0.0 ? 1e-5 * fmax(ymax, 1e-3) / gmax : 0.0;
    if (e > 0.0) {
        for (int i = 0; i < r->nnodes; i++) r->nodes[i].pert = gbar[i];
        r->frozen = 1;
        int bad = perturbed_grads(r, x, n, labels, train, e, dz, gp) ||
                  perturbed_grads(r, x, n, labels, train, -e, dz, gm);
        r->frozen = 0;
        for (int i = 0; i < r->nnodes; i++) r->nodes[i].pert = NULL;
        r->pert_scale = 0.0;
        if (bad) goto done;
        for (size_t i = 0; i < nt; i++) out[i] += (gp[i] - gm[i]) / (2.0 * e);
    }
    rc = ref_forward(r, x, n, train, 0); /* leave the last forward at theta */
done:
    for (int i = 0; gbar && i < r->nnodes; i++) free(gbar[i]);
    for (int i = 0; ybar && i < r->nnodes; i++) free(ybar[i]);
    free(gbar);
    free(ybar);
    free(dz);
    free(gp);
    free(gm);
    return rc;
}

/* ---- activation pattern and finite differences ----------------------------- */

size_t ref_pattern_size(const ref_model *r) {
    size_t t = 0;
    for (int i = 0; i < r->nnodes; i++) {
        const ref_node *nd = &r->nodes[i];
        if (nd->type == DD_NODE_RELU || nd->type == DD_NODE_MAXPOOL) t += (size_t)r->n * nd->size;
    }
    return t;
}

void ref_pattern(const ref_model *r, int32_t *out) {
    size_t k = 0;
    for (int i = 0; i < r->nnodes; i++) {
        const ref_node *nd = &r->nodes[i];
        size_t tot = (size_t)r->n * nd->size;
        if (nd->type == DD_NODE_RELU) {
            const ref_node *a = &r->nodes[nd->in[0]];
            for (size_t e = 0; e < tot; e++) out[k++] = a->val[e] > 0.0;
        } else if (nd->type == DD_NODE_MAXPOOL) {
            for (size_t e = 0; e < tot; e++) out[k++] = nd->argmax[e];
        }
    }
}

/* theta += step * d over the trainable parameters. */
static void axpy_params(ref_model *r, double step, const double *d) {
    size_t k = 0;
    for (int p = 0; p < r->nparams; p++) {
        if (!r->params[p].trainable) continue;
        for (size_t i = 0; i < r->params[p].count; i++) r->params[p].v[i] += step * d[k++];
    }
}

static void save_params(const ref_model *r, double *buf) {
    size_t k = 0;
    for (int p = 0; p < r->nparams; p++)
        if (r->params[p].trainable) {
            memcpy(buf + k, r->params[p].v, r->params[p].count * sizeof(double));
            k += r->params[p].count;
        }
}

static void restore_params(ref_model *r, const double *buf) {
    size_t k = 0;
    for (int p = 0; p < r->nparams; p++)
        if (r->params[p].trainable) {
            memcpy(r->params[p].v, buf + k, r->params[p].count * sizeof(double));
            k += r->params[p].count;
        }
}

int ref_fd_directional(ref_model *r, const double *x, int n, const int32_t *labels, int train,
                       const ref_hooks *hooks, const double *d, double *deriv, double *h_used) {
    static const double hs[4] = {1e-4, 1e-5, 1e-6, 1e-7};
    size_t nt = ref_trainable_count(r);
    double *saved = xcalloc(nt, sizeof(double));
    if (!saved) return fail("out of memory");
    save_params(r, saved);
    if (isnan(ref_objective(r, x, n, labels, train, hooks, NULL, NULL, NULL))) {
        free(saved);
        return -1;
    }
    size_t ps = ref_pattern_size(r);
    int32_t *p0 = xcalloc(ps, sizeof(int32_t)), *p1 = xcalloc(ps, sizeof(int32_t));
    if (!p0 || !p1) {
        free(saved);
        free(p0);
        free(p1);
        return fail("out of memory");
    }
    ref_pattern(r, p0);
    int rc = 1;
    double best = 0.0, hb = hs[3];
    for (int k = 0; k < 4; k++) {
        double h = hs[k];
        int same = 1;
        axpy_params(r, h, d);
        double jp = ref_objective(r, x, n, labels, train, hooks, NULL, NULL, NULL);
        ref_pattern(r, p1);
        same &= !memcmp(p0, p1, ps * sizeof(int32_t));
        restore_params(r, saved);
        axpy_params(r, -h, d);
        double jm = ref_objective(r, x, n, labels, train, hooks, NULL, NULL, NULL);
        ref_pattern(r, p1);
        same &= !memcmp(p0, p1, ps * sizeof(int32_t));
        restore_params(r, saved);
        if (isnan(jp) || isnan(jm)) {
            rc = -1;
            break;
        }
        best = (jp - jm) / (2.0 * h);
        hb = h;
        if (same) {
            rc = 0;
            break;
        }
    }
    /* Leave the model's last forward at theta. */
    ref_objective(r, x, n, labels, train, hooks, NULL, NULL, NULL);
    free(saved);
    free(p0);
    free(p1);
    *deriv = best;
    if (h_used) *h_used = hb;
    return rc;
}

/* ---- helpers ------------------------------------------------------------- */

void ref_rng_seed(ref_rng *g, uint64_t seed) { g->s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull; }

static uint64_t rng_next(ref_rng *g) {
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double ref_rng_uniform(ref_rng *g) { return (double)(rng_next(g) >> 11) * 0x1.0p-53; }

double ref_rng_normal(ref_rng *g) {
    double u1 = ref_rng_uniform(g), u2 = ref_rng_uniform(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void ref_fill_uniform_f(ref_rng *g, float *a, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) a[i] = (float)(lo + (hi - lo) * ref_rng_uniform(g));
}

void ref_fill_normal_f(ref_rng *g, float *a, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) a[i] = (float)(scale * ref_rng_normal(g));
}

double ref_max_abs(const double *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > m) m = fabs(b[i]);
    return m;
}

double ref_rel_err_f(const float *a, const double *b, size_t n, double floor) {
    double e = 0.0, s = ref_max_abs(b, n);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d)) return NAN;
        if (d > e) e = d;
    }
    return e / (s > floor ? s : floor);
}

void ref_to_double(const float *a, double *b, size_t n) {
    for (size_t i = 0; i < n; i++) b[i] = a[i];
}
