/* test-tlb.c - the software TLB invalidates exactly what a PTE change must (the performance
 * issue, item 3).
 *
 * In every context driver code runs in (the system process, a user process's context, a
 * DPC), at sizes from one page to four page tables' worth, with the software MMU and in
 * native mode: driver code maps adapter memory, writes and reads every page through
 * WRITE_/READ_REGISTER_ULONG (the inline TLB path), reads a second mapping that stays, and
 * unmaps the first. Then:
 *   - no TLB entry of the unmapped range is left;
 *   - every TLB entry of the mapping that stays is still there (nothing more was dropped)
 *     and it still reads the right bytes;
 *   - a read of the first or the last page of the unmapped range faults, as NT does: STOP
 *     0x50 (PAGE_FAULT_IN_NONPAGED_AREA) at PASSIVE_LEVEL, STOP 0xD1
 *     (DRIVER_IRQL_NOT_LESS_OR_EQUAL) in a DPC, with the address as the first parameter.
 * An MDL mapping (MmMapLockedPagesSpecifyCache of MmAllocatePagesForMdl's pages) is checked
 * the same way. A process switch must drop the self-map's entries, which are above the
 * system start but show the current process's page tables. An adapter added after a
 * mapping of its range must be reached through that mapping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "internal.h"
#include <ptelab/wdm.h>

#define ADAPTER    0xE0000000ull
#define KEEP_PAGES 4u

enum { CTX_SYSTEM, CTX_USER, CTX_DPC };
static const char *const ctx_names[] = {"system process", "user process", "DPC"};

typedef struct tlb_case {
    ptl_machine *m;
    uint32_t pages;
    int last; /* probe the last page after the unmap, else the first */
    int use_mdl;
    /* results, recorded in driver code and asserted afterwards */
    uint32_t va, keep_va;
    int mapped;
    uint32_t bad_reads;      /* values that did not read back */
    uint32_t keep_before;    /* TLB entries of the kept mapping before the unmap */
    uint32_t keep_after;     /* ... and after */
    uint32_t stale_after;    /* TLB entries of the unmapped range after the unmap */
    uint32_t keep_bad_after; /* wrong values read from the kept mapping after the unmap */
    int probed;              /* reached the read that must fault (it must not return) */
} tlb_case;

static uint32_t tlb_entries_in(ptl_machine *m, uint32_t va, uint32_t pages)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < PTL_TLB_ENTRIES; i++) {
        uint32_t tag = m->mmu.tlb[i].tag;
        if (tag && tag - 1 >= (va >> 12) && tag - 1 < (va >> 12) + pages)
            n++;
    }
    return n;
}

static void touch_pages(tlb_case *c, uint32_t va, uint32_t pages, uint32_t salt, int write)
{
    for (uint32_t p = 0; p < pages; p++) {
        volatile ULONG *at = (volatile ULONG *)(uintptr_t)(va + p * PAGE_SIZE + (p % 1024) * 4);
        if (write)
            WRITE_REGISTER_ULONG(at, salt ^ p);
        for (int twice = 0; twice < 2; twice++) /* the second read is a TLB hit */
            if (READ_REGISTER_ULONG(at) != (salt ^ p))
                c->bad_reads++;
    }
}

static void driver(void *arg)
{
    tlb_case *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)(ADAPTER + (4u << 20)); /* the kept mapping: above the other */
    PVOID keep = MmMapIoSpace(pa, KEEP_PAGES * PAGE_SIZE, MmNonCached);
    PVOID va;
    PMDL mdl = NULL;
    if (c->use_mdl) {
        /* RAM pages with no system address yet (an MDL of nonpaged pool would map to the
         * pool's own address, which the unmap leaves alone) */
        PHYSICAL_ADDRESS lo, hi, skip;
        lo.QuadPart = 0;
        hi.QuadPart = 0xFFFFFFFFll;
        skip.QuadPart = 0;
        mdl = MmAllocatePagesForMdl(lo, hi, skip, c->pages * PAGE_SIZE);
        if (!mdl)
            return;
        va = MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, NULL, FALSE,
                                          NormalPagePriority);
    } else {
        pa.QuadPart = (LONGLONG)ADAPTER;
        va = MmMapIoSpace(pa, c->pages * PAGE_SIZE, MmNonCached);
    }
    if (!keep || !va)
        return;
    c->mapped = 1;
    c->va = (uint32_t)(uintptr_t)va;
    c->keep_va = (uint32_t)(uintptr_t)keep;
    touch_pages(c, c->va, c->pages, 0x5A5A0000u, 1);
    touch_pages(c, c->keep_va, KEEP_PAGES, 0x0B0B0000u, 1);
    c->keep_before = tlb_entries_in(c->m, c->keep_va, KEEP_PAGES);
    if (c->use_mdl)
        MmUnmapLockedPages(va, mdl);
    else
        MmUnmapIoSpace(va, c->pages * PAGE_SIZE);
    c->keep_after = tlb_entries_in(c->m, c->keep_va, KEEP_PAGES);
    c->stale_after = tlb_entries_in(c->m, c->va, c->pages);
    for (uint32_t p = 0; p < KEEP_PAGES; p++) {
        volatile ULONG *at = (volatile ULONG *)(uintptr_t)(c->keep_va + p * PAGE_SIZE + p * 4);
        if (READ_REGISTER_ULONG(at) != (0x0B0B0000u ^ p))
            c->keep_bad_after++;
    }
    c->probed = 1;
    uint32_t probe = c->va + (c->last ? (c->pages - 1) * PAGE_SIZE : 0) + 8;
    (void)READ_REGISTER_ULONG((volatile ULONG *)(uintptr_t)probe); /* must fault */
    c->probed = 2;
}

/* A default machine of `profile`, the software MMU or native when the host allows. */
static ptl_machine *boot_mode(int native, ptl_profile profile)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.native = native;
    cfg.profile = profile;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    return m;
}

static void run_case(int native, int ctx, uint32_t pages, int last, int use_mdl)
{
    ptl_machine *m = boot_mode(native, PTL_WIN2000); /* MmAllocatePagesForMdl */
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, ADAPTER, 8u << 20), 0);
    ptl_process *app = ptl_process_create(m, "app.exe");
    ptl_driver *d = ptl_driver_load(m, "tlb.sys", 8192);
    assert_true(app && d);
    tlb_case c = {.m = m, .pages = pages, .last = last, .use_mdl = use_mdl};
    ptl_stop stop;
    uint32_t code = ctx == CTX_DPC
                        ? ptl_call_dpc(m, d, driver, &c, &stop)
                        : ptl_call(m, ctx == CTX_USER ? app : NULL, d, driver, &c, &stop);
    if (!c.mapped || c.bad_reads || c.keep_before != KEEP_PAGES || c.keep_after != KEEP_PAGES ||
        c.stale_after || c.keep_bad_after || c.probed != 1 ||
        code != (ctx == CTX_DPC ? 0xD1u : 0x50u) || stop.param[0] == 0)
        fprintf(stderr,
                "case: %s, %s, %u pages, probe %s, %s: mapped %d, bad reads %u, kept TLB "
                "entries %u -> %u, stale %u, kept bad %u, probed %d, STOP 0x%x (%llx)\n",
                native == PTL_NATIVE_OFF ? "software MMU" : "native auto", ctx_names[ctx], pages,
                last ? "last" : "first", use_mdl ? "MDL" : "MmMapIoSpace", c.mapped, c.bad_reads,
                c.keep_before, c.keep_after, c.stale_after, c.keep_bad_after, c.probed, code,
                (unsigned long long)stop.param[0]);
    assert_true(c.mapped);
    assert_int_equal(c.bad_reads, 0);
    assert_int_equal(c.keep_before, KEEP_PAGES);
    assert_int_equal(c.keep_after, KEEP_PAGES); /* nothing beyond the range was dropped */
    assert_int_equal(c.stale_after, 0);         /* everything in it was */
    assert_int_equal(c.keep_bad_after, 0);
    assert_int_equal(c.probed, 1); /* the read after the unmap did not return */
    assert_int_equal(code, ctx == CTX_DPC ? 0xD1u : 0x50u);
    uint32_t probe = c.va + (last ? (pages - 1) * PAGE_SIZE : 0) + 8;
    assert_int_equal(stop.param[0], probe);
    ptl_shutdown(m);
}

static const uint32_t sizes[] = {1, 2, 16, 255, 1024};

static void every_case(int native)
{
    for (int ctx = CTX_SYSTEM; ctx <= CTX_DPC; ctx++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
            for (int last = 0; last < 2; last++)
                run_case(native, ctx, sizes[s], last, 0);
}

static void test_software_mmu(void **state)
{
    (void)state;
    every_case(PTL_NATIVE_OFF);
}

static void test_native_mode(void **state)
{
    (void)state;
    every_case(PTL_NATIVE_AUTO); /* the software MMU when the host cannot (sanitizers) */
}

static void test_mdl_mapping(void **state)
{
    (void)state;
    for (int ctx = CTX_SYSTEM; ctx <= CTX_USER; ctx++) /* MDL mapping needs <= APC_LEVEL */
        for (size_t s = 0; s < 4; s++)
            run_case(PTL_NATIVE_OFF, ctx, sizes[s], s & 1, 1);
}

/* ---- the self-map across a process switch ------------------------------------------
 * 0xC0300000 + 0x300 * 4 is the self-map's own PDE: it holds the frame of the page
 * directory the processor is using. The address is above the system start, but it is per
 * process, so a switch must not leave the previous process's translation cached. */
#define SELF_PDE_VA (0xC0300000u + 0x300u * 4u)

static void read_self_pde(void *arg)
{
    ULONG *out = arg;
    for (int twice = 0; twice < 2; twice++) /* the second read is served by the TLB */
        out[twice] = READ_REGISTER_ULONG((volatile ULONG *)(uintptr_t)SELF_PDE_VA);
}

static void selfmap_case(int native)
{
    ptl_machine *m = boot_mode(native, PTL_NT4_SP4);
    ptl_process *a = ptl_process_create(m, "a.exe"), *b = ptl_process_create(m, "b.exe");
    ptl_driver *d = ptl_driver_load(m, "self.sys", 8192);
    assert_true(a && b && d);
    ptl_process *order[] = {a, b, NULL, a, b, b, NULL};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        ULONG got[2] = {0, 0};
        ptl_stop stop;
        assert_int_equal(ptl_call(m, order[i], d, read_self_pde, got, &stop), 0);
        uint32_t want = order[i] ? ptl_process_dirbase(order[i]) : m->pte.master_pd << 12;
        assert_int_equal(got[0] & ~0xFFFu, want);
        assert_int_equal(got[1] & ~0xFFFu, want);
        assert_int_equal(ptl_check_full(m), 0); /* every TLB entry agrees with a walk */
    }
    ptl_shutdown(m);
}

static void test_selfmap_switch(void **state)
{
    (void)state;
    selfmap_case(PTL_NATIVE_OFF);
    selfmap_case(PTL_NATIVE_AUTO);
}

/* ---- an adapter that arrives after a mapping of its range -------------------------------
 * MmMapIoSpace maps any physical address; before a device decodes it, reads return all
 * ones. Once the adapter is added, the same mapping must reach the device: the TLB entry
 * (and the native mirror) cached for "nothing decodes here" must go. */
typedef struct late_case {
    PVOID va;
    ULONG before, after;
} late_case;

static void late_map(void *arg)
{
    late_case *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = (LONGLONG)ADAPTER;
    c->va = MmMapIoSpace(pa, PAGE_SIZE, MmNonCached);
    if (c->va)
        c->before = READ_REGISTER_ULONG((volatile ULONG *)c->va); /* cached in the TLB */
}

static void late_read(void *arg)
{
    late_case *c = arg;
    c->after = READ_REGISTER_ULONG((volatile ULONG *)c->va);
}

static void late_case_run(int native)
{
    ptl_machine *m = boot_mode(native, PTL_NT4_SP4);
    late_case c = {0};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, NULL, NULL, late_map, &c, &stop), 0);
    assert_non_null(c.va);
    assert_int_equal(c.before, 0xFFFFFFFFu);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, ADAPTER, 1u << 20), 0);
    uint32_t reg = 0xCAFEF00Du;
    assert_int_equal(ptl_phys_write(m, ADAPTER, &reg, sizeof reg), 0);
    assert_int_equal(ptl_check_full(m), 0);
    assert_int_equal(ptl_call(m, NULL, NULL, late_read, &c, &stop), 0);
    assert_int_equal(c.after, reg);
    ptl_shutdown(m);
}

static void test_adapter_after_mapping(void **state)
{
    (void)state;
    late_case_run(PTL_NATIVE_OFF);
    late_case_run(PTL_NATIVE_AUTO);
}

/* ---- what decommit flushes ----------------------------------------------------------- */

static int tlb_holds(const ptl_machine *m, uint32_t va)
{
    return m->mmu.tlb[(va >> 12) % PTL_TLB_ENTRIES].tag == (va >> 12) + 1;
}

/* Decommitting memory of a process that is not current (teardown, ptl_user_alloc's
 * failure path) must not flush the current process's translations of the same VAs when
 * the decommitted PTEs were never valid: written one by one, they flush nothing. A review
 * found the first run-based decommit flushing them. */
static void test_decommit_flushes_only_valid_ptes(void **state)
{
    (void)state;
    ptl_machine *m = boot_mode(PTL_NATIVE_OFF, PTL_NT4_SP4);
    ptl_process *a = ptl_process_create(m, "a.exe"), *b = ptl_process_create(m, "b.exe");
    uint32_t va = ptl_user_alloc(a, 16 * 4096), vb = ptl_user_alloc(b, 16 * 4096);
    assert_int_equal(va, vb);
    for (uint32_t i = 0; i < 16; i++) /* b is current after its writes */
        assert_int_equal(ptl_user_write(b, vb + i * 4096, &i, 4), 0);
    for (uint32_t i = 0; i < 16; i++)
        assert_true(tlb_holds(m, vb + i * 4096));
    uint64_t flushes = m->mmu.invalidations, writes = m->pte.writes;
    ptl__process_decommit(a, va, va + 16 * 4096); /* a's PTEs: demand-zero */
    for (uint32_t i = 0; i < 16; i++)
        assert_true(tlb_holds(m, vb + i * 4096));
    assert_int_equal(m->mmu.invalidations, flushes);
    assert_int_equal(m->pte.writes, writes + 16);
    /* zero PTEs are not written at all */
    writes = m->pte.writes;
    ptl__process_decommit(a, va, va + 16 * 4096);
    assert_int_equal(m->pte.writes, writes);
    assert_int_equal(ptl_check_full(m), 0);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_software_mmu),
        cmocka_unit_test(test_native_mode),
        cmocka_unit_test(test_mdl_mapping),
        cmocka_unit_test(test_selfmap_switch),
        cmocka_unit_test(test_adapter_after_mapping),
        cmocka_unit_test(test_decommit_flushes_only_valid_ptes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
