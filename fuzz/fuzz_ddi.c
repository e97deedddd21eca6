/* fuzz_ddi.c - libFuzzer target: bytes become a driver's DDI calls, bad arguments
 * included (NULL, zero and huge sizes, unaligned and random addresses, the wrong process
 * context, raised IRQL, double frees), and ptl_check runs after each one. Addresses include
 * driver image pages and the self-map, physical ranges include one where an adapter
 * arrives mid-input, and MmAllocatePagesForMdl may take frames others map: the paths a
 * code review found bugs on that the fuzzer had not reached.
 *
 * What counts as a ptelab bug here: a crash, a hang, a sanitizer report, or ptl_check
 * failing on a machine that did not stop. A STOP is a legitimate outcome of driver misuse:
 * the input ends there, after kd has been asked about the frozen machine.
 *
 * ptl_check is the incremental one (src/icheck.c): it re-checks what the call changed. On
 * one input in 64 (chosen by the input's bytes, so a failure reproduces from its file) the
 * plain full walk, ptl_check_full, must agree with it at the end.
 *
 * The fuzzer never hands ptelab a dangling or garbage *host* pointer except to IoFreeMdl
 * (which must recognise it without touching it): that would be the driver corrupting its
 * own memory, which no emulator can survive. Garbage *emulated* addresses are fair game.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#define ADAPTER      0xE0000000ull
#define LATE_ADAPTER 0xD0000000ull

typedef struct input {
    const uint8_t *p;
    size_t n;
} input;

static uint8_t u8(input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint32_t u32(input *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | u8(in);
    return v;
}

#define MAXK 8

typedef struct state {
    ptl_machine *m;
    ptl_process *procs[3];
    ptl_driver *drv[2];
    ptl_thread *threads[MAXK];
    PMDL mdls[MAXK];
    PMDL freed_mdl; /* for the double free: never dereferenced */
    uint32_t io_va[MAXK], io_bytes[MAXK];
    uint32_t mdl_sys[MAXK], mdl_user[MAXK];
    uint32_t nc_va[MAXK], nc_bytes[MAXK];
    uint32_t views[MAXK];
    HANDLE section;
    uint32_t user_buf[3];
    input *in;
    int op;
} state;

static uint32_t pick_va(state *s)
{
    switch (u8(s->in) % 10) {
    case 8: { /* a page of a driver's image: locking it and unloading frees it locked */
        ptl_driver *d = s->drv[u8(s->in) & 1];
        return d && ptl_driver_loaded(d) ? ptl_driver_base(d) + (u8(s->in) % 2) * PAGE_SIZE : 0;
    }
    case 9: /* the self-map: page tables and the directory, per process */
        return 0xC0000000u + (u32(s->in) % (4u << 20) & ~3u);
    case 0:
        return s->io_va[u8(s->in) % MAXK];
    case 1:
        return s->user_buf[u8(s->in) % 3] + (u8(s->in) % 4) * 0x800;
    case 2:
        return s->mdl_sys[u8(s->in) % MAXK];
    case 3:
        return s->mdl_user[u8(s->in) % MAXK];
    case 4:
        return s->views[u8(s->in) % MAXK];
    case 5:
        return 0;
    case 6:
        return 0x80000000u + u32(s->in) % 0x80000000u;
    default:
        return u32(s->in);
    }
}

static uint32_t pick_size(state *s)
{
    switch (u8(s->in) % 6) {
    case 0:
        return 0;
    case 1:
        return 1 + u8(s->in);
    case 2:
        return PAGE_SIZE * (1 + u8(s->in) % 8);
    case 3:
        return u32(s->in) % (1u << 20);
    case 4:
        return 0xFFFFFFFFu;
    default:
        return u32(s->in);
    }
}

static uint64_t pick_pa(state *s)
{
    switch (u8(s->in) % 6) {
    case 5: /* where a second adapter may arrive later (ptl_adapter_add mid-input) */
        return LATE_ADAPTER + (u32(s->in) % (4u << 20));
    case 0:
        return ADAPTER + (u32(s->in) % (1u << 20));
    case 1:
        return (uint64_t)(u32(s->in) % (64u << 20));
    case 2:
        return 0;
    case 3:
        return 0xFFFFF000u;
    default:
        return u32(s->in);
    }
}

static PMDL pick_mdl(state *s, int *slot)
{
    *slot = u8(s->in) % MAXK;
    return s->mdls[*slot];
}

static void one_op(void *arg)
{
    state *s = arg;
    input *in = s->in;
    int k;
    PHYSICAL_ADDRESS pa;
    switch (s->op) {
    case 0: { /* MmMapIoSpace */
        pa.QuadPart = (LONGLONG)pick_pa(s);
        uint32_t bytes = pick_size(s);
        PVOID va = MmMapIoSpace(pa, bytes, (MEMORY_CACHING_TYPE)(u8(in) % 8));
        k = u8(in) % MAXK;
        if (va) {
            s->io_va[k] = (uint32_t)(uintptr_t)va;
            s->io_bytes[k] = bytes;
        }
        break;
    }
    case 1: /* MmUnmapIoSpace: right, wrong, twice */
        k = u8(in) % MAXK;
        MmUnmapIoSpace((PVOID)(uintptr_t)(u8(in) & 1 ? s->io_va[k] : pick_va(s)),
                       u8(in) & 1 ? s->io_bytes[k] : pick_size(s));
        break;
    case 2: { /* IoAllocateMdl */
        PMDL mdl = IoAllocateMdl((PVOID)(uintptr_t)pick_va(s), pick_size(s), FALSE, FALSE, NULL);
        k = u8(in) % MAXK;
        if (mdl) {
            if (s->mdls[k])
                IoFreeMdl(s->mdls[k]);
            s->mdls[k] = mdl;
        }
        break;
    }
    case 3:
        if (pick_mdl(s, &k))
            MmBuildMdlForNonPagedPool(s->mdls[k]);
        break;
    case 4:
        if (pick_mdl(s, &k)) {
            KPROCESSOR_MODE mode = u8(in) & 1;
            LOCK_OPERATION op = (LOCK_OPERATION)(u8(in) % 3);
            PTL_TRY
            {
                MmProbeAndLockPages(s->mdls[k], mode, op);
            }
            PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {}
        }
        break;
    case 5:
        if (pick_mdl(s, &k))
            MmUnlockPages(s->mdls[k]);
        break;
    case 6:
        if (pick_mdl(s, &k)) {
            KPROCESSOR_MODE mode = u8(in) & 1;
            PVOID va = NULL;
            uint8_t how = u8(in);
            PTL_TRY
            {
                va = (how & 1) ? MmMapLockedPages(s->mdls[k], mode)
                               : MmMapLockedPagesSpecifyCache(
                                     s->mdls[k], mode, (MEMORY_CACHING_TYPE)(how % 8),
                                     (how & 2) ? (PVOID)(uintptr_t)pick_va(s) : NULL,
                                     (how >> 2) & 1, NormalPagePriority);
            }
            PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER)
            {
                va = NULL;
            }
            if (va && mode == KernelMode)
                s->mdl_sys[k] = (uint32_t)(uintptr_t)va;
            else if (va)
                s->mdl_user[k] = (uint32_t)(uintptr_t)va;
        }
        break;
    case 7:
        if (pick_mdl(s, &k))
            MmUnmapLockedPages((PVOID)(uintptr_t)(u8(in) & 1 ? s->mdl_sys[k] : pick_va(s)),
                               s->mdls[k]);
        break;
    case 19: { /* MmAllocatePagesForMdl (2000 and later), maybe over mapped frames */
        PHYSICAL_ADDRESS lo, hi, skip;
        lo.QuadPart = (LONGLONG)pick_pa(s);
        hi.QuadPart = lo.QuadPart + (LONGLONG)pick_size(s);
        skip.QuadPart = (u8(in) & 1) ? PAGE_SIZE : 0;
        k = u8(in) % MAXK;
        if (!s->mdls[k])
            s->mdls[k] = MmAllocatePagesForMdl(lo, hi, skip, pick_size(s) % (64u * PAGE_SIZE));
        break;
    }
    case 20: /* MmFreePagesFromMdl, then the MDL with ExFreePool as documented */
        if (pick_mdl(s, &k)) {
            MmFreePagesFromMdl(s->mdls[k]);
            if (u8(in) & 1) {
                ExFreePool(s->mdls[k]);
                s->freed_mdl = s->mdls[k];
                s->mdls[k] = NULL;
            }
        }
        break;
    case 8: /* IoFreeMdl, and now and then a double free */
        if (u8(in) % 4 == 0 && s->freed_mdl) {
            /* the stale pointer, unless the host reused its memory for a live MDL */
            int live = 0;
            for (int i = 0; i < MAXK; i++)
                live |= s->mdls[i] == s->freed_mdl;
            if (!live)
                IoFreeMdl(s->freed_mdl);
        } else if (pick_mdl(s, &k)) {
            IoFreeMdl(s->mdls[k]);
            s->freed_mdl = s->mdls[k];
            s->mdls[k] = NULL;
        }
        break;
    case 9: {
        uint32_t bytes = pick_size(s);
        PVOID va = MmAllocateNonCachedMemory(bytes);
        k = u8(in) % MAXK;
        if (va) {
            s->nc_va[k] = (uint32_t)(uintptr_t)va;
            s->nc_bytes[k] = bytes;
        }
        break;
    }
    case 10:
        k = u8(in) % MAXK;
        MmFreeNonCachedMemory((PVOID)(uintptr_t)(u8(in) & 1 ? s->nc_va[k] : pick_va(s)),
                              u8(in) & 1 ? s->nc_bytes[k] : pick_size(s));
        break;
    case 11: { /* open and map a view */
        UNICODE_STRING name;
        OBJECT_ATTRIBUTES oa;
        RtlInitUnicodeString(&name, (u8(in) & 7) ? L"\\Device\\PhysicalMemory" : L"\\x");
        InitializeObjectAttributes(&oa, &name, u8(in) & 1 ? OBJ_CASE_INSENSITIVE : 0, NULL, NULL);
        HANDLE h = NULL;
        if (!NT_SUCCESS(ZwOpenSection(&h, u8(in) & 1 ? SECTION_ALL_ACCESS : SECTION_MAP_READ, &oa)))
            break;
        LARGE_INTEGER off;
        off.QuadPart = (LONGLONG)pick_pa(s);
        SIZE_T size = pick_size(s);
        PVOID base = (u8(in) & 1) ? (PVOID)(uintptr_t)pick_va(s) : NULL;
        static const ULONG prots[] = {PAGE_READWRITE,
                                      PAGE_READONLY,
                                      PAGE_READWRITE | PAGE_NOCACHE,
                                      PAGE_READWRITE | PAGE_WRITECOMBINE,
                                      PAGE_EXECUTE,
                                      0x1234};
        if (NT_SUCCESS(ZwMapViewOfSection(h, NtCurrentProcess(), &base, 0, size, &off, &size,
                                          ViewUnmap, 0, prots[u8(in) % 6])))
            s->views[u8(in) % MAXK] = (uint32_t)(uintptr_t)base;
        if (u8(in) & 1)
            ZwClose(h);
        else
            s->section = h;
        break;
    }
    case 12:
        ZwUnmapViewOfSection(NtCurrentProcess(), (PVOID)(uintptr_t)pick_va(s));
        break;
    case 13:
        ZwClose(u8(in) & 1 ? s->section : (HANDLE)(uintptr_t)u32(in));
        break;
    case 14: { /* raise the IRQL, call something, lower it */
        KIRQL old, level = (KIRQL)(u8(in) % 32);
        if (level < KeGetCurrentIrql())
            break;
        KeRaiseIrql(level, &old);
        pa.QuadPart = (LONGLONG)pick_pa(s);
        if (u8(in) & 1)
            MmMapIoSpace(pa, PAGE_SIZE, MmCached);
        else if (pick_mdl(s, &k))
            MmUnlockPages(s->mdls[k]);
        KeLowerIrql(old);
        break;
    }
    case 15: { /* raw access through RtlCopyMemory, caught or not */
        uint8_t buf[64];
        uint32_t va = pick_va(s);
        size_t n = u8(in) % sizeof buf;
        if (u8(in) & 1) {
            PTL_TRY
            {
                RtlCopyMemory(buf, (PVOID)(uintptr_t)va, n);
            }
            PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {}
        } else {
            memset(buf, 0x5A, sizeof buf);
            RtlCopyMemory((PVOID)(uintptr_t)va, buf, n);
        }
        break;
    }
    case 16: { /* attach to another process and read its buffer */
        KAPC_STATE apc;
        ptl_process *p = s->procs[u8(in) % 3];
        if (!p || !ptl_process_name(p))
            break;
        KeStackAttachProcess(ptl_process_eprocess(p), &apc);
        ULONG v;
        PTL_TRY
        {
            RtlCopyMemory(&v, (PVOID)(uintptr_t)pick_va(s), sizeof v);
        }
        PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) {}
        KeUnstackDetachProcess(&apc);
        break;
    }
    case 17: { /* virtual memory */
        PVOID base = (u8(in) & 1) ? (PVOID)(uintptr_t)pick_va(s) : NULL;
        SIZE_T size = pick_size(s);
        static const ULONG types[] = {MEM_COMMIT, MEM_RESERVE, MEM_COMMIT | MEM_RESERVE, 0,
                                      MEM_RELEASE};
        ZwAllocateVirtualMemory(NtCurrentProcess(), &base, 0, &size, types[u8(in) % 5],
                                u8(in) & 1 ? PAGE_READWRITE : u32(in));
        if (u8(in) & 1) {
            size = u8(in) & 1 ? 0 : pick_size(s);
            ZwFreeVirtualMemory(NtCurrentProcess(), &base, &size,
                                u8(in) & 1 ? MEM_RELEASE : MEM_DECOMMIT);
        }
        break;
    }
    case 18: { /* translate bus addresses */
        PHYSICAL_ADDRESS bus, out;
        ULONG space = u8(in) % 3;
        bus.QuadPart = (LONGLONG)pick_pa(s);
        HalTranslateBusAddress((INTERFACE_TYPE)(u8(in) % 20) - 1, u8(in) % 3, bus, &space, &out);
        break;
    }
    default:
        break;
    }
}

static void dpc_touch(void *arg)
{
    state *s = arg;
    ULONG v;
    RtlCopyMemory(&v, (PVOID)(uintptr_t)pick_va(s), sizeof v);
}

static FILE *devnull(void)
{
    static FILE *f;
    if (!f)
        f = fopen("/dev/null", "w");
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = {data, size};
    ptl_config cfg;
    ptl_config_init(&cfg);
    uint8_t flags = u8(&in);
    cfg.profile = (ptl_profile)(flags % 4);
    cfg.verifier = (flags >> 2) & 1;
    cfg.track_ptes = (flags >> 3) & 1;
    cfg.system_pages = (flags >> 4) & 1 ? 7000 : 0;
    state s;
    memset(&s, 0, sizeof s);
    s.in = &in;
    s.m = ptl_boot(&cfg);
    if (!s.m)
        abort();
    ptl_adapter_add(s.m, PCIBus, 0, ADAPTER, 1u << 20);
    for (int i = 0; i < 3; i++) {
        s.procs[i] = ptl_process_create(s.m, i ? "app.exe" : "other.exe");
        s.user_buf[i] = ptl_user_alloc(s.procs[i], 16384);
    }
    s.drv[0] = ptl_driver_load(s.m, "a.sys", 8192);
    s.drv[1] = ptl_driver_load(s.m, "b.sys", 4096);
    ptl_stop stop;
    for (int step = 0; step < 64 && in.n; step++) {
        uint8_t what = u8(&in);
        uint8_t who = u8(&in);
        ptl_process *p = s.procs[who % 3];
        ptl_driver *d = s.drv[(who >> 2) & 1];
        uint32_t code = 0;
        if (what < 200) {
            s.op = what % 21;
            code = ptl_call(s.m, p, d, one_op, &s, &stop);
        } else {
            switch (what % 8) {
            case 0:
                code = ptl_call_dpc(s.m, d, dpc_touch, &s, &stop);
                break;
            case 1:
                ptl_process_swap_out(p);
                break;
            case 2: {
                uint32_t v = u32(&in);
                ptl_user_write(p, (uint32_t)pick_va(&s), &v, u8(&in) % 5);
                ptl_user_read(p, (uint32_t)pick_va(&s), &v, u8(&in) % 5);
                break;
            }
            case 3: {
                int k = u8(&in) % MAXK;
                if (s.threads[k]) {
                    ptl_thread_exit(s.threads[k]);
                    s.threads[k] = NULL;
                } else {
                    s.threads[k] = ptl_thread_create(s.m, p);
                }
                break;
            }
            case 4: {
                int k = (u8(&in) >> 1) & 1;
                if (s.drv[k] && ptl_driver_loaded(s.drv[k]))
                    code = ptl_driver_unload(s.drv[k], &stop);
                else
                    s.drv[k] = ptl_driver_load(s.m, k ? "b.sys" : "a.sys", 1 + u32(&in) % 65536);
                break;
            }
            case 5:
                if (u8(&in) % 8 == 0) { /* rare: a process exits, maybe with locked pages */
                    int k = 1 + u8(&in) % 2;
                    if (s.procs[k] && ptl_process_name(s.procs[k])) {
                        for (int t = 0; t < MAXK; t++)
                            if (s.threads[t]) { /* its threads go with it */
                                ptl_thread_exit(s.threads[t]);
                                s.threads[t] = NULL;
                            }
                        code = ptl_process_exit(s.procs[k], &stop);
                        if (!code)
                            s.procs[k] = NULL;
                    }
                }
                break;
            case 6: /* an adapter arrives where mappings may already point */
                ptl_adapter_add(s.m, PCIBus, 0, LATE_ADAPTER + (uint64_t)(u8(&in) % 4) * (1u << 20),
                                1u << 20);
                break;
            default:
                ptl_kd(s.m, "!vm", devnull());
                break;
            }
        }
        if (ptl_stopped(s.m, NULL) || code) {
            ptl_kd(s.m, "!analyze -v", devnull());
            ptl_kd(s.m, "!sysptes", devnull());
            break;
        }
        if (!s.procs[1] || !s.procs[2]) /* an exited process: use the System process */
            for (int i = 1; i < 3; i++)
                if (!s.procs[i])
                    s.procs[i] = s.procs[0];
        if (ptl_check(s.m) != 0) {
            fprintf(stderr, "ptl_check failed after op %u: %s\n", what, ptl_error());
            abort();
        }
    }
    uint32_t h = 2166136261u; /* FNV-1a of the input: which inputs get the full walk */
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    if (h % 64 == 0 && !ptl_stopped(s.m, NULL) &&
        (ptl_check(s.m) != 0) != (ptl_check_full(s.m) != 0)) {
        fprintf(stderr, "ptl_check and ptl_check_full disagree: %s\n", ptl_error());
        abort();
    }
    for (int t = 0; t < MAXK; t++)
        if (s.threads[t])
            ptl_thread_exit(s.threads[t]);
    ptl_shutdown(s.m);
    return 0;
}
