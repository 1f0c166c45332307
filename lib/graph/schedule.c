/* lib/graph/schedule.c -- the plan of each backward pass, and its printer.
 *
 * dd__schedule_backward() turns (graph, pass kind, options, hooks) into an
 * explicit list of steps, one per node from the logits down: which variant
 * of the node's backward runs (dd__bvariant), which tensor's gradient it
 * reads as dy, which tensors' gradients it writes (overwriting, or through
 * scratch and added because another consumer wrote first). passes.c runs
 * the list and decides nothing itself. What the planner decides:
 *  - which tensors need a gradient: those leading to a trainable parameter
 *    (DD__PASS_BACKWARD, GFA passes), the image (DD__PASS_INPUT_GRAD), or a
 *    GFA hook (pass 2);
 *  - backward fusion, with fuse_layers and not in GFA's pass 4 (see
 *    below): a node whose capability says it can apply a ReLU's mask
 *    (DD__CAP_BWD_MASKS_INPUT: the max pool after the ReLU, masked by its
 *    own output; DD__CAP_BWD_MASKS_OUTPUT: the add before it) or fold an
 *    eval-mode batch norm's slope (DD__CAP_BWD_FOLDS_BN, passes without
 *    parameter gradients) takes that neighbour's backward, whose own output
 *    gradient is then never formed. Only where that gradient belongs to an
 *    unhooked tensor with one consumer (GFA reads hooked gradients).
 *  - GFA's pass 4 runs in the tangent slots (model.c's tan_slots: a
 *    tensor's buffer is reserved from its producer to its last consumer).
 *    A fused step writes its input's gradient one node past that interval,
 *    into a slot the next tensor may share, so pass 4 plans no fusion.
 * The executor keeps no per-tensor state of its own: `need` and `written`
 * of the schedule are the truth for the pass (GFA reads pass 2's).
 */
#include "graph_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* t's producer has capability cap, t is not the image, has one consumer
 * and (in a GFA pass, which reads hooked gradients) no hook: its gradient
 * may be left unformed. */
static int unformed_ok(const dd_model *m, int t, unsigned cap, int gfa) {
    return t != 0 && (m->nodes[t].ops->caps & cap) && m->nodes[t].out.consumers == 1 &&
           !(gfa && dd__tensor_hooked(m, t));
}

dd_status dd__schedule_alloc(dd_model *m, dd__pass_kind kind) {
    dd__bsched *s = &m->sched[kind];
    if (s->steps) return DD_OK;
    size_t nt = (size_t)m->logits + 1;
    s->steps = dd__calloc(nt, sizeof *s->steps);
    s->need = dd__calloc(nt, 1);
    s->written = dd__calloc(nt, 1);
    s->zero = dd__calloc(nt, sizeof *s->zero);
    if (!s->steps || !s->need || !s->written || !s->zero) {
        dd__schedule_free(m);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "schedule of %zu nodes", nt);
    }
    return DD_OK;
}

void dd__schedule_free(dd_model *m) {
    for (int k = 0; k < DD__NPASSES; k++) {
        dd__bsched *s = &m->sched[k];
        dd__free(s->steps);
        dd__free(s->need);
        dd__free(s->written);
        dd__free(s->zero);
        memset(s, 0, sizeof *s);
        m->sched_ran[k] = 0;
    }
    dd__free(m->tsteps);
    dd__free(m->gfa_seeded);
    m->tsteps = NULL;
    m->gfa_seeded = NULL;
    m->ntsteps = 0;
}

dd_status dd__schedule_backward(dd_model *m, const dd__bpass *pass, const dd__bsched **out) {
    DD_FORWARD(dd__schedule_alloc(m, pass->kind));
    dd__bsched *s = &m->sched[pass->kind];
    int want_input = pass->kind == DD__PASS_INPUT_GRAD;
    int want_params = pass->kind != DD__PASS_INPUT_GRAD;
    int hooks = pass->kind == DD__PASS_GFA2;
    int fuse = m->opts.fuse_layers && pass->kind != DD__PASS_GFA4;
    int L = m->logits;
    /* need: the tensor leads to what the pass wants */
    for (int i = 0; i <= L; i++) {
        const dd__node *n = &m->nodes[i];
        int need = (i == 0 && want_input) || (want_params && n->out.upstream_params) ||
                   (hooks && dd__tensor_hooked(m, i));
        for (int k = 0; k < n->ninputs && !need; k++) need = s->need[n->inputs[k]];
        s->need[i] = (unsigned char)need;
        s->written[i] = 0;
    }
    s->written[L] = 1;
    /* steps[L - i] is node i's; a node that takes a neighbour's backward
     * writes that neighbour's step (lower index) before the loop reaches it */
    s->nsteps = L;
    for (int i = L; i >= 1; i--) {
        dd__bstep *st = &s->steps[L - i];
        memset(st, 0, sizeof *st);
        st->node = i;
        st->partner = -1;
        st->dy_tensor = i;
        st->dx_tensor[0] = st->dx_tensor[1] = -1;
    }
    for (int i = L; i >= 1; i--) {
        dd__node *node = &m->nodes[i];
        dd__bstep *st = &s->steps[L - i];
        st->consumers_wrote = s->written[i]; /* the logits: the seed */
        st->seeded = pass->seeded && pass->seeded[i] && s->need[i];
        if (st->seeded) s->written[i] = 1; /* inject writes it first */
        if (st->variant == DD__BV_GIVEN) continue;
        if (!s->written[i]) continue; /* not on a path to the logits: zero gradient, nothing to do */
        /* a ReLU whose add before it takes its backward, or an eval batch
         * norm (in a pass without parameter gradients) whose weight layer
         * before it does: that node's step runs on this node's dy */
        int a = node->inputs[0], taker = -1;
        if (fuse && (node->ops->caps & DD__CAP_MASK_FROM_OUTPUT) &&
            unformed_ok(m, a, DD__CAP_BWD_MASKS_OUTPUT, hooks)) {
            int same = 1;
            for (int k = 0; k < m->nodes[a].ninputs; k++)
                same &= m->nodes[m->nodes[a].inputs[k]].out.layout == m->nodes[a].out.layout;
            if (same) taker = a;
        }
        if (taker < 0 && fuse && !want_params && !m->ctx.train && (node->ops->caps & DD__CAP_EVAL_AFFINE) &&
            unformed_ok(m, a, DD__CAP_BWD_FOLDS_BN, hooks))
            taker = a;
        if (taker >= 0) {
            st->variant = DD__BV_GIVEN;
            st->partner = taker;
            dd__bstep *ts = &s->steps[L - taker];
            ts->partner = i;
            ts->dy_tensor = i;
            s->written[taker] = 1; /* its gradient is never formed (nothing else reads it) */
            continue;
        }
        /* a max pool after a ReLU that nothing else reads */
        int relu = -1;
        if (fuse && (node->ops->caps & DD__CAP_BWD_MASKS_INPUT) &&
            unformed_ok(m, a, DD__CAP_MASK_FROM_OUTPUT, hooks) && s->need[m->nodes[a].inputs[0]])
            relu = a;
        int any = 0;
        for (int k = 0; k < node->ninputs; k++) {
            int t = relu >= 0 && k == 0 ? m->nodes[relu].inputs[0] : node->inputs[k];
            if (!s->need[t]) continue;
            st->dx_tensor[k] = t;
            st->dx_add[k] =
                s->written[t] || (k == 1 && node->inputs[0] == node->inputs[1] && st->dx_tensor[0] >= 0);
            any = 1;
        }
        if (!any && !(want_params && node->nparams > 0)) {
            st->dx_tensor[0] = st->dx_tensor[1] = -1;
            continue;
        }
        st->param_grad = want_params;
        st->defer_wgrad = pass->kind == DD__PASS_GFA2;
        st->merge_gy = pass->kind == DD__PASS_GFA4 ? node->out.grad : NULL;
        st->variant = DD__BV_PLAIN;
        if (st->partner >= 0) { /* it takes the backward of the node after it */
            const dd__node *from = &m->nodes[st->partner];
            if (from->ops->caps & DD__CAP_MASK_FROM_OUTPUT) {
                st->variant = DD__BV_MASKS_OUTPUT;
                st->mask = from->out.data;
            } else {
                st->variant = DD__BV_FOLDS_BN;
                st->fold_bn = from;
            }
        } else if (relu >= 0) {
            st->variant = DD__BV_MASKS_INPUT;
            st->partner = relu;
            st->mask = node->out.data;
            dd__bstep *rs = &s->steps[L - relu];
            rs->variant = DD__BV_GIVEN;
            rs->partner = i;
            s->written[relu] = 1;
        }
        for (int k = 0; k < node->ninputs; k++)
            if (st->dx_tensor[k] >= 0) s->written[st->dx_tensor[k]] = 1;
    }
    /* needed tensors that no step reached get a zero gradient */
    s->nzero = 0;
    for (int i = 0; i <= L; i++)
        if (s->need[i] && !s->written[i]) s->zero[s->nzero++] = i;
    m->sched_ran[pass->kind] = 1;
    *out = s;
    return DD_OK;
}

/* ---- the printer ------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t size, len;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    size_t n = (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1;
    if (b->buf && b->len < b->size) {
        size_t room = b->size - b->len - 1;
        memcpy(b->buf + b->len, tmp, n < room ? n : room);
        b->buf[b->len + (n < room ? n : room)] = 0;
    }
    b->len += n;
}

static const char *tname(const dd_model *m, int t) { return t == 0 ? "input" : m->nodes[t].name; }

static const char *pass_title[DD__NPASSES] = {
    "backward (dL/dtheta)",
    "input gradient (dL/dx)",
    "GFA pass 2: backward, G_t at the hooks, weight gradients deferred",
    "GFA pass 4: second backward in the tangent slots, Ybar/Xbar injected",
};

static void print_bsched(const dd_model *m, const dd__bsched *s, dd__pass_kind kind, sbuf *b) {
    put(b, "%s\n", pass_title[kind]);
    for (int k = 0; k < s->nsteps; k++) {
        const dd__bstep *st = &s->steps[k];
        const dd__node *n = &m->nodes[st->node];
        if (st->seeded) put(b, "  %-24s inject Ybar/Xbar into d(%s)\n", "", n->name);
        if (st->variant == DD__BV_NONE) {
            put(b, "  %-24s -\n", n->name);
            continue;
        }
        if (st->variant == DD__BV_GIVEN) {
            put(b, "  %-24s given to %s\n", n->name, m->nodes[st->partner].name);
            continue;
        }
        static const char *vname[] = {
            "", "backward", "", "backward + mask of", "backward as", "backward-data as"};
        put(b, "  %-24s %s", n->name, vname[st->variant]);
        if (st->variant == DD__BV_MASKS_INPUT) put(b, " %s (mask: own output)", m->nodes[st->partner].name);
        if (st->variant == DD__BV_MASKS_OUTPUT) put(b, " %s (its dy and mask)", m->nodes[st->partner].name);
        if (st->variant == DD__BV_FOLDS_BN) put(b, " %s (its dy, slope folded)", m->nodes[st->partner].name);
        put(b, ": reads d(%s)", tname(m, st->dy_tensor));
        for (int i = 0; i < 2; i++)
            if (st->dx_tensor[i] >= 0)
                put(b, ", %s d(%s)", st->dx_add[i] ? "adds" : "writes", tname(m, st->dx_tensor[i]));
        if (st->param_grad && n->nparams > 0)
            put(b, kind == DD__PASS_GFA2 && (n->ops->caps & DD__CAP_WEIGHT_LAYER)
                       ? ", params (weights deferred)"
                   : kind == DD__PASS_GFA4 && (n->ops->caps & DD__CAP_WEIGHT_LAYER)
                       ? ", params (weights on G + adjoint)"
                       : ", params");
        put(b, "\n");
    }
    for (int k = 0; k < s->nzero; k++) put(b, "  zero d(%s)\n", tname(m, s->zero[k]));
}

dd_status dd_model_schedule(const dd_model *m, char *buf, size_t size, size_t *needed) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_schedule: model is NULL");
    DD_RETURN_IF(!buf && size > 0, DD_ERR_INVALID_ARGUMENT, "dd_model_schedule: buf is NULL, size %zu", size);
    DD_RETURN_IF(!m->built || !m->have_forward, DD_ERR_STATE, "dd_model_schedule: no pass has run");
    sbuf b = {buf, size, 0};
    if (buf && size) buf[0] = 0;
    put(&b, "forward (%s, fuse_layers %d)\n", m->last_train ? "training" : "eval", m->opts.fuse_layers);
    for (int i = 1; i <= m->logits; i++) {
        const dd__node *n = &m->nodes[i];
        if (n->absorbed) {
            put(&b, "  %-24s inside the chain above\n", n->name);
            continue;
        }
        if (n->fz.end == i) {
            put(&b, "  %-24s %s\n", n->name, n->ops->name);
            continue;
        }
        put(&b, "  %-24s %s", n->name, n->ops->name);
        const int links[3] = {n->fz.bn, n->fz.add, n->fz.relu};
        const char *what[3] = {" + batch norm %s (folded)", " + add %s", " + relu %s"};
        for (int k = 0; k < 3; k++)
            if (links[k] >= 0) put(&b, what[k], m->nodes[links[k]].name);
        put(&b, " -> writes %s\n", m->nodes[n->fz.end].name);
    }
    static const dd__pass_kind order[] = {DD__PASS_BACKWARD, DD__PASS_INPUT_GRAD, DD__PASS_GFA2};
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++)
        if (m->sched_ran[order[k]]) print_bsched(m, &m->sched[order[k]], order[k], &b);
    if (m->tsteps && m->ntsteps > 0) {
        put(&b, "GFA pass 3: tangents in forward order\n");
        for (int k = 0; k < m->ntsteps; k++) {
            const dd__tstep *t = &m->tsteps[k];
            if (!t->jvp && !t->gbar) {
                put(&b, "  %-24s -\n", m->nodes[t->node].name);
                continue;
            }
            put(&b, "  %-24s%s%s%s%s\n", m->nodes[t->node].name, t->jvp ? " T = JVP(T_in)" : " T = 0",
                t->gbar ? " + Gbar (hooked)" : "", t->second_order ? ", second-order term" : "",
                t->xbar ? " + Xbar into its input" : "");
        }
    }
    if (m->sched_ran[DD__PASS_GFA4]) print_bsched(m, &m->sched[DD__PASS_GFA4], DD__PASS_GFA4, &b);
    if (needed) *needed = b.len + 1;
    return DD_OK;
}
