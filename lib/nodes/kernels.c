/* lib/nodes/kernels.c -- per-channel and elementwise OpenMP kernels.
 *
 * A sample in nChw<b>c (b = 8 or 16, the tensor's blk) is ceil(C/b) blocks
 * of H*W*b floats; channel c = block*b + lane. In plain NCHW each channel is H*W contiguous floats,
 * in NC one float. The loops run over (sample, channel block) pairs so each
 * thread writes disjoint memory; reductions keep one partial row per thread
 * and fold them in thread order, so results depend only on the thread count.
 */
#include "kernels.h"

#include <omp.h>
#include <string.h>

/* Geometry of a tensor as blocks of `lanes` channels, each of `hw` positions. */
typedef struct {
    int blocks, lanes;
    size_t hw, block_floats;
} geom;

static geom geometry(const dd__tensor *t) {
    geom g;
    g.hw = (size_t)t->h * (size_t)t->w;
    if (t->layout == DD__BLOCKED) {
        g.lanes = t->blk;
        g.blocks = (t->c + t->blk - 1) / t->blk;
    } else {
        g.lanes = 1;
        g.blocks = t->c;
    }
    g.block_floats = g.hw * (size_t)g.lanes;
    return g;
}

void dd__chan_affine(const dd__tensor *t, int n, const float *x, float *y, const float *scale,
                     const float *shift, int nthreads) {
    geom g = geometry(t);
    long total = (long)n * g.blocks;
    if ((size_t)total * g.block_floats < 32768) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long sb = 0; sb < total; sb++) {
        int b = (int)(sb % g.blocks);
        size_t base = (size_t)sb * g.block_floats;
        float sc[16], sh[16];
        for (int l = 0; l < g.lanes; l++) {
            int c = b * g.lanes + l;
            sc[l] = c < t->c ? scale[c] : 0.0f;
            sh[l] = c < t->c && shift ? shift[c] : 0.0f;
        }
        if (g.lanes == 16) {
            for (size_t p = 0; p < g.hw; p++) {
#pragma omp simd
                for (int l = 0; l < 16; l++) y[base + p * 16 + l] = x[base + p * 16 + l] * sc[l] + sh[l];
            }
        } else if (g.lanes == 8) {
            for (size_t p = 0; p < g.hw; p++) {
#pragma omp simd
                for (int l = 0; l < 8; l++) y[base + p * 8 + l] = x[base + p * 8 + l] * sc[l] + sh[l];
            }
        } else {
#pragma omp simd
            for (size_t p = 0; p < g.hw; p++) y[base + p] = x[base + p] * sc[0] + sh[0];
        }
    }
}

/* Sums over the hw positions of one channel block of L lanes (16 or 8):
 * float partials (at most H*W products each) folded into the caller's
 * double rows. */
#define DD__BLOCK_SUMS(L)                                                                            \
    DD_CLONES("avx512f", "avx2", "default")                                                          \
    static void block_sums##L(const float *pa, const float *pb, size_t hw, double *ab, double *aa) { \
        float sab[L] = {0}, sa[L] = {0};                                                             \
        for (size_t p = 0; p < hw; p++) {                                                            \
            _Pragma("omp simd") for (int l = 0; l < L; l++) {                                        \
                float av = pa[p * L + l];                                                            \
                sa[l] += av;                                                                         \
                sab[l] += pb ? av * pb[p * L + l] : av;                                              \
            }                                                                                        \
        }                                                                                            \
        for (int l = 0; l < L; l++) {                                                                \
            ab[l] += sab[l];                                                                         \
            aa[l] += sa[l];                                                                          \
        }                                                                                            \
    }
DD__BLOCK_SUMS(16)
DD__BLOCK_SUMS(8)

void dd__chan_sums(const dd__tensor *t, int n, const float *a, const float *b, double *sum_ab, double *sum_a,
                   double *work, int nthreads) {
    geom g = geometry(t);
    int cpad = g.blocks * g.lanes;
    if ((size_t)n * g.blocks * g.block_floats < 32768) nthreads = 1;
    memset(work, 0, sizeof(double) * 2 * (size_t)cpad * (size_t)nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        double *ab = work + (size_t)omp_get_thread_num() * 2 * cpad;
        double *aa = ab + cpad;
#pragma omp for schedule(static)
        for (int s = 0; s < n; s++) {
            for (int blk = 0; blk < g.blocks; blk++) {
                const float *pa = a + ((size_t)s * g.blocks + blk) * g.block_floats;
                const float *pb = b ? b + ((size_t)s * g.blocks + blk) * g.block_floats : NULL;
                if (g.lanes == 16) {
                    block_sums16(pa, pb, g.hw, ab + blk * 16, aa + blk * 16);
                    continue;
                }
                if (g.lanes == 8) {
                    block_sums8(pa, pb, g.hw, ab + blk * 8, aa + blk * 8);
                    continue;
                }
                float sab = 0, sa = 0;
                if (pb) {
#pragma omp simd reduction(+ : sab, sa)
                    for (size_t p = 0; p < g.hw; p++) {
                        sa += pa[p];
                        sab += pa[p] * pb[p];
                    }
                } else {
#pragma omp simd reduction(+ : sa)
                    for (size_t p = 0; p < g.hw; p++) sa += pa[p];
                    sab = sa;
                }
                ab[blk] += sab;
                aa[blk] += sa;
            }
        }
    }
    for (int c = 0; c < t->c; c++) {
        double sab = 0, sa = 0;
        for (int th = 0; th < nthreads; th++) {
            sab += work[(size_t)th * 2 * cpad + c];
            sa += work[(size_t)th * 2 * cpad + cpad + c];
        }
        if (sum_ab) sum_ab[c] = sab;
        if (sum_a) sum_a[c] = sa;
    }
}

/* The five sums of one block of L lanes (16 or 8) for dd__chan_sums3. */
#define DD__BLOCK_SUMS3(L)                                                                                 \
    DD_CLONES("avx512f", "avx2", "default")                                                                \
    static void block_sums3_##L(const float *pt, const float *pg, const float *px, size_t hw, double *acc, \
                                size_t stride) {                                                           \
        float s[5][L] = {{0}};                                                                             \
        for (size_t p = 0; p < hw; p++) {                                                                  \
            _Pragma("omp simd") for (int l = 0; l < L; l++) {                                              \
                float t = pt[p * L + l], g = pg[p * L + l], x = px[p * L + l];                             \
                s[0][l] += t;                                                                              \
                s[1][l] += g;                                                                              \
                s[2][l] += t * g;                                                                          \
                s[3][l] += g * x;                                                                          \
                s[4][l] += t * x;                                                                          \
            }                                                                                              \
        }                                                                                                  \
        for (int k = 0; k < 5; k++)                                                                        \
            for (int l = 0; l < L; l++) acc[k * stride + l] += s[k][l];                                    \
    }
DD__BLOCK_SUMS3(16)
DD__BLOCK_SUMS3(8)

void dd__chan_sums3(const dd__tensor *t, int n, const float *tv, const float *gv, const float *xv,
                    double *sums, double *work, int nthreads) {
    geom g = geometry(t);
    size_t cpad = (size_t)g.blocks * g.lanes;
    if ((size_t)n * g.blocks * g.block_floats < 32768) nthreads = 1;
    memset(work, 0, sizeof(double) * 5 * cpad * (size_t)nthreads);
#pragma omp parallel num_threads(nthreads)
    {
        double *acc = work + (size_t)omp_get_thread_num() * 5 * cpad;
#pragma omp for schedule(static)
        for (int s = 0; s < n; s++) {
            for (int blk = 0; blk < g.blocks; blk++) {
                size_t base = ((size_t)s * g.blocks + blk) * g.block_floats;
                const float *pt = tv + base, *pg = gv + base, *px = xv + base;
                if (g.lanes == 16) {
                    block_sums3_16(pt, pg, px, g.hw, acc + (size_t)blk * 16, cpad);
                    continue;
                }
                if (g.lanes == 8) {
                    block_sums3_8(pt, pg, px, g.hw, acc + (size_t)blk * 8, cpad);
                    continue;
                }
                float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4)
                for (size_t p = 0; p < g.hw; p++) {
                    s0 += pt[p];
                    s1 += pg[p];
                    s2 += pt[p] * pg[p];
                    s3 += pg[p] * px[p];
                    s4 += pt[p] * px[p];
                }
                acc[blk] += s0;
                acc[cpad + blk] += s1;
                acc[2 * cpad + blk] += s2;
                acc[3 * cpad + blk] += s3;
                acc[4 * cpad + blk] += s4;
            }
        }
    }
    for (int k = 0; k < 5; k++)
        for (int c = 0; c < t->c; c++) {
            double v = 0;
            for (int th = 0; th < nthreads; th++) v += work[(size_t)th * 5 * cpad + k * cpad + c];
            sums[(size_t)k * t->c + c] = v;
        }
}

void dd__chan_lincomb(const dd__tensor *t, int n, float *y, const float *a, const float *b, const float *e,
                      const float *ca, const float *cb, const float *cc, const float *cd, int accumulate,
                      int nthreads) {
    geom g = geometry(t);
    long total = (long)n * g.blocks;
    if ((size_t)total * g.block_floats < 32768) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long sb = 0; sb < total; sb++) {
        int blk = (int)(sb % g.blocks);
        size_t base = (size_t)sb * g.block_floats;
        float k1[16], k2[16], k3[16], k4[16];
        for (int l = 0; l < g.lanes; l++) {
            int c = blk * g.lanes + l;
            int real = c < t->c;
            k1[l] = real ? ca[c] : 0.0f;
            k2[l] = real ? cb[c] : 0.0f;
            k3[l] = real ? cc[c] : 0.0f;
            k4[l] = real ? cd[c] : 0.0f;
        }
        for (size_t p = 0; p < g.hw; p++) {
#pragma omp simd
            for (int l = 0; l < g.lanes; l++) {
                size_t o = base + p * g.lanes + l;
                y[o] = (accumulate ? y[o] : 0.0f) + k1[l] * a[o] + k2[l] * b[o] + k3[l] * e[o] + k4[l];
            }
        }
    }
}

void dd__add2(const float *a, const float *b, float *y, size_t count, int relu, int nthreads) {
    if (count < 65536) nthreads = 1;
    if (relu) {
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
        for (size_t i = 0; i < count; i++) {
            float v = a[i] + b[i];
            y[i] = v < 0.0f ? 0.0f : v; /* NaN passes, as in oneDNN's ReLU */
        }
    } else {
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
        for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
    }
}

void dd__relu_bwd2(float *d0, float *d1, const float *dy, const float *y, size_t count, int nthreads) {
    if (count < 65536) nthreads = 1;
    /* dy is loaded unconditionally so that the select vectorises (a
     * conditional load compiles to a branch per element) */
    if (d0 && d1) {
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
        for (size_t i = 0; i < count; i++) {
            float g = dy[i], v = y[i] > 0.0f ? g : 0.0f;
            d0[i] = v;
            d1[i] = v;
        }
    } else if (d0 || d1) {
        float *d = d0 ? d0 : d1;
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
        for (size_t i = 0; i < count; i++) {
            float g = dy[i];
            d[i] = y[i] > 0.0f ? g : 0.0f;
        }
    }
}

void dd__copy(float *dst, const float *src, size_t count, int nthreads) {
    if (count < 65536) nthreads = 1;
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
    for (size_t i = 0; i < count; i++) dst[i] = src[i];
}
