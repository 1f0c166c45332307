/* lib/graph/passes.c -- forward, backward and input-gradient passes.
 *
 * Every pass is a loop over the node array (creation order is topological):
 * forwards for the forward pass (as the fusion chains of fusion.c say),
 * backwards for the backward passes, which run the step list the planner
 * made (schedule.c) and decide nothing themselves: which tensors need a
 * gradient, which variant of each node's backward runs, where each dx goes.
 * A tensor read by several nodes gets its gradient from the first of them
 * (in backward order) written in place and from the others through a
 * scratch buffer that is then added: oneDNN primitives overwrite their
 * outputs. GFA (lib/gfa) reaches the backward through dd__graph_backward's
 * pass description and inject callback; nothing here calls GFA.
 *
 * Plans (oneDNN primitives for one batch size) are created on first use of a
 * batch size and kept, DD__MAX_PLANS per node, least recently used evicted.
 */
#include "graph_internal.h"

#include <math.h>
#include <string.h>

#include "../loss/loss.h"

void dd__axpy1(float *dst, const float *src, size_t count, int nthreads) {
    if (count < 65536) nthreads = 1;
#pragma omp parallel for simd num_threads(nthreads) schedule(static)
    for (size_t i = 0; i < count; i++) dst[i] += src[i];
}

dd_status dd__node_plan(dd__node *n, dd__ctx *ctx, void **plan) {
    dd_model *m = n->model;
    *plan = NULL;
    if (!n->ops->plan_create) return DD_OK;
    int victim = 0;
    for (int j = 0; j < DD__MAX_PLANS; j++) {
        if (n->plan[j] && n->plan_batch[j] == ctx->n) {
            n->plan_used[j] = ++m->plan_clock;
            *plan = n->plan[j];
            return DD_OK;
        }
        if (!n->plan[j] || (n->plan[victim] && n->plan_used[j] < n->plan_used[victim])) victim = j;
    }
    void *p = NULL;
    DD_FORWARD(n->ops->plan_create(n, ctx, &p));
    if (n->plan[victim] && n->ops->plan_destroy) n->ops->plan_destroy(n->plan[victim]);
    n->plan[victim] = p;
    n->plan_batch[victim] = ctx->n;
    n->plan_used[victim] = ++m->plan_clock;
    *plan = p;
    return DD_OK;
}

/* Copies the non-trainable buffers (batch-norm running statistics) into
 * (save = 1) or back from (save = 0) the model's backup. */
static void buffers_backup(dd_model *m, int save) {
    size_t off = 0;
    for (int i = 0; i < m->nparams; i++) {
        dd__param *p = &m->params[i];
        if (p->trainable) continue;
        if (save)
            memcpy(m->buffer_backup + off, p->data, p->count * sizeof(float));
        else
            memcpy(p->data, m->buffer_backup + off, p->count * sizeof(float));
        off += p->count;
    }
}

static dd_status forward_pass(dd_model *m, const float *x, int n, dd_mode mode, float *logits);

/* Runs every node's forward for ctx->n and ctx->train, as fusion chains
 * (lib/graph/fusion.c) if fuse. */
static dd_status run_forwards(dd_model *m, int fuse) {
    dd__ctx *ctx = &m->ctx;
    dd__fusion_plan(m, ctx->train, fuse);
    for (int i = 1; i <= m->logits; i++) {
        dd__node *node = &m->nodes[i];
        if (node->absorbed) continue;
        void *plan;
        DD_FORWARD(dd__node_plan(node, ctx, &plan));
        const float *xs[2] = {NULL, NULL};
        for (int k = 0; k < node->ninputs; k++) xs[k] = dd__in(node, k)->data;
        if (node->fz.end != i) {
            ctx->fuse = &node->fz;
            dd_status s = node->ops->forward(node, plan, ctx, xs, m->nodes[node->fz.end].out.data);
            ctx->fuse = NULL;
            if (s != DD_ERR_UNSUPPORTED) {
                DD_FORWARD(s);
                continue;
            }
            dd__clear_error(); /* no fused kernel: this chain runs node by node from now on */
            node->fuse_refused[ctx->train ? 1 : 0] = 1;
            dd__fusion_drop(m, i);
        }
        DD_FORWARD(node->ops->forward(node, plan, ctx, xs, node->out.data));
    }
    return DD_OK;
}

dd_status dd_model_forward(dd_model *m, const float *x, int n, dd_mode mode, float *logits) {
    int train = m && m->built && mode == DD_TRAIN && m->buffer_floats > 0;
    if (train) buffers_backup(m, 1);
    dd_status s = forward_pass(m, x, n, mode, logits);
    if (s != DD_OK && train) buffers_backup(m, 0); /* a refused pass changes nothing */
    return s;
}

static dd_status forward_pass(dd_model *m, const float *x, int n, dd_mode mode, float *logits) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_forward: model is NULL");
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_forward: the model is not built");
    DD_RETURN_IF(!x, DD_ERR_INVALID_ARGUMENT, "dd_model_forward: x is NULL");
    DD_RETURN_IF(n < 1 || n > m->max_batch, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_forward: n = %d outside [1, max_batch = %d]", n, m->max_batch);
    DD_RETURN_IF(mode != DD_EVAL && mode != DD_TRAIN, DD_ERR_INVALID_ARGUMENT, "dd_model_forward: mode = %d",
                 (int)mode);
    dd__ctx *ctx = &m->ctx;
    size_t in_floats = (size_t)n * m->nodes[0].out.sample_floats;
    DD_RETURN_IF(!dd__all_finite(x, in_floats, ctx->nthreads), DD_ERR_NUMERIC,
                 "dd_model_forward: x holds NaN or Inf");
    m->have_forward = 0;
    if (!m->act_arena) DD_FORWARD(dd__model_alloc_activations(m, m->nhooks > 0));
    memcpy(m->nodes[0].out.data, x, in_floats * sizeof(float));
    ctx->n = n;
    ctx->train = mode == DD_TRAIN;
    if (ctx->train) m->stats_version++;
    DD_FORWARD(run_forwards(m, 1));
    const float *z = m->nodes[m->logits].out.data;
    size_t zc = (size_t)n * (size_t)m->num_classes;
    DD_RETURN_IF(!dd__all_finite(z, zc, 1), DD_ERR_NUMERIC,
                 "dd_model_forward: the logits are not finite (diverged parameters?)");
    dd__softmax(z, n, m->num_classes, m->probs);
    if (logits) memcpy(logits, z, zc * sizeof(float));
    m->last_n = n;
    m->last_train = ctx->train;
    m->have_forward = 1;
    return DD_OK;
}

dd_status dd_model_get_logits(const dd_model *m, float *out, size_t count) {
    DD_RETURN_IF(!m || !out, DD_ERR_INVALID_ARGUMENT, "dd_model_get_logits: NULL argument");
    DD_RETURN_IF(!m->have_forward, DD_ERR_STATE, "dd_model_get_logits: no forward pass yet");
    size_t need = (size_t)m->last_n * (size_t)m->num_classes;
    DD_RETURN_IF(count < need, DD_ERR_INVALID_ARGUMENT, "dd_model_get_logits: count %zu < n*K = %zu", count,
                 need);
    memcpy(out, m->nodes[m->logits].out.data, need * sizeof(float));
    return DD_OK;
}

dd_status dd__graph_backward(dd_model *m, const dd__bpass *pass, const dd__bsched **ran) {
    dd__ctx *ctx = &m->ctx;
    dd__pass_kind kind = pass->kind;
    if (kind != DD__PASS_INPUT_GRAD && dd__fusion_folded_bn(m)) {
        /* an eval-mode batch norm's parameter gradient reads its input,
         * which the fused forward did not keep: recompute it unfused (eval
         * passes change no state) */
        DD_FORWARD(run_forwards(m, 0));
    }
    const dd__bsched *s;
    DD_FORWARD(dd__schedule_backward(m, pass, &s));
    if (ran) *ran = s;
    for (int k = 0; k < s->nsteps; k++) {
        const dd__bstep *st = &s->steps[k];
        dd__node *node = &m->nodes[st->node];
        if (pass->inject && s->need[st->node]) {
            /* every consumer has run: add Ybar + Xbar (GFA pass 4) */
            pass->inject(m, st->node, st->consumers_wrote, pass->arg);
        }
        if (st->variant == DD__BV_NONE || st->variant == DD__BV_GIVEN) continue;
        void *plan;
        DD_FORWARD(dd__node_plan(node, ctx, &plan));
        float *dx[2] = {NULL, NULL};
        for (int i = 0; i < node->ninputs; i++)
            if (st->dx_tensor[i] >= 0)
                dx[i] = st->dx_add[i] ? (i == 0 ? m->scratch : m->scratch2)
                                      : dd__pass_grad(&m->nodes[st->dx_tensor[i]].out, kind);
        const float *dy = dd__pass_grad(&m->nodes[st->dy_tensor].out, kind);
        DD_FORWARD(node->ops->backward(node, plan, ctx, st, dy, dx));
        for (int i = 0; i < node->ninputs; i++)
            if (dx[i] && st->dx_add[i]) {
                dd__tensor *in = &m->nodes[st->dx_tensor[i]].out;
                dd__axpy1(dd__pass_grad(in, kind), dx[i], dd__tensor_floats(in, ctx->n), ctx->nthreads);
            }
    }
    for (int k = 0; k < s->nzero; k++) {
        dd__tensor *t = &m->nodes[s->zero[k]].out;
        memset(dd__pass_grad(t, kind), 0, dd__tensor_floats(t, ctx->n) * sizeof(float));
    }
    return DD_OK;
}

dd_status dd__check_labels(const dd_model *m, const int32_t *labels, int n, const char *fn) {
    DD_RETURN_IF(!labels, DD_ERR_INVALID_ARGUMENT, "%s: labels is NULL", fn);
    for (int i = 0; i < n; i++)
        DD_RETURN_IF(labels[i] < 0 || labels[i] >= m->num_classes, DD_ERR_INVALID_ARGUMENT,
                     "%s: labels[%d] = %d outside [0, %d)", fn, i, (int)labels[i], m->num_classes);
    return DD_OK;
}

dd_status dd__guarded_grads(dd_model *m, dd_status (*fn)(dd_model *, void *), void *arg) {
    size_t bytes = m->param_floats * sizeof(float);
    int was_zero = m->grads_zero;
    if (!was_zero) {
        if (!m->grad_backup) {
            m->grad_backup = dd__aligned_alloc(bytes + 64);
            DD_RETURN_IF(!m->grad_backup, DD_ERR_OUT_OF_MEMORY, "gradient backup of %zu bytes", bytes);
        }
        memcpy(m->grad_backup, m->grad_arena, bytes);
    }
    m->grads_zero = 0;
    dd_status s = fn(m, arg);
    if (s == DD_OK && !dd__all_finite(m->grad_arena, m->param_floats, m->ctx.nthreads))
        s = DD_ERROR(DD_ERR_NUMERIC, "backward: the parameter gradients are not finite");
    if (s != DD_OK) {
        if (was_zero)
            memset(m->grad_arena, 0, bytes);
        else
            memcpy(m->grad_arena, m->grad_backup, bytes);
        m->grads_zero = was_zero;
    }
    return s;
}

dd_status dd__plain_backward(dd_model *m, void *arg) {
    (void)arg;
    dd__bpass pass = {DD__PASS_BACKWARD, NULL, NULL, NULL};
    return dd__graph_backward(m, &pass, NULL);
}

dd_status dd_model_backward_logits(dd_model *m, const float *dlogits, dd_step_stats *stats) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_backward_logits: model is NULL");
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_backward_logits: the model is not built");
    DD_RETURN_IF(!dlogits, DD_ERR_INVALID_ARGUMENT, "dd_model_backward_logits: dlogits is NULL");
    DD_FORWARD(dd__stats_check(stats, "dd_model_backward_logits"));
    DD_RETURN_IF(!m->have_forward, DD_ERR_STATE, "dd_model_backward_logits: no forward pass");
    size_t zc = (size_t)m->last_n * (size_t)m->num_classes;
    DD_RETURN_IF(!dd__all_finite(dlogits, zc, 1), DD_ERR_NUMERIC,
                 "dd_model_backward_logits: dlogits holds NaN or Inf");
    m->ctx.n = m->last_n;
    m->ctx.train = m->last_train;
    memcpy(m->nodes[m->logits].out.grad, dlogits, zc * sizeof(float));
    dd_status s = dd__guarded_grads(m, dd__plain_backward, NULL);
    if (s == DD_OK && stats) {
        dd_step_stats full;
        dd_step_stats_init(&full);
        full.batch = m->last_n;
        dd__stats_out(stats, &full);
    }
    return s;
}

dd_status dd_model_input_grad(dd_model *m, const float *dlogits, float *dx) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_input_grad: model is NULL");
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_input_grad: the model is not built");
    DD_RETURN_IF(!dlogits || !dx, DD_ERR_INVALID_ARGUMENT, "dd_model_input_grad: NULL buffer");
    DD_RETURN_IF(!m->have_forward, DD_ERR_STATE, "dd_model_input_grad: no forward pass");
    size_t zc = (size_t)m->last_n * (size_t)m->num_classes;
    DD_RETURN_IF(!dd__all_finite(dlogits, zc, 1), DD_ERR_NUMERIC,
                 "dd_model_input_grad: dlogits holds NaN or Inf");
    m->ctx.n = m->last_n;
    m->ctx.train = m->last_train;
    memcpy(m->nodes[m->logits].out.grad, dlogits, zc * sizeof(float));
    dd__bpass pass = {DD__PASS_INPUT_GRAD, NULL, NULL, NULL};
    DD_FORWARD(dd__graph_backward(m, &pass, NULL));
    memcpy(dx, m->nodes[0].out.grad, (size_t)m->last_n * m->nodes[0].out.sample_floats * sizeof(float));
    return DD_OK;
}
