/* test-exhaustion.c - who eats system PTEs, and what running out looks like: the article's
 * "threads not being created, system stalls, and outright bug checks", one consumer at a
 * time, each with its documented outcome and parameters; fragmentation; TrackPtes; the
 * counters, the timeline and its PDH-CSV export.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#define ADAPTER 0xE0000000ull

static ptl_machine *boot(uint32_t system_pages, int track_ptes)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.system_pages = system_pages;
    cfg.track_ptes = track_ptes;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, ADAPTER, 16u << 20), 0);
    return m;
}

/* A leaking driver: maps one adapter page at a time and never unmaps. */
typedef struct leak_ctx {
    uint32_t pages_each;
    uint32_t mapped;
    int stop_after; /* 0: until NULL */
} leak_ctx;

static void leak(void *arg)
{
    leak_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    while (!c->stop_after || c->mapped < (uint32_t)c->stop_after) {
        if (!MmMapIoSpace(pa, c->pages_each * PAGE_SIZE, MmNonCached))
            break;
        c->mapped++;
    }
}

static void test_io_space_until_null_then_threads_fail(void **state)
{
    (void)state;
    ptl_machine *m = boot(0, 0);
    ptl_driver *d = ptl_driver_load(m, "leaky.sys", 8192);
    uint32_t free0 = ptl_free_system_ptes(m);
    leak_ctx c = {1, 0, 0};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, d, leak, &c, &stop), 0);
    /* every free PTE went, one page at a time: MmMapIoSpace returned NULL at the end */
    assert_int_equal(c.mapped, free0);
    assert_int_equal(ptl_free_system_ptes(m), 0);
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    assert_int_equal(st.failed_total, 1);
    assert_int_equal(st.peak_used, st.total);
    /* "threads not being created" */
    assert_null(ptl_thread_create(m, NULL));
    assert_non_null(strstr(ptl_error(), "STATUS_INSUFFICIENT_RESOURCES"));
    /* nor drivers loaded */
    assert_null(ptl_driver_load(m, "late.sys", 4096));
    assert_non_null(strstr(ptl_error(), "STATUS_INSUFFICIENT_RESOURCES"));
    assert_true(ptl_event_count_type(m, "fail") >= 3);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

static void test_system_pages_makes_it_last_longer(void **state)
{
    (void)state;
    ptl_machine *a = boot(0, 0), *b = boot(40000, 0);
    leak_ctx ca = {4, 0, 0}, cb = {4, 0, 0};
    ptl_stop stop;
    assert_int_equal(ptl_call(a, NULL, NULL, leak, &ca, &stop), 0);
    assert_int_equal(ptl_call(b, NULL, NULL, leak, &cb, &stop), 0);
    printf("4-page mappings before NULL: %u computed (%u PTEs), %u with SystemPages=40000 "
           "(%u PTEs)\n",
           ca.mapped, ptl_total_system_ptes(a), cb.mapped, ptl_total_system_ptes(b));
    assert_true(ptl_total_system_ptes(b) >= 40000);
    assert_int_equal(ca.mapped, ptl_total_system_ptes(a) / 4);
    assert_int_equal(cb.mapped, ptl_total_system_ptes(b) / 4);
    ptl_shutdown(a);
    ptl_shutdown(b);
}

/* Fragmentation: free PTEs in plenty, no run long enough. */
typedef struct frag_ctx {
    PVOID va[4096];
    uint32_t n;
    PVOID big;
} frag_ctx;

static void fragment(void *arg)
{
    frag_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    PVOID v;
    while (c->n < 4096 && (v = MmMapIoSpace(pa, 2 * PAGE_SIZE, MmCached)))
        c->va[c->n++] = v;
    while (MmMapIoSpace(pa, PAGE_SIZE, MmCached)) /* the odd PTE left over, kept */
        ;
    /* free every other mapping: half the pool is free, in 2-page holes */
    for (uint32_t i = 0; i < c->n; i += 2)
        MmUnmapIoSpace(c->va[i], 2 * PAGE_SIZE);
    c->big = MmMapIoSpace(pa, 3 * PAGE_SIZE, MmCached);
}

static void test_fragmentation(void **state)
{
    (void)state;
    ptl_machine *m = boot(7000, 0);
    frag_ctx *c = calloc(1, sizeof *c);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, fragment, c, &stop), 0);
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    printf("fragmented pool: %u free in %u runs, largest %u\n", st.free, st.free_runs,
           st.largest_free);
    assert_null(c->big);
    assert_true(st.free >= 3);            /* enough in total ... */
    assert_int_equal(st.largest_free, 2); /* ... but no run of 3 */
    assert_int_equal(st.failed_fragmented, 1);
    assert_int_equal(st.hist[1], st.free_runs); /* every free run is 2 or 3 long */
    free(c);
    ptl_shutdown(m);
}

/* MDL mappings with TrackPtes: the 0x3F becomes 0xD8 naming the driver. */
typedef struct mdl_leak_ctx {
    uint32_t buf;
    uint32_t mapped;
} mdl_leak_ctx;

static void mdl_leak(void *arg)
{
    mdl_leak_ctx *c = arg;
    PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)c->buf, 16 * PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(mdl, KernelMode, IoReadAccess);
    for (;;) {
        /* the same pages mapped again and again through fresh MDLs: each mapping holds
         * 16 system PTEs and is never unmapped */
        PMDL again = IoAllocateMdl((PVOID)(uintptr_t)c->buf, 16 * PAGE_SIZE, FALSE, FALSE, NULL);
        MmProbeAndLockPages(again, KernelMode, IoReadAccess);
        MmGetSystemAddressForMdl(again);
        c->mapped++;
    }
}

static void test_track_ptes_blames_the_driver(void **state)
{
    (void)state;
    for (int track = 0; track <= 1; track++) {
        ptl_machine *m = boot(0, track);
        ptl_driver *d = ptl_driver_load(m, "videoprt.sys", 65536);
        ptl_process *p = ptl_process_create(m, "app.exe");
        mdl_leak_ctx c = {ptl_user_alloc(p, 16 * 4096), 0};
        ptl_stop stop;
        uint32_t code = ptl_call(m, p, d, mdl_leak, &c, &stop);
        if (!track) {
            assert_int_equal(code, 0x3F);
            assert_int_equal(stop.param[0], 0);
            assert_int_equal(stop.param[1], 16);
            assert_int_equal(stop.param[2], ptl_free_system_ptes(m));
            assert_int_equal(stop.param[3], ptl_total_system_ptes(m));
        } else {
            assert_int_equal(code, 0xD8);
            assert_string_equal(stop.name, "DRIVER_USED_EXCESSIVE_PTES");
            assert_int_equal(stop.param[1], c.mapped * 16);
            assert_int_equal(stop.param[2], ptl_free_system_ptes(m));
            assert_int_equal(stop.param[3], ptl_total_system_ptes(m));
            /* P1 points at the driver's name, a UNICODE_STRING in its image */
            assert_int_equal(stop.param[0], ptl_driver_base(d) + 0x100);
        }
        ptl_shutdown(m);
    }
}

static void test_driver_imports(void **state)
{
    (void)state;
    ptl_machine *m = boot(0, 0);
    uint32_t free0 = ptl_free_system_ptes(m);
    ptl_driver *a = ptl_driver_load(m, "vga.sys", 3 * 4096);
    ptl_driver *b = ptl_driver_load(m, "s3.sys", 5 * 4096);
    assert_int_equal(ptl_driver_import(a, "VIDEOPRT.SYS", 10 * 4096), 0);
    assert_int_equal(ptl_driver_import(b, "videoprt.sys", 10 * 4096), 0); /* shared */
    assert_int_equal(ptl_free_system_ptes(m), free0 - 3 - 5 - 10);
    ptl_stop stop;
    assert_int_equal(ptl_driver_unload(a, &stop), 0);
    assert_int_equal(ptl_free_system_ptes(m), free0 - 5 - 10); /* b still imports it */
    assert_int_equal(ptl_driver_unload(b, &stop), 0);
    assert_int_equal(ptl_free_system_ptes(m), free0);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- system threads ------------------------------------------------------------------ */

typedef struct sys_thread_ctx {
    int ran, after_terminate;
    NTSTATUS created, after_leak;
    HANDLE h;
    CLIENT_ID cid;
    uint32_t free_inside, first_free;
    int reused;
    ptl_machine *m;
} sys_thread_ctx;

static void worker(PVOID arg)
{
    sys_thread_ctx *c = arg;
    c->ran = 1;
    c->free_inside = ptl_free_system_ptes(c->m); /* its stack is held while it runs */
    PsTerminateSystemThread(STATUS_SUCCESS);
    c->after_terminate = 1; /* never reached */
}

static void create_threads(void *arg)
{
    sys_thread_ctx *c = arg;
    c->created = PsCreateSystemThread(&c->h, 0, NULL, NULL, &c->cid, worker, c);
    ZwClose(c->h);
    /* now eat the pool and try again */
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER;
    while (MmMapIoSpace(pa, PAGE_SIZE, MmCached))
        ;
    /* the first thread's stack sits in the dead-stack cache: one more thread runs on it */
    HANDLE h2;
    c->first_free = c->free_inside;
    if (PsCreateSystemThread(&h2, 0, NULL, NULL, NULL, worker, c) == STATUS_SUCCESS)
        c->reused++;
}

static void create_one(void *arg)
{
    sys_thread_ctx *c = arg;
    HANDLE h;
    c->after_leak = PsCreateSystemThread(&h, 0, NULL, NULL, NULL, worker, c);
}

static void test_system_threads(void **state)
{
    (void)state;
    ptl_machine *m = boot(0, 0);
    uint32_t free0 = ptl_free_system_ptes(m);
    sys_thread_ctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, create_threads, &c, &stop), 0);
    assert_int_equal(c.created, STATUS_SUCCESS);
    assert_true(c.ran);
    assert_false(c.after_terminate);
    assert_int_equal(c.first_free, free0 - 4); /* 12 KB stack + guard */
    assert_int_equal(c.reused, 1);
    /* a harness thread keeps the cached stack: now there is none */
    ptl_thread *t = ptl_thread_create(m, NULL);
    assert_non_null(t);
    assert_int_equal(ptl_call(m, NULL, NULL, create_one, &c, &stop), 0);
    assert_true((uintptr_t)c.cid.UniqueThread != 0);
    assert_int_equal(c.after_leak, STATUS_INSUFFICIENT_RESOURCES);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

/* ---- counters, timeline, PDH-CSV ------------------------------------------------------ */

/* Split one CSV line of quoted fields as a PDH-CSV reader does; returns the field count. */
static int split_csv(char *line, char **fields, int max)
{
    int n = 0;
    char *p = line;
    while (*p && n < max) {
        if (*p != '"')
            return -1;
        char *end = strchr(p + 1, '"');
        if (!end)
            return -1;
        *end = '\0';
        fields[n++] = p + 1;
        p = end + 1;
        if (*p == ',')
            p++;
        else if (*p == '\r' || *p == '\n' || *p == '\0')
            break;
        else
            return -1;
    }
    return n;
}

static void test_pdh_csv(void **state)
{
    (void)state;
    ptl_machine *m = boot(0, 0);
    leak_ctx c = {64, 0, 100};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, leak, &c, &stop), 0);
    ptl_counters now;
    ptl_counters_get(m, &now);
    assert_int_equal(now.free_system_ptes, ptl_free_system_ptes(m));
    assert_true(now.available_bytes > 0 && now.available_bytes < 64ull << 20);
    size_t samples = ptl_timeline_count(m);
    assert_true(samples >= 100);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(ptl_perf_csv(m, f), 0);
    fclose(f);
    /* parse it line by line, as perfmon's "open log" or relog would */
    char *fields[16];
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    assert_non_null(line);
    int n = split_csv(line, fields, 16);
    assert_int_equal(n, 1 + PTL_COUNTERS);
    assert_memory_equal(fields[0], "(PDH-CSV 4.0)", 13);
    assert_string_equal(fields[1], "\\\\PTELAB\\Memory\\Free System Page Table Entries");
    assert_string_equal(fields[3], "\\\\PTELAB\\Memory\\Pool Nonpaged Bytes");
    size_t rows = 0;
    unsigned long long last_free = 0, prev_ms = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        assert_int_equal(split_csv(line, fields, 16), 1 + PTL_COUNTERS);
        int mo, d, y, hh, mm, ss, ms;
        assert_int_equal(sscanf(fields[0], "%d/%d/%d %d:%d:%d.%d", &mo, &d, &y, &hh, &mm, &ss, &ms),
                         7);
        unsigned long long t =
            ((unsigned long long)((d - 1) * 24 + hh) * 3600 + mm * 60 + ss) * 1000 + (unsigned)ms;
        assert_true(t >= prev_ms); /* time never goes back */
        prev_ms = t;
        char *end;
        last_free = strtoull(fields[1], &end, 10);
        assert_true(*end == '\0');
        rows++;
    }
    assert_int_equal(rows, samples);
    assert_int_equal(last_free, ptl_free_system_ptes(m)); /* the last row is the present */
    free(text);
    ptl_shutdown(m);
}

/* TrackPtes charges a locked-pages mapping to the driver that maps it, and takes it back
 * from the same driver at the unmap, even when another driver allocated the MDL (an IRP's
 * buffer): 400 map/unmap cycles leave nothing charged, so exhaustion is 0x3F, not 0xD8. */
static PMDL shared_mdl;

static void alloc_and_lock(void *arg)
{
    (void)arg;
    PVOID buf = ExAllocatePoolWithTag(NonPagedPool, 16 * PAGE_SIZE, 'fuBA');
    shared_mdl = IoAllocateMdl(buf, 16 * PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(shared_mdl, KernelMode, IoWriteAccess);
}

static void map_unmap(void *arg)
{
    (void)arg;
    PVOID va = MmMapLockedPages(shared_mdl, KernelMode);
    MmUnmapLockedPages(va, shared_mdl);
}

static void hog_all_but_4(void *arg)
{
    (void)arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = 0xE0000000ll;
    MmMapIoSpace(pa, (ptl_largest_free_system_ptes(ptl_current()) - 4) * PAGE_SIZE, MmNonCached);
}

static void map_only(void *arg)
{
    (void)arg;
    MmMapLockedPages(shared_mdl, KernelMode);
}

static void test_track_ptes_charges_the_mapper(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.track_ptes = 1;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 256u << 20), 0);
    ptl_driver *a = ptl_driver_load(m, "a.sys", 8192), *b = ptl_driver_load(m, "b.sys", 8192);
    ptl_driver *hog = ptl_driver_load(m, "hog.sys", 8192);
    assert_true(a && b && hog);
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, a, alloc_and_lock, NULL, &stop), 0);
    for (int i = 0; i < 400; i++)
        assert_int_equal(ptl_call(m, NULL, b, map_unmap, NULL, &stop), 0);
    assert_int_equal(ptl_call(m, NULL, hog, hog_all_but_4, NULL, &stop), 0);
    assert_int_equal(ptl_call(m, NULL, b, map_only, NULL, &stop), 0x3F);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_space_until_null_then_threads_fail),
        cmocka_unit_test(test_system_pages_makes_it_last_longer),
        cmocka_unit_test(test_fragmentation),
        cmocka_unit_test(test_track_ptes_blames_the_driver),
        cmocka_unit_test(test_driver_imports),
        cmocka_unit_test(test_system_threads),
        cmocka_unit_test(test_pdh_csv),
        cmocka_unit_test(test_track_ptes_charges_the_mapper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
