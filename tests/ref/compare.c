/* tests/ref/compare.c -- one library-vs-reference comparison (see ref.h).
 *
 * ref_compare drives a built dd_model through the public API exactly as a
 * host would (forward, input_grad, zero_grad, backward, grad_read,
 * param_read) and evaluates the same steps in the double reference, built
 * afresh from the model's parameters just before the forward pass so that
 * running statistics start equal. It only measures; the Check suites decide
 * what error is acceptable.
 */
#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t max_param_count(const ref_model *r) {
    size_t mx = 1;
    for (int p = 0; p < ref_num_params(r); p++)
        if (ref_param_count(r, p) > mx) mx = ref_param_count(r, p);
    return mx;
}

int ref_compare(dd_model *m, const float *x, int n, dd_mode mode, const int32_t *labels, const float *dlogits,
                ref_cmp *out) {
    memset(out, 0, sizeof *out);
    out->grad_worst = -1;
    ref_model *r = NULL;
    if (ref_model_create(&r, m)) {
        snprintf(out->what, sizeof out->what, "reference: %s", ref_error());
        return -1;
    }
    int k = ref_num_classes(r), np = ref_num_params(r), rc = -1;
    size_t insz = ref_node_size(r, DD_INPUT);
    float *lz = calloc((size_t)n * k, sizeof(float));
    float *ldx = calloc((size_t)n * insz, sizeof(float));
    float *buf = calloc(max_param_count(r), sizeof(float));
    double *dz = calloc((size_t)n * k, sizeof(double));
    if (!lz || !ldx || !buf || !dz) {
        snprintf(out->what, sizeof out->what, "out of memory");
        goto done;
    }
    dd_status st = dd_model_forward(m, x, n, mode, lz);
    if (st != DD_OK) {
        snprintf(out->what, sizeof out->what, "dd_model_forward: %s: %s", dd_status_string(st),
                 dd_last_error());
        goto done;
    }
    if (ref_forward_f(r, x, n, mode == DD_TRAIN, mode == DD_TRAIN)) {
        snprintf(out->what, sizeof out->what, "ref_forward: %s", ref_error());
        goto done;
    }
    out->logits = ref_rel_err_f(lz, ref_logits(r), (size_t)n * k, 1e-30);
    /* Running statistics (the reference updated its copy). */
    for (int p = 0; p < np; p++) {
        if (ref_param_trainable(r, p)) continue;
        size_t cnt = ref_param_count(r, p);
        if (dd_model_param_read(m, p, buf, cnt) != DD_OK) {
            snprintf(out->what, sizeof out->what, "dd_model_param_read %d: %s", p, dd_last_error());
            goto done;
        }
        double e = ref_rel_err_f(buf, ref_param(r, p), cnt, 1e-30);
        if (isnan(e) || e > out->running) out->running = e;
    }
    /* Vector-Jacobian product for attacks, with the parameter gradients
     * zeroed first so that any change to them is seen. */
    st = dd_model_zero_grad(m);
    if (st != DD_OK) {
        snprintf(out->what, sizeof out->what, "dd_model_zero_grad: %s", dd_last_error());
        goto done;
    }
    st = dd_model_input_grad(m, dlogits, ldx);
    if (st != DD_OK) {
        snprintf(out->what, sizeof out->what, "dd_model_input_grad: %s: %s", dd_status_string(st),
                 dd_last_error());
        goto done;
    }
    for (size_t i = 0; i < (size_t)n * k; i++) dz[i] = dlogits[i];
    ref_backward(r, dz);
    out->dx = ref_rel_err_f(ldx, ref_node_grad(r, DD_INPUT), (size_t)n * insz, 1e-30);
    for (int p = 0; p < np; p++) {
        if (!ref_param_trainable(r, p)) continue;
        size_t cnt = ref_param_count(r, p);
        if (dd_model_grad_read(m, p, buf, cnt) != DD_OK) {
            snprintf(out->what, sizeof out->what, "dd_model_grad_read %d: %s", p, dd_last_error());
            goto done;
        }
        for (size_t i = 0; i < cnt; i++)
            if (buf[i] != 0.0f) out->input_grad_touched = 1;
    }
    /* Loss and parameter gradients. */
    dd_step_stats stats;
    dd_step_stats_init(&stats);
    st = dd_model_backward(m, labels, &stats);
    if (st != DD_OK) {
        snprintf(out->what, sizeof out->what, "dd_model_backward: %s: %s", dd_status_string(st),
                 dd_last_error());
        goto done;
    }
    double L = ref_loss(r, labels, dz, &out->correct_ref);
    out->correct_lib = stats.correct;
    out->loss = fabs(stats.loss - L) / (fabs(L) > 1e-3 ? fabs(L) : 1e-3);
    ref_backward(r, dz);
    /* A tensor whose exact gradient is (nearly) zero, such as the bias of a
     * convolution followed by training-mode batch norm, is measured against
     * 1e-2 of the largest gradient of the model instead of its own size. */
    double gmax = 0.0;
    for (int p = 0; p < np; p++)
        if (ref_param_trainable(r, p)) {
            double a = ref_max_abs(ref_param_grad(r, p), ref_param_count(r, p));
            if (a > gmax) gmax = a;
        }
    for (int p = 0; p < np; p++) {
        if (!ref_param_trainable(r, p)) continue;
        size_t cnt = ref_param_count(r, p);
        if (dd_model_grad_read(m, p, buf, cnt) != DD_OK) {
            snprintf(out->what, sizeof out->what, "dd_model_grad_read %d: %s", p, dd_last_error());
            goto done;
        }
        double e = ref_rel_err_f(buf, ref_param_grad(r, p), cnt, 1e-2 * gmax + 1e-30);
        if (isnan(out->grad)) continue;
        if (out->grad_worst < 0 || isnan(e) || e > out->grad) {
            out->grad = e;
            out->grad_worst = p;
        }
    }
    rc = 0;
done:
    free(lz);
    free(ldx);
    free(buf);
    free(dz);
    ref_model_destroy(r);
    return rc;
}

int ref_randomize_params(dd_model *m, ref_rng *g) {
    int np = 0;
    if (dd_model_num_params(m, &np) != DD_OK) return -1;
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        if (dd_model_param_info(m, p, &pi) != DD_OK) return -1;
        dd_node_info ni;
        memset(&ni, 0, sizeof ni);
        if (dd_model_node_info(m, pi.node, &ni) != DD_OK) return -1;
        const char *role = strrchr(pi.name, '.');
        role = role ? role + 1 : pi.name;
        float *v = calloc(pi.count, sizeof(float));
        if (!v) return -1;
        int bn = ni.type == DD_NODE_BATCHNORM;
        if (!strcmp(role, "weight") && !bn) {
            if (dd_model_param_read(m, p, v, pi.count) != DD_OK) {
                free(v);
                return -1;
            }
        } else if (!strcmp(role, "weight")) {
            ref_fill_uniform_f(g, v, pi.count, 0.5, 1.5);
        } else if (!strcmp(role, "bias")) {
            ref_fill_normal_f(g, v, pi.count, 0.1);
        } else if (!strcmp(role, "running_mean")) {
            ref_fill_normal_f(g, v, pi.count, 0.2);
        } else if (!strcmp(role, "running_var")) {
            ref_fill_uniform_f(g, v, pi.count, 0.5, 2.0);
        }
        dd_status st = dd_model_param_write(m, p, v, pi.count);
        free(v);
        if (st != DD_OK) return -1;
    }
    return 0;
}

int ref_lib_grads(const dd_model *m, double *out) {
    int np = 0;
    size_t k = 0;
    if (dd_model_num_params(m, &np) != DD_OK) return -1;
    for (int p = 0; p < np; p++) {
        dd_param_info pi;
        memset(&pi, 0, sizeof pi);
        if (dd_model_param_info(m, p, &pi) != DD_OK) return -1;
        if (!pi.trainable) continue;
        float *v = calloc(pi.count, sizeof(float));
        if (!v) return -1;
        if (dd_model_grad_read(m, p, v, pi.count) != DD_OK) {
            free(v);
            return -1;
        }
        for (size_t i = 0; i < pi.count; i++) out[k++] = v[i];
        free(v);
    }
    return 0;
}
