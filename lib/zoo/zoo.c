/* lib/zoo/zoo.c -- preset architectures, built only through the public API.
 *
 * Names follow the PyTorch reference implementations ("layer1.0.conv1",
 * "shortcut.0", ...) so checkpoints read naturally next to PyTorch ones.
 * Every builder is a straight sequence of dd_model_add_* calls; the first
 * failing status is returned with dd_last_error() from the failing call.
 */
#include <deepdefense/zoo.h>
#include <stdio.h>
#include <string.h>

#include "../core/core.h"

typedef struct {
    dd_model *m;
    dd_status s;
} builder;

static dd_node conv(builder *b, dd_node in, int oc, int k, int stride, int pad, int bias, const char *name) {
    dd_node out = -1;
    if (b->s != DD_OK) return out;
    dd_conv2d_options o;
    dd_conv2d_options_init(&o);
    o.out_channels = oc;
    o.kernel_h = o.kernel_w = k;
    o.stride_h = o.stride_w = stride;
    o.pad_h = o.pad_w = pad;
    o.bias = bias;
    o.name = name;
    b->s = dd_model_add_conv2d(b->m, in, &o, &out);
    return out;
}

static dd_node bn(builder *b, dd_node in, const char *name) {
    dd_node out = -1;
    if (b->s != DD_OK) return out;
    dd_batchnorm_options o;
    dd_batchnorm_options_init(&o);
    o.name = name;
    b->s = dd_model_add_batchnorm(b->m, in, &o, &out);
    return out;
}

static dd_node relu(builder *b, dd_node in, const char *name) {
    dd_node out = -1;
    if (b->s == DD_OK) b->s = dd_model_add_relu(b->m, in, name, &out);
    return out;
}

static dd_node linear(builder *b, dd_node in, int n, const char *name) {
    dd_node out = -1;
    if (b->s == DD_OK) b->s = dd_model_add_linear(b->m, in, n, 1, name, &out);
    return out;
}

static dd_node add(builder *b, dd_node x, dd_node y, const char *name) {
    dd_node out = -1;
    if (b->s == DD_OK) b->s = dd_model_add_add(b->m, x, y, name, &out);
    return out;
}

static dd_node maxpool2(builder *b, dd_node in, const char *name) {
    dd_node out = -1;
    if (b->s != DD_OK) return out;
    dd_pool_options o;
    dd_pool_options_init(&o);
    o.name = name;
    b->s = dd_model_add_maxpool(b->m, in, &o, &out);
    return out;
}

static dd_node flatten(builder *b, dd_node in) {
    dd_node out = -1;
    if (b->s == DD_OK) b->s = dd_model_add_flatten(b->m, in, "flatten", &out);
    return out;
}

static dd_node gap(builder *b, dd_node in) {
    dd_node out = -1;
    if (b->s == DD_OK) b->s = dd_model_add_global_avgpool(b->m, in, "avgpool", &out);
    return out;
}

static dd_node cnn_cw(builder *b, dd_node x, int k) {
    x = relu(b, conv(b, x, 64, 3, 1, 0, 1, "conv1"), NULL);
    x = relu(b, conv(b, x, 64, 3, 1, 0, 1, "conv2"), NULL);
    x = maxpool2(b, x, "pool1");
    x = relu(b, conv(b, x, 128, 3, 1, 0, 1, "conv3"), NULL);
    x = relu(b, conv(b, x, 128, 3, 1, 0, 1, "conv4"), NULL);
    x = maxpool2(b, x, "pool2");
    x = flatten(b, x);
    x = relu(b, linear(b, x, 256, "fc1"), NULL);
    x = relu(b, linear(b, x, 256, "fc2"), NULL);
    return linear(b, x, k, "fc3");
}

/* He et al. basic block with a 1x1 conv + BN shortcut when the shape changes. */
static dd_node basic_block(builder *b, dd_node x, int in_planes, int planes, int stride, const char *pfx) {
    char n1[64], n2[64], n3[64], n4[64], n5[64], n6[64];
    snprintf(n1, sizeof n1, "%s.conv1", pfx);
    snprintf(n2, sizeof n2, "%s.bn1", pfx);
    snprintf(n3, sizeof n3, "%s.conv2", pfx);
    snprintf(n4, sizeof n4, "%s.bn2", pfx);
    snprintf(n5, sizeof n5, "%s.shortcut.0", pfx);
    snprintf(n6, sizeof n6, "%s.shortcut.1", pfx);
    dd_node y = relu(b, bn(b, conv(b, x, planes, 3, stride, 1, 0, n1), n2), NULL);
    y = bn(b, conv(b, y, planes, 3, 1, 1, 0, n3), n4);
    dd_node sc = x;
    if (stride != 1 || in_planes != planes) sc = bn(b, conv(b, x, planes, 1, stride, 0, 0, n5), n6);
    return relu(b, add(b, y, sc, NULL), NULL);
}

static dd_node resnet20(builder *b, dd_node x, int k) {
    x = relu(b, bn(b, conv(b, x, 16, 3, 1, 1, 0, "conv1"), "bn1"), NULL);
    int in = 16;
    for (int stage = 0; stage < 3; stage++) {
        int planes = 16 << stage;
        for (int i = 0; i < 3; i++) {
            char pfx[32];
            snprintf(pfx, sizeof pfx, "layer%d.%d", stage + 1, i);
            x = basic_block(b, x, in, planes, i == 0 && stage > 0 ? 2 : 1, pfx);
            in = planes;
        }
    }
    return linear(b, gap(b, x), k, "linear");
}

/* Pre-activation block: out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut. */
static dd_node preact_block(builder *b, dd_node x, int in_planes, int planes, int stride, const char *pfx) {
    char n1[64], n2[64], n3[64], n4[64], n5[64];
    snprintf(n1, sizeof n1, "%s.bn1", pfx);
    snprintf(n2, sizeof n2, "%s.conv1", pfx);
    snprintf(n3, sizeof n3, "%s.bn2", pfx);
    snprintf(n4, sizeof n4, "%s.conv2", pfx);
    snprintf(n5, sizeof n5, "%s.shortcut.0", pfx);
    dd_node o = relu(b, bn(b, x, n1), NULL);
    dd_node sc = x;
    if (stride != 1 || in_planes != planes) sc = conv(b, o, planes, 1, stride, 0, 0, n5);
    dd_node y = conv(b, o, planes, 3, stride, 1, 0, n2);
    y = conv(b, relu(b, bn(b, y, n3), NULL), planes, 3, 1, 1, 0, n4);
    return add(b, y, sc, NULL);
}

static dd_node preact_resnet18(builder *b, dd_node x, int k) {
    x = conv(b, x, 64, 3, 1, 1, 0, "conv1");
    int in = 64;
    for (int stage = 0; stage < 4; stage++) {
        int planes = 64 << stage;
        for (int i = 0; i < 2; i++) {
            char pfx[32];
            snprintf(pfx, sizeof pfx, "layer%d.%d", stage + 1, i);
            x = preact_block(b, x, in, planes, i == 0 && stage > 0 ? 2 : 1, pfx);
            in = planes;
        }
    }
    x = relu(b, bn(b, x, "bn"), NULL);
    return linear(b, gap(b, x), k, "linear");
}

static dd_node mlp(builder *b, dd_node x, int k) {
    x = flatten(b, x);
    x = relu(b, linear(b, x, 256, "fc1"), NULL);
    return linear(b, x, k, "fc2");
}

dd_status dd_zoo_create(dd_model **out, const char *arch, int channels, int height, int width,
                        int num_classes, int normalize, const float *mean, const float *std, int max_batch,
                        const dd_model_options *opts) {
    DD_RETURN_IF(!out, DD_ERR_INVALID_ARGUMENT, "dd_zoo_create: out is NULL");
    *out = NULL;
    DD_RETURN_IF(!arch, DD_ERR_INVALID_ARGUMENT, "dd_zoo_create: arch is NULL");
    dd_node (*fn)(builder *, dd_node, int) = NULL;
    int min_hw = 1;
    if (strcmp(arch, "cnn-cw") == 0) {
        fn = cnn_cw;
        min_hw = 16;
    } else if (strcmp(arch, "resnet20") == 0) {
        fn = resnet20;
        min_hw = 8;
    } else if (strcmp(arch, "preact-resnet18") == 0) {
        fn = preact_resnet18;
        min_hw = 8;
    } else if (strcmp(arch, "mlp") == 0) {
        fn = mlp;
    }
    DD_RETURN_IF(!fn, DD_ERR_INVALID_ARGUMENT,
                 "dd_zoo_create: unknown arch '%s' (cnn-cw, resnet20, preact-resnet18, mlp)", arch);
    DD_RETURN_IF(height < min_hw || width < min_hw, DD_ERR_INVALID_ARGUMENT,
                 "dd_zoo_create: %s needs inputs of at least %dx%d, got %dx%d", arch, min_hw, min_hw, height,
                 width);
    DD_RETURN_IF(normalize && channels > 64, DD_ERR_INVALID_ARGUMENT,
                 "dd_zoo_create: default normalisation for %d channels", channels);
    builder b = {NULL, DD_OK};
    DD_FORWARD(dd_model_create(&b.m, channels, height, width, num_classes, opts));
    dd_node x = DD_INPUT;
    if (normalize) {
        /* CIFAR-10 training-set statistics (the usual published values). */
        static const float cifar_mean[3] = {0.4914f, 0.4822f, 0.4465f};
        static const float cifar_std[3] = {0.2470f, 0.2435f, 0.2616f};
        float dm[64], ds[64];
        for (int c = 0; c < channels; c++) {
            dm[c] = mean ? mean[c] : channels == 3 ? cifar_mean[c] : 0.5f;
            ds[c] = std ? std[c] : channels == 3 ? cifar_std[c] : 0.5f;
        }
        b.s = dd_model_add_normalize(b.m, x, dm, ds, channels, "normalize", &x);
    }
    dd_node logits = fn(&b, x, num_classes);
    if (b.s == DD_OK) b.s = dd_model_build(b.m, logits, max_batch);
    if (b.s != DD_OK) {
        dd_model_destroy(b.m);
        return b.s;
    }
    *out = b.m;
    return DD_OK;
}
