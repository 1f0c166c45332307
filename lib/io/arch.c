/* lib/io/arch.c -- a model's architecture as JSON text, and back.
 *
 * A checkpoint rebuilds its model from the file alone, so the graph is kept
 * as JSON in the safetensors metadata (key "deepdefense.arch"):
 *
 *   {"format":"deepdefense-arch","version":1,"input":[C,H,W],"num_classes":K,
 *    "max_batch":B,"logits":id,
 *    "nodes":[{"type":"input","name":"input","inputs":[]},
 *             {"type":"conv2d","name":"conv1","inputs":[0],"out_channels":64,
 *              "kernel":[3,3],"stride":[1,1],"pad":[1,1],"bias":1}, ...],
 *    "gfa":{"mode":0,"hooks":[{"tensor":t,"lambda":x}, ...]}}
 *
 * Entry i of "nodes" is node id i. Writing asks each node type for its own
 * fields (ops->describe), so the writer never switches on the type. Reading
 * is the inverse and has to: it rebuilds the graph only through the public
 * dd_model_add_* functions, so a file can build nothing a host could not.
 * The text is hostile input. Every field is checked for JSON type, integer
 * range and array length; unknown keys are refused (a field we ignored could
 * silently change the model); a node may only consume earlier nodes. Any
 * failure is DD_ERR_FORMAT naming the node index and the field. Before
 * dd_model_build() allocates, the node count and (for a checkpoint) the
 * weight bytes, against the file's data section, are bounded; the
 * activations are bounded by dd_model_build itself.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "io_internal.h"

#define ARCH_FORMAT "deepdefense-arch"
#define ARCH_VERSION 1

/* Bounds on hostile input, each far above any CNN this library targets
 * (preact-resnet18 has 70 nodes and 512 channels): they only keep a few
 * bytes of header from requesting absurd sizes or overflowing int. */
#define ARCH_MAX_NODES 65536
#define ARCH_MAX_DIM (1 << 24) /* channels, features, image size, batch */
#define ARCH_MAX_WINDOW 65535  /* kernel, stride, padding */

/* ======================================================================== */
/* Writing                                                                   */
/* ======================================================================== */

/* Appends integers to a new array; NULL on allocation failure. */
static json_t *arch_int_array(const int *v, int n) {
    json_t *a = json_array();
    if (!a) return NULL;
    for (int i = 0; i < n; i++) {
        if (json_array_append_new(a, json_integer(v[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static dd_status arch_node_json(const dd__node *node, json_t **out) {
    *out = NULL;
    json_t *o = json_object();
    if (!o) return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory");
    if (json_object_set_new(o, "type", json_string(node->ops->name)) ||
        json_object_set_new(o, "name", json_string(node->name)) ||
        json_object_set_new(o, "inputs", arch_int_array(node->inputs, node->ninputs))) {
        json_decref(o);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory (node %d)", node->id);
    }
    if (node->ops->describe) {
        dd_status s = node->ops->describe(node, o);
        if (s != DD_OK) {
            json_decref(o);
            return s;
        }
    }
    *out = o;
    return DD_OK;
}

static dd_status arch_gfa_json(const dd_model *m, json_t **out) {
    *out = NULL;
    json_t *g = json_object(), *hooks = json_array();
    int bad = !g || !hooks;
    for (int i = 0; !bad && i < m->nhooks; i++) {
        json_t *h = json_object();
        bad = !h || json_object_set_new(h, "tensor", json_integer(m->hooks[i].tensor)) ||
              json_object_set_new(h, "lambda", json_real(m->hooks[i].lambda)) || json_array_append(hooks, h);
        json_decref(h);
    }
    if (!bad)
        bad = json_object_set_new(g, "mode", json_integer(m->gfa_mode)) || json_object_set(g, "hooks", hooks);
    json_decref(hooks);
    if (bad) {
        json_decref(g);
        return DD_ERROR(DD_ERR_OUT_OF_MEMORY,
                        "architecture JSON: out of memory (or a non-finite GFA lambda)");
    }
    *out = g;
    return DD_OK;
}

dd_status dd__model_arch_json(const dd_model *m, char **json) {
    DD_CHECK_ARG(json);
    *json = NULL;
    DD_CHECK_ARG(m);
    DD_RETURN_IF(!m->built, DD_ERR_STATE, "architecture JSON: the model is not built");

    json_t *root = json_object(), *nodes = json_array(), *gfa = NULL;
    int in[3] = {m->in_c, m->in_h, m->in_w};
    dd_status s = DD_OK;
    if (!root || !nodes || json_object_set_new(root, "format", json_string(ARCH_FORMAT)) ||
        json_object_set_new(root, "version", json_integer(ARCH_VERSION)) ||
        json_object_set_new(root, "input", arch_int_array(in, 3)) ||
        json_object_set_new(root, "num_classes", json_integer(m->num_classes)) ||
        json_object_set_new(root, "max_batch", json_integer(m->max_batch)) ||
        json_object_set_new(root, "logits", json_integer(m->logits)) || json_object_set(root, "nodes", nodes))
        s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory");
    for (int i = 0; s == DD_OK && i < m->nnodes; i++) {
        json_t *o = NULL;
        s = arch_node_json(&m->nodes[i], &o);
        if (s == DD_OK && json_array_append_new(nodes, o))
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory");
    }
    if (s == DD_OK) s = arch_gfa_json(m, &gfa);
    if (s == DD_OK && json_object_set_new(root, "gfa", gfa))
        s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory");
    /* the training loss, written only when it is not the default (CE) */
    if (s == DD_OK && m->loss == DD_LOSS_MSE && json_object_set_new(root, "loss", json_string("mse")))
        s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory");

    char *text = NULL;
    if (s == DD_OK) {
        /* Compact, insertion order; reals print with 17 significant digits,
         * so every float survives the trip through double exactly. */
        const size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER;
        size_t n = json_dumpb(root, NULL, 0, flags);
        if (n == 0) {
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: cannot serialise");
        } else if (!(text = dd__malloc(n + 1))) {
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: out of memory (%zu bytes)", n);
        } else if (json_dumpb(root, text, n, flags) != n) {
            s = DD_ERROR(DD_ERR_OUT_OF_MEMORY, "architecture JSON: cannot serialise");
        } else {
            text[n] = '\0';
        }
    }
    json_decref(nodes);
    json_decref(root);
    if (s != DD_OK) {
        dd__free(text);
        return s;
    }
    *json = text;
    return DD_OK;
}

/* ======================================================================== */
/* Reading: field accessors that name what is wrong                          */
/* ======================================================================== */

/* Where the reader is, for messages: node index (-1 = top level) and type. */
typedef struct arch_at {
    int node;
    const char *type;
} arch_at;

static dd_status arch_fail(const arch_at *at, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static dd_status arch_fail(const arch_at *at, const char *field, const char *fmt, ...) {
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (at->node < 0) return DD_ERROR(DD_ERR_FORMAT, "checkpoint architecture: field \"%s\": %s", field, why);
    return DD_ERROR(DD_ERR_FORMAT, "checkpoint architecture: node %d (%s): field \"%s\": %s", at->node,
                    at->type ? at->type : "?", field, why);
}

/* Refuses keys outside `allowed` (NULL-terminated). */
static dd_status arch_check_keys(const arch_at *at, json_t *obj, const char *const *allowed) {
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = strcmp(*a, key) == 0;
        if (!ok) return arch_fail(at, key, "unknown field");
    }
    return DD_OK;
}

static dd_status arch_int_value(const arch_at *at, const char *field, json_t *v, long long lo, long long hi,
                                int *out) {
    if (!json_is_integer(v)) return arch_fail(at, field, "expected an integer");
    long long x = json_integer_value(v);
    if (x < lo || x > hi) return arch_fail(at, field, "%lld is outside [%lld, %lld]", x, lo, hi);
    *out = (int)x;
    return DD_OK;
}

static dd_status arch_int(const arch_at *at, json_t *obj, const char *field, long long lo, long long hi,
                          int *out) {
    json_t *v = json_object_get(obj, field);
    if (!v) return arch_fail(at, field, "missing");
    return arch_int_value(at, field, v, lo, hi, out);
}

/* An array of exactly n integers in [lo, hi]. */
static dd_status arch_ints(const arch_at *at, json_t *obj, const char *field, int n, long long lo,
                           long long hi, int *out) {
    json_t *a = json_object_get(obj, field);
    if (!a) return arch_fail(at, field, "missing");
    if (!json_is_array(a) || json_array_size(a) != (size_t)n)
        return arch_fail(at, field, "expected an array of %d integers", n);
    for (int i = 0; i < n; i++)
        DD_FORWARD(arch_int_value(at, field, json_array_get(a, (size_t)i), lo, hi, &out[i]));
    return DD_OK;
}

/* A finite number (integer or real) in [lo, hi]. */
static dd_status arch_num_value(const arch_at *at, const char *field, json_t *v, double lo, double hi,
                                double *out) {
    if (!json_is_number(v)) return arch_fail(at, field, "expected a number");
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi) return arch_fail(at, field, "%g is outside [%g, %g]", x, lo, hi);
    *out = x;
    return DD_OK;
}

static dd_status arch_num(const arch_at *at, json_t *obj, const char *field, double lo, double hi,
                          double *out) {
    json_t *v = json_object_get(obj, field);
    if (!v) return arch_fail(at, field, "missing");
    return arch_num_value(at, field, v, lo, hi, out);
}

/* An array of 1..ARCH_MAX_DIM floats in [lo, hi]; *out from dd__malloc. */
static dd_status arch_floats(const arch_at *at, json_t *obj, const char *field, double lo, double hi,
                             float **out, int *count) {
    *out = NULL;
    json_t *a = json_object_get(obj, field);
    if (!a) return arch_fail(at, field, "missing");
    if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > ARCH_MAX_DIM)
        return arch_fail(at, field, "expected an array of 1 to %d numbers", ARCH_MAX_DIM);
    size_t n = json_array_size(a);
    float *v = dd__malloc(n * sizeof *v);
    DD_RETURN_IF(!v, DD_ERR_OUT_OF_MEMORY, "checkpoint architecture: out of memory");
    for (size_t i = 0; i < n; i++) {
        double x = 0;
        dd_status s = arch_num_value(at, field, json_array_get(a, i), lo, hi, &x);
        if (s != DD_OK) {
            dd__free(v);
            return s;
        }
        v[i] = (float)x;
    }
    *out = v;
    *count = (int)n;
    return DD_OK;
}

/* Saturating products keep the size estimates meaningful on hostile input. */
static uint64_t arch_mul(uint64_t a, uint64_t b) {
    return (b != 0 && a > UINT64_MAX / b) ? UINT64_MAX : a * b;
}

static uint64_t arch_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* An error of a public add/build call: invalid arguments, and graphs the
 * engine cannot build (DD_ERR_UNSUPPORTED), are the file's fault
 * (DD_ERR_FORMAT, with the engine's message); anything else (out of memory,
 * backend) is passed on unchanged. */
static dd_status arch_engine_fail(dd_status s, const arch_at *at) {
    if (s != DD_ERR_INVALID_ARGUMENT && s != DD_ERR_STATE && s != DD_ERR_UNSUPPORTED) return s;
    char why[512];
    snprintf(why, sizeof why, "%s", dd_last_error());
    if (at->node < 0) return DD_ERROR(DD_ERR_FORMAT, "checkpoint architecture: %s", why);
    return DD_ERROR(DD_ERR_FORMAT, "checkpoint architecture: node %d (%s): %s", at->node, at->type, why);
}

/* ======================================================================== */
/* Reading: one function per node type                                       */
/* ======================================================================== */

typedef struct arch_reader {
    dd_model *m;
    const arch_at *at;
    json_t *obj;            /* the node's JSON object */
    const int *in;          /* its inputs, already checked to be earlier nodes */
    const char *name;       /* its name, 1..63 bytes */
    uint64_t weight_floats; /* running lower bound of the weight floats */
} arch_reader;

typedef dd_status (*arch_add_fn)(arch_reader *r, dd_node *out);

static dd_status arch_channels(arch_reader *r, dd_node node, int *c) {
    dd_node_info info;
    memset(&info, 0, sizeof info);
    dd_status s = dd_model_node_info(r->m, node, &info);
    if (s != DD_OK) return arch_engine_fail(s, r->at);
    *c = info.channels;
    return DD_OK;
}

static dd_status arch_add_normalize(arch_reader *r, dd_node *out) {
    float *mean = NULL, *std = NULL;
    int nm = 0, ns = 0;
    dd_status s = arch_floats(r->at, r->obj, "mean", -FLT_MAX, FLT_MAX, &mean, &nm);
    if (s == DD_OK) s = arch_floats(r->at, r->obj, "std", FLT_MIN, FLT_MAX, &std, &ns);
    if (s == DD_OK && nm != ns) s = arch_fail(r->at, "std", "has %d entries but \"mean\" has %d", ns, nm);
    if (s == DD_OK)
        s = arch_engine_fail(dd_model_add_normalize(r->m, r->in[0], mean, std, nm, r->name, out), r->at);
    dd__free(mean);
    dd__free(std);
    return s;
}

static dd_status arch_add_conv2d(arch_reader *r, dd_node *out) {
    dd_conv2d_options o;
    dd_conv2d_options_init(&o);
    int k[2] = {0, 0}, st[2] = {0, 0}, p[2] = {0, 0}, ic = 0;
    DD_FORWARD(arch_int(r->at, r->obj, "out_channels", 1, ARCH_MAX_DIM, &o.out_channels));
    DD_FORWARD(arch_ints(r->at, r->obj, "kernel", 2, 1, ARCH_MAX_WINDOW, k));
    DD_FORWARD(arch_ints(r->at, r->obj, "stride", 2, 1, ARCH_MAX_WINDOW, st));
    DD_FORWARD(arch_ints(r->at, r->obj, "pad", 2, 0, ARCH_MAX_WINDOW, p));
    DD_FORWARD(arch_int(r->at, r->obj, "bias", 0, 1, &o.bias));
    o.kernel_h = k[0], o.kernel_w = k[1];
    o.stride_h = st[0], o.stride_w = st[1];
    o.pad_h = p[0], o.pad_w = p[1];
    o.name = r->name;
    DD_FORWARD(arch_engine_fail(dd_model_add_conv2d(r->m, r->in[0], &o, out), r->at));
    DD_FORWARD(arch_channels(r, r->in[0], &ic));
    /* weight (OC, IC, KH, KW); the bias is not counted: a lower bound */
    uint64_t w =
        arch_mul(arch_mul((uint64_t)o.out_channels, (uint64_t)ic), arch_mul((uint64_t)k[0], (uint64_t)k[1]));
    r->weight_floats = arch_add(r->weight_floats, w);
    return DD_OK;
}

static dd_status arch_add_linear(arch_reader *r, dd_node *out) {
    int of = 0, bias = 0, in = 0;
    DD_FORWARD(arch_int(r->at, r->obj, "out_features", 1, ARCH_MAX_DIM, &of));
    DD_FORWARD(arch_int(r->at, r->obj, "bias", 0, 1, &bias));
    DD_FORWARD(arch_engine_fail(dd_model_add_linear(r->m, r->in[0], of, bias, r->name, out), r->at));
    DD_FORWARD(arch_channels(r, r->in[0], &in));
    r->weight_floats = arch_add(r->weight_floats, arch_mul((uint64_t)of, (uint64_t)in));
    return DD_OK;
}

static dd_status arch_pool_options(arch_reader *r, dd_pool_options *o) {
    int k[2] = {0, 0}, st[2] = {0, 0}, p[2] = {0, 0};
    dd_pool_options_init(o);
    DD_FORWARD(arch_ints(r->at, r->obj, "kernel", 2, 1, ARCH_MAX_WINDOW, k));
    DD_FORWARD(arch_ints(r->at, r->obj, "stride", 2, 1, ARCH_MAX_WINDOW, st));
    DD_FORWARD(arch_ints(r->at, r->obj, "pad", 2, 0, ARCH_MAX_WINDOW, p));
    o->kernel_h = k[0], o->kernel_w = k[1];
    o->stride_h = st[0], o->stride_w = st[1];
    o->pad_h = p[0], o->pad_w = p[1];
    o->name = r->name;
    return DD_OK;
}

static dd_status arch_add_maxpool(arch_reader *r, dd_node *out) {
    dd_pool_options o;
    DD_FORWARD(arch_pool_options(r, &o));
    return arch_engine_fail(dd_model_add_maxpool(r->m, r->in[0], &o, out), r->at);
}

static dd_status arch_add_avgpool(arch_reader *r, dd_node *out) {
    dd_pool_options o;
    DD_FORWARD(arch_pool_options(r, &o));
    return arch_engine_fail(dd_model_add_avgpool(r->m, r->in[0], &o, out), r->at);
}

static dd_status arch_add_batchnorm(arch_reader *r, dd_node *out) {
    dd_batchnorm_options o;
    double eps = 0, mom = 0;
    dd_batchnorm_options_init(&o);
    /* eps > 0 (a zero eps divides by zero on a constant channel) */
    DD_FORWARD(arch_num(r->at, r->obj, "eps", FLT_MIN, FLT_MAX, &eps));
    DD_FORWARD(arch_num(r->at, r->obj, "momentum", 0.0, 1.0, &mom));
    o.eps = (float)eps;
    o.momentum = (float)mom;
    o.name = r->name;
    return arch_engine_fail(dd_model_add_batchnorm(r->m, r->in[0], &o, out), r->at);
}

static dd_status arch_add_relu(arch_reader *r, dd_node *out) {
    return arch_engine_fail(dd_model_add_relu(r->m, r->in[0], r->name, out), r->at);
}

static dd_status arch_add_gavgpool(arch_reader *r, dd_node *out) {
    return arch_engine_fail(dd_model_add_global_avgpool(r->m, r->in[0], r->name, out), r->at);
}

static dd_status arch_add_add(arch_reader *r, dd_node *out) {
    return arch_engine_fail(dd_model_add_add(r->m, r->in[0], r->in[1], r->name, out), r->at);
}

static dd_status arch_add_flatten(arch_reader *r, dd_node *out) {
    return arch_engine_fail(dd_model_add_flatten(r->m, r->in[0], r->name, out), r->at);
}

#define ARCH_COMMON "type", "name", "inputs"
static const char *const arch_keys_plain[] = {ARCH_COMMON, NULL};
static const char *const arch_keys_normalize[] = {ARCH_COMMON, "mean", "std", NULL};
static const char *const arch_keys_conv2d[] = {ARCH_COMMON, "out_channels", "kernel", "stride",
                                               "pad",       "bias",         NULL};
static const char *const arch_keys_linear[] = {ARCH_COMMON, "out_features", "bias", NULL};
static const char *const arch_keys_pool[] = {ARCH_COMMON, "kernel", "stride", "pad", NULL};
static const char *const arch_keys_batchnorm[] = {ARCH_COMMON, "eps", "momentum", NULL};

static const struct arch_type {
    const char *type;
    int ninputs;
    const char *const *keys;
    arch_add_fn add;
} arch_types[] = {
    {"normalize", 1, arch_keys_normalize, arch_add_normalize},
    {"conv2d", 1, arch_keys_conv2d, arch_add_conv2d},
    {"linear", 1, arch_keys_linear, arch_add_linear},
    {"relu", 1, arch_keys_plain, arch_add_relu},
    {"maxpool", 1, arch_keys_pool, arch_add_maxpool},
    {"avgpool", 1, arch_keys_pool, arch_add_avgpool},
    {"global_avgpool", 1, arch_keys_plain, arch_add_gavgpool},
    {"batchnorm", 1, arch_keys_batchnorm, arch_add_batchnorm},
    {"add", 2, arch_keys_plain, arch_add_add},
    {"flatten", 1, arch_keys_plain, arch_add_flatten},
};

/* ======================================================================== */
/* Reading: the whole graph                                                  */
/* ======================================================================== */

/* Type, name and inputs of node i; the type must be known (or "input" for
 * node 0 only). */
static dd_status arch_node_head(arch_at *at, json_t *o, int i, const struct arch_type **type,
                                const char **name, int in[2]) {
    *type = NULL;
    if (!json_is_object(o)) return arch_fail(at, "nodes", "entry %d is not an object", i);
    json_t *t = json_object_get(o, "type");
    if (!t) return arch_fail(at, "type", "missing");
    if (!json_is_string(t)) return arch_fail(at, "type", "expected a string");
    const char *ts = json_string_value(t);
    int ninputs = 0;
    if (i == 0) {
        if (strcmp(ts, "input") != 0)
            return arch_fail(at, "type", "node 0 must be \"input\", not \"%.40s\"", ts);
        at->type = "input";
        DD_FORWARD(arch_check_keys(at, o, arch_keys_plain));
    } else {
        for (size_t k = 0; k < sizeof arch_types / sizeof arch_types[0] && !*type; k++)
            if (strcmp(ts, arch_types[k].type) == 0) *type = &arch_types[k];
        if (!*type) return arch_fail(at, "type", "unknown node type \"%.40s\"", ts);
        at->type = (*type)->type;
        ninputs = (*type)->ninputs;
        DD_FORWARD(arch_check_keys(at, o, (*type)->keys));
    }

    json_t *nm = json_object_get(o, "name");
    if (!nm) return arch_fail(at, "name", "missing");
    if (!json_is_string(nm) || json_string_length(nm) < 1 || json_string_length(nm) > 63)
        return arch_fail(at, "name", "expected a string of 1 to 63 bytes");
    *name = json_string_value(nm);

    /* Inputs must be earlier nodes: creation order is the topological order. */
    DD_FORWARD(arch_ints(at, o, "inputs", ninputs, 0, i - 1, in));
    return DD_OK;
}

static dd_status arch_gfa(const arch_at *top, json_t *root, int ntensors, int *mode, int *nhooks,
                          dd__hook *hooks) {
    *mode = 0;
    *nhooks = 0;
    json_t *g = json_object_get(root, "gfa");
    if (!g) return DD_OK; /* optional: absent means no hooks */
    if (!json_is_object(g)) return arch_fail(top, "gfa", "expected an object");
    static const char *const keys[] = {"mode", "hooks", NULL};
    const arch_at *at = top;
    DD_FORWARD(arch_check_keys(at, g, keys));
    /* the modes of gfa.h: 0 = SIN2, 1 = TANGENT, 2 = COS */
    DD_FORWARD(arch_int(at, g, "mode", 0, 2, mode));
    json_t *a = json_object_get(g, "hooks");
    if (!a) return arch_fail(at, "hooks", "missing");
    if (!json_is_array(a) || json_array_size(a) > DD_MAX_HOOKS)
        return arch_fail(at, "hooks", "expected an array of at most %d hooks", DD_MAX_HOOKS);
    static const char *const hkeys[] = {"tensor", "lambda", NULL};
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *h = json_array_get(a, i);
        if (!json_is_object(h)) return arch_fail(at, "hooks", "entry %zu is not an object", i);
        DD_FORWARD(arch_check_keys(at, h, hkeys));
        char ft[48], fl[48];
        snprintf(ft, sizeof ft, "gfa.hooks[%zu].tensor", i);
        snprintf(fl, sizeof fl, "gfa.hooks[%zu].lambda", i);
        json_t *tv = json_object_get(h, "tensor"), *lv = json_object_get(h, "lambda");
        if (!tv || !lv) return arch_fail(at, tv ? fl : ft, "missing");
        DD_FORWARD(arch_int_value(at, ft, tv, 0, ntensors - 1, &hooks[i].tensor));
        DD_FORWARD(arch_num_value(at, fl, lv, 0.0, FLT_MAX, &hooks[i].lambda));
        for (size_t j = 0; j < i; j++)
            if (hooks[j].tensor == hooks[i].tensor)
                return arch_fail(at, "hooks", "tensor %d is hooked twice", hooks[i].tensor);
    }
    *nhooks = (int)json_array_size(a);
    return DD_OK;
}

static dd_status arch_build(json_t *root, const dd_model_options *opts, int max_batch,
                            uint64_t max_weight_bytes, dd_model **out) {
    arch_at top = {-1, NULL};
    static const char *const keys[] = {"format", "version", "input", "num_classes", "max_batch",
                                       "logits", "nodes",   "gfa",   "loss",        NULL};
    if (!json_is_object(root)) return DD_ERROR(DD_ERR_FORMAT, "checkpoint architecture: not a JSON object");
    DD_FORWARD(arch_check_keys(&top, root, keys));
    json_t *f = json_object_get(root, "format");
    if (!json_is_string(f) || strcmp(json_string_value(f), ARCH_FORMAT) != 0)
        return arch_fail(&top, "format", "expected \"%s\"", ARCH_FORMAT);
    int version = 0, in[3] = {0, 0, 0}, k = 0, saved_batch = 0, logits = 0;
    int mode = 0, nhooks = 0;
    DD_FORWARD(arch_int(&top, root, "version", 1, 1 << 30, &version));
    DD_RETURN_IF(version != ARCH_VERSION, DD_ERR_FORMAT,
                 "checkpoint architecture: version %d (this library reads version %d)", version,
                 ARCH_VERSION);
    DD_FORWARD(arch_ints(&top, root, "input", 3, 1, ARCH_MAX_DIM, in));
    DD_FORWARD(arch_int(&top, root, "num_classes", 1, ARCH_MAX_DIM, &k));
    DD_FORWARD(arch_int(&top, root, "max_batch", 1, ARCH_MAX_DIM, &saved_batch));
    json_t *nodes = json_object_get(root, "nodes");
    if (!nodes) return arch_fail(&top, "nodes", "missing");
    if (!json_is_array(nodes) || json_array_size(nodes) < 2 || json_array_size(nodes) > ARCH_MAX_NODES)
        return arch_fail(&top, "nodes", "expected an array of 2 to %d nodes", ARCH_MAX_NODES);
    int nnodes = (int)json_array_size(nodes);
    DD_FORWARD(arch_int(&top, root, "logits", 1, nnodes - 1, &logits));
    dd__hook hooks[DD_MAX_HOOKS];
    DD_FORWARD(arch_gfa(&top, root, logits + 1, &mode, &nhooks, hooks));
    int loss = DD_LOSS_CE;
    json_t *lv = json_object_get(root, "loss");
    if (lv) {
        const char *ls = json_is_string(lv) ? json_string_value(lv) : "";
        if (strcmp(ls, "mse") == 0)
            loss = DD_LOSS_MSE;
        else if (strcmp(ls, "ce") != 0)
            return arch_fail(&top, "loss", "expected \"ce\" or \"mse\"");
    }

    dd_model *m = NULL;
    dd_status s = dd_model_create(&m, in[0], in[1], in[2], k, opts);
    if (s == DD_ERR_INVALID_ARGUMENT && opts) {
        /* the caller's options, or the file's sizes? Options that fail on a
         * 1x1x1 model are the caller's: keep that status and message. */
        char why[512];
        snprintf(why, sizeof why, "%s", dd_last_error());
        dd_model *probe = NULL;
        dd_status ps = dd_model_create(&probe, 1, 1, 1, 2, opts);
        dd_model_destroy(probe);
        if (ps == DD_ERR_INVALID_ARGUMENT) return ps;
        s = DD_ERROR(DD_ERR_INVALID_ARGUMENT, "%s", why);
    }
    DD_FORWARD(arch_engine_fail(s, &top));
    *out = m; /* the caller destroys it on failure */

    arch_reader r = {m, NULL, NULL, NULL, NULL, 0};
    for (int i = 0; i < nnodes; i++) {
        arch_at at = {i, NULL};
        const struct arch_type *type = NULL;
        const char *name = NULL;
        int inputs[2] = {0, 0};
        json_t *o = json_array_get(nodes, (size_t)i);
        DD_FORWARD(arch_node_head(&at, o, i, &type, &name, inputs));
        if (i == 0) {
            /* node 0 exists already; only its label is restored */
            snprintf(m->nodes[0].name, sizeof m->nodes[0].name, "%s", name);
            continue;
        }
        r.at = &at;
        r.obj = o;
        r.in = inputs;
        r.name = name;
        dd_node id = -1;
        DD_FORWARD(type->add(&r, &id));
        DD_RETURN_IF(id != i, DD_ERR_FORMAT, "checkpoint architecture: node %d (%s) was created as node %d",
                     i, type->type, (int)id);
    }

    uint64_t weight_bytes = arch_mul(r.weight_floats, sizeof(float));
    DD_RETURN_IF(weight_bytes > max_weight_bytes, DD_ERR_FORMAT,
                 "checkpoint architecture: the graph needs at least %llu bytes of weights but "
                 "the file holds %llu bytes of tensor data",
                 (unsigned long long)weight_bytes, (unsigned long long)max_weight_bytes);
    int batch = max_batch > 0 ? max_batch : saved_batch;
    /* GFA hooks, kept as lib/gfa keeps them; set before the build so that
     * dd_model_build lays out the GFA buffers with the activations. */
    m->gfa_mode = mode;
    m->loss = loss;
    m->nhooks = nhooks;
    for (int i = 0; i < nhooks; i++) m->hooks[i] = hooks[i];
    return arch_engine_fail(dd_model_build(m, logits, batch), &top);
}

dd_status dd__model_from_arch_limited(const char *json, size_t len, const dd_model_options *opts,
                                      int max_batch, uint64_t max_weight_bytes, dd_model **out) {
    DD_CHECK_ARG(out);
    *out = NULL;
    DD_CHECK_ARG(json);
    DD_RETURN_IF(max_batch < 0, DD_ERR_INVALID_ARGUMENT, "max_batch = %d (0 = the saved one)", max_batch);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return DD_ERROR(DD_ERR_OUT_OF_MEMORY, "checkpoint architecture: out of memory");
        return DD_ERROR(DD_ERR_FORMAT, "checkpoint architecture: invalid JSON at line %d, column %d: %s",
                        jerr.line, jerr.column, jerr.text);
    }
    dd_model *m = NULL;
    dd_status s = arch_build(root, opts, max_batch, max_weight_bytes, &m);
    json_decref(root);
    if (s != DD_OK) {
        dd_model_destroy(m);
        return s;
    }
    *out = m;
    return DD_OK;
}

dd_status dd__model_from_arch(const char *json, size_t len, const dd_model_options *opts, int max_batch,
                              dd_model **out) {
    return dd__model_from_arch_limited(json, len, opts, max_batch, UINT64_MAX, out);
}
