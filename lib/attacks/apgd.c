/* lib/attacks/apgd.c -- Auto-PGD (Croce & Hein 2020): APGD-CE, APGD-DLR and
 * the targeted APGD-T, in Linf and L2, as the official AutoAttack code
 * (autopgd_base.py) does it.
 *
 * Defaults: 100 iterations, 1 restart, rho 0.75, initial step 2*eps,
 * momentum 0.75 (none on iteration 0), checkpoints from floor(0.22 N),
 * decrement floor(0.03 N), minimum floor(0.06 N), each at least 1 (so 100
 * iterations check at 21, 40, 56, 69, 79, 86, 92, 98); APGD-T: 9 targets,
 * the 2nd..10th largest clean logits, targeted DLR. eps 8/255 (Linf) and
 * 0.5 (L2): the official class requires eps, torchattacks uses 8/255.
 */
#include "attack_internal.h"

/* One run (attack_single_run): random start on the eps sphere (Linf:
 * t/max|t|; L2: Gaussian t/||t||), clipped; per iteration the momentum step
 *     z = P(x + eta*sign(g))          (L2: P(x + eta*g/||g||))
 *     x = P(x + a(z - x) + (1-a)(x - x_prev)),   P = ball then box
 * then the per-sample bookkeeping: the last misclassified iterate is kept
 * as the adversarial example, x_best/grad_best follow strict loss
 * increases, and at each checkpoint a sample halves its step and restarts
 * from x_best if condition 1 (at most rho*k increases in the last k steps,
 * `<=` as the code, not the paper's `<`) or condition 2 (not reduced last
 * time and no best-loss progress) holds. The official code compares the
 * first window against loss_steps[-1], a zero row of the history; the ring
 * buffer below reproduces that by starting at zero with k0+1 slots.
 * perturb: only clean-correct samples are attacked, restarts and targets
 * run on the still-robust ones, and samples never fooled come back as x
 * itself (not the highest-loss point). The schedule is shared by the
 * batch, everything else is per sample. EOT (eot_iter) is not offered.
 * Choices where torchattacks differs (10 iterations, its APGDT L2 bug of
 * using the first sample's step size): we follow the official code.
 */

typedef struct apgd_state {
    void *block; /* first (dd__atk_state_free): every buffer below, one dd__alloc_views block */
    float *x0, *x, *xbest, *xadv, *xold, *gbest, *zc; /* (B, d) each */
    float *loss, *lbest, *lbest_last, *eta, *ring;    /* (B); ring (k0+1, B) */
    int32_t *idx, *y, *t, *acc, *reduced;             /* (B) */
    int ring_len;
} apgd_state;

static dd_status apgd_create(dd_attack *a) {
    apgd_state *s = dd__calloc(1, sizeof *s);
    DD_RETURN_IF(!s, DD_ERR_OUT_OF_MEMORY, "APGD: out of memory");
    a->state = s;
    size_t B = (size_t)a->max_batch, img = B * a->d * sizeof(float);
    int k0 = (int)floor(0.22 * a->o.steps);
    s->ring_len = (k0 < 1 ? 1 : k0) + 1;
    dd__view v[] = {
        DD__VIEW(s->x0, img),
        DD__VIEW(s->x, img),
        DD__VIEW(s->xbest, img),
        DD__VIEW(s->xadv, img),
        DD__VIEW(s->xold, img),
        DD__VIEW(s->gbest, img),
        DD__VIEW(s->zc, img),
        DD__VIEW(s->loss, B * sizeof(float)),
        DD__VIEW(s->lbest, B * sizeof(float)),
        DD__VIEW(s->lbest_last, B * sizeof(float)),
        DD__VIEW(s->eta, B * sizeof(float)),
        DD__VIEW(s->ring, (size_t)s->ring_len * B * sizeof(float)),
        DD__VIEW(s->idx, B * sizeof(int32_t)),
        DD__VIEW(s->y, B * sizeof(int32_t)),
        DD__VIEW(s->t, B * sizeof(int32_t)),
        DD__VIEW(s->acc, B * sizeof(int32_t)),
        DD__VIEW(s->reduced, B * sizeof(int32_t)),
    };
    s->block = dd__alloc_views(v, DD__NVIEWS(v));
    if (!s->block) {
        dd__atk_state_free(a);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "APGD: out of memory for %zu samples", B);
    }
    return DD_OK;
}

/* v = clip_box(x0 + (v - x0) / (r + 1e-12) * min(eps, r)), r = ||v - x0||_2:
 * the official L2 projection (1e-12 guard) for one sample. */
static void proj_l2_one(float *v, const float *x0, size_t d, float eps, float lo, float hi) {
    double r2 = 0.0;
    for (size_t j = 0; j < d; j++) {
        double dv = (double)v[j] - (double)x0[j];
        r2 += dv * dv;
    }
    double r = sqrt(r2), f = fmin((double)eps, r) / (r + 1e-12);
    for (size_t j = 0; j < d; j++) {
        float w = (float)((double)x0[j] + ((double)v[j] - (double)x0[j]) * f);
        v[j] = dd__clampf(w, lo, hi);
    }
}

/* One attack_single_run on the m compacted samples in s->x0 / s->y / s->t.
 * On return s->acc[j] == 0 marks samples fooled at some iterate, whose last
 * misclassified iterate is in s->xadv. */
static dd_status apgd_single(dd_attack *a, apgd_state *s, int m, dd__loss loss) {
    const size_t d = a->d, count = (size_t)m * d;
    const int K = a->K, N = a->o.steps, l2 = a->norm == DD_NORM_L2;
    const float eps = a->o.eps, lo = a->o.box_lo, hi = a->o.box_hi;
    const double rho = a->o.rho;

    /* Random start on the sphere of radius eps, then the box. */
    float *t = s->zc;
    if (l2)
        dd__atk_normal(a, t, count);
    else
        dd__atk_uniform(a, t, count, -1.0f, 1.0f);
    for (int i = 0; i < m; i++) {
        const float *ti = t + (size_t)i * d;
        double nrm = 0.0;
        for (size_t j = 0; j < d; j++) {
            if (l2)
                nrm += (double)ti[j] * ti[j];
            else if (fabs(ti[j]) > nrm)
                nrm = fabs(ti[j]);
        }
        if (l2) nrm = sqrt(nrm);
        double f = (double)eps / (nrm + 1e-12); /* 1e-12: the official normalize() guard */
        for (size_t j = 0; j < d; j++) {
            float v = (float)((double)s->x0[i * d + j] + f * ti[j]);
            s->x[i * d + j] = dd__clampf(v, lo, hi);
        }
    }
    memcpy(s->xbest, s->x, count * sizeof(float));
    memcpy(s->xadv, s->x, count * sizeof(float));
    memcpy(s->xold, s->x, count * sizeof(float));
    memset(s->ring, 0, (size_t)s->ring_len * a->max_batch * sizeof(float));

    DD_FORWARD(dd__atk_loss_grad(a, s->x, m, loss, s->y, s->t, NULL, s->loss, a->grad, a->logits));
    memcpy(s->gbest, a->grad, count * sizeof(float));
    for (int i = 0; i < m; i++) {
        s->acc[i] = dd__argmax(a->logits + (size_t)i * K, K) == s->y[i];
        s->lbest[i] = s->loss[i];
        s->lbest_last[i] = s->loss[i];
        s->reduced[i] = 1;
        s->eta[i] = 2.0f * eps;
    }
    int k0 = (int)floor(0.22 * N), dec = (int)floor(0.03 * N), kmin = (int)floor(0.06 * N);
    int k = k0 < 1 ? 1 : k0;
    if (dec < 1) dec = 1;
    if (kmin < 1) kmin = 1;
    int counter = 0;

    for (int it = 0; it < N; it++) {
        const float am = it > 0 ? 0.75f : 1.0f; /* momentum: none on iteration 0 */
        const float *g = a->grad;
#pragma omp parallel for num_threads(a->nt) schedule(static)
        for (int i = 0; i < m; i++) {
            float *xi = s->x + (size_t)i * d, *xo = s->xold + (size_t)i * d, *zi = s->zc + (size_t)i * d;
            const float *x0i = s->x0 + (size_t)i * d, *gi = g + (size_t)i * d;
            const float et = s->eta[i];
            if (!l2) {
#pragma omp simd
                for (size_t j = 0; j < d; j++) {
                    float g2 = xi[j] - xo[j];
                    xo[j] = xi[j];
                    float z = dd__clampf(xi[j] + et * dd__signf(gi[j]), x0i[j] - eps, x0i[j] + eps);
                    z = dd__clampf(z, lo, hi);
                    float v = xi[j] + (z - xi[j]) * am + g2 * (1.0f - am);
                    v = dd__clampf(v, x0i[j] - eps, x0i[j] + eps);
                    xi[j] = dd__clampf(v, lo, hi);
                }
            } else {
                double g2n = 0.0;
                for (size_t j = 0; j < d; j++) g2n += (double)gi[j] * gi[j];
                double f = (double)et / (sqrt(g2n) + 1e-12);
                for (size_t j = 0; j < d; j++) zi[j] = (float)((double)xi[j] + f * gi[j]);
                proj_l2_one(zi, x0i, d, eps, lo, hi);
                for (size_t j = 0; j < d; j++) {
                    float g2 = xi[j] - xo[j];
                    xo[j] = xi[j];
                    zi[j] = xi[j] + (zi[j] - xi[j]) * am + g2 * (1.0f - am);
                }
                proj_l2_one(zi, x0i, d, eps, lo, hi);
                memcpy(xi, zi, d * sizeof(float));
            }
        }
        DD_FORWARD(dd__atk_loss_grad(a, s->x, m, loss, s->y, s->t, NULL, s->loss, a->grad, a->logits));
        float *ring_row = s->ring + (size_t)(it % s->ring_len) * a->max_batch;
        for (int i = 0; i < m; i++) {
            if (dd__argmax(a->logits + (size_t)i * K, K) != s->y[i]) {
                s->acc[i] = 0;
                memcpy(s->xadv + (size_t)i * d, s->x + (size_t)i * d, d * sizeof(float));
            }
            ring_row[i] = s->loss[i];
            if (s->loss[i] > s->lbest[i]) { /* strict, as the official code */
                memcpy(s->xbest + (size_t)i * d, s->x + (size_t)i * d, d * sizeof(float));
                memcpy(s->gbest + (size_t)i * d, a->grad + (size_t)i * d, d * sizeof(float));
                s->lbest[i] = s->loss[i];
            }
        }
        if (++counter == k) {
            for (int i = 0; i < m; i++) {
                int red = dd__apgd_reduce(s->ring, s->ring_len, a->max_batch, i, it, k, rho, s->reduced[i],
                                          s->lbest_last[i], s->lbest[i]);
                s->reduced[i] = red;
                s->lbest_last[i] = s->lbest[i];
                if (red) {
                    s->eta[i] /= 2.0f;
                    memcpy(s->x + (size_t)i * d, s->xbest + (size_t)i * d, d * sizeof(float));
                    memcpy(a->grad + (size_t)i * d, s->gbest + (size_t)i * d, d * sizeof(float));
                }
            }
            counter = 0;
            k = k - dec > kmin ? k - dec : kmin;
        }
    }
    return DD_OK;
}

static dd_status apgd_run(dd_attack *a, const float *x, const int32_t *y, int n, float *out) {
    apgd_state *s = a->state;
    const dd_attack_kind kind = a->o.kind;
    const size_t d = a->d;
    const int targeted = kind == DD_ATTACK_APGD_T_LINF || kind == DD_ATTACK_APGD_T_L2;
    dd__loss loss = targeted
                        ? DD__LOSS_DLR_TARGET
                        : ((kind == DD_ATTACK_APGD_DLR_LINF || kind == DD_ATTACK_APGD_DLR_L2) ? DD__LOSS_DLR
                                                                                              : DD__LOSS_CE);
    memcpy(out, x, (size_t)n * d * sizeof(float));
    /* robust[i]: clean-correct and not fooled yet (a->pred is free here). */
    int32_t *robust = a->pred;
    for (int i = 0; i < n; i++) robust[i] = a->clean_pred[i] == y[i];
    const int ntargets = targeted ? a->o.num_targets : 1;
    for (int tc = 2; tc < 2 + ntargets; tc++) {
        for (int r = 0; r < a->o.restarts; r++) {
            int m = 0;
            for (int i = 0; i < n; i++)
                if (robust[i]) s->idx[m++] = i;
            if (m == 0) return DD_OK;
            dd__atk_gather(s->x0, x, s->idx, m, d);
            for (int j = 0; j < m; j++) {
                s->y[j] = y[s->idx[j]];
                s->t[j] =
                    targeted ? dd__rank_index(a->clean_logits + (size_t)s->idx[j] * a->K, a->K, tc) : s->y[j];
            }
            DD_FORWARD(apgd_single(a, s, m, loss));
            for (int j = 0; j < m; j++) {
                if (s->acc[j]) continue;
                robust[s->idx[j]] = 0;
                memcpy(out + (size_t)s->idx[j] * d, s->xadv + (size_t)j * d, d * sizeof(float));
            }
        }
    }
    return DD_OK;
}

const dd__attack_ops dd__apgd_ops = {apgd_create, dd__atk_state_free, apgd_run};
