/* tests/check_fuzz.c -- replays the fuzzing seeds and every input that once
 * crashed a fuzz target, in every build.
 *
 * The libFuzzer targets (tests/fuzz/fuzz_*.c) need clang; their entry points
 * are plain C, so this program compiles the five target files in (each
 * LLVMFuzzerTestOneInput renamed by the preprocessor) and calls them on
 * every file of tests/fuzz/corpus/<target>/ (the seeds) and
 * tests/fuzz/regress/<target>/ (inputs that crashed a target once; a fixed
 * crash keeps its input there). A target signals a broken contract by
 * abort(), and under the sanitizer pass of CI an out-of-bounds access or a
 * leak ends the process with a report, so each file runs in a forked child
 * and the test names the file whose child did not exit cleanly. The child
 * ends with exit(), not _exit(), so LeakSanitizer checks it.
 *
 * The regress directories hold the exact bytes libFuzzer wrote
 * (crash-<sha1>), whatever the target: the name of the directory selects
 * the target.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_cifar_one
#include "fuzz/fuzz_cifar.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_idx_one
#include "fuzz/fuzz_idx.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_arch_one
#include "fuzz/fuzz_arch.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_optstate_one
#include "fuzz/fuzz_optstate.c"
#undef LLVMFuzzerTestOneInput

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t cap = 4096, len = 0;
    unsigned char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0) break;
        len += r;
    }
    ck_assert(!ferror(f));
    fclose(f);
    *size = len;
    return buf;
}

/* Runs fn on one file in a child process; the child's fate names the file. */
static void replay_file(fuzz_fn fn, const char *path) {
    size_t size;
    unsigned char *data = read_file(path, &size);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork failed");
    if (pid == 0) {
        fn(data, size);
        free(data);
        exit(0);
    }
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    free(data);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "%s: the fuzz target %s %d (see the sanitizer report above)", path,
                  WIFSIGNALED(st) ? "died of signal" : "exited with status",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

/* Replays every regular file of <source>/tests/fuzz/<kind>/<target>; returns
 * how many (0 if the directory does not exist). */
static int replay_dir(fuzz_fn fn, const char *kind, const char *target) {
    const char *src = getenv("DD_SOURCE_DIR");
    ck_assert_msg(src != NULL, "DD_SOURCE_DIR is not set (run through ctest)");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/%s", src, kind, target);
    DIR *d = opendir(dir);
    if (d == NULL) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        replay_file(fn, path);
        count++;
    }
    closedir(d);
    return count;
}

static void replay_target(fuzz_fn fn, const char *target) {
    int seeds = replay_dir(fn, "corpus", target);
    ck_assert_msg(seeds > 0, "no seeds in tests/fuzz/corpus/%s", target);
    replay_dir(fn, "regress", target);
}

START_TEST(test_replay_safetensors) { replay_target(fuzz_safetensors_one, "safetensors"); }
END_TEST

START_TEST(test_replay_cifar) { replay_target(fuzz_cifar_one, "cifar"); }
END_TEST

START_TEST(test_replay_idx) { replay_target(fuzz_idx_one, "idx"); }
END_TEST

START_TEST(test_replay_arch) { replay_target(fuzz_arch_one, "arch"); }
END_TEST

START_TEST(test_replay_optstate) { replay_target(fuzz_optstate_one, "optstate"); }
END_TEST

/* Inputs every parser must refuse (empty, a bare gzip header with a broken
 * stream) go through each target without tripping its checks, so a replay
 * failure means a broken library contract, not an over-strict target. */
START_TEST(test_targets_accept_garbage) {
    static const uint8_t junk[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff};
    ck_assert_int_eq(fuzz_safetensors_one(junk, 0), 0);
    ck_assert_int_eq(fuzz_safetensors_one(junk, sizeof junk), 0);
    ck_assert_int_eq(fuzz_cifar_one(junk, 0), 0);
    ck_assert_int_eq(fuzz_cifar_one(junk, sizeof junk), 0);
    ck_assert_int_eq(fuzz_idx_one(junk, 1), 0);
    ck_assert_int_eq(fuzz_idx_one(junk, sizeof junk), 0);
    ck_assert_int_eq(fuzz_arch_one(junk, 0), 0);
    ck_assert_int_eq(fuzz_arch_one(junk, sizeof junk), 0);
    ck_assert_int_eq(fuzz_optstate_one(junk, 0), 0);
    ck_assert_int_eq(fuzz_optstate_one(junk, sizeof junk), 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("fuzz");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_replay_safetensors);
    tcase_add_test(tc, test_replay_cifar);
    tcase_add_test(tc, test_replay_idx);
    tcase_add_test(tc, test_replay_arch);
    tcase_add_test(tc, test_replay_optstate);
    tcase_add_test(tc, test_targets_accept_garbage);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
