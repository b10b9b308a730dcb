/*
 * check.h - the C tests' one assertion: CHECK(cond, printf-style message)
 * counts the check and, when cond is false, the failure, printing the message
 * with its file and line to stderr; the test goes on so that one run reports
 * every failure. Include once per test program.
 */
#ifndef GPTC_TESTS_CHECK_H
#define GPTC_TESTS_CHECK_H

#include <stdio.h>

static int g_fail, g_checks;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            g_fail++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#endif
