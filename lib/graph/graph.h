/* lib/graph/graph.h -- the model graph as the library sees it (internal).
 *
 * A dd_model owns an array of nodes; node i's output is tensor i. Node 0 is
 * the input. Each node type is a const dd__node_ops table in
 * lib/nodes/<type>.c; graph code calls through the table and never
 * switches on the type.
 *
 * Tensors. Per-sample shape (C, H, W) or (C), and a layout:
 *   DD__NCHW     plain (N, C, H, W)            -- the image input
 *   DD__BLOCKED  oneDNN nChw<b>c, b = the tensor's blk: (N, ceil(C/b), H, W, b),
 *                zero padding channels. b is the model's activation block
 *                (dd__act_block(): 16 where oneDNN runs AVX-512 kernels, 8 on
 *                AVX2 machines, whose kernels are 8-blocked; a 16-blocked
 *                tensor there sends every convolution to oneDNN's ref:any)
 *   DD__NC       plain (N, C)
 * In every layout a sample is one contiguous chunk of `sample_floats`
 * floats and the batch is outermost, so a batch of n < max_batch is a prefix
 * of the buffer. Buffers (data, grad, and with GFA tan and bar) live in the
 * model's activation arena and never move after dd_model_build.
 *
 * Parameters. Master copies, gradients and optimizer state are plain
 * (PyTorch layout) in two arenas (params, grads). m->param_version is bumped
 * whenever parameters change so nodes can cache reordered weights.
 *
 * Plans. oneDNN descriptors fix the batch size, so each node keeps a plan
 * per batch size (created on first use, DD__MAX_PLANS kept, least recently
 * used evicted): node->ops->plan_create(node, ctx, &plan).
 */
#ifndef DD_LIB_GRAPH_H
#define DD_LIB_GRAPH_H

#include <dnnl.h>
#include <deepdefense/model.h>
#include "../core/core.h"

typedef enum dd__layout { DD__NC = 0, DD__NCHW = 1, DD__BLOCKED = 2 } dd__layout;

typedef struct dd__tensor {
    int ndims;   /* 2 or 4 */
    int c, h, w; /* per-sample shape; h = w = 1 when ndims == 2 */
    dd__layout layout;
    int blk;              /* DD__BLOCKED: channels per block (8 or 16); else 1 */
    size_t sample_floats; /* floats per sample, padding included */
    float *data;          /* forward value Y_t       [max_batch * sample_floats] */
    float *grad;          /* dL/dY_t (pass 2), then the second backward's adjoint (pass 4) */
    float *tan;           /* GFA tangent T_t (NULL without hooks) */
    float *bar;           /* GFA Ybar_t + Xbar_t (NULL unless hooked or needed) */
    int consumers;        /* number of node inputs reading this tensor */
    int upstream_params;  /* some node at or before this one has trainable params */
    int tan_nonzero;      /* GFA pass 3: tan holds a tangent (else it is zero) */
    int bar_nonzero;      /* GFA: bar holds Ybar/Xbar to inject in pass 4 */
} dd__tensor;

typedef struct dd__param {
    char name[96]; /* "<node>.<field>" */
    int node;
    int ndims;
    int64_t dims[4]; /* PyTorch shape */
    size_t count;
    int trainable; /* 0: batch-norm running statistic */
    int decay;     /* weight decay applies (weights, not biases/BN) */
    float *data;   /* plain, in the params arena */
    float *grad;   /* plain, in the grads arena (NULL if not trainable) */
} dd__param;

struct dd__node;
struct dd__ctx;

/* Graph-level fusion (lib/graph/fusion.c). A head node may compute, in one
 * pass, the output of a chain of followers: each follower is the sole
 * consumer of the tensor before it. The tensors inside the chain are then
 * not materialised (stale) and the followers' forwards are skipped; their
 * backwards run as usual and never read a stale tensor (ReLU takes its mask
 * from its own output), except the eval-mode batch-norm's parameter
 * gradient, for which dd__graph_backward recomputes the forward unfused. */
enum { DD__FUSE_BN = 1, DD__FUSE_ADD = 2, DD__FUSE_RELU = 4 };
typedef struct dd__fusion {
    int bn;        /* eval-mode batch norm folded into the head, or -1 */
    int add;       /* add node whose other operand is summed in, or -1 */
    int add_other; /* that operand's tensor (computed before the head), or -1 */
    int relu;      /* ReLU applied last, or -1 */
    int end;       /* node whose output tensor receives the result (head's id: no fusion) */
} dd__fusion;

/* What a node type can do for the planner (lib/graph/schedule.c,
 * fusion.c) and GFA, so that graph code never tests node types:
 *  DD__CAP_WEIGHT_LAYER      convolution / linear: GFA's default hooks sit on
 *                            its input;
 *  DD__CAP_BWD_FOLDS_BN      its backward-data can take the dy of an
 *                            eval-mode batch norm after it, the slope folded
 *                            into its weights (step->fold_bn);
 *  DD__CAP_EVAL_AFFINE       in eval mode its backward is a per-channel
 *                            scale (batch norm): foldable as above;
 *  DD__CAP_MASK_FROM_OUTPUT  its backward is dy * [y > 0] (ReLU): a
 *                            neighbour may apply it (step->mask);
 *  DD__CAP_BWD_MASKS_INPUT   its backward can apply the mask of a
 *                            DD__CAP_MASK_FROM_OUTPUT node before it, read
 *                            from its own output (max pool);
 *  DD__CAP_BWD_MASKS_OUTPUT  its backward can apply the mask of a
 *                            DD__CAP_MASK_FROM_OUTPUT node after it, read
 *                            from that node's output (add);
 *  DD__CAP_XBAR              its GFA second-order term has a part in x
 *                            (training-mode batch norm): its input tensor
 *                            gets a bar buffer. */
enum {
    DD__CAP_WEIGHT_LAYER = 1,
    DD__CAP_BWD_FOLDS_BN = 2,
    DD__CAP_EVAL_AFFINE = 4,
    DD__CAP_MASK_FROM_OUTPUT = 8,
    DD__CAP_BWD_MASKS_INPUT = 16,
    DD__CAP_BWD_MASKS_OUTPUT = 32,
    DD__CAP_XBAR = 64
};

/* One node's part in one backward pass, as the planner (schedule.c) chose
 * it; ops->backward reads the fields that concern it. */
typedef enum dd__bvariant {
    DD__BV_NONE = 0,     /* its output's gradient is zero or unused: nothing runs */
    DD__BV_PLAIN,        /* backward of its own output's gradient */
    DD__BV_GIVEN,        /* done by a neighbour (partner): nothing runs here */
    DD__BV_MASKS_INPUT,  /* also applies the ReLU before it (partner), writing that ReLU's dx */
    DD__BV_MASKS_OUTPUT, /* runs on the ReLU after it (partner): its dy and mask */
    DD__BV_FOLDS_BN      /* runs on the eval batch norm after it (partner): its dy, slope folded */
} dd__bvariant;

typedef struct dd__bstep {
    int node;
    dd__bvariant variant;
    int partner;                    /* the ReLU or batch norm of the variant, or -1 */
    int dy_tensor;                  /* tensor whose gradient is this step's dy */
    int dx_tensor[2];               /* tensor receiving input k's gradient (-1: not needed) */
    int dx_add[2];                  /* 1: written to scratch, then added (another consumer wrote first) */
    int consumers_wrote;            /* a consumer wrote this node's output gradient (before any inject) */
    int seeded;                     /* GFA pass 4: inject adds Ybar / Xbar into that gradient first */
    int param_grad;                 /* accumulate parameter gradients */
    int defer_wgrad;                /* GFA pass 2: a weight layer leaves its weight gradient for pass 4 */
    float *merge_gy;                /* GFA pass 4: a weight layer adds dy into this G_y and runs
                                * backward-weights once on the sum (it is linear in dy) */
    const float *mask;              /* DD__BV_MASKS_*: dy counts where mask > 0 */
    const struct dd__node *fold_bn; /* DD__BV_FOLDS_BN: the batch norm */
} dd__bstep;

/* A backward pass as the planner sees it (schedule.c). */
typedef enum dd__pass_kind {
    DD__PASS_BACKWARD = 0, /* dL/dtheta (dd_model_backward without hooks, _backward_logits) */
    DD__PASS_INPUT_GRAD,   /* dL/dx only (dd_model_input_grad, attacks) */
    DD__PASS_GFA2,         /* GFA pass 2: G_t at every hook too; weight gradients deferred */
    DD__PASS_GFA4,         /* GFA pass 4: adjoints in the tangent slots, Ybar + Xbar injected;
                            * no backward fusion (a fused step writes one node past a
                            * tensor's slot interval) */
    DD__NPASSES
} dd__pass_kind;

struct dd_model;
typedef struct dd__bpass {
    dd__pass_kind kind;
    /* GFA pass 4: tensors whose adjoint inject() writes (Ybar, Xbar; logits+1
     * entries), and the callback, called for every tensor i from the logits
     * down, once all of i's consumers have run; written says whether they
     * left a value (else inject overwrites). */
    const unsigned char *seeded;
    void (*inject)(struct dd_model *m, int tensor, int written, void *arg);
    void *arg;
} dd__bpass;

/* The plan of one backward pass: steps[k] for node logits - k (every node
 * from the logits down to 1, DD__BV_NONE included), per tensor whether its
 * gradient is needed and whether the pass leaves one, and the needed
 * tensors no step reaches (zero-filled at the end). */
typedef struct dd__bsched {
    int nsteps, nzero;
    dd__bstep *steps;
    unsigned char *need, *written;
    int *zero;
} dd__bsched;

/* One node's part in GFA's tangent pass (pass 3, lib/gfa/gfa.c). */
typedef struct dd__tstep {
    int node;
    unsigned char jvp;          /* T_y = JVP(T_x) ran (else T_y is zero or only Gbar) */
    unsigned char gbar;         /* y is hooked: Gbar_y added */
    unsigned char second_order; /* second-order term ran */
    unsigned char xbar;         /* it wrote Xbar into its input's bar */
} dd__tstep;

/* The per-node-type table. Slots marked optional may be NULL. All tensor
 * pointers are full buffers of the tensors' layouts for ctx->n samples. */
typedef struct dd__node_ops {
    dd_node_type type;
    const char *name; /* "conv2d", as in checkpoint metadata */
    /* Declare parameters (dd__node_add_param) after the node's output shape
     * is known; called by dd_model_build before the arenas exist. optional */
    dd_status (*declare_params)(struct dd__node *n);
    /* Initialise parameters from the model RNG (arenas exist). optional */
    void (*init_params)(struct dd__node *n, dd__rng *rng);
    /* Create the plan for batch size ctx->n; *plan owned by the node type. optional */
    dd_status (*plan_create)(struct dd__node *n, struct dd__ctx *ctx, void **plan);
    void (*plan_destroy)(void *plan);
    /* y = f(x). ctx->train selects training behaviour. */
    dd_status (*forward)(struct dd__node *n, void *plan, struct dd__ctx *ctx, const float *const *x,
                         float *y);
    /* Given dy: dx[i] = (dy/dx_i)^T dy for each i with dx[i] != NULL
     * (overwritten), and, if st->param_grad, dL/dtheta added into the
     * params' grad arrays; st's variant fields as in dd__bstep. */
    dd_status (*backward)(struct dd__node *n, void *plan, struct dd__ctx *ctx, const dd__bstep *st,
                          const float *dy, float *const *dx);
    /* GFA slot 1: ty = J_x f . tx (linearised forward, no bias). optional:
     * NULL means the node type does not support GFA (DD_ERR_UNSUPPORTED). */
    dd_status (*jvp)(struct dd__node *n, void *plan, struct dd__ctx *ctx, const float *const *tx, float *ty);
    /* GFA slot 2: second-order terms of <tx, backward(gy)>: adds
     * d/dtheta into the params' grads and d/dx into xbar[i] where the
     * backward depends on x (xbar[i] may be NULL: not wanted); overwrites
     * xbar instead of adding when xbar_fresh. Returns in *xbar_written
     * whether it wrote xbar. optional: NULL means no second-order term. */
    dd_status (*second_order)(struct dd__node *n, void *plan, struct dd__ctx *ctx, const float *const *tx,
                              const float *gy, float *const *xbar, int xbar_fresh, int *xbar_written);
    /* Followers the node type can absorb (DD__FUSE_*), for eval [0] and
     * training [1] passes. A head's forward is called with ctx->fuse set and
     * y the end tensor's buffer; it returns DD_ERR_UNSUPPORTED (writing
     * nothing) if oneDNN has no kernel for that fusion, and the chain then
     * runs node by node from then on. */
    unsigned fuse_caps[2];
    /* The link this node type can be in another head's chain (DD__FUSE_BN,
     * _ADD or _RELU), or 0. */
    unsigned fuse_as;
    /* DD__CAP_* */
    unsigned caps;
    /* Adds the node's configuration to a JSON object (jansson json_t *). */
    dd_status (*describe)(const struct dd__node *n, void *json_object);
    /* Fills the type-specific fields of a dd_node_info. optional */
    void (*info)(const struct dd__node *n, dd_node_info *info);
    /* Frees n->state. optional: without it the graph frees n->state with
     * dd__free (a state of one allocation) */
    void (*destroy)(struct dd__node *n);
} dd__node_ops;

#define DD__MAX_PLANS 4
#define DD__MAX_SHADOWS 16  /* dd_model_predict's threads */
#define DD__PREDICT_CHUNK 8 /* dd_model_predict's images per chunk */

typedef struct dd__node {
    const dd__node_ops *ops;
    struct dd_model *model; /* owner (does not move; the node array may) */
    int id;
    char name[64];
    int ninputs;
    int inputs[2];
    dd__tensor out;
    int first_param, nparams; /* range in m->params */
    void *state;              /* node-type configuration and caches */
    int plan_batch[DD__MAX_PLANS];
    void *plan[DD__MAX_PLANS];
    uint64_t plan_used[DD__MAX_PLANS];
    dd__fusion fz;       /* this pass's fusion with this node as head */
    int absorbed;        /* this pass: computed by an earlier head */
    int fuse_refused[2]; /* oneDNN refused this node's fused kernel (eval, train) */
} dd__node;

/* Everything a pass needs. One per model (no allocation per pass). */
typedef struct dd__ctx {
    struct dd_model *m;
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    int n;            /* batch size of this pass */
    int train;        /* 1: training-mode forward (batch-norm batch stats) */
    int nthreads;     /* > 0: the model's OpenMP thread count */
    void *scratchpad; /* shared user scratchpad of all primitives */
    size_t scratchpad_bytes;
    double prim_seconds;    /* time inside dd__exec */
    int allow_ref;          /* CPU without AVX-512: reference kernels are acceptable */
    int has_alternative;    /* the caller will try another layout if this primitive is refused */
    const dd__fusion *fuse; /* forward of a fusion head: the chain (else NULL) */
} dd__ctx;

typedef struct dd__hook {
    int tensor;
    double lambda;
} dd__hook;

struct dd_model {
    dd_model_options opts;
    int in_c, in_h, in_w, num_classes;
    int act_block; /* channels per block of blocked activations (dd__act_block) */
    int nnodes, cap_nodes;
    dd__node *nodes;
    int built, max_batch, logits;
    int nparams, cap_params;
    dd__param *params;
    float *param_arena, *grad_arena, *act_arena;
    size_t param_floats, act_bytes;
    uint64_t param_version; /* bumped when parameters change */
    uint64_t stats_version; /* bumped when batch-norm running statistics change */
    uint64_t plan_clock;
    dd__ctx ctx;
    dd__rng rng;
    /* last forward */
    int last_n, last_train, have_forward;
    float *probs;              /* softmax of the logits [max_batch * K] */
    float *scratch, *scratch2; /* max tensor size each, for gradient accumulation */
    float *grad_backup;        /* copy of the gradients while a backward may fail */
    float *buffer_backup;      /* copy of the non-trainable buffers (batch-norm running
                                 * statistics) while a training forward may fail */
    size_t buffer_floats;
    int grads_zero; /* gradients known to be all zero */
    double last_loss;
    int loss;        /* dd_loss_kind of dd_model_backward */
    float *gfa_work; /* per-sample GFA reductions */
    /* GFA (lib/gfa) */
    int gfa_mode;
    int nhooks;
    dd__hook hooks[DD_MAX_HOOKS];
    int gfa_ready; /* tan/bar buffers allocated */
    /* schedules of the last passes (lib/graph/schedule.c; allocated on first use) */
    dd__bsched sched[DD__NPASSES];
    int sched_ran[DD__NPASSES];
    dd__tstep *tsteps; /* GFA pass 3, logits entries (node 1..logits) */
    int ntsteps;
    unsigned char *gfa_seeded; /* GFA pass 4: tensors inject() seeds (logits + 1) */
    /* dd_model_predict (lib/graph/predict.c): single-thread copies of this
     * model, and the parameter and statistics versions copied into them
     * (shadow_pv 0: not yet; a built model's version is >= 1) */
    struct dd_model *shadow[DD__MAX_SHADOWS];
    int nshadows;
    uint64_t shadow_pv, shadow_sv;
};

/* ---- graph helpers used by node files ------------------------------------ */
/* Input tensor i of node n. */
static inline dd__tensor *dd__in(dd__node *n, int i) { return &n->model->nodes[n->inputs[i]].out; }
DD_INTERNAL dd_status dd__node_add_param(dd__node *n, const char *field, int ndims, const int64_t *dims,
                                         int trainable, int decay);
DD_INTERNAL dd__param *dd__node_param(dd__node *n, int i);
/* Memory descriptor of tensor t for batch n in its own layout. */
DD_INTERNAL dd_status dd__tensor_md(const dd__tensor *t, int n, dnnl_memory_desc_t *md);
DD_INTERNAL dnnl_format_tag_t dd__layout_tag(const dd__tensor *t);
/* Channels per block of the blocked activation layout on this machine: 16
 * where oneDNN's effective ISA has AVX-512 (avx512_core), else 8; the
 * environment variable DD_ACT_BLOCK=8|16 overrides it (tests run the
 * AVX2 layout on AVX-512 machines with it). Read at dd_model_create. */
DD_INTERNAL int dd__act_block(void);
/* Number of floats of t for batch n. */
static inline size_t dd__tensor_floats(const dd__tensor *t, int n) { return (size_t)n * t->sample_floats; }
/* Float offset of element (c, y, x) inside one sample of t. */
static inline size_t dd__tensor_offset(const dd__tensor *t, int c, int y, int x) {
    switch (t->layout) {
    case DD__BLOCKED:
        return (((size_t)(c / t->blk) * t->h + y) * t->w + x) * (size_t)t->blk + (size_t)(c % t->blk);
    case DD__NCHW:
        return ((size_t)c * t->h + y) * t->w + x;
    default:
        return (size_t)c;
    }
}

/* ---- architecture metadata (lib/io/arch.c) --------------------------------
 * JSON text of the architecture (see lib/io/arch.c for the schema);
 * *json is allocated with dd__malloc, the caller dd__free()s it. */
DD_INTERNAL dd_status dd__model_arch_json(const dd_model *m, char **json);
/* Creates and builds a model from that JSON (max_batch 0 = the saved one). */
DD_INTERNAL dd_status dd__model_from_arch(const char *json, size_t len, const dd_model_options *opts,
                                          int max_batch, dd_model **out);
/* Marks parameters as changed (invalidates cached reordered weights). */
static inline void dd__model_params_changed(dd_model *m) { m->param_version++; }

/* Registry of node types (lib/nodes). */
extern const dd__node_ops dd__input_ops, dd__normalize_ops, dd__conv2d_ops, dd__linear_ops, dd__relu_ops,
    dd__maxpool_ops, dd__avgpool_ops, dd__gavgpool_ops, dd__batchnorm_ops, dd__add_ops, dd__flatten_ops;
DD_INTERNAL const dd__node_ops *dd__node_ops_by_name(const char *name);

#endif
