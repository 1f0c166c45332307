/* lib/graph/passes.c -- forward, backward and input-gradient passes.
 *
 * Every pass is a loop over the node array (creation order is topological):
 * forwards for the forward pass, backwards for the backward passes. A node
 * computes the gradient of an input only if that tensor needs it (it leads
 * to a trainable parameter, a GFA hook, or the image when the input
 * gradient is wanted). A tensor read by several nodes gets its gradient from
 * the first of them (in backward order) written in place and from the others
 * through a scratch buffer that is then added: oneDNN primitives overwrite
 * their outputs.
 *
 * Plans (oneDNN primitives for one batch size) are created on first use of a
 * batch size and kept, DD__MAX_PLANS per node, least recently used evicted.
 */
#include "graph_internal.h"

#include <math.h>
#include <string.h>

#include "../gfa/gfa.h"
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
    DD_RETURN_IF(mode != DD_EVAL && mode != DD_TRAIN, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_forward: mode = %d", (int)mode);
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
    DD_RETURN_IF(count < need, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_get_logits: count %zu < n*K = %zu", count, need);
    memcpy(out, m->nodes[m->logits].out.data, need * sizeof(float));
    return DD_OK;
}

/* need_grad per tensor for this pass (see the file comment). */
static void mark_needs(dd_model *m, int want_input, int want_params, int hooks) {
    for (int i = 0; i <= m->logits; i++) {
        dd__tensor *t = &m->nodes[i].out;
        dd__node *n = &m->nodes[i];
        int need = (i == 0 && want_input) || (want_params && t->upstream_params);
        for (int k = 0; k < n->ninputs && !need; k++) need = m->nodes[n->inputs[k]].out.need_grad;
        for (int h = 0; hooks && h < m->nhooks && !need; h++) need = m->hooks[h].tensor == i;
        t->need_grad = need;
        t->written = 0;
        n->bwd_absorbed = 0;
        n->bwd_dy_from = -1;
    }
}

/* Backward fusion, with fuse_layers: a ReLU's backward (dy * [y > 0]), or
 * an eval-mode batch norm's (dy * s[c]) in a pass without parameter
 * gradients, is skipped and applied by a neighbour that touches the same
 * elements anyway, where the gradient left unformed belongs to a tensor
 * without a GFA hook (GFA reads hooked gradients and injects into them;
 * nothing else reads these tensors' gradients: their only consumer is the
 * skipped node or a max pool, none with a second-order term):
 *  - a max pool reading a ReLU's output that nothing else reads writes the
 *    ReLU's input gradient itself, masked by its own output
 *    (relu_out[argmax] > 0 exactly when pool_out > 0);
 *  - an add whose output only a ReLU reads takes the ReLU's dy and output
 *    and writes the masked gradient to both its inputs;
 *  - a weight layer whose output only a batch norm reads takes the batch
 *    norm's dy, the slope folded into its backward-data weights.
 * These return the node that takes over, or -1.
 * None of them runs in GFA's second backward (inject): it runs in the
 * tangent slots (model.c's tan_slots), where a tensor's buffer is only
 * reserved from its producer to its last consumer. The node that takes
 * over writes a gradient one node past that interval, into a slot that the
 * next tensor may share -- a max pool after a ReLU then scattered its dx
 * over its own dy (every conv layer's GFA term of cnn-cw was wrong by
 * ~90% before this was found, issue 11). */
static int unformed_grad_ok(const dd_model *m, int t, dd_node_type producer, int inject) {
    return m->opts.fuse_layers && !inject && t != 0 && m->nodes[t].ops->type == producer &&
           m->nodes[t].out.consumers == 1 && !dd__tensor_hooked(m, t);
}

static int pool_absorbs_relu(const dd_model *m, const dd__node *node, int inject) {
    int r = node->inputs[0];
    if (node->ops->type != DD_NODE_MAXPOOL || !unformed_grad_ok(m, r, DD_NODE_RELU, inject)) return -1;
    return m->nodes[m->nodes[r].inputs[0]].out.need_grad ? r : -1;
}

/* node is an eval-mode batch norm in a pass without parameter gradients
 * (an attack's input gradient); returns the convolution or linear layer
 * before it, which then runs backward-data on the batch norm's dy with the
 * slope folded into its weights (wlayer.c), or -1. */
static int wlayer_takes_bn(const dd_model *m, const dd__node *node, int want_params) {
    if (want_params || m->ctx.train || node->ops->type != DD_NODE_BATCHNORM) return -1;
    int w = node->inputs[0];
    if (!unformed_grad_ok(m, w, DD_NODE_CONV2D, 0) && !unformed_grad_ok(m, w, DD_NODE_LINEAR, 0)) return -1;
    return w;
}

/* node is a ReLU; returns the add before it that can take its backward. */
static int add_takes_relu(const dd_model *m, const dd__node *node, int inject) {
    int a = node->inputs[0];
    if (node->ops->type != DD_NODE_RELU || !unformed_grad_ok(m, a, DD_NODE_ADD, inject)) return -1;
    for (int k = 0; k < 2; k++)
        if (m->nodes[m->nodes[a].inputs[k]].out.layout != m->nodes[a].out.layout) return -1;
    return a;
}

dd_status dd__graph_backward(dd_model *m, int want_input, int want_params, int inject) {
    dd__ctx *ctx = &m->ctx;
    ctx->want_param_grad = want_params;
    if (want_params && dd__fusion_folded_bn(m)) {
        /* an eval-mode batch norm's parameter gradient reads its input,
         * which the fused forward did not keep: recompute it unfused (eval
         * passes change no state) */
        DD_FORWARD(run_forwards(m, 0));
    }
    mark_needs(m, want_input, want_params, !inject);
    m->nodes[m->logits].out.written = 1;
    for (int i = m->logits; i >= 1; i--) {
        dd__node *node = &m->nodes[i];
        dd__tensor *ot = &node->out;
        if (inject) dd__gfa_inject(m, i); /* GFA pass 4: every consumer has written; add Ybar + Xbar */
        if (node->bwd_absorbed || !ot->written) continue; /* not on a path to the logits: zero gradient */
        int taker = add_takes_relu(m, node, inject);
        if (taker < 0) taker = wlayer_takes_bn(m, node, want_params);
        if (taker >= 0) {
            m->nodes[taker].bwd_dy_from = i;
            m->nodes[taker].out.written = 1; /* its gradient is never formed (nothing else reads it) */
            continue;
        }
        void *plan;
        DD_FORWARD(dd__node_plan(node, ctx, &plan));
        float *dx[2] = {NULL, NULL};
        int acc[2] = {0, 0};
        int any = 0;
        int relu = pool_absorbs_relu(m, node, inject);
        dd__tensor *ins[2] = {NULL, NULL};
        for (int k = 0; k < node->ninputs; k++)
            ins[k] = relu >= 0 && k == 0 ? &m->nodes[m->nodes[relu].inputs[0]].out : dd__in(node, k);
        for (int k = 0; k < node->ninputs; k++) {
            dd__tensor *in = ins[k];
            if (!in->need_grad) continue;
            int taken = in->written || (k == 1 && node->inputs[0] == node->inputs[1] && dx[0]);
            acc[k] = taken;
            dx[k] = taken ? (k == 0 ? m->scratch : m->scratch2) : in->grad;
            any = 1;
        }
        if (!any && !(want_params && node->nparams > 0)) continue;
        const float *dy = node->out.grad;
        ctx->relu_mask = relu >= 0 ? node->out.data : NULL;
        if (node->bwd_dy_from >= 0) {
            const dd__node *from = &m->nodes[node->bwd_dy_from];
            dy = from->out.grad;
            if (from->ops->type == DD_NODE_RELU)
                ctx->relu_mask = from->out.data;
            else
                ctx->fold_bn = from;
        }
        dd_status s = node->ops->backward(node, plan, ctx, dy, dx);
        ctx->relu_mask = NULL;
        ctx->fold_bn = NULL;
        DD_FORWARD(s);
        if (relu >= 0) { /* its output's gradient is never formed (nothing reads it) */
            m->nodes[relu].bwd_absorbed = 1;
            m->nodes[relu].out.written = 1;
        }
        for (int k = 0; k < node->ninputs; k++) {
            if (!dx[k]) continue;
            dd__tensor *in = ins[k];
            if (acc[k]) dd__axpy1(in->grad, dx[k], dd__tensor_floats(in, ctx->n), ctx->nthreads);
            in->written = 1;
        }
    }
    /* Needed tensors that no path reached have a zero gradient. */
    for (int i = 0; i <= m->logits; i++) {
        dd__tensor *t = &m->nodes[i].out;
        if (t->need_grad && !t->written) {
            memset(t->grad, 0, dd__tensor_floats(t, ctx->n) * sizeof(float));
            t->written = 1;
        }
    }
    return DD_OK;
}

static dd_status check_labels(const dd_model *m, const int32_t *labels, int n, const char *fn) {
    DD_RETURN_IF(!labels, DD_ERR_INVALID_ARGUMENT, "%s: labels is NULL", fn);
    for (int i = 0; i < n; i++)
        DD_RETURN_IF(labels[i] < 0 || labels[i] >= m->num_classes, DD_ERR_INVALID_ARGUMENT,
                     "%s: labels[%d] = %d outside [0, %d)", fn, i, (int)labels[i], m->num_classes);
    return DD_OK;
}

/* Runs fn with the parameter gradients protected: on failure they are
 * restored to their values before the call. */
static dd_status guarded_grads(dd_model *m, dd_status (*fn)(dd_model *, void *), void *arg) {
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

static dd_status plain_backward(dd_model *m, void *arg) {
    (void)arg;
    return dd__graph_backward(m, 0, 1, 0);
}

static dd_status seed_xent(dd_model *m, const int32_t *labels, dd_step_stats *stats) {
    int n = m->last_n, k = m->num_classes;
    double loss;
    int correct;
    dd__xent(m->nodes[m->logits].out.data, labels, n, k, m->probs, m->nodes[m->logits].out.grad,
             &loss, &correct);
    DD_RETURN_IF(!isfinite(loss), DD_ERR_NUMERIC, "backward: the loss is not finite");
    m->last_loss = loss;
    if (stats) {
        size_t sz = stats->struct_size;
        memset(stats, 0, sizeof *stats);
        stats->struct_size = sz;
        stats->loss = loss;
        stats->objective = loss;
        stats->correct = correct;
        stats->batch = n;
    }
    return DD_OK;
}

dd_status dd_model_backward(dd_model *m, const int32_t *labels, dd_step_stats *stats) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_backward: model is NULL");
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_backward: the model is not built");
    DD_RETURN_IF(stats && stats->struct_size != sizeof *stats, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_backward: stats->struct_size not set (call dd_step_stats_init)");
    DD_RETURN_IF(!m->have_forward, DD_ERR_STATE, "dd_model_backward: no forward pass to differentiate");
    DD_FORWARD(check_labels(m, labels, m->last_n, "dd_model_backward"));
    DD_FORWARD(seed_xent(m, labels, stats));
    m->ctx.n = m->last_n;
    m->ctx.train = m->last_train;
    if (m->nhooks > 0) {
        dd__gfa_args a = {labels, stats};
        return guarded_grads(m, dd__gfa_backward, &a);
    }
    return guarded_grads(m, plain_backward, NULL);
}

dd_status dd_model_backward_logits(dd_model *m, const float *dlogits, dd_step_stats *stats) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_backward_logits: model is NULL");
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "dd_model_backward_logits: the model is not built");
    DD_RETURN_IF(!dlogits, DD_ERR_INVALID_ARGUMENT, "dd_model_backward_logits: dlogits is NULL");
    DD_RETURN_IF(stats && stats->struct_size != sizeof *stats, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_backward_logits: stats->struct_size not set (call dd_step_stats_init)");
    DD_RETURN_IF(!m->have_forward, DD_ERR_STATE, "dd_model_backward_logits: no forward pass");
    size_t zc = (size_t)m->last_n * (size_t)m->num_classes;
    DD_RETURN_IF(!dd__all_finite(dlogits, zc, 1), DD_ERR_NUMERIC,
                 "dd_model_backward_logits: dlogits holds NaN or Inf");
    m->ctx.n = m->last_n;
    m->ctx.train = m->last_train;
    memcpy(m->nodes[m->logits].out.grad, dlogits, zc * sizeof(float));
    if (stats) {
        size_t sz = stats->struct_size;
        memset(stats, 0, sizeof *stats);
        stats->struct_size = sz;
        stats->batch = m->last_n;
    }
    int saved = m->nhooks;
    m->nhooks = 0;
    dd_status s = guarded_grads(m, plain_backward, NULL);
    m->nhooks = saved;
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
    int saved = m->nhooks;
    m->nhooks = 0; /* hooks only matter to dd_model_backward */
    dd_status s = dd__graph_backward(m, 1, 0, 0);
    m->nhooks = saved;
    DD_FORWARD(s);
    memcpy(dx, m->nodes[0].out.grad, (size_t)m->last_n * m->nodes[0].out.sample_floats * sizeof(float));
    return DD_OK;
}
