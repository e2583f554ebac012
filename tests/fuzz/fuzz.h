/* fuzz.h: what the libFuzzer targets of tests/fuzz share: the entry point's prototype and
 * CHECK, which aborts (so the fuzzer reports the input) when a property does not hold.
 * Test-only. */
#ifndef FD_FUZZ_H
#define FD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                               \
    do {                                                                                       \
        if (!(c))                                                                              \
            abort();                                                                           \
    } while (0)

#endif
