/* lib/gfa/align.c -- per-sample GFA reductions and closed-form partials.
 *
 * For each sample i of a hooked tensor, with g = B * G[i] and h = Y[i]
 * (flattened; padding lanes are zero in both, so they drop out):
 *   a = <g, h>, P = |g|^2 + eps, Q = |h|^2 + eps, c = a / sqrt(P Q)
 * and the partials of GFA.md, which are all of the form
 *   dr/dg = alpha g + beta h,   dr/dh = gamma g + delta h
 *   SIN2:    alpha = 2a^2/(P^2 Q), beta = -2a/(PQ), gamma = -2a/(PQ), delta = 2a^2/(P Q^2)
 *   TANGENT: s = a/Q, k = <u, h> = a - s |h|^2 (u = g - s h):
 *            alpha = 2, beta = gamma = -2s - 2k/Q, delta = 2s^2 + 4ks/Q
 *   COS:     r = 1 - c, S = sqrt(P Q); dc/dg = (h - (a/P) g)/S and
 *            dc/dh = (g - (a/Q) h)/S (the quotient rule on a / sqrt(P Q),
 *            dP/dg = 2g, dQ/dh = 2h), so
 *            alpha = a/(P S), beta = gamma = -1/S, delta = a/(Q S)
 * Then Gbar[i] = lambda dr/dg and Ybar[i] = (lambda/B) dr/dh, kept as four
 * per-sample coefficients and applied when the passes need them (so no
 * buffer holds them in between). Reductions
 * add float partial sums of 256 elements into double (3.7e-8 relative
 * error against double, at float speed); one OpenMP thread per sample.
 */
#include <math.h>

#include "gfa.h"

#define DD__GFA_EPS 1e-12 /* GFA.md: keeps c finite for a zero gradient or feature */

void dd__gfa_align(const float *grad, const float *data, int n, size_t floats, int mode, double lambda,
                   float *coef, double *work, int nthreads, double *reg, double *align) {
    double B = n;
    if ((size_t)n * floats < 32768) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *G = grad + (size_t)i * floats, *h = data + (size_t)i * floats;
        double gh = 0, gg = 0, hh = 0;
        for (size_t b = 0; b < floats; b += 256) {
            size_t e = b + 256 < floats ? b + 256 : floats;
            float pgh = 0, pgg = 0, phh = 0;
#pragma omp simd reduction(+ : pgh, pgg, phh)
            for (size_t j = b; j < e; j++) {
                pgh += G[j] * h[j];
                pgg += G[j] * G[j];
                phh += h[j] * h[j];
            }
            gh += pgh;
            gg += pgg;
            hh += phh;
        }
        double a = B * gh, g2 = B * B * gg;
        double P = g2 + DD__GFA_EPS, Q = hh + DD__GFA_EPS;
        double c = a / sqrt(P * Q);
        double r, al, be, ga, de;
        if (mode == DD_GFA_TANGENT) {
            double s = a / Q, k = a - s * hh;
            r = g2 - 2 * s * a + s * s * hh;
            al = 2;
            be = ga = -2 * s - 2 * k / Q;
            de = 2 * s * s + 4 * k * s / Q;
        } else if (mode == DD_GFA_COS) {
            double S = sqrt(P * Q);
            r = 1 - c;
            al = a / (P * S);
            be = -1 / S;
            ga = be;
            de = a / (Q * S);
        } else {
            r = 1 - c * c;
            al = 2 * a * a / (P * P * Q);
            be = -2 * a / (P * Q);
            ga = be;
            de = 2 * a * a / (P * Q * Q);
        }
        /* Gbar = lambda (alpha B G + beta h); Ybar = lambda/B (gamma B G + delta h) */
        coef[4 * (size_t)i] = (float)(lambda * al * B);
        coef[4 * (size_t)i + 1] = (float)(lambda * be);
        coef[4 * (size_t)i + 2] = (float)(lambda * ga);
        coef[4 * (size_t)i + 3] = (float)(lambda * de / B);
        work[2 * (size_t)i] = r;
        work[2 * (size_t)i + 1] = fabs(c);
    }
    double sr = 0, sc = 0;
    for (int i = 0; i < n; i++) {
        sr += work[2 * (size_t)i];
        sc += work[2 * (size_t)i + 1];
    }
    *reg = sr / n;
    *align = sc / n;
}

void dd__gfa_affine(float *out, const float *G, const float *h, const float *coef, int w, int n,
                    size_t floats, int accumulate, int nthreads) {
    if ((size_t)n * floats < 32768) nthreads = 1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int i = 0; i < n; i++) {
        float cg = coef[4 * (size_t)i + 2 * w], ch = coef[4 * (size_t)i + 2 * w + 1];
        float *o = out + (size_t)i * floats;
        const float *g = G + (size_t)i * floats, *x = h + (size_t)i * floats;
        if (accumulate) {
#pragma omp simd
            for (size_t j = 0; j < floats; j++) o[j] += cg * g[j] + ch * x[j];
        } else {
#pragma omp simd
            for (size_t j = 0; j < floats; j++) o[j] = cg * g[j] + ch * x[j];
        }
    }
}
