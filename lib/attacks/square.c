/* lib/attacks/square.c -- Square Attack (Andriushchenko et al.), Linf and
 * L2: random search with square windows, no gradients, margin loss.
 *
 * As the official AutoAttack square.py: only clean-correct samples are
 * attacked; the loss is the margin z_y - max_{j!=y} z_j; a candidate is
 * accepted when its loss is strictly lower or it is misclassified
 * (margin <= 0), and a sample leaves the search once fooled. The window
 * side follows the p schedule (dd__square_p: p_init, halved after
 * iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000, optionally
 * rescaled to the budget) with s = round(sqrt(p H W)), offsets drawn as
 * floor(U (H - s)) (so H - s itself never occurs), and one window position
 * and one sign per channel shared by the batch, as the official code.
 */
#include "attack_internal.h"

/* Linf: start at x0 + eps * sign per (sample, channel, column) (vertical
 *   stripes); a candidate sets the window to x_best + 2 eps sigma_c,
 *   projected to the ball and box, i.e. to x0 +- eps.
 * L2: start from tiles of the pseudo-Gaussian pattern eta(s0),
 *   s0 = H/5, with a sign per (sample, channel), rescaled to norm eps; a
 *   candidate moves the mass of a second window W2 into the first W1:
 *   new = eta(s) sigma + d[W1]/||d[W1]||_c, rescaled per channel to
 *   sqrt(max(eps^2 - ||d||^2, 0)/C + ||d[W1 u W2]||^2), d[W2] = 0,
 *   d[W1] = new, and x = clip(x0 + eps d/||d||).
 * Defaults: 5000 queries, p_init 0.8, 1 restart, schedule rescaled (the
 * class default; AutoAttack sets it off). Choices: s is capped at min(H, W)
 * (later official versions); for images smaller than the official code
 * handles (H < 5, or tiles running off the image) the L2 tiling uses
 * s0 = max(H/5, 1) and only whole tiles; ||d[W1 u W2]|| is one norm per
 * sample over all channels as in the code (ATTACKS.md 8.5 writes it per
 * channel). Robust samples come back as x0; a sample counts as fooled only
 * if the model misclassifies its final point.
 */

typedef struct square_state {
    void *block;             /* first (dd__atk_state_free): every buffer below, one dd__alloc_views block */
    float *x0, *xb, *xn;     /* (B, d): compacted clean, best, candidates */
    float *margin, *lossmin; /* (B) */
    int32_t *idx, *act, *y;  /* (B) */
    float *eta;              /* (H*W) pattern */
    double *tmp;             /* (H*W) eta_rect scratch */
    float *sgn;              /* (B*C) signs */
} square_state;

static dd_status square_create(dd_attack *a) {
    square_state *s = dd__calloc(1, sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "Square: out of memory");
    a->state = s;
    size_t B = (size_t)a->max_batch, img = B * a->d * sizeof(float);
    dd__view v[] = {
        DD__VIEW(s->x0, img),
        DD__VIEW(s->xb, img),
        DD__VIEW(s->xn, img),
        DD__VIEW(s->margin, B * sizeof(float)),
        DD__VIEW(s->lossmin, B * sizeof(float)),
        DD__VIEW(s->idx, B * sizeof(int32_t)),
        DD__VIEW(s->act, B * sizeof(int32_t)),
        DD__VIEW(s->y, B * sizeof(int32_t)),
        DD__VIEW(s->eta, (size_t)a->H * a->W * sizeof(float)),
        DD__VIEW(s->tmp, (size_t)a->H * a->W * sizeof(double)),
        DD__VIEW(s->sgn, B * (size_t)a->C * sizeof(float)),
    };
    s->block = dd__alloc_views(v, DD__NVIEWS(v));
    if (!s->block) {
        dd__atk_state_free(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "Square: out of memory for %zu samples", B);
    }
    return DD_OK;
}

static float rand_sign(dd_attack *a) { return dd__rng_uniform(&a->rng) < 0.5 ? -1.0f : 1.0f; }
/* floor(U * (hi - lo)) + lo: the official random_int (hi never drawn). */
static int rand_int(dd_attack *a, int hi) { return (int)(dd__rng_uniform(&a->rng) * (double)hi); }

/* Writes the official eta_rectangles(rows, cols) pattern, normalised to
 * unit norm and multiplied by `sign`, into p (row stride ld); t: scratch
 * of rows*cols doubles. */
static void eta_rect(float *p, int ld, int rows, int cols, float sign, double *t) {
    if (rows <= 0 || cols <= 0) return;
    for (int r = 0; r < rows * cols; r++) t[r] = 0.0;
    int xc = rows / 2 + 1, yc = cols / 2 + 1, c0 = xc - 1, c1 = yc - 1;
    int top = xc > yc ? xc : yc;
    for (int k = 0; k < top; k++) {
        int r0 = c0 > 0 ? c0 : 0, r1 = c0 + 2 * k + 1 < rows ? c0 + 2 * k + 1 : rows;
        int q0 = c1 > 0 ? c1 : 0, q1 = c1 + 2 * k + 1 < cols ? c1 + 2 * k + 1 : cols;
        for (int r = r0; r < r1; r++)
            for (int q = q0; q < q1; q++) t[r * cols + q] += 1.0 / ((double)(k + 1) * (k + 1));
        c0--;
        c1--;
    }
    double nrm = 0.0;
    for (int r = 0; r < rows * cols; r++) nrm += t[r] * t[r];
    nrm = sqrt(nrm);
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < cols; q++) p[r * ld + q] = (float)(sign * t[r * cols + q] / nrm);
}

/* The official eta(s): upper half +rect, lower half -rect, unit norm,
 * transposed with probability 1/2 (one draw). p: (s, s). */
static void eta_pattern(dd_attack *a, float *p, int s, double *t) {
    eta_rect(p, s, s / 2, s, 1.0f, t);
    eta_rect(p + (size_t)(s / 2) * s, s, s - s / 2, s, -1.0f, t);
    double nrm = 0.0;
    for (int r = 0; r < s * s; r++) nrm += (double)p[r] * p[r];
    nrm = sqrt(nrm);
    for (int r = 0; r < s * s; r++) p[r] = (float)(p[r] / nrm);
    if (dd__rng_uniform(&a->rng) > 0.5)
        for (int r = 0; r < s; r++)
            for (int q = r + 1; q < s; q++) {
                float tv = p[r * s + q];
                p[r * s + q] = p[q * s + r];
                p[q * s + r] = tv;
            }
}

/* Margin (= loss) of the m rows of logits against labels y[map[j]]. */
static void margins(const dd_attack *a, const float *z, int m, const int32_t *y, const int32_t *map,
                    float *out) {
    for (int j = 0; j < m; j++) out[j] = (float)dd__margin(z + (size_t)j * a->K, a->K, y[map ? map[j] : j]);
}

/* One attack_single_run on the m compacted samples s->x0 / s->y; x_best
 * in s->xb. */
static dd_status square_single(dd_attack *a, square_state *s, int m) {
    const size_t d = a->d, hw = (size_t)a->H * a->W;
    const int C = a->C, H = a->H, W = a->W, l2 = a->norm == DD_NORM_L2;
    const float eps = a->o.eps, lo = a->o.box_lo, hi = a->o.box_hi;

    /* Initialisation. */
    if (!l2) {
        for (int j = 0; j < m; j++)
            for (int c = 0; c < C; c++)
                for (int q = 0; q < W; q++) {
                    float sg = rand_sign(a);
                    for (int r = 0; r < H; r++) {
                        size_t o = (size_t)j * d + (size_t)c * hw + (size_t)r * W + q;
                        s->xb[o] = dd__clampf(s->x0[o] + eps * sg, lo, hi);
                    }
                }
    } else {
        float *delta = s->xn;
        memset(delta, 0, (size_t)m * d * sizeof(float));
        int s0 = H / 5 > 0 ? H / 5 : 1, sp = (H - 5 * s0) / 2 > 0 ? (H - 5 * s0) / 2 : 0;
        for (int vh = sp; vh + s0 <= H; vh += s0)
            for (int vw = sp; vw + s0 <= W; vw += s0) {
                eta_pattern(a, s->eta, s0, s->tmp);
                for (size_t k = 0; k < (size_t)m * C; k++) s->sgn[k] = rand_sign(a);
                for (int j = 0; j < m; j++)
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < s0; r++)
                            for (int q = 0; q < s0; q++)
                                delta[(size_t)j * d + (size_t)c * hw + (size_t)(vh + r) * W + vw + q] +=
                                    s->eta[r * s0 + q] * s->sgn[(size_t)j * C + c];
            }
        for (int j = 0; j < m; j++) {
            const float *dj = delta + (size_t)j * d;
            double nrm = 0.0;
            for (size_t k = 0; k < d; k++) nrm += (double)dj[k] * dj[k];
            double f = (double)eps / (sqrt(nrm) + 1e-12);
            for (size_t k = 0; k < d; k++) {
                float v = (float)(s->x0[j * d + k] + f * dj[k]);
                s->xb[j * d + k] = dd__clampf(v, lo, hi);
            }
        }
    }
    DD_FORWARD(dd__atk_forward(a, s->xb, m, a->logits));
    margins(a, a->logits, m, s->y, NULL, s->margin);
    memcpy(s->lossmin, s->margin, (size_t)m * sizeof(float));

    for (int it = 0; it < a->o.queries; it++) {
        int na = 0;
        for (int j = 0; j < m; j++)
            if (s->margin[j] > 0.0f) s->act[na++] = j;
        if (na == 0) break;
        double p = dd__square_p(it, a->o.queries, a->o.p_init, a->o.rescale_schedule);
        int sd = dd__square_side(p, H, W, l2);
        int vh = rand_int(a, H - sd), vw = rand_int(a, W - sd);
        if (!l2) {
            for (int c = 0; c < C; c++) s->sgn[c] = rand_sign(a);
            for (int q = 0; q < na; q++) {
                int j = s->act[q];
                float *xn = s->xn + (size_t)q * d;
                const float *xb = s->xb + (size_t)j * d, *x0 = s->x0 + (size_t)j * d;
                memcpy(xn, xb, d * sizeof(float));
                for (int c = 0; c < C; c++)
                    for (int r = vh; r < vh + sd; r++)
                        for (int k = vw; k < vw + sd; k++) {
                            size_t o = (size_t)c * hw + (size_t)r * W + k;
                            float v = dd__clampf(xb[o] + 2.0f * eps * s->sgn[c], x0[o] - eps, x0[o] + eps);
                            xn[o] = dd__clampf(v, lo, hi);
                        }
            }
        } else {
            int vh2 = rand_int(a, H - sd), vw2 = rand_int(a, W - sd);
            eta_pattern(a, s->eta, sd, s->tmp);
            for (size_t k = 0; k < (size_t)na * C; k++) s->sgn[k] = rand_sign(a);
#pragma omp parallel for num_threads(a->nt) schedule(static)
            for (int q = 0; q < na; q++) {
                int j = s->act[q];
                float *dl = s->xn + (size_t)q * d;
                const float *xb = s->xb + (size_t)j * d, *x0 = s->x0 + (size_t)j * d;
                double nimg = 0.0, nwin = 0.0;
                for (size_t k = 0; k < d; k++) {
                    dl[k] = xb[k] - x0[k];
                    nimg += (double)dl[k] * dl[k];
                }
                for (int c = 0; c < C; c++)
                    for (int r = 0; r < H; r++)
                        for (int k = 0; k < W; k++) {
                            int in1 = r >= vh && r < vh + sd && k >= vw && k < vw + sd;
                            int in2 = r >= vh2 && r < vh2 + sd && k >= vw2 && k < vw2 + sd;
                            double v = dl[(size_t)c * hw + (size_t)r * W + k];
                            if (in1 || in2) nwin += v * v;
                        }
                nwin = sqrt(nwin);
                double budget = fmax((double)eps * eps - nimg, 0.0) / C + nwin * nwin;
                for (int c = 0; c < C; c++) {
                    float *dc = dl + (size_t)c * hw;
                    double n1 = 0.0;
                    for (int r = 0; r < sd; r++)
                        for (int k = 0; k < sd; k++) {
                            double v = dc[(size_t)(vh + r) * W + vw + k];
                            n1 += v * v;
                        }
                    n1 = sqrt(n1);
                    /* new = eta sigma + d[W1]/||d[W1]||, in place (element-wise). */
                    double nn = 0.0;
                    for (int r = 0; r < sd; r++)
                        for (int k = 0; k < sd; k++) {
                            float *e = &dc[(size_t)(vh + r) * W + vw + k];
                            double v = s->eta[r * sd + k] * s->sgn[(size_t)q * C + c] + *e / (1e-12 + n1);
                            *e = (float)v;
                            nn += v * v;
                        }
                    double f = sqrt(budget) / (1e-12 + sqrt(nn));
                    for (int r = 0; r < sd; r++)
                        for (int k = 0; k < sd; k++) dc[(size_t)(vh + r) * W + vw + k] *= (float)f;
                    /* d[W2] = 0 where W1 (written last in the reference) does not cover it. */
                    for (int r = vh2; r < vh2 + sd; r++)
                        for (int k = vw2; k < vw2 + sd; k++)
                            if (!(r >= vh && r < vh + sd && k >= vw && k < vw + sd))
                                dc[(size_t)r * W + k] = 0.0f;
                }
                double nd = 0.0;
                for (size_t k = 0; k < d; k++) nd += (double)dl[k] * dl[k];
                double f = (double)eps / (sqrt(nd) + 1e-12);
                for (size_t k = 0; k < d; k++) {
                    float v = (float)(x0[k] + f * dl[k]);
                    dl[k] = dd__clampf(v, lo, hi);
                }
            }
        }
        DD_FORWARD(dd__atk_forward(a, s->xn, na, a->logits));
        for (int q = 0; q < na; q++) {
            int j = s->act[q];
            float mg = (float)dd__margin(a->logits + (size_t)q * a->K, a->K, s->y[j]);
            int improved = mg < s->lossmin[j];
            if (improved) s->lossmin[j] = mg;
            if (improved || mg <= 0.0f) {
                s->margin[j] = mg;
                memcpy(s->xb + (size_t)j * d, s->xn + (size_t)q * d, d * sizeof(float));
            }
        }
    }
    return DD_OK;
}

static dd_status square_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    square_state *s = a->state;
    const size_t d = a->d;
    memcpy(out, x, (size_t)n * d * sizeof(float));
    int32_t *robust = a->pred;
    for (int i = 0; i < n; i++) robust[i] = a->clean_pred[i] == y[i];
    for (int r = 0; r < a->o.restarts; r++) {
        int m = 0;
        for (int i = 0; i < n; i++)
            if (robust[i]) s->idx[m++] = i;
        if (m == 0) break;
        dd__atk_gather(s->x0, x, s->idx, m, d);
        for (int j = 0; j < m; j++) s->y[j] = y[s->idx[j]];
        DD_FORWARD(square_single(a, s, m));
        DD_FORWARD(dd__atk_forward(a, s->xb, m, a->logits));
        for (int j = 0; j < m; j++) {
            if (dd__argmax(a->logits + (size_t)j * a->K, a->K) == s->y[j]) continue;
            robust[s->idx[j]] = 0;
            memcpy(out + (size_t)s->idx[j] * d, s->xb + (size_t)j * d, d * sizeof(float));
        }
    }
    return DD_OK;
}

const dd__attack_ops dd__square_ops = {square_create, dd__atk_state_free, square_run};
