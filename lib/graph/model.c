/* lib/graph/model.c -- the dd_model handle: creation, graph appending,
 * build (arenas and parameter initialisation), introspection, parameters.
 *
 * Nodes are appended by the node files (lib/nodes/<type>.c) through
 * dd__graph_append(), which copies the node's configuration state and the
 * output tensor shape it computed. dd_model_build() then lets each node
 * declare its parameters, carves three arenas (parameters, gradients,
 * activations) and initialises parameters from the model's seed in node
 * order, so the same seed gives the same weights whatever the thread count.
 */
#include "graph_internal.h"

#include <math.h>
#include <stddef.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "../engine/engine.h"

#define DD__MAX_DIM (1 << 20)

void dd_model_options_init_sized(dd_model_options *opts, size_t size) {
    dd_model_options d;
    memset(&d, 0, sizeof d);
    d.num_threads = 0;
    d.seed = 1;
    d.conv_algo = DD_CONV_AUTO;
    d.fuse_layers = 1;
    dd__struct_fill(opts, size, &d, sizeof d);
}

void dd_step_stats_init_sized(dd_step_stats *stats, size_t size) {
    dd_step_stats d;
    memset(&d, 0, sizeof d);
    dd__struct_fill(stats, size, &d, sizeof d);
}

size_t dd__layout_sample_floats(dd__layout layout, int blk, int c, int h, int w) {
    switch (layout) {
    case DD__BLOCKED:
        return (size_t)((c + blk - 1) / blk) * (size_t)blk * (size_t)h * (size_t)w;
    case DD__NCHW:
        return (size_t)c * (size_t)h * (size_t)w;
    default:
        return (size_t)c;
    }
}

dd_status dd_model_create(dd_model **out, int channels, int height, int width, int num_classes,
                          const dd_model_options *opts) {
    DD_RETURN_IF(!out, DD_ERR_INVALID_ARGUMENT, "dd_model_create: out is NULL");
    *out = NULL;
    DD_RETURN_IF(channels < 1 || height < 1 || width < 1 || channels > 65536 || height > 65536 ||
                     width > 65536 || (int64_t)channels * height * width > DD__MAX_DIM * 16,
                 DD_ERR_INVALID_ARGUMENT, "dd_model_create: input shape %dx%dx%d out of range", channels,
                 height, width);
    DD_RETURN_IF(num_classes < 2 || num_classes > DD__MAX_DIM, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_create: num_classes = %d (need >= 2)", num_classes);
    dd_model_options o;
    dd_model_options_init(&o);
    if (opts)
        DD_FORWARD(
            DD__STRUCT_READ(&o, opts, DD_MODEL_OPTIONS_SIZE_V1, "dd_model_create", "dd_model_options"));
    DD_RETURN_IF(o.num_threads < 0 || o.num_threads > 1024, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_create: num_threads = %d", o.num_threads);
    DD_RETURN_IF(o.conv_algo < DD_CONV_AUTO || o.conv_algo > DD_CONV_WINOGRAD, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_create: conv_algo = %d", (int)o.conv_algo);
    DD_RETURN_IF(o.fuse_layers != 0 && o.fuse_layers != 1, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_create: fuse_layers = %d (0 or 1)", o.fuse_layers);
    dd_model *m = dd__calloc(1, sizeof *m);
    DD_RETURN_IF(!m, DD_ERR_OUT_OF_MEMORY, "dd_model_create");
    m->opts = o;
    m->in_c = channels;
    m->in_h = height;
    m->in_w = width;
    m->num_classes = num_classes;
    m->act_block = dd__act_block();
    m->logits = -1;
    m->ctx.m = m;
    m->ctx.nthreads = m->opts.num_threads > 0 ? m->opts.num_threads : omp_get_max_threads();
    m->gfa_mode = 0;
    dd__rng_seed(&m->rng, m->opts.seed);
    dd__tensor t;
    memset(&t, 0, sizeof t);
    t.ndims = 4;
    t.c = channels;
    t.h = height;
    t.w = width;
    t.layout = DD__NCHW;
    t.blk = 1;
    int id;
    dd_status s = dd__graph_append(m, &dd__input_ops, NULL, 0, "input", NULL, &t, &id);
    if (s == DD_OK) s = dd__engine_init(&m->ctx);
    if (s != DD_OK) {
        dd_model_destroy(m);
        return s;
    }
    *out = m;
    return DD_OK;
}

dd_status dd__graph_append(dd_model *m, const dd__node_ops *ops, const int *inputs, int ninputs,
                           const char *name, void *state, const dd__tensor *shape, int *id) {
    DD_RETURN_IF(name && strlen(name) >= sizeof m->nodes[0].name, DD_ERR_INVALID_ARGUMENT,
                 "%s node: name '%.20s...' longer than %zu bytes", ops->name, name,
                 sizeof m->nodes[0].name - 1);
    for (int i = 0; name && name[0] && i < m->nnodes; i++)
        DD_RETURN_IF(strcmp(m->nodes[i].name, name) == 0, DD_ERR_INVALID_ARGUMENT,
                     "%s node: name '%s' is already used by node %d", ops->name, name, i);
    if (m->nnodes == m->cap_nodes) {
        int cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
        dd__node *nn = dd__realloc(m->nodes, sizeof *nn * (size_t)cap);
        DD_RETURN_IF(!nn, DD_ERR_OUT_OF_MEMORY, "adding a node");
        m->nodes = nn;
        m->cap_nodes = cap;
    }
    dd__node *n = &m->nodes[m->nnodes];
    memset(n, 0, sizeof *n);
    n->ops = ops;
    n->model = m;
    n->id = m->nnodes;
    n->ninputs = ninputs;
    for (int i = 0; i < ninputs; i++) n->inputs[i] = inputs[i];
    if (name && name[0])
        snprintf(n->name, sizeof n->name, "%s", name);
    else
        snprintf(n->name, sizeof n->name, "%s%d", ops->name, n->id);
    n->state = state;
    n->out = *shape;
    if (shape->layout != DD__BLOCKED) n->out.blk = 1;
    n->out.sample_floats = dd__layout_sample_floats(shape->layout, n->out.blk, shape->c, shape->h, shape->w);
    n->first_param = -1;
    *id = m->nnodes++;
    return DD_OK;
}

dd_status dd__graph_check_add(dd_model *m, const char *what, const dd_node *inputs, int ninputs,
                              dd_node *out) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "%s: model is NULL", what);
    DD_RETURN_IF(!out, DD_ERR_INVALID_ARGUMENT, "%s: out is NULL", what);
    DD_RETURN_IF(m->built, DD_ERR_STATE, "%s: the model is already built", what);
    for (int i = 0; i < ninputs; i++)
        DD_RETURN_IF(inputs[i] < 0 || inputs[i] >= m->nnodes, DD_ERR_INVALID_ARGUMENT,
                     "%s: input node %d does not exist (model has %d nodes)", what, (int)inputs[i],
                     m->nnodes);
    DD_RETURN_IF(m->nnodes >= 100000, DD_ERR_INVALID_ARGUMENT, "%s: too many nodes", what);
    return DD_OK;
}

dd_status dd__node_add_param(dd__node *n, const char *field, int ndims, const int64_t *dims, int trainable,
                             int decay) {
    dd_model *m = n->model;
    if (m->nparams == m->cap_params) {
        int cap = m->cap_params ? m->cap_params * 2 : 16;
        dd__param *np = dd__realloc(m->params, sizeof *np * (size_t)cap);
        DD_RETURN_IF(!np, DD_ERR_OUT_OF_MEMORY, "declaring parameters");
        m->params = np;
        m->cap_params = cap;
    }
    dd__param *p = &m->params[m->nparams];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", n->name, field);
    p->node = n->id;
    p->ndims = ndims;
    p->count = 1;
    for (int i = 0; i < ndims; i++) {
        p->dims[i] = dims[i];
        p->count *= (size_t)dims[i];
    }
    p->trainable = trainable;
    p->decay = decay;
    if (n->first_param < 0) n->first_param = m->nparams;
    n->nparams++;
    m->nparams++;
    return DD_OK;
}

dd__param *dd__node_param(dd__node *n, int i) { return &n->model->params[n->first_param + i]; }

static void free_plans(dd__node *n) {
    for (int j = 0; j < DD__MAX_PLANS; j++) {
        if (n->plan[j] && n->ops->plan_destroy) n->ops->plan_destroy(n->plan[j]);
        n->plan[j] = NULL;
        n->plan_batch[j] = 0;
    }
}

void dd_model_destroy(dd_model *m) {
    if (!m) return;
    for (int t = 0; t < m->nshadows; t++) dd_model_destroy(m->shadow[t]);
    for (int i = 0; i < m->nnodes; i++) {
        dd__node *n = &m->nodes[i];
        free_plans(n);
        if (n->ops->destroy)
            n->ops->destroy(n);
        else
            dd__free(n->state);
    }
    dd__engine_fini(&m->ctx);
    dd__schedule_free(m);
    dd__free(m->nodes);
    dd__free(m->params);
    dd__free_aligned(m->param_arena);
    dd__free_aligned(m->grad_arena);
    dd__free_aligned(m->grad_backup);
    dd__free(m->buffer_backup);
    dd__free_aligned(m->act_arena);
    dd__free(m);
}

/* GFA tangent slots. Tensor t's tangent (pass 3) and its second adjoint
 * (pass 4, which runs in the same buffers) are alive from node t to t's last
 * consumer; tensors whose intervals do not overlap share a slot (greedy
 * colouring in start order, optimal for intervals). Fills slot_of[t] and
 * slot_floats[s] (the largest tensor of slot s); returns the slot count.
 * slot_end is scratch. All arrays have logits + 1 entries. */
static int tan_slots(const dd_model *m, int *slot_of, int *slot_end, size_t *slot_floats) {
    int nslots = 0;
    for (int t = 0; t <= m->logits; t++) {
        int last = t;
        for (int j = t + 1; j <= m->logits; j++)
            for (int k = 0; k < m->nodes[j].ninputs; k++)
                if (m->nodes[j].inputs[k] == t) last = j;
        int s = 0;
        while (s < nslots && slot_end[s] >= t) s++;
        if (s == nslots) {
            slot_floats[nslots] = 0;
            nslots++;
        }
        slot_end[s] = last;
        slot_of[t] = s;
        size_t f = (size_t)m->max_batch * m->nodes[t].out.sample_floats;
        if (f > slot_floats[s]) slot_floats[s] = f;
    }
    return nslots;
}

/* Whether tensor i is the input of a node whose GFA second-order term has
 * a part in x (DD__CAP_XBAR): it then gets a bar buffer. */
static int reads_for_xbar(const dd_model *m, int i) {
    for (int j = i + 1; j <= m->logits; j++)
        if ((m->nodes[j].ops->caps & DD__CAP_XBAR) && m->nodes[j].inputs[0] == i) return 1;
    return 0;
}

/* Lays out the activation arena: data and grad for every tensor, scratch,
 * probabilities, and with GFA the shared tangent slots (slot_of, nslots,
 * slot_floats from tan_slots), bar buffers for batch-norm inputs and the
 * per-sample GFA coefficients. Returns bytes; with base != NULL also assigns
 * the pointers. */
static size_t layout_activations(dd_model *m, char *base, int gfa, const int *slot_of, int nslots,
                                 const size_t *slot_floats) {
    size_t off = 0;
    size_t maxb = (size_t)m->max_batch;
#define DD__TAKE(ptr, floats)                                       \
    do {                                                            \
        if (base) (ptr) = (float *)(base + off);                    \
        off += (((size_t)(floats) * sizeof(float)) + 63) / 64 * 64; \
    } while (0)
    size_t maxt = 0;
    for (int i = 0; i <= m->logits; i++) {
        dd__tensor *t = &m->nodes[i].out;
        size_t f = maxb * t->sample_floats;
        if (f > maxt) maxt = f;
        DD__TAKE(t->data, f);
        DD__TAKE(t->grad, f);
        if (base) t->tan = t->bar = NULL;
        if (gfa && reads_for_xbar(m, i)) DD__TAKE(t->bar, f);
    }
    for (int s = 0; gfa && s < nslots; s++) {
        float *slot = NULL;
        DD__TAKE(slot, slot_floats[s]);
        for (int i = 0; base && i <= m->logits; i++)
            if (slot_of[i] == s) m->nodes[i].out.tan = slot;
    }
    DD__TAKE(m->scratch, maxt);
    DD__TAKE(m->scratch2, maxt);
    DD__TAKE(m->probs, maxb * (size_t)m->num_classes);
    /* per sample: 4 float coefficients per hook, then 2 doubles of reductions */
    if (gfa) DD__TAKE(m->gfa_work, maxb * (4 * (size_t)DD_MAX_HOOKS + 4));
#undef DD__TAKE
    return off;
}

void dd__model_release_activations(dd_model *m) {
    dd__free_aligned(m->act_arena);
    m->act_arena = NULL;
    m->gfa_ready = 0;
    m->have_forward = 0;
}

dd_status dd__model_alloc_activations(dd_model *m, int gfa) {
    int nt = m->logits + 1, nslots = 0;
    int *slot_of = dd__calloc((size_t)nt * 2, sizeof(int));
    size_t *slot_floats = dd__calloc((size_t)nt, sizeof(size_t));
    if (!slot_of || !slot_floats) {
        dd__free(slot_of);
        dd__free(slot_floats);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "activation layout");
    }
    if (gfa) nslots = tan_slots(m, slot_of, slot_of + nt, slot_floats);
    size_t bytes = layout_activations(m, NULL, gfa, slot_of, nslots, slot_floats);
    char *arena = dd__aligned_alloc(bytes);
    if (!arena) {
        dd__free(slot_of);
        dd__free(slot_floats);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "activation arena of %zu bytes", bytes);
    }
    dd__free_aligned(m->act_arena);
    m->act_arena = (float *)arena;
    m->act_bytes = bytes;
    layout_activations(m, arena, gfa, slot_of, nslots, slot_floats);
    dd__free(slot_of);
    dd__free(slot_floats);
    m->gfa_ready = gfa;
    m->have_forward = 0;
    return DD_OK;
}

dd_status dd_model_build(dd_model *m, dd_node logits, int max_batch) {
    DD_RETURN_IF(!m, DD_ERR_INVALID_ARGUMENT, "dd_model_build: model is NULL");
    DD_RETURN_IF(m->built, DD_ERR_STATE, "dd_model_build: already built");
    DD_RETURN_IF(logits < 1 || logits >= m->nnodes, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_build: logits node %d does not exist (or is the input)", (int)logits);
    dd__tensor *lt = &m->nodes[logits].out;
    DD_RETURN_IF(lt->ndims != 2 || lt->c != m->num_classes, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_build: logits node %d has shape (%d, %d, %d), need (%d)", (int)logits, lt->c,
                 lt->h, lt->w, m->num_classes);
    DD_RETURN_IF(max_batch < 1 || max_batch > 65536, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_build: max_batch = %d", max_batch);
    /* A huge activation footprint is refused before allocating. */
    double total = 0;
    for (int i = 0; i <= logits; i++) total += (double)m->nodes[i].out.sample_floats;
    DD_RETURN_IF(total * max_batch * 4 * 2 > 64e9, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_build: activations would need %.1f GB", total * max_batch * 8 / 1e9);
    m->logits = logits;
    m->max_batch = max_batch;
    m->nparams = 0;
    dd__rng_seed(&m->rng, m->opts.seed); /* a retried build initialises identically */
    dd_status s = DD_OK;
    for (int i = 0; i <= logits && s == DD_OK; i++) {
        dd__node *n = &m->nodes[i];
        n->first_param = -1;
        n->nparams = 0;
        if (n->ops->declare_params) s = n->ops->declare_params(n);
    }
    size_t floats = 0;
    for (int i = 0; i < m->nparams && s == DD_OK; i++) floats += (m->params[i].count + 15) / 16 * 16;
    if (s == DD_OK) {
        m->param_arena = dd__aligned_alloc(floats * sizeof(float) + 64);
        m->grad_arena = dd__aligned_alloc(floats * sizeof(float) + 64);
        if (!m->param_arena || !m->grad_arena)
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "parameter arenas of %zu floats", floats);
    }
    size_t bfloats = 0;
    for (int i = 0; i < m->nparams && s == DD_OK; i++)
        if (!m->params[i].trainable) bfloats += m->params[i].count;
    if (s == DD_OK && bfloats) {
        m->buffer_backup = dd__malloc(bfloats * sizeof(float));
        if (!m->buffer_backup) s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "buffer backup of %zu floats", bfloats);
    }
    m->buffer_floats = bfloats;
    if (s == DD_OK) {
        m->param_floats = floats;
        size_t off = 0;
        for (int i = 0; i < m->nparams; i++) {
            dd__param *p = &m->params[i];
            p->data = m->param_arena + off;
            p->grad = p->trainable ? m->grad_arena + off : NULL;
            off += (p->count + 15) / 16 * 16;
        }
        m->grads_zero = 1;
        for (int i = 0; i <= logits; i++) {
            dd__node *n = &m->nodes[i];
            if (n->ops->init_params) n->ops->init_params(n, &m->rng);
            n->out.consumers = 0;
            int up = 0;
            for (int k = 0; k < n->nparams; k++) up |= dd__node_param(n, k)->trainable;
            for (int k = 0; k < n->ninputs; k++) up |= m->nodes[n->inputs[k]].out.upstream_params;
            n->out.upstream_params = up;
        }
        for (int i = 1; i <= logits; i++)
            for (int k = 0; k < m->nodes[i].ninputs; k++) m->nodes[m->nodes[i].inputs[k]].out.consumers++;
        s = dd__model_alloc_activations(m, m->nhooks > 0);
    }
    if (s != DD_OK) {
        dd__free_aligned(m->param_arena);
        dd__free_aligned(m->grad_arena);
        dd__free(m->buffer_backup);
        m->buffer_backup = NULL;
        m->param_arena = m->grad_arena = NULL;
        m->nparams = 0;
        m->logits = -1;
        m->max_batch = 0;
        return s;
    }
    m->built = 1;
    m->param_version++;
    return DD_OK;
}

/* ---- introspection ------------------------------------------------------ */

#define DD__CHECK_BUILT(m, fn)                                                     \
    do {                                                                           \
        DD_RETURN_IF(!(m), DD_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);      \
        DD_RETURN_IF(!(m)->built, DD_ERR_STATE, "%s: the model is not built", fn); \
    } while (0)

dd_status dd_model_num_nodes(const dd_model *m, int *count) {
    DD_RETURN_IF(!m || !count, DD_ERR_INVALID_ARGUMENT, "dd_model_num_nodes: NULL argument");
    *count = m->nnodes;
    return DD_OK;
}

dd_status dd_model_node_info_sized(const dd_model *m, dd_node node, dd_node_info *info, size_t size) {
    DD_RETURN_IF(!m || !info, DD_ERR_INVALID_ARGUMENT, "dd_model_node_info: NULL argument");
    DD_FORWARD(dd__struct_size_check(size, DD_NODE_INFO_SIZE_V1, sizeof *info, "dd_model_node_info",
                                     "dd_node_info"));
    DD_RETURN_IF(node < 0 || node >= m->nnodes, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_node_info: node %d does not exist", (int)node);
    const dd__node *n = &m->nodes[node];
    dd_node_info full;
    memset(&full, 0, sizeof full);
    full.type = n->ops->type;
    full.name = n->name;
    full.num_inputs = n->ninputs;
    for (int i = 0; i < n->ninputs; i++) full.inputs[i] = n->inputs[i];
    full.ndims = n->out.ndims;
    full.channels = n->out.c;
    full.height = n->out.h;
    full.width = n->out.w;
    if (n->ops->info) n->ops->info(n, &full);
    dd__struct_fill(info, size, &full, sizeof full);
    return DD_OK;
}

dd_status dd_model_logits_node(const dd_model *m, dd_node *node) {
    DD_RETURN_IF(!node, DD_ERR_INVALID_ARGUMENT, "dd_model_logits_node: node is NULL");
    DD__CHECK_BUILT(m, "dd_model_logits_node");
    *node = m->logits;
    return DD_OK;
}

dd_status dd_model_num_classes(const dd_model *m, int *k) {
    DD_RETURN_IF(!m || !k, DD_ERR_INVALID_ARGUMENT, "dd_model_num_classes: NULL argument");
    *k = m->num_classes;
    return DD_OK;
}

dd_status dd_model_input_shape(const dd_model *m, int *c, int *h, int *w) {
    DD_RETURN_IF(!m || !c || !h || !w, DD_ERR_INVALID_ARGUMENT, "dd_model_input_shape: NULL argument");
    *c = m->in_c;
    *h = m->in_h;
    *w = m->in_w;
    return DD_OK;
}

dd_status dd_model_max_batch(const dd_model *m, int *max_batch) {
    DD_RETURN_IF(!max_batch, DD_ERR_INVALID_ARGUMENT, "dd_model_max_batch: NULL argument");
    DD__CHECK_BUILT(m, "dd_model_max_batch");
    *max_batch = m->max_batch;
    return DD_OK;
}

dd_status dd_model_num_params(const dd_model *m, int *count) {
    DD_RETURN_IF(!count, DD_ERR_INVALID_ARGUMENT, "dd_model_num_params: count is NULL");
    DD__CHECK_BUILT(m, "dd_model_num_params");
    *count = m->nparams;
    return DD_OK;
}

static dd_status check_param(const dd_model *m, int index, const void *buf, size_t count, const char *fn) {
    DD_RETURN_IF(!buf, DD_ERR_INVALID_ARGUMENT, "%s: buffer is NULL", fn);
    DD__CHECK_BUILT(m, fn);
    DD_RETURN_IF(index < 0 || index >= m->nparams, DD_ERR_INVALID_ARGUMENT,
                 "%s: parameter %d does not exist (model has %d)", fn, index, m->nparams);
    DD_RETURN_IF(count != m->params[index].count, DD_ERR_INVALID_ARGUMENT,
                 "%s: '%s' has %zu values, count is %zu", fn, m->params[index].name, m->params[index].count,
                 count);
    return DD_OK;
}

dd_status dd_model_param_info_sized(const dd_model *m, int index, dd_param_info *info, size_t size) {
    DD_RETURN_IF(!info, DD_ERR_INVALID_ARGUMENT, "dd_model_param_info: info is NULL");
    DD_FORWARD(dd__struct_size_check(size, DD_PARAM_INFO_SIZE_V1, sizeof *info, "dd_model_param_info",
                                     "dd_param_info"));
    DD__CHECK_BUILT(m, "dd_model_param_info");
    DD_RETURN_IF(index < 0 || index >= m->nparams, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_param_info: parameter %d does not exist (model has %d)", index, m->nparams);
    const dd__param *p = &m->params[index];
    dd_param_info full;
    memset(&full, 0, sizeof full);
    full.name = p->name;
    full.node = p->node;
    full.ndims = p->ndims;
    for (int i = 0; i < p->ndims; i++) full.dims[i] = p->dims[i];
    full.count = p->count;
    full.trainable = p->trainable;
    dd__struct_fill(info, size, &full, sizeof full);
    return DD_OK;
}

dd_status dd_model_param_read(const dd_model *m, int index, float *dst, size_t count) {
    DD_FORWARD(check_param(m, index, dst, count, "dd_model_param_read"));
    memcpy(dst, m->params[index].data, count * sizeof(float));
    return DD_OK;
}

dd_status dd_model_param_write(dd_model *m, int index, const float *src, size_t count) {
    DD_FORWARD(check_param(m, index, src, count, "dd_model_param_write"));
    DD_RETURN_IF(!dd__all_finite(src, count, 1), DD_ERR_NUMERIC,
                 "dd_model_param_write: '%s': values are not all finite", m->params[index].name);
    memcpy(m->params[index].data, src, count * sizeof(float));
    dd__model_params_changed(m);
    return DD_OK;
}

dd_status dd_model_grad_read(const dd_model *m, int index, float *dst, size_t count) {
    DD_FORWARD(check_param(m, index, dst, count, "dd_model_grad_read"));
    const dd__param *p = &m->params[index];
    if (p->grad)
        memcpy(dst, p->grad, count * sizeof(float));
    else
        memset(dst, 0, count * sizeof(float));
    return DD_OK;
}

dd_status dd_model_grad_buffer(dd_model *m, float **grads, size_t *count) {
    DD_RETURN_IF(!grads || !count, DD_ERR_INVALID_ARGUMENT, "dd_model_grad_buffer: NULL argument");
    DD__CHECK_BUILT(m, "dd_model_grad_buffer");
    *grads = m->grad_arena;
    *count = m->param_floats;
    m->grads_zero = 0; /* the caller may write: no pass may assume zeros now */
    return DD_OK;
}

dd_status dd_model_param_offset(const dd_model *m, int index, size_t *offset) {
    DD_RETURN_IF(!offset, DD_ERR_INVALID_ARGUMENT, "dd_model_param_offset: offset is NULL");
    DD__CHECK_BUILT(m, "dd_model_param_offset");
    DD_RETURN_IF(index < 0 || index >= m->nparams, DD_ERR_INVALID_ARGUMENT,
                 "dd_model_param_offset: parameter %d does not exist (%d parameters)", index, m->nparams);
    *offset = (size_t)(m->params[index].data - m->param_arena);
    return DD_OK;
}

dd_status dd_model_memory_size(const dd_model *m, size_t *bytes) {
    DD_RETURN_IF(!bytes, DD_ERR_INVALID_ARGUMENT, "dd_model_memory_size: bytes is NULL");
    DD__CHECK_BUILT(m, "dd_model_memory_size");
    size_t act = m->act_arena ? m->act_bytes : 0;
    *bytes = 2 * m->param_floats * sizeof(float) + act + m->ctx.scratchpad_bytes;
    return DD_OK;
}

dd_status dd_model_primitive_seconds(dd_model *m, double *seconds, int reset) {
    DD_RETURN_IF(!m || !seconds, DD_ERR_INVALID_ARGUMENT, "dd_model_primitive_seconds: NULL argument");
    *seconds = m->ctx.prim_seconds;
    if (reset) m->ctx.prim_seconds = 0;
    return DD_OK;
}

dd_status dd_model_zero_grad(dd_model *m) {
    DD__CHECK_BUILT(m, "dd_model_zero_grad");
    memset(m->grad_arena, 0, m->param_floats * sizeof(float));
    m->grads_zero = 1;
    return DD_OK;
}
