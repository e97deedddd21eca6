/* demo.c - `ptelab demo`: Microsoft's article on mapping adapter memory, end to end.
 *
 * One 64 MB Windows NT 4.0 SP4 machine with a PCI adapter at 0xE0000000 goes through the
 * article in order: the Section Object method, the MmMapIoSpace/MDL method, then what the
 * article warns about: a DPC touching a user address in the wrong context (on a machine of
 * its own), a driver that maps and never unmaps until system PTEs run out, the SystemPages
 * registry value that makes the same leak last longer, and the MustSucceed caller's STOP
 * 0x3F. The numbers printed are the machine's own. The leaking machine's history is
 * written to demo-report.html (ptl_report_write).
 *
 * Only the public harness (<ptelab/ptelab.h>) and the DDIs (<ptelab/wdm.h>) are used: the
 * driver code below is written as a driver of the period would write it.
 */
#include "demo.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#define ADAPTER_BUS   0xE0000000ull
#define ADAPTER_BYTES (1u << 20)
#define REPORT_PATH   "demo-report.html"

static const char *num(char buf[32], uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

static void heading(int n, const char *title)
{
    printf("\n%d. %s\n", n, title);
}

static ptl_machine *boot(uint32_t system_pages)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.ram_bytes = 64ull << 20;
    cfg.profile = PTL_NT4_SP4;
    cfg.system_pages = system_pages;
    ptl_machine *m = ptl_boot(&cfg);
    if (!m) {
        fprintf(stderr, "ptelab demo: boot failed: %s\n", ptl_error());
        return NULL;
    }
    if (ptl_adapter_add(m, PCIBus, 0, ADAPTER_BUS, ADAPTER_BYTES) != 0) {
        fprintf(stderr, "ptelab demo: adapter: %s\n", ptl_error());
        ptl_shutdown(m);
        return NULL;
    }
    return m;
}

/* ---- the Section Object method (MAPMEM) ------------------------------------------------ */

typedef struct section_ctx {
    NTSTATUS st_open, st_map;
    PHYSICAL_ADDRESS physical;
    HANDLE section;
    PVOID object, view_base, user_va;
    SIZE_T view_size;
} section_ctx;

static void section_map(void *arg)
{
    section_ctx *c = arg;
    PHYSICAL_ADDRESS bus, view_base;
    ULONG space = 0;
    bus.QuadPart = ADAPTER_BUS + 0x1234;
    if (!HalTranslateBusAddress(PCIBus, 0, bus, &space, &c->physical))
        return;
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;
    RtlInitUnicodeString(&name, L"\\Device\\PhysicalMemory");
    InitializeObjectAttributes(&oa, &name, OBJ_CASE_INSENSITIVE, (HANDLE)NULL, (PVOID)NULL);
    c->st_open = ZwOpenSection(&c->section, SECTION_ALL_ACCESS, &oa);
    if (!NT_SUCCESS(c->st_open))
        return;
    ObReferenceObjectByHandle(c->section, SECTION_ALL_ACCESS, (POBJECT_TYPE)NULL, KernelMode,
                              &c->object, NULL);
    view_base = c->physical;
    c->view_size = 0x3000;
    c->st_map =
        ZwMapViewOfSection(c->section, NtCurrentProcess(), &c->view_base, 0L, c->view_size,
                           &view_base, &c->view_size, ViewShare, 0, PAGE_READWRITE | PAGE_NOCACHE);
    if (NT_SUCCESS(c->st_map))
        c->user_va =
            (PVOID)((ULONG)c->view_base + (ULONG)c->physical.LowPart - (ULONG)view_base.LowPart);
}

static void section_unmap(void *arg)
{
    section_ctx *c = arg;
    ZwUnmapViewOfSection(NtCurrentProcess(), c->view_base);
    ObDereferenceObject(c->object);
    ZwClose(c->section);
}

/* ---- the MmMapIoSpace method ---------------------------------------------------------- */

#define SIZE_OF_MEMORY (3 * PAGE_SIZE)

typedef struct iospace_ctx {
    PVOID SystemVirtualAddress, UserVirtualAddress, Raw;
    PMDL Mdl;
    ULONG seen_by_dpc;
} iospace_ctx;

static void iospace_map(void *arg)
{
    iospace_ctx *c = arg;
    PHYSICAL_ADDRESS BusAddress, PhysicalAddress;
    ULONG AddressSpace = 0;
    KPROCESSOR_MODE Mode = UserMode;
    BusAddress.QuadPart = ADAPTER_BUS + 0x100;
    if (!HalTranslateBusAddress(PCIBus, 0, BusAddress, &AddressSpace, &PhysicalAddress))
        return;
    PVOID SystemVirtualAddress = MmMapIoSpace(PhysicalAddress, SIZE_OF_MEMORY, FALSE);
    if (!SystemVirtualAddress)
        return;
    PMDL Mdl = IoAllocateMdl(SystemVirtualAddress, SIZE_OF_MEMORY, FALSE, FALSE, NULL);
    MmBuildMdlForNonPagedPool(Mdl);
    c->Raw = MmMapLockedPages(Mdl, Mode);
    c->UserVirtualAddress = (PVOID)(((ULONG)PAGE_ALIGN(c->Raw)) + MmGetMdlByteOffset(Mdl));
    c->SystemVirtualAddress = SystemVirtualAddress;
    c->Mdl = Mdl;
}

static void iospace_dpc(void *arg)
{
    iospace_ctx *c = arg;
    c->seen_by_dpc = READ_REGISTER_ULONG((volatile ULONG *)c->SystemVirtualAddress);
}

static void iospace_unmap(void *arg)
{
    iospace_ctx *c = arg;
    MmUnmapLockedPages(c->UserVirtualAddress, c->Mdl);
    MmUnmapIoSpace(c->SystemVirtualAddress, SIZE_OF_MEMORY);
    IoFreeMdl(c->Mdl);
}

/* ---- the context rule, broken ----------------------------------------------------------- */

static void dpc_touches_user_va(void *arg)
{
    section_ctx *c = arg;
    (void)READ_REGISTER_ULONG((volatile ULONG *)c->user_va);
}

/* ---- the leak --------------------------------------------------------------------------- */

typedef struct leak_ctx {
    ULONG pages;
    PVOID va;
} leak_ctx;

/* one request: map a buffer of the adapter and keep it */
static void leak_one(void *arg)
{
    leak_ctx *c = arg;
    PHYSICAL_ADDRESS pa;
    pa.QuadPart = ADAPTER_BUS + (c->pages - 1) * PAGE_SIZE;
    c->va = MmMapIoSpace(pa, c->pages * PAGE_SIZE, MmNonCached);
}

/* netcard.sys, a well-behaved driver: a noncached buffer per transfer, freed when the
 * transfer completes; up to RING transfers in flight. */
#define RING 16
typedef struct nc_ctx {
    PVOID va[RING];
    SIZE_T bytes[RING];
    uint32_t head, n;
    SIZE_T want;
} nc_ctx;

static void nc_transfer(void *arg)
{
    nc_ctx *c = arg;
    if (c->n == RING) { /* the oldest transfer completes */
        MmFreeNonCachedMemory(c->va[c->head], c->bytes[c->head]);
        c->head = (c->head + 1) % RING;
        c->n--;
    }
    PVOID va = MmAllocateNonCachedMemory(c->want);
    if (va) {
        uint32_t slot = (c->head + c->n) % RING;
        c->va[slot] = va;
        c->bytes[slot] = c->want;
        c->n++;
    }
}

typedef struct leak_run {
    uint32_t requests; /* requests that mapped */
    uint32_t pages;    /* pages they hold */
    uint32_t size_failed;
    uint32_t free_at_null, largest_at_null;
    int stopped; /* a STOP ended it */
} leak_run;

#define MAX_THREADS 64

/* The same leak on any machine: the application calls the driver again and again; each
 * request maps 2 to 4 pages and never unmaps. Meanwhile threads come and go, and
 * netcard.sys allocates and frees noncached transfer buffers. With
 * snapshots, the pool is photographed at half-way and at exhaustion. */
static leak_run run_leak(ptl_machine *m, ptl_process *app, ptl_driver *d, ptl_driver *nic,
                         int snapshots)
{
    leak_run r = {0};
    nc_ctx nc;
    memset(&nc, 0, sizeof nc);
    ptl_thread *threads[MAX_THREADS];
    int nthreads = 0;
    uint32_t free0 = ptl_free_system_ptes(m);
    int half_taken = !snapshots;
    for (uint32_t i = 0;; i++) {
        if (i % 7 == 0 && nthreads < MAX_THREADS) {
            ptl_thread *t = ptl_thread_create(m, app);
            if (t)
                threads[nthreads++] = t;
        }
        if (i % 7 == 3 && nthreads > 24) {
            ptl_thread_exit(threads[0]);
            memmove(threads, threads + 1, (size_t)(nthreads - 1) * sizeof *threads);
            nthreads--;
        }
        ptl_stop stop;
        if (i % 3 == 0) {
            nc.want = (1 + (i / 3) % 5) * PAGE_SIZE;
            if (ptl_call(m, NULL, nic, nc_transfer, &nc, &stop) != 0) {
                r.stopped = 1;
                break;
            }
        }
        leak_ctx c = {2 + (i * 7 + i / 5) % 3, NULL};
        if (ptl_call(m, app, d, leak_one, &c, &stop) != 0) {
            r.stopped = 1;
            break;
        }
        if (!c.va) {
            r.size_failed = c.pages;
            r.free_at_null = ptl_free_system_ptes(m);
            r.largest_at_null = ptl_largest_free_system_ptes(m);
            break;
        }
        r.requests++;
        r.pages += c.pages;
        if (!half_taken && ptl_free_system_ptes(m) <= free0 / 2) {
            ptl_report_snapshot(m, "half-way: half the free PTEs gone");
            half_taken = 1;
        }
    }
    return r;
}

/* ---- the MustSucceed caller ------------------------------------------------------------ */

typedef struct must_ctx {
    uint32_t buf;
    ULONG pages;
    PVOID sys;
} must_ctx;

static void must_succeed(void *arg)
{
    must_ctx *c = arg;
    PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)c->buf, c->pages * PAGE_SIZE, FALSE, FALSE, NULL);
    MmProbeAndLockPages(mdl, KernelMode, IoWriteAccess);
    c->sys = MmGetSystemAddressForMdl(mdl); /* MmMapLockedPages(mdl, KernelMode) */
}

/* ---- the demo --------------------------------------------------------------------------- */

static void print_stop(const ptl_stop *stop, const char *const meaning[4])
{
    printf("\n");
    ptl_stop_print(stop, stdout);
    printf("\n");
    for (int i = 0; i < 4; i++)
        printf("   P%d 0x%08llX  %s\n", i + 1, (unsigned long long)stop->param[i], meaning[i]);
}

int ptl_cli_demo(void)
{
    char b1[32], b2[32], b3[32], b4[32];
    ptl_machine *m = NULL, *dm = NULL, *big = NULL;
    int rc = 1;
    ptl_stop stop;

    printf("ptelab demo: \"How to map adapter memory to user-space and system-space\", end to "
           "end\n");

    /* 1. boot */
    heading(1, "Boot: Windows NT 4.0 SP4, 64 MB RAM, PCI adapter at 0xE0000000 (1 MB)");
    m = boot(0);
    if (!m)
        goto out;
    ptl_process *app = ptl_process_create(m, "app.exe");
    ptl_driver *mapmem = ptl_driver_load(m, "mapmem.sys", 16384);
    ptl_driver *leaky = ptl_driver_load(m, "leaky.sys", 8192);
    ptl_driver *nic = ptl_driver_load(m, "netcard.sys", 24576);
    if (!app || !mapmem || !leaky || !nic) {
        fprintf(stderr, "ptelab demo: %s\n", ptl_error());
        goto out;
    }
    const ptl_region *rg = NULL;
    int nr = ptl_layout_regions(m, &rg);
    for (int i = 0; i < nr; i++)
        if (strcmp(rg[i].name, "System PTEs") == 0)
            printf("   System PTE region 0x%08X-0x%08X (%.1f MB), between paged pool and "
                   "nonpaged pool expansion.\n",
                   rg[i].start, rg[i].end - 1, (double)(rg[i].end - rg[i].start) / (1 << 20));
    uint32_t total = ptl_total_system_ptes(m), free_boot = ptl_free_system_ptes(m);
    printf("   %s system PTEs, %s free with app.exe running and mapmem.sys, leaky.sys, "
           "netcard.sys loaded.\n",
           num(b1, total), num(b2, free_boot));
    ptl_report_snapshot(m, "after boot");

    /* 2. the Section Object method */
    heading(2, "Section Object method: \\Device\\PhysicalMemory mapped into app.exe");
    section_ctx sc;
    memset(&sc, 0, sizeof sc);
    ptl_call(m, app, mapmem, section_map, &sc, &stop);
    if (!NT_SUCCESS(sc.st_open) || !NT_SUCCESS(sc.st_map) || !sc.user_va) {
        fprintf(stderr, "ptelab demo: section method failed (0x%08X, 0x%08X)\n",
                (unsigned)sc.st_open, (unsigned)sc.st_map);
        goto out;
    }
    printf("   ZwMapViewOfSection: adapter 0x%08llX seen by app.exe at 0x%08X (view 0x%08X, "
           "%u KB); system PTEs free: %s (a view costs none).\n",
           (unsigned long long)sc.physical.QuadPart, (unsigned)(uintptr_t)sc.user_va,
           (unsigned)(uintptr_t)sc.view_base, (unsigned)(sc.view_size >> 10),
           num(b1, ptl_free_system_ptes(m)));
    uint32_t word = 0xCAFEBABE, back = 0;
    char msg[] = "hello, adapter", got[sizeof msg];
    ptl_phys_write(m, sc.physical.QuadPart, &word, 4);
    NTSTATUS st1 = ptl_user_read(app, (uint32_t)(uintptr_t)sc.user_va, &back, 4);
    ptl_user_write(app, (uint32_t)(uintptr_t)sc.user_va + 8, msg, sizeof msg);
    ptl_phys_read(m, sc.physical.QuadPart + 8, got, sizeof got);
    got[sizeof got - 1] = '\0';
    printf("   device wrote 0x%08X, app read 0x%08X%s; app wrote \"%s\", device read \"%s\".\n",
           word, back, NT_SUCCESS(st1) ? "" : " (failed)", msg, got);
    ptl_call(m, app, mapmem, section_unmap, &sc, &stop);

    /* 3. the MmMapIoSpace method */
    heading(3, "MmMapIoSpace method: system address plus a user mapping through an MDL");
    iospace_ctx ic;
    memset(&ic, 0, sizeof ic);
    uint32_t before = ptl_free_system_ptes(m);
    word = 0x0BADF00D;
    ptl_phys_write(m, ADAPTER_BUS + 0x100, &word, 4);
    ptl_call(m, app, mapmem, iospace_map, &ic, &stop);
    if (!ic.SystemVirtualAddress || !ic.UserVirtualAddress) {
        fprintf(stderr, "ptelab demo: MmMapIoSpace method failed\n");
        goto out;
    }
    uint32_t during = ptl_free_system_ptes(m);
    printf("   MmMapIoSpace(0x%08llX, 12 KB) = 0x%08X: %u system PTEs (free %s -> %s).\n",
           ADAPTER_BUS + 0x100, (unsigned)(uintptr_t)ic.SystemVirtualAddress, before - during,
           num(b1, before), num(b2, during));
    printf("   MmMapLockedPages(Mdl, UserMode) = 0x%08X; PAGE_ALIGN(..) + MmGetMdlByteOffset = "
           "0x%08X (SP4 returns the actual address).\n",
           (unsigned)(uintptr_t)ic.Raw, (unsigned)(uintptr_t)ic.UserVirtualAddress);
    back = 0;
    ptl_user_read(app, (uint32_t)(uintptr_t)ic.UserVirtualAddress, &back, 4);
    word = 0xFEEDFACE;
    ptl_user_write(app, (uint32_t)(uintptr_t)ic.UserVirtualAddress + 8, &word, 4);
    uint32_t dev = 0;
    ptl_phys_read(m, ADAPTER_BUS + 0x100 + 8, &dev, 4);
    ptl_call_dpc(m, mapmem, iospace_dpc, &ic, &stop);
    printf("   app read 0x%08X, device got 0x%08X from app, a DPC read 0x%08X through the "
           "system address.\n",
           back, dev, (unsigned)ic.seen_by_dpc);
    for (size_t i = ptl_event_count(m); i-- > 0;) {
        ptl_event e;
        if (ptl_event_get(m, i, &e) == 0 && strcmp(e.type, "hazard") == 0) {
            printf("   hazard noted: %s.\n", e.text);
            break;
        }
    }
    ptl_call(m, app, mapmem, iospace_unmap, &ic, &stop);
    printf("   unmapped in app.exe's context, MDL freed: free PTEs back to %s.\n",
           num(b1, ptl_free_system_ptes(m)));

    /* 4. the context rule, broken (a machine of its own) */
    heading(4, "A DPC touches a user address while another process ran last");
    dm = boot(0);
    if (!dm)
        goto out;
    {
        ptl_process *a = ptl_process_create(dm, "app.exe");
        ptl_process *o = ptl_process_create(dm, "other.exe");
        ptl_driver *d = ptl_driver_load(dm, "mapmem.sys", 16384);
        section_ctx dc;
        memset(&dc, 0, sizeof dc);
        ptl_call(dm, a, d, section_map, &dc, &stop);
        uint32_t obuf = ptl_user_alloc(o, 4096);
        ptl_user_read(o, obuf, &back, 4); /* other.exe runs: its context is current */
        printf("   app.exe's view is at 0x%08X; other.exe ran last; the adapter interrupts.\n",
               (unsigned)(uintptr_t)dc.user_va);
        uint32_t code = ptl_call_dpc(dm, d, dpc_touches_user_va, &dc, &stop);
        if (code) {
            char p1[64], p4[96];
            snprintf(p1, sizeof p1, "memory referenced: app.exe's view, not mapped here");
            snprintf(p4, sizeof p4, "address in mapmem.sys that referenced it (base 0x%08X)",
                     ptl_driver_base(d));
            const char *meaning[4] = {p1, "IRQL: DISPATCH_LEVEL", "0: a read", p4};
            print_stop(&stop, meaning);
        } else {
            printf("   (no STOP: unexpected)\n");
        }
    }
    ptl_shutdown(dm);
    dm = NULL;

    /* 5. the leak */
    heading(5, "leaky.sys maps adapter buffers (2-4 pages) and never unmaps them");
    leak_run lr = run_leak(m, app, leaky, nic, 1);
    ptl_report_snapshot(m, "at exhaustion: MmMapIoSpace returned NULL");
    printf("   %s requests mapped %s pages (netcard.sys and threads came and went meanwhile);\n"
           "   then MmMapIoSpace(%u pages) returned NULL with %s PTE%s free, largest run %s.\n",
           num(b1, lr.requests), num(b2, lr.pages), lr.size_failed, num(b3, lr.free_at_null),
           lr.free_at_null == 1 ? "" : "s", num(b4, lr.largest_at_null));
    /* NT keeps a few dead threads' stacks mapped for reuse: those go first */
    int reused = 0;
    while (reused < 64 && ptl_thread_create(m, app))
        reused++;
    if (reused)
        printf("   %d more thread%s started on cached dead stacks; then ", reused,
               reused == 1 ? "" : "s");
    else
        printf("   ");
    printf("ptl_thread_create failed:\n   %s\n", ptl_error());

    /* 6. SystemPages */
    heading(6, "SystemPages = 0xFFFFFFFF: the same leak on a machine with more PTEs");
    big = boot(0xFFFFFFFFu);
    if (!big)
        goto out;
    {
        ptl_process *a = ptl_process_create(big, "app.exe");
        ptl_driver *d1 = ptl_driver_load(big, "mapmem.sys", 16384);
        ptl_driver *d2 = ptl_driver_load(big, "leaky.sys", 8192);
        ptl_driver *d3 = ptl_driver_load(big, "netcard.sys", 24576);
        (void)d1;
        leak_run br = run_leak(big, a, d2, d3, 0);
        printf("   computed:   %6s PTEs, %6s requests before NULL\n", num(b1, total),
               num(b2, lr.requests));
        printf("   0xFFFFFFFF: %6s PTEs, %6s requests before NULL (%.1fx as long)\n",
               num(b3, ptl_total_system_ptes(big)), num(b4, br.requests),
               lr.requests ? (double)br.requests / lr.requests : 0.0);
    }
    ptl_shutdown(big);
    big = NULL;

    /* 7. the MustSucceed caller */
    heading(7, "A MustSucceed caller on the exhausted machine: MmGetSystemAddressForMdl");
    {
        must_ctx mc = {ptl_user_alloc(app, 8 * PAGE_SIZE), 8, NULL};
        uint32_t code = ptl_call(m, app, mapmem, must_succeed, &mc, &stop);
        if (code) {
            char p2[96], p3[128], p4[96];
            snprintf(p2, sizeof p2, "pages asked for: %llu", (unsigned long long)stop.param[1]);
            snprintf(p3, sizeof p3, "free system PTEs: %s, none in a run of %llu",
                     num(b1, stop.param[2]), (unsigned long long)stop.param[1]);
            snprintf(p4, sizeof p4, "total system PTEs: %s", num(b2, stop.param[3]));
            const char *meaning[4] = {"0: the system PTE pool (1 would be nonpaged pool "
                                      "expansion)",
                                      p2, p3, p4};
            print_stop(&stop, meaning);
        } else {
            printf("   (no STOP: unexpected)\n");
        }
    }

    /* the report */
    if (ptl_report_write(m, REPORT_PATH, "ptelab demo") != 0) {
        fprintf(stderr, "ptelab demo: %s\n", ptl_error());
        rc = 70; /* the output could not be written */
        goto out;
    }
    printf("\nReport: %s (timeline, fragmentation maps, layout, drivers, STOP, events).\n",
           REPORT_PATH);
    rc = 0;
out:
    if (dm)
        ptl_shutdown(dm);
    if (big)
        ptl_shutdown(big);
    if (m)
        ptl_shutdown(m);
    return rc;
}
