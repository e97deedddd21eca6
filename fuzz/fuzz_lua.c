/* fuzz_lua.c - libFuzzer target: the Lua scenario loader. Any bytes as a scenario, run in
 * the sandbox (no io/os, a bounded heap, a bounded number of instructions): a Lua error or
 * a STOP is a fine outcome; a crash, a hang, a leak or a sanitizer report is a bug. The
 * bytes are handed over in memory (ptl_script_run_text), as the file "fuzz.lua". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "script.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ptl_script_opts opts;
    ptl_script_opts_init(&opts);
    opts.sandbox = 1;
    opts.max_instructions = 200000;
    opts.max_memory = 64u << 20;
    opts.max_machine_ram = 3ull << 30; /* under libFuzzer's 4 GB RSS limit, with room */
    char *error = NULL; /* a Lua error is a fine outcome: keep its message off the log */
    opts.error = &error;
    ptl_script_run_text("fuzz.lua", (const char *)data, size, &opts);
    free(error);
    return 0;
}
