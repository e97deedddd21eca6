/* fuzz_reg.c - libFuzzer target: the .reg parser. Any bytes must give 0 or a clear error
 * and leave the configuration untouched on error; a configuration that parsed must boot
 * or be refused cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ptelab/ptelab.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ptl_config cfg, before;
    ptl_config_init(&cfg);
    before = cfg;
    if (ptl_registry_import_text(&cfg, (const char *)data, size, "fuzz.reg") != 0) {
        if (memcmp(&cfg, &before, sizeof cfg) != 0 || !ptl_error()[0])
            abort(); /* an error must leave the configuration alone and say why */
        return 0;
    }
    ptl_machine *m = ptl_boot(&cfg);
    if (m) {
        if (ptl_check(m) != 0)
            abort();
        ptl_shutdown(m);
    } else if (!ptl_error()[0]) {
        abort();
    }
    return 0;
}
