/* lib/attacks/fab.c -- targeted FAB (Croce & Hein 2020), Linf and L2, as in
 * the official AutoAttack fab_pt.py / fab_base.py.
 *
 * For each target class t = 2nd .. (num_targets+1)-th largest clean logit
 * and each restart, on the clean-correct samples not yet fooled:
 *   x1 = x0 (restart 0) or x0 + min(best, eps)/2 * t/||t|| (later restarts;
 *   best is 1e10 in a fresh run, so the radius is eps/2), clipped.
 *   Per iteration: f = z_t - z_y and g = grad f at x1 (one forward, one
 *   input-gradient pass); the linearised boundary {u : g.u = g.x1 - f};
 *   d1, d2 = the minimal-norm steps from x1 and from x0 onto that
 *   hyperplane inside the box; alpha = min(a1/(a1+a2), alpha_max) with
 *   a = max(||d||, 1e-8); x1 = clip((x1 + eta d1)(1-alpha) + (x0 + eta d2)
 *   alpha); if the argmax at x1 is not y (second forward): keep x1 when it
 *   is the closest so far and step back x1 = x0 + beta (x1 - x0).
 *   A sample counts as fooled only if its closest point is misclassified
 *   and within eps (fab_base.py perturb); otherwise it stays x0.
 */
#include "attack_internal.h"

/* The projections solve min ||d||_p s.t. g.(x+d) = b, x+d in the box
 * exactly: d(lambda) = clip(-lambda sign(g)) (Linf) or clip(-lambda g) (L2)
 * is monotone in lambda, found by bisection in double; if the box keeps
 * the hyperplane out of reach, d is the box corner closest to it, as the
 * official projection_linf / projection_l2 return (they sort breakpoints
 * instead; same answer).
 * Defaults (AutoAttack's FAB-T): 100 iterations, 1 restart, 9 targets,
 * alpha_max 0.1, eta 1.05, beta 0.9; eps 8/255 (Linf), 0.5 (L2). On a
 * 2-class affine model the closest point is 1.05 rho* after one iteration
 * and 1.005213 rho* from the second on (oracle O9).
 */

typedef struct fab_state {
    void *block; /* first (dd__atk_state_free): every buffer below, one dd__alloc_views block */
    float *x0, *x1, *adv, *d1, *d2; /* (B, d) */
    double *res, *bh;               /* (B) */
    int32_t *idx, *y, *t;           /* (B) */
} fab_state;

static dd_status fab_create(dd_attack *a) {
    fab_state *s = dd__calloc(1, sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "FAB: out of memory");
    a->state = s;
    size_t B = (size_t)a->max_batch, img = B * a->d * sizeof(float);
    dd__view v[] = {
        DD__VIEW(s->x0, img),
        DD__VIEW(s->x1, img),
        DD__VIEW(s->adv, img),
        DD__VIEW(s->d1, img),
        DD__VIEW(s->d2, img),
        DD__VIEW(s->res, B * sizeof(double)),
        DD__VIEW(s->bh, B * sizeof(double)),
        DD__VIEW(s->idx, B * sizeof(int32_t)),
        DD__VIEW(s->y, B * sizeof(int32_t)),
        DD__VIEW(s->t, B * sizeof(int32_t)),
    };
    s->block = dd__alloc_views(v, DD__NVIEWS(v));
    if (!s->block) {
        dd__atk_state_free(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "FAB: out of memory for %zu samples", B);
    }
    return DD_OK;
}

/* Minimal ||d||_p (p = inf or 2) with w.(x + d) = b and x + d in [lo, hi],
 * for one sample of d floats; see the file comment. Coordinates with
 * w = 0 (L2: |w| <= 1e-8, the official cut-off) do not move. */
static void fab_project(const float *x, const float *w, double b, size_t d, int l2, float lo, float hi,
                        float *out) {
    double c = -b;
    for (size_t j = 0; j < d; j++) c += (double)w[j] * x[j];
    const double sg = c < 0.0 ? -1.0 : 1.0; /* work with w' = sg w so that c' = |c| must be removed */
    c = fabs(c);
    double hmax = 0.0, lmax = 0.0;
    for (size_t j = 0; j < d; j++) {
        double wj = sg * w[j], aw = fabs(wj);
        if (l2 ? aw <= 1e-8 : aw == 0.0) continue;
        double p = wj > 0.0 ? (double)x[j] - lo : (double)hi - x[j]; /* room towards the hyperplane */
        hmax += aw * p;
        double sat = l2 ? p / aw : p;
        if (sat > lmax) lmax = sat;
    }
    double lam;
    if (c == 0.0) {
        lam = 0.0;
    } else if (hmax <= c) {
        lam = INFINITY; /* unreachable inside the box: the closest corner */
    } else {
        double llo = 0.0, lhi = lmax;
        /* 200 halvings reach the double resolution of any lambda. */
        for (int it = 0; it < 200 && llo < lhi; it++) {
            double mid = 0.5 * (llo + lhi);
            if (mid <= llo || mid >= lhi) break;
            double h = 0.0;
            for (size_t j = 0; j < d; j++) {
                double wj = sg * w[j], aw = fabs(wj);
                if (l2 ? aw <= 1e-8 : aw == 0.0) continue;
                double p = wj > 0.0 ? (double)x[j] - lo : (double)hi - x[j];
                double step = l2 ? mid * aw : mid;
                h += aw * (step < p ? step : p);
            }
            if (h < c)
                llo = mid;
            else
                lhi = mid;
        }
        lam = lhi;
    }
    for (size_t j = 0; j < d; j++) {
        double wj = sg * w[j], aw = fabs(wj);
        if (l2 ? aw <= 1e-8 : aw == 0.0) {
            out[j] = 0.0f;
            continue;
        }
        double p = wj > 0.0 ? (double)x[j] - lo : (double)hi - x[j];
        double step = l2 ? lam * aw : lam;
        double m = step < p ? step : p;
        out[j] = (float)(wj > 0.0 ? -m : m);
    }
}

static double pnorm(const float *v, size_t d, int l2) {
    double r = 0.0;
    for (size_t j = 0; j < d; j++) {
        double a = fabs((double)v[j]);
        if (l2)
            r += a * a;
        else if (a > r)
            r = a;
    }
    return l2 ? sqrt(r) : r;
}

/* One targeted attack_single_run on the m compacted samples; on return
 * s->res[j] < 1e10 marks a success whose closest point is s->adv row j. */
static dd_status fab_single(dd_attack *a, fab_state *s, int m, int rand_start) {
    const size_t d = a->d, count = (size_t)m * d;
    const int K = a->K, l2 = a->norm == DD_NORM_L2;
    const float lo = a->o.box_lo, hi = a->o.box_hi, eps = a->o.eps;
    const double eta = a->o.eta, beta = a->o.fab_beta, amax = a->o.alpha_max;

    memcpy(s->x1, s->x0, count * sizeof(float));
    memcpy(s->adv, s->x0, count * sizeof(float));
    for (int j = 0; j < m; j++) s->res[j] = 1e10; /* the official "not found" value */
    if (rand_start) {
        float *t = s->d1;
        if (l2)
            dd__atk_normal(a, t, count);
        else
            dd__atk_uniform(a, t, count, -1.0f, 1.0f);
        for (int j = 0; j < m; j++) {
            double tn = pnorm(t + (size_t)j * d, d, l2);
            double r = tn > 0.0 ? fmin(s->res[j], (double)eps) * 0.5 / tn : 0.0;
            for (size_t q = 0; q < d; q++) {
                float v = (float)(s->x0[j * d + q] + r * t[j * d + q]);
                s->x1[j * d + q] = dd__clampf(v, lo, hi);
            }
        }
    }
    for (int it = 0; it < a->o.steps; it++) {
        DD_FORWARD(dd__atk_forward(a, s->x1, m, a->logits));
        memset(a->dlogits, 0, (size_t)m * K * sizeof(float));
        for (int j = 0; j < m; j++) {
            const float *z = a->logits + (size_t)j * K;
            a->dlogits[(size_t)j * K + s->t[j]] += 1.0f;
            a->dlogits[(size_t)j * K + s->y[j]] -= 1.0f;
            s->bh[j] = -((double)z[s->t[j]] - (double)z[s->y[j]]);
        }
        DD_FORWARD(dd__atk_vjp(a, a->dlogits, a->grad));
#pragma omp parallel for num_threads(a->nt) schedule(dynamic, 1)
        for (int j = 0; j < m; j++) {
            const float *g = a->grad + (size_t)j * d, *x1 = s->x1 + (size_t)j * d,
                        *x0 = s->x0 + (size_t)j * d;
            double b = s->bh[j];
            for (size_t q = 0; q < d; q++) b += (double)g[q] * x1[q];
            float *d1 = s->d1 + (size_t)j * d, *d2 = s->d2 + (size_t)j * d;
            fab_project(x1, g, b, d, l2, lo, hi, d1);
            fab_project(x0, g, b, d, l2, lo, hi, d2);
            double a1 = fmax(pnorm(d1, d, l2), 1e-8), a2 = fmax(pnorm(d2, d, l2), 1e-8);
            double al = fmin(fmax(a1 / (a1 + a2), 0.0), amax);
            float *xw = s->x1 + (size_t)j * d;
            for (size_t q = 0; q < d; q++) {
                double v = ((double)x1[q] + eta * d1[q]) * (1.0 - al) + ((double)x0[q] + eta * d2[q]) * al;
                xw[q] = dd__clampf((float)v, lo, hi);
            }
        }
        DD_FORWARD(dd__atk_forward(a, s->x1, m, a->logits));
        for (int j = 0; j < m; j++) {
            if (dd__argmax(a->logits + (size_t)j * K, K) == s->y[j]) continue;
            float *x1 = s->x1 + (size_t)j * d;
            const float *x0 = s->x0 + (size_t)j * d;
            double t = dd__atk_norm(x1, x0, d, a->norm);
            if (t < s->res[j]) {
                s->res[j] = t;
                memcpy(s->adv + (size_t)j * d, x1, d * sizeof(float));
            }
            for (size_t q = 0; q < d; q++) x1[q] = (float)(x0[q] + ((double)x1[q] - x0[q]) * beta);
        }
    }
    return DD_OK;
}

static dd_status fab_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    fab_state *s = a->state;
    const size_t d = a->d;
    memcpy(out, x, (size_t)n * d * sizeof(float));
    int32_t *robust = a->pred;
    for (int i = 0; i < n; i++) robust[i] = a->clean_pred[i] == y[i];
    for (int tc = 2; tc < 2 + a->o.num_targets; tc++) {
        for (int r = 0; r < a->o.restarts; r++) {
            int m = 0;
            for (int i = 0; i < n; i++)
                if (robust[i]) s->idx[m++] = i;
            if (m == 0) return DD_OK;
            dd__atk_gather(s->x0, x, s->idx, m, d);
            for (int j = 0; j < m; j++) {
                s->y[j] = y[s->idx[j]];
                s->t[j] = dd__rank_index(a->clean_logits + (size_t)s->idx[j] * a->K, a->K, tc);
            }
            DD_FORWARD(fab_single(a, s, m, r > 0));
            /* adv_curr: the closest point where found, else x0; fooled if
             * misclassified there and within eps. */
            for (int j = 0; j < m; j++)
                if (s->res[j] >= 1e10)
                    memcpy(s->adv + (size_t)j * d, s->x0 + (size_t)j * d, d * sizeof(float));
            DD_FORWARD(dd__atk_forward(a, s->adv, m, a->logits));
            for (int j = 0; j < m; j++) {
                const float *aj = s->adv + (size_t)j * d;
                if (dd__argmax(a->logits + (size_t)j * a->K, a->K) == s->y[j]) continue;
                if (dd__atk_norm(aj, s->x0 + (size_t)j * d, d, a->norm) > (double)a->o.eps) continue;
                robust[s->idx[j]] = 0;
                memcpy(out + (size_t)s->idx[j] * d, aj, d * sizeof(float));
            }
        }
    }
    return DD_OK;
}

const dd__attack_ops dd__fab_ops = {fab_create, dd__atk_state_free, fab_run};
