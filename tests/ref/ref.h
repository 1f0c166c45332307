/* tests/ref/ref.h -- plain double-precision reference of a dd_model graph.
 *
 * The reference is independent of the library's engine: it reads only the
 * structure (dd_model_num_nodes / dd_model_node_info) and the parameters
 * (dd_model_param_info / dd_model_param_read) of a built model through the
 * public API, copies them to double, and evaluates the same network with
 * plain loops in NCHW: forward, the training loss (CE or MSE), backward
 * (dL/dY for every tensor, dL/dtheta for every trainable parameter) and the
 * GFA objective J = L + sum_t lambda_t R_t of shared/GFA.md (J only: tests
 * take central finite differences of it, see ref_fd_directional).
 *
 * Semantics mirrored (PyTorch's): maxpool excludes padding and the first
 * maximum in row-major window order wins; avgpool counts padding in the
 * divisor; batchnorm in training uses the batch mean and the biased batch
 * variance over N, H, W and updates running_var with the unbiased one;
 * flatten is C, H, W order; linear reads its input in that order.
 *
 * Functions returning int give 0 on success and -1 on failure (with a
 * message in ref_error()). Not thread-safe; tests only.
 */
#ifndef DD_TESTS_REF_H
#define DD_TESTS_REF_H

#include <stddef.h>
#include <stdint.h>
#include <deepdefense/model.h>

typedef struct ref_model ref_model;

/* GFA r-function modes (same numbering as gfa.h: SIN2 default). */
enum { REF_GFA_SIN2 = 0, REF_GFA_TANGENT = 1, REF_GFA_COS = 2 };

/* GFA hooks for ref_objective: hook t is on tensor node[t] with lambda[t]. */
#define REF_MAX_HOOKS 64
typedef struct ref_hooks {
    int count;
    int mode; /* REF_GFA_SIN2 or REF_GFA_TANGENT */
    dd_node node[REF_MAX_HOOKS];
    double lambda[REF_MAX_HOOKS];
} ref_hooks;

/* Last failure message (static buffer). */
const char *ref_error(void);

/* Builds the reference of a built model: structure, max batch, and a double
 * copy of every parameter and batch-norm buffer. */
int ref_model_create(ref_model **out, const dd_model *m);
void ref_model_destroy(ref_model *r);
/* Re-reads every parameter and buffer from m (same structure). */
int ref_model_load_params(ref_model *r, const dd_model *m);

/* Structure. */
int ref_num_nodes(const ref_model *r);
int ref_num_classes(const ref_model *r);
int ref_max_batch(const ref_model *r);
/* Floats per sample of tensor `node` (C*H*W). */
size_t ref_node_size(const ref_model *r, dd_node node);
dd_node_type ref_node_type(const ref_model *r, dd_node node);

/* Parameters, indexed as in the library (dd_model_param_info). */
int ref_num_params(const ref_model *r);
size_t ref_param_count(const ref_model *r, int index);
int ref_param_trainable(const ref_model *r, int index);
double *ref_param(ref_model *r, int index);                  /* mutable (FD, tests) */
const double *ref_param_grad(const ref_model *r, int index); /* after ref_backward */
/* Total floats of all trainable parameters (the FD direction's length). */
size_t ref_trainable_count(const ref_model *r);

/* Forward of n samples x: (n, C, H, W) NCHW. train = 1: batch-norm batch
 * statistics (and, if update_running, the running ones are updated with
 * the node's momentum, unbiased variance); train = 0: running statistics. */
int ref_forward(ref_model *r, const double *x, int n, int train, int update_running);
int ref_forward_f(ref_model *r, const float *x, int n, int train, int update_running);
/* Value of tensor `node` of the last forward: (n, size) NCHW per sample. */
const double *ref_node_value(const ref_model *r, dd_node node);
/* Logits of the last forward: (n, K). */
const double *ref_logits(const ref_model *r);
/* The training loss of the last forward (the library model's, read by
 * ref_model_create: mean softmax cross-entropy, or the MSE of the softmax
 * probabilities against one-hot over n*K entries); dlogits (optional, n*K)
 * receives dL/dlogits (CE: (softmax - onehot) / n; MSE: by the chain rule
 * through the softmax Jacobian, entry by entry; ref_model_create refuses
 * MSE with more than 4096 classes). *correct (optional) counts
 * argmax == label (first maximum wins). Labels must be in [0, K). */
double ref_loss(const ref_model *r, const int32_t *labels, double *dlogits, int *correct);
/* Backward of the last forward from dlogits (n, K): every tensor's dL/dY and
 * every trainable parameter's gradient (overwritten, not accumulated). */
int ref_backward(ref_model *r, const double *dlogits);
/* ref_backward with extra seeds: inject[i] (NULL or (n, size of node i))
 * is added to tensor i's gradient; inject itself may be NULL. */
int ref_backward_inject(ref_model *r, const double *dlogits, const double *const *inject);
/* dL/dY of tensor `node` after ref_backward: (n, size). Node 0 is dL/dx. */
const double *ref_node_grad(const ref_model *r, dd_node node);

/* J = L + sum_t lambda_t R_t of shared/GFA.md on (x, labels): forward
 * (running statistics untouched), loss, backward, then per hook
 * g_i = n * G_t[i], h_i = Y_t[i], c_i = <g,h>/sqrt((|g|^2+eps)(|h|^2+eps)),
 * eps = 1e-12, r_i = 1 - c_i^2 (SIN2), 1 - c_i (COS) or
 * |g - <g,h>/(|h|^2+eps) h|^2 (TANGENT), R_t = mean_i r_i. hooks may be NULL (J = L). reg and align
 * (optional, hooks->count entries) receive R_t and mean_i |c_i|; *loss
 * (optional) receives L. Returns NaN on failure. */
double ref_objective(ref_model *r, const double *x, int n, const int32_t *labels, int train,
                     const ref_hooks *hooks, double *loss, double *reg, double *align);

/* The regulariser's part of the gradient, sum_t lambda_t dR_t/dtheta, of
 * J on (x, labels) (train as in ref_objective) by a route independent of
 * the library's four passes (see ref.c): GFA.md's partials Gbar, Ybar in
 * double, d/dtheta <Gbar, G> as a central difference of two backward passes
 * whose forwards add +-e Gbar_t at the hooks with the activation pattern
 * held fixed, plus a backward seeded with Ybar. out: ref_trainable_count
 * entries (trainable parameters in index order, as ref_lib_grads). Leaves
 * the last forward at theta. Returns 0 or -1. */
int ref_reg_grad(ref_model *r, const double *x, int n, const int32_t *labels, int train,
                 const ref_hooks *hooks, double *out);

/* Activation pattern of the last forward: the sign of every ReLU input
 * and the argmax of every max-pool output. */
size_t ref_pattern_size(const ref_model *r);
void ref_pattern(const ref_model *r, int32_t *out);

/* Central finite difference of J along d (ref_trainable_count entries, the
 * trainable parameters concatenated in index order): uses the largest h in
 * {1e-4, 1e-5, 1e-6, 1e-7} at which the activation pattern at theta,
 * theta + h d and theta - h d is the same (GFA.md). Parameters are restored
 * exactly. *deriv = (J(+h) - J(-h)) / (2h); *h_used (optional) the h taken.
 * Returns 0, 1 if every h flipped a unit (*deriv from h = 1e-7 then), -1 on
 * failure. */
int ref_fd_directional(ref_model *r, const double *x, int n, const int32_t *labels, int train,
                       const ref_hooks *hooks, const double *d, double *deriv, double *h_used);

/* ---- small helpers for tests ---------------------------------------------- */

/* Deterministic RNG (splitmix64). */
typedef struct ref_rng {
    uint64_t s;
} ref_rng;
void ref_rng_seed(ref_rng *g, uint64_t seed);
double ref_rng_uniform(ref_rng *g); /* [0, 1) */
double ref_rng_normal(ref_rng *g);  /* N(0, 1) */
void ref_fill_uniform_f(ref_rng *g, float *a, size_t n, double lo, double hi);
void ref_fill_normal_f(ref_rng *g, float *a, size_t n, double scale);

/* max_i |a_i - b_i| / max(max_i |b_i|, floor): error relative to the
 * reference's scale (floor guards an all-zero reference). */
double ref_rel_err_f(const float *a, const double *b, size_t n, double floor);
double ref_max_abs(const double *b, size_t n);
void ref_to_double(const float *a, double *b, size_t n);

/* ---- comparing a library model with the reference (compare.c) ------------- */

/* Errors of one comparison, each max|lib - ref| / max|ref| over a tensor
 * (the worst tensor for grad and running). */
typedef struct ref_cmp {
    double logits; /* dd_model_forward logits */
    double loss;   /* |stats.loss - L| / max(L, 1e-3) */
    int correct_lib, correct_ref;
    double dx;              /* dd_model_input_grad */
    double grad;            /* dd_model_backward parameter gradients (worst tensor;
                               the scale is at least 1e-2 of the model's largest
                               gradient, for tensors whose exact gradient is ~0) */
    int grad_worst;         /* parameter index of that tensor */
    double running;         /* running statistics after a DD_TRAIN forward (worst) */
    int input_grad_touched; /* 1 if dd_model_input_grad changed a parameter gradient */
    char what[256];         /* failure description ("" if every call succeeded) */
} ref_cmp;

/* Runs one comparison of m against a fresh reference built from m's current
 * parameters: forward (mode) of x (n samples), running statistics (DD_TRAIN),
 * input_grad with dlogits (n*K), then zero_grad + backward with labels.
 * Returns 0, or -1 with out->what set when a library call failed. */
int ref_compare(dd_model *m, const float *x, int n, dd_mode mode, const int32_t *labels, const float *dlogits,
                ref_cmp *out);

/* Gives parameters test-friendly random values: biases and batch-norm beta
 * N(0, 0.1), gamma U(0.5, 1.5), running_mean N(0, 0.2), running_var
 * U(0.5, 2); weights are left as initialised. */
int ref_randomize_params(dd_model *m, ref_rng *g);

/* The trainable gradients of m concatenated in index order (ref_trainable_count). */
int ref_lib_grads(const dd_model *m, double *out);

#endif
