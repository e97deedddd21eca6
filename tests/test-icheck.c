/* test-icheck.c - the incremental ptl_check against its plain reference, ptl_check_full.
 *
 * Random driver and harness operations (mappings of adapter memory and RAM, MDLs locked
 * and mapped to system and user space, noncached memory, views of \Device\PhysicalMemory,
 * virtual memory, processes, threads and drivers coming and going, swap-out, DPCs) on
 * machines of every profile with the verifier on and off; after each, both checks must
 * give the same verdict, the machine must be intact, and what the incremental check
 * counted must equal a walk made here. Then page tables and directories are corrupted
 * behind the single writer's back through ptl__phys_copy, the writer ptl_phys_write and
 * kd's ed share (both refuse paging structures from outside since a review showed that
 * such a write ended in an internal assertion at the next call; the checks must still
 * catch one), and through kd's ed on ordinary frames that a broken PDE makes tables.
 * Each must be caught, by both checks, and repairing it must make both pass again. Driver code
 * cannot write through the self-map (it is read-only to drivers, mmu.c): such a write stops the
 * machine unchanged.
 *
 * The machines run the software MMU (native mode hands frames to the host, where the
 * incremental check cannot follow writes; ptl_check walks everything there, which
 * test_native_walks_everything checks). PTELAB_SEED=N replays a run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "internal.h"
#include <ptelab/wdm.h>
#include "ptltest.h" /* after wdm.h: its DDI helpers */

#define ADAPTER 0xE0000000ull
#define SLOTS   6

/* The seed (printed, so PTELAB_SEED=N replays it), never 0. */
static uint64_t icheck_seed(void)
{
    uint64_t seed = ptltest_seed();
    printf("test-icheck: PTELAB_SEED=%llu\n", (unsigned long long)seed);
    return seed ? seed : 1;
}

static ptl_machine *boot(ptl_profile profile, int verifier, uint32_t system_pages)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.profile = profile;
    cfg.verifier = verifier;
    cfg.system_pages = system_pages;
    cfg.native = PTL_NATIVE_OFF;
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, ADAPTER, 1u << 20), 0);
    return m;
}

/* The incremental check's counts against a walk made here (pte.c's walk, recounted). */
static void assert_totals(ptl_machine *m)
{
    ptl__icheck_totals t;
    assert_int_equal(ptl__icheck_totals_get(m, &t), 0);
    uint64_t mapped = 0;
    uint32_t first_sys = m->pte.system_start >> 22, nram = m->phys.ram_pages;
    for (int k = 0; k < m->pte.npds; k++) {
        uint32_t pd = m->pte.pds[k];
        for (uint32_t i = 0; i < 1024; i++) {
            uint32_t pde;
            ptl_phys_read(m, ((uint64_t)pd << 12) + i * 4, &pde, 4);
            if (!(pde & PTL_PTE_VALID) || (pde >> 12) >= nram)
                continue;
            mapped++;
            if (i == PTL_PD_SELFMAP_INDEX || (i >= first_sys && pd != m->pte.master_pd))
                continue;
            uint32_t ptes[1024];
            ptl_phys_read(m, (uint64_t)(pde >> 12) << 12, ptes, sizeof ptes);
            for (uint32_t j = 0; j < 1024; j++)
                mapped += (ptes[j] & PTL_PTE_VALID) && (ptes[j] >> 12) < nram;
        }
    }
    assert_int_equal(t.mapped, mapped);
    assert_int_equal(t.pds, m->pte.npds);
    for (int type = 0; type < 2; type++) {
        const ptl__syspool *p = &m->sysptes.pool[type];
        assert_int_equal(t.in_runs[type], p->total - ptl__spool_free_count(p->alloc));
    }
    uint64_t priv = 0;
    for (ptl_process *p = m->procs.list; p; p = p->next)
        if (!p->exited && !p->is_system)
            priv += p->private_pages;
    assert_int_equal(t.private_valid, priv);
}

/* Both checks agree; returns 0 when both say intact. */
static int both(ptl_machine *m)
{
    int inc = ptl_check(m);
    char why[512];
    snprintf(why, sizeof why, "%s", ptl_error());
    int full = ptl_check_full(m);
    if ((inc == 0) != (full == 0))
        fail_msg("incremental says %s (%s), the full walk %s (%s)", inc ? "broken" : "intact",
                 inc ? why : "", full ? "broken" : "intact", full ? ptl_error() : "");
    return inc;
}

/* A word written behind the single writer's back, as ptl_phys_write would if it took
 * paging structures. */
static void raw_write(ptl_machine *m, uint64_t pa, uint32_t v)
{
    assert_int_equal(ptl__phys_copy(&m->phys, pa, &v, 4, 1), 0);
}

/* ---- random operations ---------------------------------------------------------------- */

typedef struct world {
    ptl_machine *m;
    ptl_process *procs[3];
    ptl_driver *drv[2];
    ptl_thread *threads[SLOTS];
    PMDL mdls[SLOTS];
    uint32_t io_va[SLOTS], io_bytes[SLOTS], mdl_sys[SLOTS], mdl_user[SLOTS], nc_va[SLOTS],
        nc_bytes[SLOTS], views[SLOTS], bufs[3];
    uint64_t io_pa[SLOTS];
    int op;
} world;

static uint32_t some_size(void)
{
    switch (ptltest_rnd() % 4) {
    case 0:
        return 1 + ptltest_rnd() % 100;
    case 1:
        return PAGE_SIZE * (1 + ptltest_rnd() % 8);
    case 2:
        return ptltest_rnd() % (256u << 10);
    default:
        return PAGE_SIZE * (1 + ptltest_rnd() % 1100); /* across a page table */
    }
}

static uint64_t some_pa(void)
{
    return ptltest_rnd() % 2 ? ADAPTER + ptltest_rnd() % (1u << 20)
                             : (uint64_t)(ptltest_rnd() % (64u << 20));
}

static void op(void *arg)
{
    world *w = arg;
    int k = (int)(ptltest_rnd() % SLOTS);
    PHYSICAL_ADDRESS pa;
    switch (w->op) {
    case 0:
        if (!w->io_va[k]) {
            pa.QuadPart = (LONGLONG)some_pa();
            uint32_t n = some_size();
            PVOID va = MmMapIoSpace(pa, n, (MEMORY_CACHING_TYPE)(ptltest_rnd() % 3));
            if (va) {
                w->io_va[k] = (uint32_t)(uintptr_t)va;
                w->io_bytes[k] = n;
                w->io_pa[k] = (uint64_t)pa.QuadPart;
            }
        } else {
            MmUnmapIoSpace((PVOID)(uintptr_t)w->io_va[k], w->io_bytes[k]);
            w->io_va[k] = 0;
        }
        break;
    case 1:
        if (!w->mdls[k]) {
            uint32_t buf = w->bufs[ptltest_rnd() % 3];
            w->mdls[k] = IoAllocateMdl((PVOID)(uintptr_t)(buf + ptltest_rnd() % 4096),
                                       1 + ptltest_rnd() % 12000, FALSE, FALSE, NULL);
        } else if (!(w->mdls[k]->MdlFlags & MDL_PAGES_LOCKED)) {
            PTL_TRY
            {
                MmProbeAndLockPages(w->mdls[k], ptltest_rnd() % 2 ? UserMode : KernelMode,
                                    IoWriteAccess);
            }
            PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {}
        } else if (!w->mdl_sys[k] && ptltest_rnd() % 2) {
            w->mdl_sys[k] = (uint32_t)(uintptr_t)MmMapLockedPagesSpecifyCache(
                w->mdls[k], KernelMode, MmCached, NULL, FALSE, NormalPagePriority);
        } else if (!w->mdl_user[k] && ptltest_rnd() % 2) {
            PTL_TRY
            {
                w->mdl_user[k] = (uint32_t)(uintptr_t)MmMapLockedPages(w->mdls[k], UserMode);
            }
            PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {}
        } else {
            if (w->mdl_sys[k])
                MmUnmapLockedPages((PVOID)(uintptr_t)w->mdl_sys[k], w->mdls[k]);
            if (w->mdl_user[k])
                MmUnmapLockedPages((PVOID)(uintptr_t)w->mdl_user[k], w->mdls[k]);
            w->mdl_sys[k] = w->mdl_user[k] = 0;
            MmUnlockPages(w->mdls[k]);
            IoFreeMdl(w->mdls[k]);
            w->mdls[k] = NULL;
        }
        break;
    case 2:
        if (!w->nc_va[k]) {
            uint32_t n = 1 + ptltest_rnd() % (64u << 10);
            PVOID va = MmAllocateNonCachedMemory(n);
            if (va) {
                w->nc_va[k] = (uint32_t)(uintptr_t)va;
                w->nc_bytes[k] = n;
            }
        } else {
            MmFreeNonCachedMemory((PVOID)(uintptr_t)w->nc_va[k], w->nc_bytes[k]);
            w->nc_va[k] = 0;
        }
        break;
    case 3: {
        UNICODE_STRING name;
        OBJECT_ATTRIBUTES oa;
        RtlInitUnicodeString(&name, L"\\Device\\PhysicalMemory");
        InitializeObjectAttributes(&oa, &name, OBJ_CASE_INSENSITIVE, NULL, NULL);
        HANDLE h = NULL;
        if (!NT_SUCCESS(ZwOpenSection(&h, SECTION_ALL_ACCESS, &oa)))
            break;
        LARGE_INTEGER off;
        off.QuadPart = (LONGLONG)(some_pa() & ~0xFFFull);
        SIZE_T size = 1 + ptltest_rnd() % (128u << 10);
        PVOID base = NULL;
        if (NT_SUCCESS(ZwMapViewOfSection(h, NtCurrentProcess(), &base, 0, size, &off, &size,
                                          ViewUnmap, 0, PAGE_READWRITE)))
            w->views[k] = (uint32_t)(uintptr_t)base;
        ZwClose(h);
        break;
    }
    case 4:
        if (w->views[k]) {
            ZwUnmapViewOfSection(NtCurrentProcess(), (PVOID)(uintptr_t)w->views[k]);
            w->views[k] = 0;
        }
        break;
    case 5: { /* private memory: commit, touch, free */
        PVOID base = NULL;
        SIZE_T size = some_size();
        if (NT_SUCCESS(ZwAllocateVirtualMemory(NtCurrentProcess(), &base, 0, &size,
                                               MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE))) {
            uint8_t b = 0x5A;
            for (SIZE_T off = 0; off < size; off += PAGE_SIZE * (1 + ptltest_rnd() % 3))
                RtlCopyMemory((PUCHAR)base + off, &b, 1);
            if (ptltest_rnd() % 3) {
                size = 0;
                ZwFreeVirtualMemory(NtCurrentProcess(), &base, &size, MEM_RELEASE);
            }
        }
        break;
    }
    default: { /* writes through mappings of adapter memory and of the user buffers (a
                * write through a mapping of any RAM could corrupt a page table: the checks
                * would rightly say so) */
        uint32_t va = ptltest_rnd() % 2 && w->io_pa[k] >= ADAPTER ? w->io_va[k] : w->mdl_sys[k];
        if (va) {
            ULONG v = ptltest_rnd();
            RtlCopyMemory((PVOID)(uintptr_t)va, &v, sizeof v);
        }
        break;
    }
    }
}

static void dpc(void *arg)
{
    world *w = arg;
    uint32_t va = w->io_va[ptltest_rnd() % SLOTS];
    if (va) {
        ULONG v;
        RtlCopyMemory(&v, (PVOID)(uintptr_t)va, sizeof v);
    }
}

static void step(world *w)
{
    ptl_stop stop;
    ptl_process *p = w->procs[ptltest_rnd() % 3];
    ptl_driver *d = w->drv[ptltest_rnd() % 2];
    uint32_t r = ptltest_rnd() % 100;
    if (r < 80) {
        w->op = (int)(ptltest_rnd() % 7);
        ptl_call(w->m, p, d, op, w, &stop);
    } else if (r < 84) {
        ptl_call_dpc(w->m, d, dpc, w, &stop);
    } else if (r < 88) {
        ptl_process_swap_out(p);
    } else if (r < 92) {
        int k = (int)(ptltest_rnd() % SLOTS);
        if (w->threads[k]) {
            ptl_thread_exit(w->threads[k]);
            w->threads[k] = NULL;
        } else {
            w->threads[k] = ptl_thread_create(w->m, p);
        }
    } else if (r < 95) {
        uint32_t v = ptltest_rnd();
        ptl_user_write(p, w->bufs[ptltest_rnd() % 3] + ptltest_rnd() % 8192, &v, 4);
    } else if (r < 97) {
        static FILE *sink;
        if (!sink)
            sink = fopen("/dev/null", "w");
        ptl_kd(w->m, ptltest_rnd() % 2 ? "!vm" : "!sysptes 1", sink);
    } else {
        /* a driver comes and goes (the verifier may stop the machine over its leaks) */
        int k = (int)(ptltest_rnd() % 2);
        if (ptl_driver_loaded(w->drv[k]))
            ptl_driver_unload(w->drv[k], &stop);
        else
            w->drv[k] = ptl_driver_load(w->m, k ? "b.sys" : "a.sys", 4096 + ptltest_rnd() % 40000);
    }
}

static void world_boot(world *w, int variant)
{
    memset(w, 0, sizeof *w);
    w->m = boot((ptl_profile)(variant % 4), variant / 4 % 2, variant / 8 % 2 ? 7000 : 0);
    for (int i = 0; i < 3; i++) {
        w->procs[i] = ptl_process_create(w->m, i ? "app.exe" : "other.exe");
        assert_non_null(w->procs[i]);
        w->bufs[i] = ptl_user_alloc(w->procs[i], 16384);
    }
    w->drv[0] = ptl_driver_load(w->m, "a.sys", 8192);
    w->drv[1] = ptl_driver_load(w->m, "b.sys", 4096);
}

static void world_free(world *w)
{
    for (int k = 0; k < SLOTS; k++)
        if (w->threads[k] && !ptl_stopped(w->m, NULL))
            ptl_thread_exit(w->threads[k]);
    ptl_shutdown(w->m);
}

static void test_random_operations_agree(void **state)
{
    (void)state;
    ptltest_rng_state = icheck_seed();
    for (int variant = 0; variant < 16; variant++) {
        world w;
        world_boot(&w, variant);
        int checks = 0;
        for (int i = 0; i < 200; i++) {
            step(&w);
            if (ptl_stopped(w.m, NULL)) { /* a verifier STOP, say: go on on a new machine */
                world_free(&w);
                world_boot(&w, variant);
                continue;
            }
            if (i % 3 == 0 || ptltest_rnd() % 4 == 0) { /* checks between several operations too */
                if (both(w.m) != 0)
                    fail_msg("variant %d, step %d: %s", variant, i, ptl_error());
                assert_totals(w.m);
                checks++;
            }
        }
        assert_true(checks >= 40);
        world_free(&w);
    }
}

/* ---- corruption behind the writer's back ------------------------------------------------ */

/* The PTE of va through the tables, as ptl_phys_read sees it, and its physical address. */
static uint64_t pte_pa(ptl_machine *m, uint32_t va)
{
    uint32_t pde;
    ptl_phys_read(m, ((uint64_t)m->pte.master_pd << 12) + (va >> 22) * 4, &pde, 4);
    assert_true(pde & PTL_PTE_VALID);
    return ((uint64_t)(pde >> 12) << 12) + ((va >> 12) & 0x3FF) * 4;
}

/* Write a word of physical memory, check that both checks fail, put it back, check that
 * both pass. */
static void corrupt_phys(ptl_machine *m, uint64_t pa, uint32_t bad, const char *what)
{
    uint32_t old;
    assert_int_equal(ptl_phys_read(m, pa, &old, 4), 0);
    assert_int_equal(both(m), 0);
    assert_int_equal(ptl_phys_write(m, pa, &bad, 4), -1); /* refused from outside */
    assert_non_null(strstr(ptl_error(), "paging structures"));
    raw_write(m, pa, bad);
    if (both(m) == 0)
        fail_msg("%s: not caught", what);
    raw_write(m, pa, old);
    if (both(m) != 0)
        fail_msg("%s: repaired, still broken: %s", what, ptl_error());
}

static void test_phys_write_corruption_is_caught(void **state)
{
    (void)state;
    world w;
    ptltest_rng_state = 7;
    world_boot(&w, 1);
    for (int i = 0; i < 40; i++)
        step(&w);
    ptl_machine *m = w.m;
    assert_int_equal(both(m), 0);
    /* a free system PTE made valid */
    const ptl__syspool *sp = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    uint32_t free_va = 0;
    for (uint32_t i = sp->total; i-- > 0;)
        if (sp->info[i].kind == PTL_KIND_FREE && !(sp->seg1_va && i >= sp->seg0_count)) {
            free_va = sp->seg0_va + i * 4096;
            break;
        }
    assert_true(free_va != 0);
    corrupt_phys(m, pte_pa(m, free_va), (5u << 12) | PTL_PTE_VALID | PTL_PTE_WRITE,
                 "a free system PTE made valid");
    /* an invalid PTE in a free slot, software bits only: the pool wants zero */
    corrupt_phys(m, pte_pa(m, free_va), 0x80, "a free system PTE with software bits");
    /* a mapped PTE pointed at another frame: share counts no longer add up */
    uint32_t drv = ptl_driver_base(w.drv[0]);
    uint32_t pte;
    ptl_phys_read(m, pte_pa(m, drv), &pte, 4);
    assert_true(pte & PTL_PTE_VALID);
    corrupt_phys(m, pte_pa(m, drv), pte + 0x1000, "an image PTE pointed elsewhere");
    /* a user PTE outside every VAD */
    ptl_process *app = w.procs[1];
    uint32_t pd = ptl_process_dirbase(app) >> 12, upde;
    ptl_phys_read(m, ((uint64_t)pd << 12) + (w.bufs[1] >> 22) * 4, &upde, 4);
    assert_true(upde & PTL_PTE_VALID);
    uint64_t table = (uint64_t)(upde >> 12) << 12;
    uint32_t slot = 1023; /* the last PTE of the table: no VAD of this test reaches it */
    corrupt_phys(m, table + slot * 4, PTL_SWPTE_PROT(MM_READWRITE), "a user PTE in no VAD");
    /* a system PDE of a process directory that differs from the master's */
    uint32_t idx = 0x3FF;
    uint32_t sys;
    ptl_phys_read(m, ((uint64_t)pd << 12) + idx * 4, &sys, 4);
    corrupt_phys(m, ((uint64_t)pd << 12) + idx * 4, sys ^ 0x1000, "a system PDE out of step");
    /* the self-map of the master directory */
    uint64_t self = ((uint64_t)m->pte.master_pd << 12) + PTL_PD_SELFMAP_INDEX * 4;
    ptl_phys_read(m, self, &sys, 4);
    corrupt_phys(m, self, sys & ~PTL_PTE_VALID, "the self-map made invalid");
    /* the Accessed bit is the processor's: changing it breaks nothing (Dirty would: the
     * TLB may hold the page as dirty) */
    ptl_phys_read(m, pte_pa(m, drv), &pte, 4);
    uint32_t ad = pte ^ PTL_PTE_ACCESSED;
    raw_write(m, pte_pa(m, drv), ad);
    assert_int_equal(both(m), 0);
    raw_write(m, pte_pa(m, drv), pte);
    world_free(&w);
}

/* A view of RAM nobody ever used (above the high-water mark: the frame has no owner yet)
 * still counts in the frame's ShareCount, and both checks hold it to the page tables like
 * any other frame's. They used to compare only frames below the high-water mark, so a
 * wrong count there went unseen. */
typedef struct never_used_view {
    uint64_t pa;
    NTSTATUS st;
    PVOID base;
} never_used_view;

static void map_never_used(void *arg)
{
    never_used_view *v = arg;
    SIZE_T size = PAGE_SIZE;
    v->st = ptltest_map_physical(v->pa, &size, PAGE_READWRITE, &v->base);
}

static void test_never_used_frame_counts_are_checked(void **state)
{
    (void)state;
    ptl_machine *m = boot(PTL_NT4_SP4, 0, 0);
    ptl_process *app = ptl_process_create(m, "app.exe");
    ptl_driver *drv = ptl_driver_load(m, "view.sys", 8192);
    assert_non_null(app);
    assert_non_null(drv);
    uint32_t f = m->phys.ram_pages - 1;
    assert_true(f >= m->phys.hwm); /* never handed out */
    never_used_view v = {(uint64_t)f << 12, -1, NULL};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, app, drv, map_never_used, &v, &stop), 0);
    assert_int_equal(v.st, STATUS_SUCCESS);
    assert_true(f >= m->phys.hwm);
    assert_int_equal(m->phys.pfn[f].ShareCount, 1);
    assert_int_equal(both(m), 0);
    /* the count made wrong, as a bug in a mapping path would leave it */
    m->phys.pfn[f].ShareCount = 2;
    ptl__phys_note(&m->phys, f);
    if (both(m) == 0)
        fail_msg("a wrong ShareCount on a never-used frame was not caught");
    assert_non_null(strstr(ptl_error(), "ShareCount"));
    m->phys.pfn[f].ShareCount = 1;
    ptl__phys_note(&m->phys, f);
    assert_int_equal(both(m), 0);
    ptl_shutdown(m);
}

/* The page file: each process's paged-out counter against its page-file PTEs, and the
 * slots in use against all the counters. A decommit that dropped a PTE without freeing
 * its slot, or freed the slot and kept counting it, leaves one of these wrong. */
static void test_pagefile_counts_are_checked(void **state)
{
    (void)state;
    ptl_machine *m = boot(PTL_NT4_SP4, 0, 0);
    ptl_process *app = ptl_process_create(m, "app.exe");
    assert_non_null(app);
    uint32_t va = ptl_user_alloc(app, 4 * 4096);
    assert_true(va != 0);
    uint8_t page[4096] = {1};
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(ptl_user_write(app, va + i * 4096, page, sizeof page), 0);
    assert_int_equal(ptl_process_swap_out(app), 4);
    assert_int_equal(app->paged_out, 4);
    assert_int_equal(m->procs.pagefile.used, 4);
    assert_int_equal(both(m), 0);
    app->paged_out = 3; /* a counter that lost a page */
    if (both(m) == 0)
        fail_msg("a wrong paged-out counter was not caught");
    assert_non_null(strstr(ptl_error(), "page-file slots"));
    app->paged_out = 4;
    assert_int_equal(both(m), 0);
    m->procs.pagefile.used = 5; /* a slot nobody names: leaked */
    if (both(m) == 0)
        fail_msg("a leaked page-file slot was not caught");
    assert_non_null(strstr(ptl_error(), "page file has"));
    m->procs.pagefile.used = 4;
    assert_int_equal(both(m), 0);
    /* reading a page back frees its slot */
    assert_int_equal(ptl_user_read(app, va, page, sizeof page), 0);
    assert_int_equal(m->procs.pagefile.used, 3);
    assert_int_equal(both(m), 0);
    assert_int_equal(ptl_process_exit(app, NULL), 0);
    assert_int_equal(m->procs.pagefile.used, 0);
    assert_int_equal(both(m), 0);
    ptl_shutdown(m);
}

/* kd's e* commands write memory through ptl__phys_copy. kd refuses to edit page tables
 * and directories (their frames' use says so); what it may edit is caught all the same
 * when a broken PDE makes an ordinary frame a page table. */
static void test_kd_edits(void **state)
{
    (void)state;
    world w;
    ptltest_rng_state = 11;
    world_boot(&w, 2);
    ptl_machine *m = w.m;
    FILE *out = fopen("/dev/null", "w");
    assert_non_null(out);
    assert_int_equal(both(m), 0);
    uint32_t drv = ptl_driver_base(w.drv[0]), old;
    uint64_t pa = pte_pa(m, drv);
    ptl_phys_read(m, pa, &old, 4);
    char cmd[96];
    /* a PTE through the self-map, a PDE physically: refused, nothing changes */
    snprintf(cmd, sizeof cmd, "ed %x %x", PTL_PTE_VA(drv), old + 0x3000);
    assert_int_not_equal(ptl_kd(m, cmd, out), 0);
    uint64_t pde_pa = ((uint64_t)m->pte.master_pd << 12) + (drv >> 22) * 4;
    snprintf(cmd, sizeof cmd, "eb /p %llx 00", (unsigned long long)pde_pa);
    assert_int_not_equal(ptl_kd(m, cmd, out), 0);
    assert_int_equal(both(m), 0);
    /* the driver's image: ordinary memory */
    snprintf(cmd, sizeof cmd, "ed %x 12345678 9abcdef0", drv);
    assert_int_equal(ptl_kd(m, cmd, out), 0);
    assert_int_equal(both(m), 0);
    /* a user PDE pointed at the image's frame: the frame is read as a page table */
    uint32_t pd = ptl_process_dirbase(w.procs[1]) >> 12, idx = 1, was, frame = old >> 12;
    uint64_t at = ((uint64_t)pd << 12) + idx * 4;
    ptl_phys_read(m, at, &was, 4);
    assert_int_equal(was, 0);
    uint32_t bad = (frame << 12) | PTL_PTE_VALID | PTL_PTE_WRITE | PTL_PTE_OWNER;
    raw_write(m, at, bad);
    assert_int_not_equal(both(m), 0);
    snprintf(cmd, sizeof cmd, "ed /p %llx %x", (unsigned long long)frame << 12,
             (5u << 12) | PTL_PTE_VALID);
    assert_int_equal(ptl_kd(m, cmd, out), 0);
    assert_int_not_equal(both(m), 0);
    snprintf(cmd, sizeof cmd, "ed /p %llx 0", (unsigned long long)frame << 12);
    assert_int_equal(ptl_kd(m, cmd, out), 0);
    raw_write(m, at, was);
    assert_int_equal(both(m), 0);
    fclose(out);
    world_free(&w);
}

typedef struct selfmap_args {
    uint32_t pte_va, value;
} selfmap_args;

static void write_selfmap(void *arg)
{
    selfmap_args *a = arg;
    RtlCopyMemory((PVOID)(uintptr_t)a->pte_va, &a->value, sizeof a->value);
}

/* Driver code sees the self-map read-only (mmu.c, selfmap_mask): a write of a PTE or a
 * user page table through it stops the machine before anything changes, and both checks
 * still find the machine sound. */
static void test_selfmap_writes_are_refused(void **state)
{
    (void)state;
    for (int which = 0; which < 2; which++) {
        world w;
        ptltest_rng_state = 13;
        world_boot(&w, 3);
        ptl_machine *m = w.m;
        ptl_stop stop;
        uint32_t drv = ptl_driver_base(w.drv[1]), old;
        ptl_phys_read(m, pte_pa(m, drv), &old, 4);
        selfmap_args a = {PTL_PTE_VA(drv), old + 0x2000};
        if (which == 1) /* the last PTE of the user table that maps the buffer */
            a = (selfmap_args){PTL_PTE_VA(w.bufs[1] + 0x3FF000u - (w.bufs[1] & 0x3FF000u)), 0x80};
        uint32_t code = ptl_call(m, w.procs[1], w.drv[0], write_selfmap, &a, &stop);
        assert_int_equal(code, m->cfg.profile >= PTL_WIN2000 ? 0xBEu : 0x50u);
        assert_int_equal(stop.param[0], a.pte_va);
        uint32_t now;
        ptl_phys_read(m, pte_pa(m, drv), &now, 4);
        assert_int_equal(now, old);
        assert_int_equal(both(m), 0);
        world_free(&w);
    }
}

static void test_random_corruption_agrees(void **state)
{
    (void)state;
    ptltest_rng_state = icheck_seed() ^ 0x9E3779B97F4A7C15ull;
    for (int round = 0; round < 6; round++) {
        world w;
        world_boot(&w, round);
        ptl_machine *m = w.m;
        for (int i = 0; i < 200 && !ptl_stopped(m, NULL); i++) {
            step(&w);
            if (ptl_stopped(m, NULL))
                break;
            if (i % 5)
                continue;
            assert_int_equal(both(m), 0);
            /* one word of a directory or a table, at random */
            uint32_t pd = m->pte.pds[ptltest_rnd() % (uint32_t)m->pte.npds], pde;
            uint64_t at = ((uint64_t)pd << 12) + (ptltest_rnd() % 1024) * 4;
            if (ptltest_rnd() % 3) {
                ptl_phys_read(m, ((uint64_t)pd << 12) + (ptltest_rnd() % 1024) * 4, &pde, 4);
                if ((pde & PTL_PTE_VALID) && (pde >> 12) < m->phys.ram_pages)
                    at = ((uint64_t)(pde >> 12) << 12) + (ptltest_rnd() % 1024) * 4;
            }
            uint32_t old, bad;
            ptl_phys_read(m, at, &old, 4);
            switch (ptltest_rnd() % 4) {
            case 0:
                bad = old ^ (1u << (ptltest_rnd() % 32));
                break;
            case 1:
                bad = 0;
                break;
            case 2:
                bad = old ^ PTL_PTE_VALID;
                break;
            default:
                bad = ptltest_rnd();
                break;
            }
            raw_write(m, at, bad);
            both(m); /* same verdict, whatever it is */
            raw_write(m, at, old);
            assert_int_equal(both(m), 0);
        }
        world_free(&w);
    }
}

static void test_native_walks_everything(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    /* whatever mode the host allows, the verdicts agree, and a corruption is caught */
    assert_int_equal(both(m), 0);
    const ptl__syspool *sp = &m->sysptes.pool[PTL_SYSTEM_PTE_SPACE];
    uint64_t pa = pte_pa(m, sp->seg0_va + (sp->seg0_count - 1) * 4096);
    uint32_t bad = 0x80, old;
    ptl_phys_read(m, pa, &old, 4);
    raw_write(m, pa, bad);
    assert_int_not_equal(both(m), 0);
    raw_write(m, pa, old);
    assert_int_equal(both(m), 0);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_operations_agree),
        cmocka_unit_test(test_phys_write_corruption_is_caught),
        cmocka_unit_test(test_never_used_frame_counts_are_checked),
        cmocka_unit_test(test_kd_edits),
        cmocka_unit_test(test_selfmap_writes_are_refused),
        cmocka_unit_test(test_random_corruption_agrees),
        cmocka_unit_test(test_pagefile_counts_are_checked),
        cmocka_unit_test(test_native_walks_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
