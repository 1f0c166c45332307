/* deepdefense/attack.h -- adversarial attacks and adversarial-training baselines.
 *
 * An attack is bound to one built model and perturbs batches of images so
 * that the model misclassifies them, within a budget eps in the attack's
 * norm. Every algorithm follows a reference implementation (torchattacks,
 * the official AutoAttack, foolbox, the papers' authors); each kind's
 * defaults, and where the references disagree which one we follow, are
 * documented below and in the design comment of its file in lib/attacks/.
 *
 *     dd_attack_options o;
 *     dd_attack_options_init(&o, DD_ATTACK_PGD_LINF);  // eps 8/255, 10 steps
 *     dd_attack *a;
 *     dd_attack_create(&a, model, &o);
 *     dd_attack_run(a, x, labels, n, x_adv, &res);      // x_adv: (n, C, H, W)
 *     dd_attack_destroy(a);
 *
 * Images are float32 NCHW in pixel space [box_lo, box_hi] (default [0, 1]);
 * a normalize node inside the model handles mean/std. Every x_adv stays in
 * the box and, for budgeted kinds, inside the eps ball of x in the kind's
 * norm. Attacks use only the model's forward pass in DD_EVAL mode and its
 * input vector-Jacobian product: batch-norm statistics and parameter
 * gradients are never touched. All work buffers are allocated by
 * dd_attack_create() for the model's max_batch; dd_attack_run() allocates
 * nothing itself. A run of n samples feeds the model at most four batch
 * sizes (n, and ceil(n/2), ceil(n/4), ceil(n/8), padded, for the subsets
 * still under attack), which the model creates oneDNN primitives for on
 * first use and keeps; repeated runs at one n then allocate nothing, unless
 * the host's own passes at other batch sizes evict the model's plans.
 *
 * Determinism: the attack's random generator is reseeded from opts.seed at
 * the start of every dd_attack_run(), so the same inputs, seed and model
 * thread count give bit-identical results. As in the reference code, some
 * random draws are shared by the batch (Square's windows), so results can
 * depend on the batch's composition.
 *
 * Threads: an attack is used by one thread at a time, together with its
 * model (an attack runs the model). Different attack/model pairs may run
 * concurrently. Loops use the model's thread count.
 */
#ifndef DEEPDEFENSE_ATTACK_H
#define DEEPDEFENSE_ATTACK_H

#include "model.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Opaque attack handle. */
typedef struct dd_attack dd_attack;

/** Attack kinds. The kind fixes the algorithm and the norm of its budget.
 *  Append-only: numbers are never reused. */
typedef enum dd_attack_kind {
    DD_ATTACK_FGSM = 1,             /**< one sign step of size eps (Linf) */
    DD_ATTACK_PGD_LINF = 2,         /**< Madry PGD, Linf, uniform random start */
    DD_ATTACK_PGD_L2 = 3,           /**< PGD, L2, random start of uniform radius */
    DD_ATTACK_APGD_CE_LINF = 4,     /**< Auto-PGD with cross-entropy, Linf */
    DD_ATTACK_APGD_CE_L2 = 5,       /**< Auto-PGD with cross-entropy, L2 */
    DD_ATTACK_APGD_DLR_LINF = 6,    /**< Auto-PGD with the DLR loss, Linf (K >= 3) */
    DD_ATTACK_APGD_DLR_L2 = 7,      /**< Auto-PGD with the DLR loss, L2 (K >= 3) */
    DD_ATTACK_APGD_T_LINF = 8,      /**< APGD-T: targeted DLR over the top classes, Linf (K >= 4) */
    DD_ATTACK_APGD_T_L2 = 9,        /**< APGD-T, L2 (K >= 4) */
    DD_ATTACK_DEEPFOOL_L2 = 10,     /**< DeepFool, minimal L2 (foolbox semantics) */
    DD_ATTACK_DEEPFOOL_LINF = 11,   /**< DeepFool, minimal Linf (foolbox semantics) */
    DD_ATTACK_EAD = 12,             /**< elastic-net attack (EN or L1 rule), budget in L1 */
    DD_ATTACK_CW_L2 = 13,           /**< Carlini-Wagner L2 with binary search over c */
    DD_ATTACK_SQUARE_LINF = 14,     /**< Square Attack (score-based, no gradients), Linf */
    DD_ATTACK_SQUARE_L2 = 15,       /**< Square Attack, L2 */
    DD_ATTACK_FAB_T_LINF = 16,      /**< targeted FAB (minimal norm within eps), Linf */
    DD_ATTACK_FAB_T_L2 = 17,        /**< targeted FAB, L2 */
    DD_ATTACK_AUTOATTACK_LINF = 18, /**< AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (Linf) */
    DD_ATTACK_AUTOATTACK_L2 = 19,   /**< AutoAttack standard, L2 */
    DD_ATTACK_TRADES_KL = 20        /**< TRADES' inner maximisation: PGD on KL(p(x) || p(x')), Linf */
} dd_attack_kind;

/** Norms of perturbations. */
typedef enum dd_norm { DD_NORM_LINF = 0, DD_NORM_L2 = 1, DD_NORM_L1 = 2, DD_NORM_L0 = 3 } dd_norm;

/** EAD decision rule: which successful iterate is kept. */
typedef enum dd_ead_rule {
    DD_EAD_EN = 0, /**< smallest ||d||_2^2 + beta ||d||_1 (elastic net) */
    DD_EAD_L1 = 1  /**< smallest ||d||_1 */
} dd_ead_rule;

/** Attack options. Fill with dd_attack_options_init(&o, kind), then change
 *  fields. Fields that a kind does not use are ignored, except `targeted`,
 *  which is refused by kinds without a targeted mode. The defaults per kind:
 *
 *  kind            eps    steps  other defaults (reference followed)
 *  FGSM            8/255  -      (torchattacks)
 *  PGD_LINF        8/255  10     step 2/255, random start (torchattacks)
 *  PGD_L2          1.0    10     step 0.2, random start (torchattacks)
 *  APGD_*_LINF     8/255  100    1 restart, rho 0.75 (official AutoAttack)
 *  APGD_*_L2       0.5    100    as above
 *  APGD_T_*        as APGD       9 target classes, 1 restart (AutoAttack)
 *  DEEPFOOL_*      inf    50     overshoot 0.02, 10 candidates (foolbox)
 *  EAD             inf    1000   9 binary steps, c0 1e-3, lr 1e-2, beta 1e-3,
 *                                FISTA, EN rule, abort early (EAD authors' code,
 *                                except steps: 10000 there, 100 in torchattacks)
 *  CW_L2           inf    1000   9 binary steps, c0 1e-3, lr 1e-2, kappa 0,
 *                                abort early (foolbox/Carlini, except steps:
 *                                10000 there; set steps = 10000 to match)
 *  SQUARE_LINF     8/255  -      5000 queries, p_init 0.8, rescaled schedule
 *  SQUARE_L2       0.5    -      as above (official AutoAttack class)
 *  FAB_T_*         8/255, 0.5  100  9 targets, alpha_max 0.1, eta 1.05, beta 0.9
 *  AUTOATTACK_*    8/255, 0.5  100  as the official standard version (Square
 *                                with 5000 queries, schedule not rescaled)
 *  TRADES_KL       0.031  10     step 0.007, start x + 0.001 N(0, 1) (TRADES code)
 *
 *  For the minimum-norm kinds (DeepFool, EAD, CW) eps is a success
 *  threshold, +infinity by default: a sample whose best perturbation is
 *  larger than eps in the kind's norm is returned unchanged (as FAB inside
 *  AutoAttack does). */
typedef struct dd_attack_options {
    size_t struct_size;   /**< set by dd_attack_options_init() */
    dd_attack_kind kind;  /**< set by dd_attack_options_init() */
    float eps;            /**< budget in the kind's norm, >= 0 (see table) */
    float step_size;      /**< PGD/TRADES step; CW Adam and EAD initial learning rate */
    int steps;            /**< iterations (per binary-search step for CW and EAD) */
    int restarts;         /**< APGD, APGD-T and FAB-T (per target), Square; >= 1 */
    int random_start;     /**< PGD: 1 = start from a random point of the ball */
    int targeted;         /**< FGSM, PGD, CW, EAD: labels are target classes */
    uint64_t seed;        /**< random generator seed (default 0, as the references) */
    float rho;            /**< APGD step-halving threshold (0.75) */
    int num_targets;      /**< APGD-T, FAB-T: target classes, 1 .. K-1 (9) */
    float overshoot;      /**< DeepFool overshoot (0.02) */
    int candidates;       /**< DeepFool: classes considered, >= 2 (10; capped at K) */
    int binary_steps;     /**< CW, EAD: binary-search steps over c (9) */
    float initial_const;  /**< CW, EAD: first c (1e-3) */
    float confidence;     /**< CW, EAD: kappa (0) */
    float l1_weight;      /**< EAD: beta (1e-3) */
    dd_ead_rule ead_rule; /**< EAD: decision rule (DD_EAD_EN) */
    int fista;            /**< EAD: 1 = FISTA momentum (default), 0 = ISTA */
    int abort_early;      /**< CW, EAD: stop a binary step when the loss stalls (1) */
    float p_init;         /**< Square: initial fraction of pixels changed (0.8) */
    int queries;          /**< Square: query budget per restart (5000) */
    int rescale_schedule; /**< Square: scale the p schedule to `queries` (1; AutoAttack 0) */
    float alpha_max;      /**< FAB: 0.1 */
    float eta;            /**< FAB: extrapolation 1.05 */
    float fab_beta;       /**< FAB: backward step 0.9 */
    float box_lo, box_hi; /**< pixel box (0, 1) */
} dd_attack_options;
/** The first released layout: every field above (see status.h). */
#define DD_ATTACK_OPTIONS_SIZE_V1 DD_SIZE_THROUGH(dd_attack_options, box_hi)

/** dd_attack_options_init() for the first `size` bytes of *opts, which get
 *  struct_size = size (for bindings without the inline function; see
 *  status.h). NULL or size < sizeof(size_t) is a no-op. Thread-safe. */
DD_API void dd_attack_options_init_sized(dd_attack_options *opts, size_t size, dd_attack_kind kind);
/** Fills *opts with the defaults of `kind` (see the table above). An unknown
 *  kind gives generic defaults that dd_attack_create() refuses. NULL is a
 *  no-op. Thread-safe. */
static inline void dd_attack_options_init(dd_attack_options *opts, dd_attack_kind kind) {
    dd_attack_options_init_sized(opts, sizeof *opts, kind);
}

/** Static name of a kind ("pgd-linf", "apgd-t-l2", "autoattack-linf", ...),
 *  NULL for an unknown kind. Thread-safe. */
DD_API const char *dd_attack_kind_name(dd_attack_kind kind);

/** Kind of a name as given by dd_attack_kind_name(). Returns DD_OK or
 *  DD_ERR_INVALID_ARGUMENT (unknown name or NULL). Thread-safe. */
DD_API dd_status dd_attack_kind_from_name(const char *name, dd_attack_kind *kind);

/** The norm in which `kind` measures its budget (EAD: L1). Returns DD_OK or
 *  DD_ERR_INVALID_ARGUMENT. Thread-safe. */
DD_API dd_status dd_attack_kind_norm(dd_attack_kind kind, dd_norm *norm);

/** CONSTRUCTOR of dd_attack, bound to the built model m (borrowed: m must
 *  outlive the attack, and must not be rebuilt). opts is copied (NULL is
 *  refused: there is no kind-less default). All work buffers are allocated
 *  here for m's max_batch. On failure *out is NULL.
 *  Returns DD_OK; DD_ERR_INVALID_ARGUMENT (NULL, unknown kind, an option out
 *  of range, `targeted` on a kind without a targeted mode, too few classes
 *  for the loss: DLR needs K >= 3, APGD-T K >= 4, targets <= K-1);
 *  DD_ERR_STATE (model not built); DD_ERR_OUT_OF_MEMORY. Thread-safe for
 *  different models. */
DD_API dd_status dd_attack_create(dd_attack **out, dd_model *m, const dd_attack_options *opts);

/** DESTRUCTOR of dd_attack. NULL is a no-op. The model is not affected. */
DD_API void dd_attack_destroy(dd_attack *a);

/** METHOD: copies the first `size` bytes of the attack's options (as
 *  created, eps as last set) into *opts, whose struct_size becomes size.
 *  Returns DD_OK or DD_ERR_INVALID_ARGUMENT (NULL, size outside
 *  [DD_ATTACK_OPTIONS_SIZE_V1, the library's sizeof]). */
DD_API dd_status dd_attack_get_options_sized(const dd_attack *a, dd_attack_options *opts, size_t size);
/** METHOD: copies the attack's options into *opts (see dd_attack_get_options_sized()). */
static inline dd_status dd_attack_get_options(const dd_attack *a, dd_attack_options *opts) {
    return dd_attack_get_options_sized(a, opts, sizeof *opts);
}

/** METHOD: changes the budget (eps >= 0 and finite; +infinity is accepted
 *  for the minimum-norm kinds). Other options are unchanged; PGD's absolute
 *  step size is not rescaled. Returns DD_OK or DD_ERR_INVALID_ARGUMENT. */
DD_API dd_status dd_attack_set_eps(dd_attack *a, float eps);

/** Per-sample results of dd_attack_run(). Fill with dd_attack_results_init()
 *  (all array pointers NULL), then point the arrays you want at caller-owned
 *  buffers of at least n entries; NULL arrays are skipped. The scalar
 *  fields are always written. */
typedef struct dd_attack_results {
    size_t struct_size;      /**< set by dd_attack_results_init() */
    int32_t *success;        /**< (n): 1 if the model's argmax at x_adv differs
                                    from the label (targeted: equals the target) */
    int32_t *pred;           /**< (n): argmax logit at x_adv (ties: lowest index) */
    int32_t *clean_correct;  /**< (n): 1 if the argmax at x equals the label */
    float *norm_l0;          /**< (n): number of values changed (over C*H*W) */
    float *norm_l1;          /**< (n): ||x_adv - x||_1 over all C*H*W values */
    float *norm_l2;          /**< (n): ||x_adv - x||_2 */
    float *norm_linf;        /**< (n): ||x_adv - x||_inf */
    int32_t *stage;          /**< (n): -1 not fooled; 0 misclassified already at x;
                                    k >= 1 fooled by stage k (AutoAttack: 1 APGD-CE,
                                    2 APGD-T, 3 FAB-T, 4 Square; other kinds: 1) */
    int n;                   /**< samples of the run */
    int num_clean_correct;   /**< samples whose clean argmax equals the label */
    int num_success;         /**< sum of success: untargeted, n - num_success
                                    is the robust-accuracy numerator (AutoAttack's
                                    count: denominator n, clean mistakes included) */
    int64_t forward_passes;  /**< batched forward passes run (queries) */
    int64_t gradient_passes; /**< input vector-Jacobian products run */
} dd_attack_results;
/** The first released layout: every field above (see status.h). */
#define DD_ATTACK_RESULTS_SIZE_V1 DD_SIZE_THROUGH(dd_attack_results, gradient_passes)

/** dd_attack_results_init() for the first `size` bytes of *r (see
 *  dd_attack_options_init_sized()). */
DD_API void dd_attack_results_init_sized(dd_attack_results *r, size_t size);
/** Sets struct_size, every array pointer to NULL and the counts to 0.
 *  NULL is a no-op. Thread-safe. */
static inline void dd_attack_results_init(dd_attack_results *r) {
    dd_attack_results_init_sized(r, sizeof *r);
}

/** METHOD: attacks n images.
 *  x:      (n, C, H, W) f32 NCHW, values finite and inside the box; borrowed.
 *  labels: (n) int32 in [0, K): true classes (targeted mode: target classes).
 *  x_adv:  (n, C, H, W) f32 NCHW, written only on DD_OK; may equal x.
 *  results: optional (NULL), see dd_attack_results.
 *  n in [1, max_batch]. On any error nothing is written to x_adv or results.
 *  Returns DD_OK; DD_ERR_INVALID_ARGUMENT (NULL, n out of range, a label out
 *  of range, x outside the box, results->struct_size wrong); DD_ERR_NUMERIC
 *  (x holds NaN or Inf, or the model produced non-finite logits);
 *  DD_ERR_BACKEND; DD_ERR_OUT_OF_MEMORY (from the model's first use of a
 *  batch size). The model's last forward pass is overwritten. */
DD_API dd_status dd_attack_run(dd_attack *a, const float *x, const int32_t *labels, int n, float *x_adv,
                               dd_attack_results *results);

/* ---- adversarial-training baselines ------------------------------------ */

/** METHOD: one PGD adversarial-training step (Madry et al.), the common case
 *  of the host loop. With a = any attack on opt's model (normally
 *  DD_ATTACK_PGD_LINF with 10 steps):
 *      x_adv = attack(x)                       (DD_EVAL passes)
 *      dd_model_zero_grad; dd_model_forward(x_adv, DD_TRAIN);
 *      dd_model_backward(labels, stats);       (cross-entropy + GFA hooks)
 *      dd_optimizer_step(opt)
 *  x: (n, C, H, W) f32 NCHW; labels: (n) int32; both borrowed. x_adv_out:
 *  optional (n, C, H, W) copy of the adversarial batch. stats: optional, as
 *  dd_model_backward(). opt must be bound to the attack's model.
 *  Returns the statuses of dd_attack_run, dd_model_backward and
 *  dd_optimizer_step; on an attack error the model is unchanged. */
DD_API dd_status dd_attack_train_step(dd_attack *a, dd_optimizer *opt, const float *x, const int32_t *labels,
                                      int n, float *x_adv_out, dd_step_stats *stats);

/** TRADES (Zhang et al. 2019) backward: accumulates (+=) into the parameter
 *  gradients the gradient of
 *      L = mean_i CE(f(x_nat_i), y_i)
 *        + beta * mean_i KL(softmax f(x_nat_i) || softmax f(x_adv_i))
 *  through both arguments of the KL, with three DD_TRAIN forward passes
 *  (x_nat, x_adv, x_nat) as the reference trades.py, so batch-norm running
 *  statistics move as they do there. With GFA hooks set, they regularise
 *  the natural cross-entropy term (dd_model_backward on x_nat).
 *  x_nat, x_adv: (n, C, H, W) f32 NCHW, borrowed (x_adv normally from a
 *  DD_ATTACK_TRADES_KL attack); labels: (n) int32 in [0, K); beta >= 0
 *  (the reference uses 6); stats optional: loss = the natural CE,
 *  objective = L (+ GFA terms), correct = natural hits.
 *  Allocates 3 n K floats of scratch for the call (dd_attack_trades_step
 *  does not). Returns DD_OK, DD_ERR_INVALID_ARGUMENT, DD_ERR_STATE (model
 *  not built), DD_ERR_NUMERIC (non-finite input or loss), DD_ERR_OUT_OF_MEMORY,
 *  DD_ERR_BACKEND, DD_ERR_UNSUPPORTED (as dd_model_backward); after an error past the argument checks the gradients may
 *  hold part of L's gradient (call dd_model_zero_grad). Not thread-safe for
 *  one model (it runs the model). */
DD_API dd_status dd_model_backward_trades(dd_model *m, const float *x_nat, const float *x_adv,
                                          const int32_t *labels, int n, float beta, dd_step_stats *stats);

/** METHOD: one TRADES training step with attack a (normally
 *  DD_ATTACK_TRADES_KL: eps 0.031, 10 steps of 0.007) on opt's model:
 *      x_adv = attack(x) (DD_EVAL passes); dd_model_zero_grad;
 *      the dd_model_backward_trades gradient; dd_optimizer_step(opt)
 *  using the attack's preallocated buffers (no allocation). x: (n, C, H, W)
 *  f32; labels: (n) int32; x_adv_out: optional (n, C, H, W) copy; stats as
 *  dd_model_backward_trades. Returns the statuses of dd_attack_run,
 *  dd_model_backward_trades and dd_optimizer_step, and DD_ERR_UNSUPPORTED (a
 *  GFA hook behind a node without a tangent pass, as dd_model_backward). */
DD_API dd_status dd_attack_trades_step(dd_attack *a, dd_optimizer *opt, const float *x, const int32_t *labels,
                                       int n, float beta, float *x_adv_out, dd_step_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
