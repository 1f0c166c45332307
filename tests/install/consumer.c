/* tests/install/consumer.c -- a program that uses an installed libdeepdefense.
 *
 * Built by run_install_test.sh twice against a temporary install prefix:
 * once with `pkg-config --cflags --libs deepdefense`, once through CMake's
 * find_package(deepdefense). It includes only the public umbrella header,
 * checks that the header and library versions agree, builds a tiny model
 * (flatten + linear, 3x4x4 inputs, 5 classes), runs one forward pass on a
 * batch of two images and checks that the logits are finite. Exit 0 on
 * success; on failure it prints the status and dd_last_error().
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <deepdefense/deepdefense.h>

#define C 3
#define H 4
#define W 4
#define K 5
#define N 2

static int fail(const char *what, dd_status s) {
    fprintf(stderr, "consumer: %s: %s (%s)\n", what, dd_status_string(s), dd_last_error());
    return 1;
}

int main(void) {
    printf("deepdefense %s (headers %s)\n", dd_version_string(), DD_VERSION_STRING);
    if (dd_version() != DD_VERSION_NUMBER || strcmp(dd_version_string(), DD_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: header/library version mismatch\n");
        return 1;
    }

    dd_model *m = NULL;
    dd_node flat, logits;
    dd_status s = dd_model_create(&m, C, H, W, K, NULL);
    if (s != DD_OK) return fail("dd_model_create", s);
    if ((s = dd_model_add_flatten(m, DD_INPUT, NULL, &flat)) != DD_OK ||
        (s = dd_model_add_linear(m, flat, K, 1, "fc", &logits)) != DD_OK ||
        (s = dd_model_build(m, logits, N)) != DD_OK) {
        dd_model_destroy(m);
        return fail("building the model", s);
    }

    float x[N * C * H * W], out[N * K]; /* x: (N, C, H, W) f32 NCHW; out: (N, K) */
    for (int i = 0; i < N * C * H * W; i++) x[i] = (float)(i % 7) / 7.0f;
    if ((s = dd_model_forward(m, x, N, DD_EVAL, out)) != DD_OK) {
        dd_model_destroy(m);
        return fail("dd_model_forward", s);
    }
    for (int i = 0; i < N * K; i++)
        if (!isfinite(out[i])) {
            fprintf(stderr, "consumer: logit %d is not finite\n", i);
            dd_model_destroy(m);
            return 1;
        }
    printf("logits[0] = %g\n", (double)out[0]);
    dd_model_destroy(m);
    return 0;
}
