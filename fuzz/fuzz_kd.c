/* fuzz_kd.c - libFuzzer target: kd commands, one per line, on a machine with a process,
 * a driver and mappings. Nothing may crash. Commands that only read must leave the
 * machine exactly as it was (kd.c's rule: no memory written, the process context
 * unchanged) and its invariants intact. The edit commands (eb/ew/ed/eq) may legitimately
 * corrupt what they write, as on a real kernel debugger; after an input that did, the
 * machine is put back as it was and must then pass ptl_check. `.process EPROCESS` changes
 * only kd's own implicit process (never the machine's context, which is checked); it is
 * reset after each input so that every input starts from the same debugger state.
 *
 * One machine serves every input: it is booted once, and what an input changed is undone
 * before the next (the memory it wrote, frame by frame against a copy taken after the
 * setup, and the current process), so each input starts from the same machine and a
 * crash reproduces from its input file alone. Nothing else can change: kd writes only
 * through ptl__phys_copy, which counts the writes (phys.c).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include <ptelab/wdm.h>

static void setup(void *arg)
{
    (void)arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = 0xE0000000;
    MmMapIoSpace(pa, 3 * PAGE_SIZE, MmNonCached);
}

static ptl_machine *m;
static ptl_process *context; /* the current process after the setup */
static uint32_t *saved_pfn;  /* the frames with host bytes after the setup, ascending */
static uint8_t *saved;       /* and their contents */
static uint32_t nsaved;
static FILE *null;

static void boot_once(void)
{
    null = fopen("/dev/null", "w");
    ptl_config cfg;
    ptl_config_init(&cfg);
    m = ptl_boot(&cfg);
    if (!m || !null)
        abort();
    ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20);
    ptl_process *p = ptl_process_create(m, "app.exe");
    ptl_user_alloc(p, 8192);
    ptl_driver *d = ptl_driver_load(m, "drv.sys", 8192);
    ptl_stop stop;
    ptl_call(m, p, d, setup, NULL, &stop);
    if (ptl_check(m) != 0)
        abort();
    context = m->procs.current;
    const uint64_t *touched = m->phys.touched;
    for (uint32_t w = 0; w < (1u << 20) / 64; w++)
        for (uint64_t bits = touched[w]; bits; bits &= bits - 1) {
            uint32_t pfn = w * 64 + (uint32_t)__builtin_ctzll(bits);
            saved_pfn = realloc(saved_pfn, (nsaved + 1) * sizeof *saved_pfn);
            saved = realloc(saved, (size_t)(nsaved + 1) * PAGE_SIZE);
            if (!saved_pfn || !saved ||
                ptl_phys_read(m, (uint64_t)pfn << 12, saved + (size_t)nsaved * PAGE_SIZE,
                              PAGE_SIZE) != 0)
                abort();
            saved_pfn[nsaved++] = pfn;
        }
}

/* Put every frame back as the setup left it; returns how many differed. */
static uint32_t restore(void)
{
    static const uint8_t zero[PAGE_SIZE];
    uint8_t now[PAGE_SIZE];
    uint32_t k = 0, differed = 0;
    const uint64_t *touched = m->phys.touched;
    for (uint32_t w = 0; w < (1u << 20) / 64; w++)
        for (uint64_t bits = touched[w]; bits; bits &= bits - 1) {
            uint32_t pfn = w * 64 + (uint32_t)__builtin_ctzll(bits);
            while (k < nsaved && saved_pfn[k] < pfn)
                k++;
            const uint8_t *want =
                k < nsaved && saved_pfn[k] == pfn ? saved + (size_t)k * PAGE_SIZE : zero;
            if (ptl_phys_read(m, (uint64_t)pfn << 12, now, PAGE_SIZE) != 0)
                continue; /* touched, but neither RAM nor adapter memory: nothing to undo */
            if (memcmp(now, want, PAGE_SIZE)) {
                differed++;
                if (ptl_phys_write(m, (uint64_t)pfn << 12, want, PAGE_SIZE) != 0)
                    abort();
            }
        }
    return differed;
}

/* A line kd may change the machine with: an e* command or .process (with an argument or
 * not: kd decides), matched as kd matches commands (leading blanks, any case). */
static int may_change(const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    return line[0] == 'e' || line[0] == 'E';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!m)
        boot_once();
    uint64_t writes = m->phys.copy_writes;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    int edits = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        edits |= may_change(line);
        ptl_kd(m, line, null);
    }
    free(text);
    m->procs.kd_implicit = NULL; /* kd's .process: the next input starts without it */
    int changed = m->phys.copy_writes != writes || m->procs.current != context;
    if (changed && !edits) {
        fprintf(stderr, "kd changed the machine with no edit command (%s)\n",
                m->procs.current != context ? "the process context" : "memory");
        abort();
    }
    if (!changed && ptl_check(m) != 0) {
        fprintf(stderr, "kd left the machine broken: %s\n", ptl_error());
        abort();
    }
    if (changed) {
        if (m->procs.current != context)
            ptl__process_switch(m, context);
        restore();
        if (ptl_check(m) != 0) {
            fprintf(stderr, "the machine is broken after undoing the edits: %s\n", ptl_error());
            abort();
        }
    }
    return 0;
}
