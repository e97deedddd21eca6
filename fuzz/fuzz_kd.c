/* fuzz_kd.c - libFuzzer target: kd commands, one per line, on a machine with a process,
 * a driver and mappings. Nothing may crash; commands that only read must leave the
 * machine's invariants intact (the edit commands eb/ed/... may legitimately corrupt what
 * they write, as on a real kernel debugger, so inputs containing them skip that check). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

static void setup(void *arg)
{
    (void)arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = 0xE0000000;
    MmMapIoSpace(pa, 3 * PAGE_SIZE, MmNonCached);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *null;
    if (!null)
        null = fopen("/dev/null", "w");
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    if (!m)
        abort();
    ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20);
    ptl_process *p = ptl_process_create(m, "app.exe");
    ptl_user_alloc(p, 8192);
    ptl_driver *d = ptl_driver_load(m, "drv.sys", 8192);
    ptl_stop stop;
    ptl_call(m, p, d, setup, NULL, &stop);
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    int edits = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (line[0] == 'e' || line[0] == 'E' || strstr(line, ".process"))
            edits = 1;
        ptl_kd(m, line, null);
    }
    free(text);
    if (!edits && ptl_check(m) != 0) {
        fprintf(stderr, "kd left the machine broken: %s\n", ptl_error());
        abort();
    }
    ptl_shutdown(m);
    return 0;
}
