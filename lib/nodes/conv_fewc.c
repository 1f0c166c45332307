/* lib/nodes/conv_fewc.c -- backward-data of an image-layer convolution (our kernel).
 *
 * The first convolution of a network reads the image: few input channels
 * (IC <= 4), plain NCHW. Its backward-data, the image gradient that GFA's
 * image hook and every gradient attack need, gets no fast oneDNN 2.6 kernel
 * here: the blocked ones pad IC to 16 (~60 GF/s) and the gemm one needs dy
 * reordered to NCHW plus a col2im (35-140 GF/s, 3.6-12 ms for cnn-cw's
 * 3->64 layer at batch 128). This kernel reads dy in its own nChw16c layout
 * and writes each image pixel once:
 *     dx[c][ih][iw] = sum over (kh, kw) with oh = (ih + ph - kh) / sh and
 *                     ow = (iw + pw - kw) / sw integral and in range, over the
 *                     16-lane channel blocks b, of <wp[b][c][kh][kw][:], dy[b][oh][ow][:]>
 * with one 16-lane accumulator per input channel and pixel, summed across
 * lanes at the end; four pixels of a row share each weight load. wp is the
 * weight packed by dd__conv_fewc_pack: [OC/16][IC][KH][KW][16], zero in the
 * lanes past OC, so dy's padding lanes (zero) contribute nothing.
 * Deterministic: fixed summation order for every thread count.
 * Measured (batch 128, 2 threads, a bench harness around this file): cnn-cw's
 * 3->64 32x32 layer 3.0 ms (oneDNN gemm path 3.6 ms warm, 8-12 ms inside a
 * GFA step), resnet20's 3->16 layer 1.0 ms (gemm 2.7 ms). GCC folds the dy
 * loads into the FMAs (each reloaded per input channel), which holds the
 * 3->64 layer at ~0.8 FMA per cycle; left alone.
 */
#include "conv_fewc.h"

#include <string.h>

int dd__conv_fewc_eligible(const dd__tensor *in, const dd__tensor *out, int kh, int kw) {
    return in->layout == DD__NCHW && out->layout == DD__BLOCKED && out->blk == 16 && in->ndims == 4 &&
           in->c >= 1 && in->c <= DD__FEWC_MAX_IC && kh >= 1 && kw >= 1 && kh <= DD__FEWC_MAX_K &&
           kw <= DD__FEWC_MAX_K;
}

size_t dd__conv_fewc_pack_floats(int oc, int ic, int kh, int kw) {
    return (size_t)(oc + 15) / 16 * (size_t)ic * (size_t)kh * (size_t)kw * 16;
}

void dd__conv_fewc_pack(const float *w, const float *scale, int oc, int ic, int kh, int kw, float *wp) {
    size_t taps = (size_t)kh * kw, per = (size_t)ic * taps;
    memset(wp, 0, dd__conv_fewc_pack_floats(oc, ic, kh, kw) * sizeof(float));
    for (int o = 0; o < oc; o++) {
        float s = scale ? scale[o] : 1.0f;
        for (int c = 0; c < ic; c++)
            for (size_t t = 0; t < taps; t++)
                wp[(((size_t)(o / 16) * ic + c) * taps + t) * 16 + o % 16] = s * w[o * per + c * taps + t];
    }
}

typedef float dd__f16 __attribute__((vector_size(64)));

/* Macros, not functions: a function taking or returning a 64-byte vector
 * has a different ABI in the baseline clone (-Wpsabi). */
#define LOAD16(v, p) memcpy(&(v), (p), sizeof(v))
/* out = the sum of v's 16 lanes, as a fixed tree */
#define HSUM16(out, v)                                                                               \
    do {                                                                                             \
        dd__f16 t_ = (v);                                                                            \
        t_ += __builtin_shufflevector(t_, t_, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7); \
        t_ += __builtin_shufflevector(t_, t_, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11); \
        t_ += __builtin_shufflevector(t_, t_, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13); \
        t_ += __builtin_shufflevector(t_, t_, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14); \
        (out) = t_[0];                                                                               \
    } while (0)

/* Input pixels (ih, iw .. iw + NP - 1) of one sample: NP = 4 with stride 1
 * in width and every pixel seeing all KW column taps (ow in range), or
 * NP = 1 with any stride and the taps checked one by one. IC and
 * NP are constants after inlining: the IC x NP accumulators and the IC
 * weight vectors of a tap are registers, each weight load serving NP
 * pixels. */
typedef struct {
    int n, kh[DD__FEWC_MAX_K], oh[DD__FEWC_MAX_K];
} tap_rows;

static inline __attribute__((always_inline)) void pixels(const dd__conv_fewc_geom *g, const tap_rows *rows,
                                                         const float *wp, const float *dy, float *dx, int ih,
                                                         int iw, const int IC, const int NP) {
    const int nb = (g->oc + 15) / 16;
    const size_t taps = (size_t)g->kh * g->kw, cs = taps * 16;
    dd__f16 acc[DD__FEWC_MAX_IC][4];
#pragma GCC unroll 4
    for (int c = 0; c < IC; c++)
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++) acc[c][q] = (dd__f16){0};
    for (int r = 0; r < rows->n; r++) {
        int kh = rows->kh[r], oh = rows->oh[r];
        for (int kw = 0; kw < g->kw; kw++) {
            int ow = iw + g->pw - kw; /* NP == 4: stride 1, in range */
            if (NP == 1) {
                if (ow < 0 || ow % g->sw) continue;
                ow /= g->sw;
                if (ow >= g->ow) continue;
            }
            for (int b = 0; b < nb; b++) {
                const float *v = dy + (((size_t)b * g->oh + oh) * g->ow + ow) * 16;
                const float *w = wp + ((size_t)b * IC * taps + (size_t)kh * g->kw + kw) * 16;
                dd__f16 wc[DD__FEWC_MAX_IC], vq[4];
#pragma GCC unroll 4
                for (int c = 0; c < IC; c++) LOAD16(wc[c], w + c * cs);
#pragma GCC unroll 4
                for (int q = 0; q < NP; q++) LOAD16(vq[q], v + q * 16);
#pragma GCC unroll 4
                for (int c = 0; c < IC; c++)
#pragma GCC unroll 4
                    for (int q = 0; q < NP; q++) acc[c][q] += wc[c] * vq[q];
            }
        }
    }
    size_t plane = (size_t)g->ih * g->iw, o = (size_t)ih * g->iw + iw;
#pragma GCC unroll 4
    for (int c = 0; c < IC; c++)
#pragma GCC unroll 4
        for (int q = 0; q < NP; q++) HSUM16(dx[c * plane + o + q], acc[c][q]);
}

/* One sample: groups of 4 pixels where stride 1 lets every pixel of the
 * group use every column tap, single pixels elsewhere. */
static inline __attribute__((always_inline)) void sample_ic(const dd__conv_fewc_geom *g, const float *wp,
                                                            const float *dy, float *dx, const int IC) {
    /* with stride 1, pixel iw reads ow = iw + pw - kw for all kw: in range
     * for iw in [lo, hi) */
    int lo = g->kw - 1 - g->pw, hi = g->ow - g->pw;
    if (lo < 0) lo = 0;
    if (g->sw != 1 || hi > g->iw) hi = g->sw != 1 ? lo : g->iw;
    for (int ih = 0; ih < g->ih; ih++) {
        tap_rows rows = {0, {0}, {0}}; /* the (kh, oh) pairs that reach row ih */
        for (int kh = 0; kh < g->kh; kh++) {
            int th = ih + g->ph - kh;
            if (th >= 0 && th % g->sh == 0 && th / g->sh < g->oh) {
                rows.kh[rows.n] = kh;
                rows.oh[rows.n++] = th / g->sh;
            }
        }
        int iw = 0;
        for (; iw < lo; iw++) pixels(g, &rows, wp, dy, dx, ih, iw, IC, 1);
        for (; iw + 4 <= hi; iw += 4) pixels(g, &rows, wp, dy, dx, ih, iw, IC, 4);
        for (; iw < g->iw; iw++) pixels(g, &rows, wp, dy, dx, ih, iw, IC, 1);
    }
}

DD_CLONES("avx512f", "avx2", "default")
static void sample(const dd__conv_fewc_geom *g, const float *wp, const float *dy, float *dx) {
    switch (g->ic) {
    case 1:
        sample_ic(g, wp, dy, dx, 1);
        break;
    case 2:
        sample_ic(g, wp, dy, dx, 2);
        break;
    case 3:
        sample_ic(g, wp, dy, dx, 3);
        break;
    default:
        sample_ic(g, wp, dy, dx, 4);
        break;
    }
}

void dd__conv_fewc_bwd_data(const dd__conv_fewc_geom *g, int n, const float *wp, const float *dy, float *dx,
                            int nthreads) {
    size_t dy_floats = (size_t)(g->oc + 15) / 16 * 16 * g->oh * g->ow;
    size_t dx_floats = (size_t)g->ic * g->ih * g->iw;
#pragma omp parallel for num_threads(n > 1 ? nthreads : 1) schedule(static)
    for (int s = 0; s < n; s++) sample(g, wp, dy + (size_t)s * dy_floats, dx + (size_t)s * dx_floats);
}
