/* lib/gfa/gfa.c -- GFA hooks and the exact gradient of J = L + sum lambda_t R_t.
 *
 * dd_model_backward() (objective.c) calls dd__gfa_backward() after the
 * forward pass and the cross-entropy seed. The four passes of GFA.md:
 *   2. ordinary backward (the planner's DD__PASS_GFA2: hooked tensors need
 *      gradients too): G_t for every tensor, dL/dtheta; at each hook the
 *      closed-form partials Gbar_t (the tangent's start) and Ybar_t (align.c);
 *   3. tangent pass in forward order, planned here (dd__tstep per node):
 *      T_y += JVP_n(T_x) through each node's ops->jvp; ops->second_order
 *      adds d/dtheta <T_x, backward_n(G_y)> into the parameter gradients
 *      and d/dx of it into the input's bar buffer (batch norm in training
 *      mode); at the logits Zbar = H T_z, the training loss's Hessian
 *      times the tangent (CE: (1/B) (p * T_z - p <p, T_z>); lib/loss);
 *   4. second backward (DD__PASS_GFA4) seeded with Zbar, its adjoints in the
 *      tangent slots (t->tan; G_t stays in t->grad), every bar and Ybar
 *      injected through the planner's inject callback, adding into the
 *      gradients. Weight layers skip their weight gradient in pass 2 and,
 *      in pass 4, compute it once from G_y + adjoint (backward-weights is
 *      linear in diff_dst): 2 forward-like, 2 backward-data and 2
 *      backward-weights convolutions per layer instead of 2/2/3.
 * Tangents are tracked as zero/non-zero per tensor so nodes upstream of
 * every hook cost nothing in passes 3 and 4. A node type without a jvp slot
 * on the tangent's path is refused with DD_ERR_UNSUPPORTED.
 * dd_model_schedule() prints all three plans.
 */
#include "gfa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../graph/graph_internal.h"
#include "../loss/loss.h"

/* ---- hooks --------------------------------------------------------------- */

/* Buffers follow the hook set: a built model's activations are freed now
 * and allocated in the new layout by the next forward pass. */
static dd_status hooks_changed(dd_model *m) {
    if (m->built) dd__model_release_activations(m);
    return DD_OK;
}

static dd_status add_hook(dd_model *m, dd_node node, float lambda) {
    DD_RETURN_IF(node < 0 || node >= m->nnodes || (m->built && node > m->logits), DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_hook: node %d does not exist (or is past the logits)", (int)node);
    DD_RETURN_IF(!isfinite(lambda) || lambda < 0, DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_hook: lambda = %g (need finite, >= 0)", (double)lambda);
    for (int h = 0; h < m->nhooks; h++)
        if (m->hooks[h].tensor == node) {
            m->hooks[h].lambda = lambda;
            return DD_OK;
        }
    DD_RETURN_IF(m->nhooks >= DD_MAX_HOOKS, DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook: more than %d hooks",
                 DD_MAX_HOOKS);
    m->hooks[m->nhooks].tensor = node;
    m->hooks[m->nhooks].lambda = lambda;
    m->nhooks++;
    return DD_OK;
}

dd_status dd_gfa_hook(dd_model *m, dd_node node, float lambda) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook: model is NULL");
    int before = m->nhooks;
    DD_FORWARD(add_hook(m, node, lambda));
    if (m->nhooks != before) {
        dd_status s = hooks_changed(m);
        if (s != DD_OK) {
            m->nhooks = before;
            return s;
        }
    }
    return DD_OK;
}

/* Last node a hook may sit on. */
static int last_node(const dd_model *m) { return m->built ? m->logits : m->nnodes - 1; }

/* Adds preset p's hooks with weight lambda to the current set. */
static dd_status add_preset(dd_model *m, int p, float lambda) {
    int last = last_node(m);
    if (p == DD_GFA_PRESET_ALL) {
        for (int i = 0; i < last; i++) DD_FORWARD(add_hook(m, i, lambda));
        return DD_OK;
    }
    int found = 0;
    for (int i = 1; i <= last; i++) {
        if (!(m->nodes[i].ops->caps & DD__CAP_WEIGHT_LAYER)) continue;
        DD_FORWARD(add_hook(m, m->nodes[i].inputs[0], lambda));
        found = 1;
        if (p == DD_GFA_PRESET_FIRST) break;
    }
    DD_RETURN_IF(!found, DD_ERR_INVALID_ARGUMENT, "GFA hooks: the model has no conv2d or linear node");
    return DD_OK;
}

/* Splits "ITEM[:LAMBDA]" (len bytes at it) into name and lambda. */
static dd_status parse_item(const char *it, size_t len, float dflt, char *name, size_t size, float *lambda) {
    const char *colon = memchr(it, ':', len);
    size_t nl = colon ? (size_t)(colon - it) : len;
    DD_RETURN_IF(nl == 0 || nl >= size, DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_hook_spec: item '%.*s': empty or overlong name", (int)len, it);
    memcpy(name, it, nl);
    name[nl] = '\0';
    *lambda = dflt;
    if (!colon) return DD_OK;
    char num[64];
    size_t vl = len - nl - 1;
    DD_RETURN_IF(vl == 0 || vl >= sizeof num, DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_hook_spec: item '%.*s': no lambda after ':'", (int)len, it);
    memcpy(num, colon + 1, vl);
    num[vl] = '\0';
    char *endp = NULL;
    double v = strtod(num, &endp);
    DD_RETURN_IF(*endp != '\0' || !isfinite(v) || v < 0 || v > 3.0e38, DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_hook_spec: item '%.*s': lambda '%s' is not a finite number >= 0", (int)len, it, num);
    *lambda = (float)v;
    return DD_OK;
}

/* Adds the hooks of one spec item. */
static dd_status add_item(dd_model *m, const char *it, size_t len, float dflt) {
    char name[sizeof m->nodes[0].name + 1];
    float lambda = dflt;
    DD_FORWARD(parse_item(it, len, dflt, name, sizeof name, &lambda));
    static const char *const presets[] = {"first", "deep", "all"};
    for (int p = 0; p < 3; p++)
        if (strcmp(name, presets[p]) == 0) return add_preset(m, p, lambda);
    int last = last_node(m);
    for (int i = 1; i <= last; i++) {
        if (strcmp(m->nodes[i].name, name) != 0) continue;
        DD_RETURN_IF(m->nodes[i].ninputs != 1, DD_ERR_INVALID_ARGUMENT,
                     "dd_gfa_hook_spec: node '%s' has %d inputs (name a single-input node)", name,
                     m->nodes[i].ninputs);
        return add_hook(m, m->nodes[i].inputs[0], lambda);
    }
    return DD_ERROR(DD_ERR_INVALID_ARGUMENT,
                    "dd_gfa_hook_spec: '%s' is neither a preset (first, deep, all) nor a node name", name);
}

typedef dd_status (*hook_fill)(dd_model *m, const void *arg, float lambda);

/* Replaces the hooks by those fill() adds; on failure they are as before. */
static dd_status replace_hooks(dd_model *m, hook_fill fill, const void *arg, float lambda) {
    DD_RETURN_IF(!isfinite(lambda) || lambda < 0, DD_ERR_INVALID_ARGUMENT,
                 "GFA hooks: lambda = %g (need finite, >= 0)", (double)lambda);
    dd__hook saved[DD_MAX_HOOKS];
    int nsaved = m->nhooks;
    memcpy(saved, m->hooks, sizeof saved);
    m->nhooks = 0;
    dd_status s = fill(m, arg, lambda);
    if (s == DD_OK) s = hooks_changed(m);
    if (s != DD_OK) {
        m->nhooks = nsaved;
        memcpy(m->hooks, saved, sizeof saved);
    }
    return s;
}

static dd_status fill_preset(dd_model *m, const void *arg, float lambda) {
    return add_preset(m, *(const int *)arg, lambda);
}

static dd_status fill_spec(dd_model *m, const void *arg, float lambda) {
    const char *s = arg;
    DD_RETURN_IF(*s == '\0', DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook_spec: empty spec");
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        DD_FORWARD(add_item(m, s, len, lambda));
        if (!comma) return DD_OK;
        s = comma + 1;
    }
}

static int valid_mode(int mode) {
    return mode == DD_GFA_SIN2 || mode == DD_GFA_TANGENT || mode == DD_GFA_COS;
}

dd_status dd_gfa_hook_preset(dd_model *m, dd_gfa_preset preset, float lambda) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook_preset: model is NULL");
    DD_RETURN_IF(preset < DD_GFA_PRESET_FIRST || preset > DD_GFA_PRESET_ALL, DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_hook_preset: unknown preset %d", (int)preset);
    int p = (int)preset;
    return replace_hooks(m, fill_preset, &p, lambda);
}

dd_status dd_gfa_hook_spec(dd_model *m, const char *spec, float lambda) {
    DD_RETURN_IF(!m || !spec, DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook_spec: NULL argument");
    return replace_hooks(m, fill_spec, spec, lambda);
}

dd_status dd_gfa_hook_defaults(dd_model *m, float lambda, dd_gfa_mode mode) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook_defaults: model is NULL");
    DD_RETURN_IF(!valid_mode(mode), DD_ERR_INVALID_ARGUMENT, "dd_gfa_hook_defaults: mode %d", (int)mode);
    int p = DD_GFA_PRESET_DEEP;
    DD_FORWARD(replace_hooks(m, fill_preset, &p, lambda));
    m->gfa_mode = mode;
    return DD_OK;
}

dd_status dd_gfa_set_mode(dd_model *m, dd_gfa_mode mode) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_gfa_set_mode: model is NULL");
    DD_RETURN_IF(!valid_mode(mode), DD_ERR_INVALID_ARGUMENT, "dd_gfa_set_mode: mode %d", (int)mode);
    m->gfa_mode = mode;
    return DD_OK;
}

dd_status dd_gfa_get_mode(const dd_model *m, dd_gfa_mode *mode) {
    DD_RETURN_IF(!m || !mode, DD_ERR_INVALID_ARGUMENT, "dd_gfa_get_mode: NULL argument");
    *mode = (dd_gfa_mode)m->gfa_mode;
    return DD_OK;
}

dd_status dd_gfa_clear(dd_model *m) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_gfa_clear: model is NULL");
    if (m->nhooks == 0) return DD_OK;
    m->nhooks = 0;
    return hooks_changed(m);
}

dd_status dd_gfa_num_hooks(const dd_model *m, int *count) {
    DD_RETURN_IF(!m || !count, DD_ERR_INVALID_ARGUMENT, "dd_gfa_num_hooks: NULL argument");
    *count = m->nhooks;
    return DD_OK;
}

dd_status dd_gfa_get_hook(const dd_model *m, int index, dd_node *node, float *lambda) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_gfa_get_hook: model is NULL");
    DD_RETURN_IF(index < 0 || index >= m->nhooks, DD_ERR_INVALID_ARGUMENT,
                 "dd_gfa_get_hook: hook %d does not exist (%d hooks)", index, m->nhooks);
    if (node) *node = m->hooks[index].tensor;
    if (lambda) *lambda = (float)m->hooks[index].lambda;
    return DD_OK;
}

/* ---- the passes ---------------------------------------------------------- */

static int hook_of(const dd_model *m, int tensor) {
    for (int h = 0; h < m->nhooks; h++)
        if (m->hooks[h].tensor == tensor) return h;
    return -1;
}

/* Per-sample coefficients of hook h (see dd__gfa_align). */
static float *hook_coef(dd_model *m, int h) { return m->gfa_work + (size_t)h * 4 * m->max_batch; }

/* Work doubles after the coefficient rows. */
static double *gfa_reductions(dd_model *m) {
    return (double *)(m->gfa_work + (size_t)DD_MAX_HOOKS * 4 * m->max_batch);
}

/* Pass 4's inject callback, before node i's backward: adds hook i's Ybar
 * (from G_t in t->grad and Y_t) and the bar buffer (Xbar) into tensor i's
 * adjoint (t->tan); written: the consumers left a value there. */
static void inject(dd_model *m, int i, int written, void *arg) {
    (void)arg;
    dd__tensor *t = &m->nodes[i].out;
    dd__ctx *ctx = &m->ctx;
    size_t count = dd__tensor_floats(t, ctx->n);
    int h = hook_of(m, i);
    if (h >= 0) {
        dd__gfa_affine(t->tan, t->grad, t->data, hook_coef(m, h), 1, ctx->n, t->sample_floats, written,
                       ctx->nthreads);
        written = 1;
    }
    if (t->bar_nonzero) {
        if (written)
            dd__axpy1(t->tan, t->bar, count, ctx->nthreads);
        else
            memcpy(t->tan, t->bar, count * sizeof(float));
    }
}

/* Pass 3 for one node: T_y = JVP(T_x) (+ Gbar_y if y is hooked), and the
 * second-order terms where pass 2 formed G_y (g_written); records the
 * step in *ts. */
static dd_status tangent_node(dd_model *m, dd__node *node, int g_written, dd__tstep *ts) {
    dd__ctx *ctx = &m->ctx;
    dd__tensor *out = &node->out;
    int h = hook_of(m, node->id);
    int any = 0;
    memset(ts, 0, sizeof *ts);
    ts->node = node->id;
    ts->gbar = h >= 0;
    for (int k = 0; k < node->ninputs; k++) any |= dd__in(node, k)->tan_nonzero;
    if (!any) {
        if (h >= 0) {
            dd__gfa_affine(out->tan, out->grad, out->data, hook_coef(m, h), 0, ctx->n, out->sample_floats, 0,
                           ctx->nthreads);
            out->tan_nonzero = 1;
        }
        return DD_OK;
    }
    DD_RETURN_IF(!node->ops->jvp, DD_ERR_UNSUPPORTED,
                 "GFA: node %d (%s '%s') has no Jacobian-vector product; a hook upstream of it "
                 "cannot be differentiated",
                 node->id, node->ops->name, node->name);
    void *plan;
    DD_FORWARD(dd__node_plan(node, ctx, &plan));
    const float *tx[2] = {NULL, NULL};
    for (int k = 0; k < node->ninputs; k++) {
        dd__tensor *in = dd__in(node, k);
        if (!in->tan_nonzero) {
            /* a second input without a tangent (add): zero it once */
            memset(in->tan, 0, dd__tensor_floats(in, ctx->n) * sizeof(float));
            in->tan_nonzero = 1;
        }
        tx[k] = in->tan;
    }
    DD_FORWARD(node->ops->jvp(node, plan, ctx, tx, out->tan));
    ts->jvp = 1;
    if (h >= 0)
        dd__gfa_affine(out->tan, out->grad, out->data, hook_coef(m, h), 0, ctx->n, out->sample_floats, 1,
                       ctx->nthreads);
    out->tan_nonzero = 1;
    if (node->ops->second_order && g_written) {
        /* A node writes xbar only where its backward depends on its input
         * (batch norm in training mode) and says so. The first writer of a
         * bar buffer overwrites it (no zero fill). */
        float *xbar[2] = {NULL, NULL};
        int fresh = 0;
        for (int k = 0; k < node->ninputs; k++) {
            dd__tensor *in = dd__in(node, k);
            if (!in->bar) continue;
            fresh |= !in->bar_nonzero;
            xbar[k] = in->bar;
        }
        if (fresh && node->ninputs > 1) {
            for (int k = 0; k < node->ninputs; k++)
                if (xbar[k] && !dd__in(node, k)->bar_nonzero) {
                    memset(xbar[k], 0, dd__tensor_floats(dd__in(node, k), ctx->n) * sizeof(float));
                    dd__in(node, k)->bar_nonzero = 1;
                }
            fresh = 0;
        }
        int wrote = 0;
        DD_FORWARD(node->ops->second_order(node, plan, ctx, tx, out->grad, xbar, fresh, &wrote));
        ts->second_order = 1;
        ts->xbar = (unsigned char)wrote;
        for (int k = 0; k < node->ninputs; k++)
            if (xbar[k] && wrote) dd__in(node, k)->bar_nonzero = 1;
    }
    return DD_OK;
}

dd_status dd__gfa_backward(dd_model *m, void *arg) {
    dd__gfa_args *a = arg;
    dd__ctx *ctx = &m->ctx;
    int n = ctx->n, K = m->num_classes;
    DD_RETURN_IF(!m->gfa_ready, DD_ERR_STATE, "GFA: hooks were set after the last forward pass");
    if (!m->tsteps) m->tsteps = dd__calloc((size_t)m->logits + 1, sizeof *m->tsteps);
    if (!m->gfa_seeded) m->gfa_seeded = dd__calloc((size_t)m->logits + 1, 1);
    DD_RETURN_IF(!m->tsteps || !m->gfa_seeded, DD_ERR_OUT_OF_MEMORY, "GFA: tangent schedule");
    /* pass 2 (weight layers defer their weight gradients to pass 4) */
    const dd__bsched *s2;
    dd__bpass p2 = {DD__PASS_GFA2, NULL, NULL, NULL};
    DD_FORWARD(dd__graph_backward(m, &p2, &s2));
    for (int i = 0; i <= m->logits; i++) {
        m->nodes[i].out.tan_nonzero = 0;
        m->nodes[i].out.bar_nonzero = 0;
    }
    double J = m->last_loss;
    for (int h = 0; h < m->nhooks; h++) {
        dd__tensor *t = &m->nodes[m->hooks[h].tensor].out;
        double reg, align;
        dd__gfa_align(t->grad, t->data, n, t->sample_floats, m->gfa_mode, m->hooks[h].lambda, hook_coef(m, h),
                      gfa_reductions(m), ctx->nthreads, &reg, &align);
        J += m->hooks[h].lambda * reg;
        if (a->stats) {
            a->stats->hook_node[h] = m->hooks[h].tensor;
            a->stats->hook_lambda[h] = m->hooks[h].lambda;
            a->stats->hook_reg[h] = reg;
            a->stats->hook_align[h] = align;
        }
    }
    if (a->stats) {
        a->stats->num_hooks = m->nhooks;
        a->stats->objective = J;
    }
    DD_RETURN_IF(!isfinite(J), DD_ERR_NUMERIC, "GFA: the objective is not finite");
    /* pass 3 (the image's tangent, if hooked, is its Gbar) */
    int h0 = hook_of(m, 0);
    if (h0 >= 0) {
        dd__tensor *t0 = &m->nodes[0].out;
        dd__gfa_affine(t0->tan, t0->grad, t0->data, hook_coef(m, h0), 0, n, t0->sample_floats, 0,
                       ctx->nthreads);
        t0->tan_nonzero = 1;
    }
    m->ntsteps = 0;
    for (int i = 1; i <= m->logits; i++)
        DD_FORWARD(tangent_node(m, &m->nodes[i], s2->written[i], &m->tsteps[m->ntsteps++]));
    /* seed of pass 4, in place over T_z: Zbar = H_z T_z, the loss's
     * Hessian-vector product (lib/loss/loss.h) */
    dd__tensor *z = &m->nodes[m->logits].out;
    if (z->tan_nonzero)
        dd__loss_hvp(m->loss, m->probs, a->labels, n, K, z->tan);
    else
        memset(z->tan, 0, (size_t)n * K * sizeof(float));
    /* pass 4: tensors whose adjoint inject() seeds (Ybar at hooks, Xbar) */
    unsigned char *seeded = m->gfa_seeded;
    for (int i = 0; i <= m->logits; i++)
        seeded[i] = (unsigned char)(hook_of(m, i) >= 0 || m->nodes[i].out.bar_nonzero);
    dd__bpass p4 = {DD__PASS_GFA4, seeded, inject, NULL};
    return dd__graph_backward(m, &p4, NULL);
}
