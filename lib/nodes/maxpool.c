/* lib/nodes/maxpool.c -- max pooling with our own argmax.
 *
 * Forward records, for every output element, the offset (within its
 * sample) of the winning input element: the first maximum in row-major
 * window order, as PyTorch and oneDNN do; padding positions never win.
 * Backward scatters dy to those offsets (only where y > 0 when it also
 * stands for the ReLU before it, see passes.c); the GFA JVP gathers the tangent
 * from them. Owning the indices (instead of decoding oneDNN's
 * implementation-defined workspace) makes the three maps consistent by
 * construction. Blocked layouts are processed a block (8 or 16 channels) at a time so
 * the lane loop vectorises. The argmax buffer lives in the per-batch plan.
 */
#include <float.h>
#include <string.h>

#include "pool.h"

typedef struct {
    int32_t *argmax; /* [n * out.sample_floats], -1 in padding lanes */
} maxpool_plan;

static void plan_destroy(void *p) {
    maxpool_plan *mp = p;
    if (!mp) return;
    dd__free_aligned(mp->argmax);
    dd__free(mp);
}

static dd_status plan_create(dd__node *n, dd__ctx *ctx, void **out) {
    maxpool_plan *mp = dd__calloc(1, sizeof *mp);
    DD_RETURN_IF(!mp, DD_ERR_OUT_OF_MEMORY, "maxpool plan");
    mp->argmax = dd__aligned_alloc(dd__tensor_floats(&n->out, ctx->n) * sizeof(int32_t));
    if (!mp->argmax) {
        dd__free(mp);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "maxpool '%s': argmax buffer", n->name);
    }
    *out = mp;
    return DD_OK;
}

/* A channel block (16 or 8 lanes, nChw16c / nChw8c) as one GCC vector: the
 * compare-and-select below compiles to a few SIMD instructions on any
 * x86-64 (SSE2 baseline) instead of one unpredictable branch per lane.
 * Vector comparisons give -1/0 lane masks. Cloned for AVX-512 and AVX2 with
 * the SSE2 baseline as fallback; the loader picks the clone for the CPU. */
typedef float dd__f16 __attribute__((vector_size(64)));
typedef int32_t dd__i16 __attribute__((vector_size(64)));
typedef float dd__f8 __attribute__((vector_size(32)));
typedef int32_t dd__i8 __attribute__((vector_size(32)));

#define DD__MAXPOOL_BLOCK(L, ...)                                                                            \
    DD_CLONES("avx512f", "avx2", "default")                                                                  \
    static void block##L(const dd__pool_cfg *c, const dd__tensor *in, const dd__tensor *ot, const float *xs, \
                         size_t in_base, float *ys, int32_t *as, int real) {                                 \
        const dd__i##L lane = {__VA_ARGS__};                                                                 \
        dd__i##L keep = lane < real;                                                                         \
        for (int oy = 0; oy < ot->h; oy++)                                                                   \
            for (int ox = 0; ox < ot->w; ox++) {                                                             \
                dd__f##L best = {0};                                                                         \
                dd__i##L arg = lane - lane - 1;                                                              \
                int first = 1;                                                                               \
                for (int ky = 0; ky < c->kh; ky++) {                                                         \
                    int iy = oy * c->sh - c->ph + ky;                                                        \
                    if (iy < 0 || iy >= in->h) continue;                                                     \
                    for (int kx = 0; kx < c->kw; kx++) {                                                     \
                        int ix = ox * c->sw - c->pw + kx;                                                    \
                        if (ix < 0 || ix >= in->w) continue;                                                 \
                        size_t off = in_base + ((size_t)iy * in->w + ix) * L;                                \
                        dd__f##L v;                                                                          \
                        memcpy(&v, xs + off, sizeof v);                                                      \
                        dd__i##L idx = lane + (int32_t)off;                                                  \
                        if (first) {                                                                         \
                            best = v;                                                                        \
                            arg = idx;                                                                       \
                            first = 0;                                                                       \
                            continue;                                                                        \
                        }                                                                                    \
                        dd__i##L gt = v > best; /* strict: the first maximum wins */                         \
                        best = (dd__f##L)(((dd__i##L)best & ~gt) | ((dd__i##L)v & gt));                      \
                        arg = (arg & ~gt) | (idx & gt);                                                      \
                    }                                                                                        \
                }                                                                                            \
                dd__f##L outv = (dd__f##L)((dd__i##L)best & keep);                                           \
                dd__i##L outa = (arg & keep) | ~keep;                                                        \
                size_t o = ((size_t)oy * ot->w + ox) * L;                                                    \
                memcpy(ys + o, &outv, sizeof outv);                                                          \
                memcpy(as + o, &outa, sizeof outa);                                                          \
            }                                                                                                \
    }
DD__MAXPOOL_BLOCK(16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
DD__MAXPOOL_BLOCK(8, 0, 1, 2, 3, 4, 5, 6, 7)

/* One channel of a plain layout: the general window loop. */
static void block1(const dd__pool_cfg *c, const dd__tensor *in, const dd__tensor *ot, const float *xs,
                   size_t in_base, float *ys, int32_t *as) {
    for (int oy = 0; oy < ot->h; oy++)
        for (int ox = 0; ox < ot->w; ox++) {
            float best = -FLT_MAX;
            int32_t arg = -1;
            for (int ky = 0; ky < c->kh; ky++) {
                int iy = oy * c->sh - c->ph + ky;
                if (iy < 0 || iy >= in->h) continue;
                for (int kx = 0; kx < c->kw; kx++) {
                    int ix = ox * c->sw - c->pw + kx;
                    if (ix < 0 || ix >= in->w) continue;
                    size_t off = in_base + (size_t)iy * in->w + ix;
                    if (arg < 0 || xs[off] > best) {
                        best = xs[off];
                        arg = (int32_t)off;
                    }
                }
            }
            ys[(size_t)oy * ot->w + ox] = best;
            as[(size_t)oy * ot->w + ox] = arg;
        }
}

static dd_status forward(dd__node *n, void *plan, dd__ctx *ctx, const float *const *x, float *y) {
    maxpool_plan *mp = plan;
    const dd__pool_cfg *c = n->state;
    const dd__tensor *in = dd__in(n, 0);
    const dd__tensor *ot = &n->out;
    int lanes = in->layout == DD__BLOCKED ? in->blk : 1;
    int blocks = (in->c + lanes - 1) / lanes;
    size_t ib = (size_t)in->h * in->w * lanes, ob = (size_t)ot->h * ot->w * lanes;
    long total = (long)ctx->n * blocks;
    int nt = (size_t)total * ib < 32768 ? 1 : ctx->nthreads;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (long sb = 0; sb < total; sb++) {
        int s = (int)(sb / blocks), b = (int)(sb % blocks);
        size_t in_base = (size_t)b * ib;
        const float *xs = x[0] + (size_t)s * in->sample_floats;
        float *ys = y + (size_t)s * ot->sample_floats + (size_t)b * ob;
        int32_t *as = mp->argmax + (size_t)s * ot->sample_floats + (size_t)b * ob;
        int real = in->c - b * lanes < lanes ? in->c - b * lanes : lanes;
        if (lanes == 16)
            block16(c, in, ot, xs, in_base, ys, as, real);
        else if (lanes == 8)
            block8(c, in, ot, xs, in_base, ys, as, real);
        else
            block1(c, in, ot, xs, in_base, ys, as);
    }
    return DD_OK;
}

static dd_status backward(dd__node *n, void *plan, dd__ctx *ctx, const dd__bstep *st, const float *dy,
                          float *const *dx) {
    if (!dx[0]) return DD_OK;
    maxpool_plan *mp = plan;
    const dd__tensor *in = dd__in(n, 0);
    size_t of = n->out.sample_floats;
    int nt = (size_t)ctx->n * in->sample_floats < 32768 ? 1 : ctx->nthreads;
    const float *mask = st->variant == DD__BV_MASKS_INPUT ? st->mask : NULL; /* this node's output */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int s = 0; s < ctx->n; s++) {
        float *xs = dx[0] + (size_t)s * in->sample_floats;
        const float *g = dy + (size_t)s * of, *y = mask ? mask + (size_t)s * of : NULL;
        const int32_t *a = mp->argmax + (size_t)s * of;
        memset(xs, 0, in->sample_floats * sizeof(float));
        for (size_t o = 0; o < of; o++) {
            float v = g[o]; /* a select, not a branch on the data */
            if (y) v = y[o] > 0.0f ? v : 0.0f;
            if (a[o] >= 0) xs[a[o]] += v;
        }
    }
    return DD_OK;
}

static dd_status jvp(dd__node *n, void *plan, dd__ctx *ctx, const float *const *tx, float *ty) {
    maxpool_plan *mp = plan;
    const dd__tensor *in = dd__in(n, 0);
    size_t of = n->out.sample_floats;
    int nt = (size_t)ctx->n * of < 32768 ? 1 : ctx->nthreads;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int s = 0; s < ctx->n; s++) {
        const float *t = tx[0] + (size_t)s * in->sample_floats;
        const int32_t *a = mp->argmax + (size_t)s * of;
        float *o = ty + (size_t)s * of;
#pragma omp simd
        for (size_t i = 0; i < of; i++) o[i] = a[i] >= 0 ? t[a[i]] : 0.0f;
    }
    return DD_OK;
}

const dd__node_ops dd__maxpool_ops = {
    .type = DD_NODE_MAXPOOL,
    .name = "maxpool",
    .plan_create = plan_create,
    .plan_destroy = plan_destroy,
    .forward = forward,
    .backward = backward,
    .jvp = jvp,
    .caps = DD__CAP_BWD_MASKS_INPUT,
    .describe = dd__pool_describe,
    .info = dd__pool_info,
};

dd_status dd_model_add_maxpool(dd_model *m, dd_node input, const dd_pool_options *opts, dd_node *out) {
    return dd__pool_append(m, &dd__maxpool_ops, input, opts, "dd_model_add_maxpool", out);
}
