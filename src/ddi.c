/* ddi.c - the DDIs of <ptelab/wdm.h> that belong to no single module: their common entry
 * check, the HAL, IRQL, bug checks, register and Rtl access, address queries, and the
 * MmMapIoSpace/MmUnmapIoSpace front ends.
 *
 * Every DDI starts with ptl__ddi_enter(): it finds the machine ptl_call made current (a DDI
 * called outside driver code is a harness misuse: message and abort, since there is no
 * machine to report to), re-lands a STOP on a machine that already stopped (so code that
 * keeps running after a nested ptl_call returned a STOP cannot change a frozen machine),
 * advances the simulated clock, and notes the DDI and the driver's return address into it
 * (the verifier's call site, verifier.c).
 *
 * Addresses: a pointer below 4 GB is an emulated x86 address and goes through the MMU in
 * kernel mode at the current IRQL; anything else is host memory (DESIGN.md, "Addresses").
 *
 * Invariants: no state of its own; each DDI's effects are checked by the module they
 * belong to.
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>

#define EMULATED(p) (!ptl__is_host(m, (p)))

ptl_machine *ptl__driver_context(const char *name)
{
    ptl_machine *m = ptl_current();
    if (!m) {
        fprintf(stderr, "ptelab: %s called outside driver code run by ptl_call\n", name);
        abort();
    }
    if (m->stop.stopped)
        ptl__bugcheck(m, m->stop.info.code, 0, 0, 0, 0); /* lands again; the STOP stays */
    return m;
}

ptl_machine *ptl__ddi_enter_at(const char *name, const void *caller)
{
    ptl_machine *m = ptl__driver_context(name);
    ptl__perf_tick(m);
    m->verifier.ddi = name;
    m->verifier.caller = caller;
    return m;
}

static void verifier_irql(ptl_machine *m, int max_irql, uint32_t subcode, uint64_t p2, uint64_t p3,
                          const char *ddi)
{
    if (m->cfg.verifier && m->kernel.irql > max_irql)
        ptl__bugcheck_why(m, 0xC4, subcode, (uint32_t)m->kernel.irql, p2, p3,
                          "%s called at IRQL %d (at most %d allowed)", ddi, m->kernel.irql,
                          max_irql);
}

/* ---- HAL ---------------------------------------------------------------------------- */

BOOLEAN HalTranslateBusAddress(INTERFACE_TYPE InterfaceType, ULONG BusNumber,
                               PHYSICAL_ADDRESS BusAddress, PULONG AddressSpace,
                               PPHYSICAL_ADDRESS TranslatedAddress)
{
    ptl_machine *m = ptl__ddi_enter("HalTranslateBusAddress");
    uint64_t out;
    if (!AddressSpace || !TranslatedAddress)
        return FALSE;
    uint32_t space = *AddressSpace;
    if (!ptl__hal_translate(m, InterfaceType, BusNumber, (uint64_t)BusAddress.QuadPart, &space,
                            &out)) {
        ptl__perf_event(m, PTL_EV_FAIL, "HalTranslateBusAddress(%s %u, 0x%llx) failed",
                        ptl__bus_name(InterfaceType), BusNumber,
                        (unsigned long long)BusAddress.QuadPart);
        return FALSE;
    }
    *AddressSpace = space;
    TranslatedAddress->QuadPart = (LONGLONG)out;
    return TRUE;
}

/* ---- IRQL, bug checks, processes ------------------------------------------------------ */

KIRQL KeGetCurrentIrql(void)
{
    return (KIRQL)ptl__ddi_enter("KeGetCurrentIrql")->kernel.irql;
}

VOID KeRaiseIrql(KIRQL NewIrql, PKIRQL OldIrql)
{
    ptl_machine *m = ptl__ddi_enter("KeRaiseIrql");
    if (NewIrql < m->kernel.irql || NewIrql > HIGH_LEVEL)
        ptl__bugcheck_why(m, 0x09, m->kernel.irql, NewIrql, 0, 0,
                          "KeRaiseIrql from %d to the lower IRQL %d", m->kernel.irql, NewIrql);
    if (OldIrql)
        *OldIrql = (KIRQL)m->kernel.irql;
    m->kernel.irql = NewIrql;
}

KIRQL KeRaiseIrqlToDpcLevel(void)
{
    KIRQL old;
    KeRaiseIrql(DISPATCH_LEVEL, &old);
    return old;
}

VOID KeLowerIrql(KIRQL NewIrql)
{
    ptl_machine *m = ptl__ddi_enter("KeLowerIrql");
    if (NewIrql > m->kernel.irql)
        ptl__bugcheck_why(m, 0x0A, 0, m->kernel.irql, NewIrql, ptl__kernel_ip(m),
                          "KeLowerIrql from %d to the higher IRQL %d", m->kernel.irql, NewIrql);
    m->kernel.irql = NewIrql;
}

VOID KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR P1, ULONG_PTR P2, ULONG_PTR P3, ULONG_PTR P4)
{
    ptl_machine *m = ptl__ddi_enter("KeBugCheckEx");
    ptl__bugcheck_why(m, BugCheckCode, P1, P2, P3, P4, "KeBugCheckEx called by driver code");
}

VOID KeBugCheck(ULONG BugCheckCode)
{
    KeBugCheckEx(BugCheckCode, 0, 0, 0, 0);
}

PEPROCESS PsGetCurrentProcess(void)
{
    return &ptl__ddi_enter("PsGetCurrentProcess")->procs.current->nt;
}

/* ---- memory access ------------------------------------------------------------------ */

/* READ_/WRITE_REGISTER_* are HAL macros on NT, not calls: they do not tick the clock. A
 * small access that hits the TLB is served by ptl__register_hit (ptelab/fastpath.h, inline
 * in the driver's own code); everything else takes the MMU's full path. The fast path keeps
 * the slow path's outcome: only a TLB entry the walk made can hit, a write needs the page
 * writable and already dirty, and a DPC touching user space still goes the slow way, where
 * the hazard is recorded. */

void ptl_kread(const volatile void *addr, void *out, size_t n)
{
    ptl_machine *m = ptl__driver_context("READ_/WRITE_REGISTER");
    uint8_t *host = ptl__register_hit(addr, n, 0);
    if (host)
        memcpy(out, host, n);
    else if (EMULATED(addr))
        ptl__kaccess(m, (uint32_t)(uintptr_t)addr, out, n, 0);
    else
        memcpy(out, (const void *)(uintptr_t)addr, n);
}

void ptl_kwrite(volatile void *addr, const void *in, size_t n)
{
    ptl_machine *m = ptl__driver_context("READ_/WRITE_REGISTER");
    uint8_t *host = ptl__register_hit(addr, n, 1);
    if (host)
        memcpy(host, in, n);
    else if (EMULATED(addr))
        ptl__kaccess(m, (uint32_t)(uintptr_t)addr, (void *)(uintptr_t)in, n, 1);
    else
        memcpy((void *)(uintptr_t)addr, in, n);
}

void ptl_rtl_copy(void *dst, const void *src, size_t n)
{
    ptl_machine *m = ptl__ddi_enter("RtlCopyMemory");
    int de = EMULATED(dst), se = EMULATED(src);
    if (!de && !se) {
        memmove(dst, src, n);
        return;
    }
    if (!de) {
        ptl__kaccess(m, (uint32_t)(uintptr_t)src, dst, n, 0);
        return;
    }
    if (!se) {
        ptl__kaccess(m, (uint32_t)(uintptr_t)dst, (void *)(uintptr_t)src, n, 1);
        return;
    }
    /* emulated to emulated: through a bounce buffer, in the direction memmove would take */
    uint8_t bounce[PTL_PAGE_SIZE];
    uint32_t d = (uint32_t)(uintptr_t)dst, s = (uint32_t)(uintptr_t)src;
    int backward = d > s && d < s + n;
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done < sizeof bounce ? n - done : sizeof bounce;
        size_t at = backward ? n - done - chunk : done;
        ptl__kaccess(m, s + (uint32_t)at, bounce, chunk, 0);
        ptl__kaccess(m, d + (uint32_t)at, bounce, chunk, 1);
        done += chunk;
    }
}

void ptl_rtl_fill(void *dst, size_t n, int value)
{
    ptl_machine *m = ptl__ddi_enter("RtlFillMemory");
    if (EMULATED(dst))
        ptl__kfill(m, (uint32_t)(uintptr_t)dst, value, n);
    else
        memset(dst, value, n);
}

size_t ptl_rtl_compare(const void *a, const void *b, size_t n)
{
    ptl_machine *m = ptl__ddi_enter("RtlCompareMemory");
    uint8_t ba[256], bb[256];
    size_t same = 0;
    while (same < n) {
        size_t chunk = n - same < sizeof ba ? n - same : sizeof ba;
        const uint8_t *pa = (const uint8_t *)a + same, *pb = (const uint8_t *)b + same;
        if (EMULATED(a)) {
            ptl__kaccess(m, (uint32_t)(uintptr_t)pa, ba, chunk, 0);
            pa = ba;
        }
        if (EMULATED(b)) {
            ptl__kaccess(m, (uint32_t)(uintptr_t)pb, bb, chunk, 0);
            pb = bb;
        }
        for (size_t i = 0; i < chunk; i++)
            if (pa[i] != pb[i])
                return same + i;
        same += chunk;
    }
    return same;
}

/* ---- address queries ---------------------------------------------------------------- */

PHYSICAL_ADDRESS MmGetPhysicalAddress(PVOID BaseAddress)
{
    ptl_machine *m = ptl__ddi_enter("MmGetPhysicalAddress");
    PHYSICAL_ADDRESS r;
    uint64_t pa;
    r.QuadPart = 0;
    if (EMULATED(BaseAddress) &&
        ptl__mmu_walk(m, m->mmu.cr3, (uint32_t)(uintptr_t)BaseAddress, &pa, NULL, NULL) == 0)
        r.QuadPart = (LONGLONG)pa;
    return r;
}

BOOLEAN MmIsAddressValid(PVOID VirtualAddress)
{
    ptl_machine *m = ptl__ddi_enter("MmIsAddressValid");
    uint64_t pa;
    if (!EMULATED(VirtualAddress))
        return FALSE;
    return ptl__mmu_walk(m, m->mmu.cr3, (uint32_t)(uintptr_t)VirtualAddress, &pa, NULL, NULL) == 0;
}

/* ---- I/O space ---------------------------------------------------------------------- */

PVOID MmMapIoSpace(PHYSICAL_ADDRESS PhysicalAddress, SIZE_T NumberOfBytes,
                   MEMORY_CACHING_TYPE CacheType)
{
    ptl_machine *m = ptl__ddi_enter("MmMapIoSpace");
    verifier_irql(m, DISPATCH_LEVEL, 0x73, (uint32_t)PhysicalAddress.QuadPart, NumberOfBytes,
                  "MmMapIoSpace");
    if ((unsigned)CacheType >= MmMaximumCacheType || PhysicalAddress.QuadPart < 0 ||
        NumberOfBytes > 0xFFFFFFFFu) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "MmMapIoSpace: invalid argument (cache type %d, size "
                        "0x%zx)",
                        (int)CacheType, (size_t)NumberOfBytes);
        return NULL;
    }
    if (m->cfg.verifier) { /* 0x83: RAM mapped without being locked down first */
        uint64_t pa = (uint64_t)PhysicalAddress.QuadPart;
        uint64_t first = pa >> PTL_PAGE_SHIFT, end = first + PTL_PAGES_SPANNED(pa, NumberOfBytes);
        if (end > m->phys.ram_pages) /* only RAM frames are checked: stop where RAM ends */
            end = m->phys.ram_pages;
        for (uint64_t f = first; f < end; f++) {
            uint32_t pfn = (uint32_t)f;
            if (pfn >= m->phys.hwm || m->phys.pfn[pfn].LockCount == 0)
                ptl__bugcheck_why(m, 0xC4, 0x83, (uint32_t)pa, NumberOfBytes, pfn,
                                  "MmMapIoSpace of RAM page %x that is not locked down", pfn);
        }
    }
    uint32_t va = ptl__iospace_map(m, (uint64_t)PhysicalAddress.QuadPart, (uint32_t)NumberOfBytes,
                                   (int)CacheType);
    return va ? (PVOID)(uintptr_t)va : NULL;
}

VOID MmUnmapIoSpace(PVOID BaseAddress, SIZE_T NumberOfBytes)
{
    ptl_machine *m = ptl__ddi_enter("MmUnmapIoSpace");
    verifier_irql(m, APC_LEVEL, 0x7B, (uint32_t)(uintptr_t)BaseAddress, NumberOfBytes,
                  "MmUnmapIoSpace");
    if (!EMULATED(BaseAddress) || NumberOfBytes > 0xFFFFFFFFu) {
        if (m->cfg.verifier || m->cfg.profile >= PTL_WINXP)
            ptl__bugcheck_why(m, 0xDA, 0x400, (uint32_t)(uintptr_t)BaseAddress,
                              PTL_PAGES_SPANNED((uintptr_t)BaseAddress, NumberOfBytes), 0,
                              "MmUnmapIoSpace of a host pointer");
        ptl__perf_event(m, PTL_EV_MISUSE, "MmUnmapIoSpace(%p): not a system address", BaseAddress);
        return;
    }
    ptl__iospace_unmap(m, (uint32_t)(uintptr_t)BaseAddress, (uint32_t)NumberOfBytes);
}

PVOID MmAllocateNonCachedMemory(SIZE_T NumberOfBytes)
{
    ptl_machine *m = ptl__ddi_enter("MmAllocateNonCachedMemory");
    if (NumberOfBytes == 0 || NumberOfBytes > 0x7FFFFFFFu)
        return NULL;
    uint32_t va = ptl__noncached_alloc(m, (uint32_t)NumberOfBytes);
    return va ? (PVOID)(uintptr_t)va : NULL;
}

VOID MmFreeNonCachedMemory(PVOID BaseAddress, SIZE_T NumberOfBytes)
{
    ptl_machine *m = ptl__ddi_enter("MmFreeNonCachedMemory");
    if (!EMULATED(BaseAddress) || NumberOfBytes > 0x7FFFFFFFu) {
        ptl__perf_event(m, PTL_EV_MISUSE, "MmFreeNonCachedMemory(%p): not a system address",
                        BaseAddress);
        return;
    }
    ptl__noncached_free(m, (uint32_t)(uintptr_t)BaseAddress, (uint32_t)NumberOfBytes);
}

/* ---- probes, identity ------------------------------------------------------------------
 * ProbeForRead/ProbeForWrite (learn.microsoft.com): raise STATUS_DATATYPE_MISALIGNMENT
 * when Address is not a multiple of Alignment, STATUS_ACCESS_VIOLATION when the range is
 * not wholly below MmUserProbeAddress; a length of 0 checks nothing. ProbeForWrite also
 * touches every page for writing, as NT does. */

static void probe(ptl_machine *m, const volatile void *addr, SIZE_T len, ULONG align, int write)
{
    if (len == 0)
        return;
    uintptr_t a = (uintptr_t)addr;
    if (align != 1 && align != 2 && align != 4 && align != 8 && align != 16)
        ptl__raise(m, STATUS_DATATYPE_MISALIGNMENT, 0, (uint32_t)a);
    if (a & (align - 1))
        ptl__raise(m, STATUS_DATATYPE_MISALIGNMENT, 0, (uint32_t)a);
    if (!EMULATED(addr) || a + len > m->layout.user_hi || a + len < a)
        ptl__raise(m, STATUS_ACCESS_VIOLATION, (uint32_t)write, (uint32_t)a);
    if (!write)
        return;
    for (uint64_t va = a & ~(uint64_t)PTL_PAGE_MASK; va < a + len; va += PTL_PAGE_SIZE) {
        uint64_t pa;
        if (ptl__mmu_translate(m, (uint32_t)va, 1, 0, m->kernel.irql < DISPATCH_LEVEL, &pa) !=
            PTL_FAULT_NONE)
            ptl__kfault(m, 1);
    }
}

VOID ProbeForRead(const volatile VOID *Address, SIZE_T Length, ULONG Alignment)
{
    ptl_machine *m = ptl__ddi_enter("ProbeForRead");
    probe(m, Address, Length, Alignment, 0);
}

VOID ProbeForWrite(volatile VOID *Address, SIZE_T Length, ULONG Alignment)
{
    ptl_machine *m = ptl__ddi_enter("ProbeForWrite");
    probe(m, Address, Length, Alignment, 1);
}

HANDLE PsGetCurrentProcessId(void)
{
    return ptl__ddi_enter("PsGetCurrentProcessId")->procs.current->nt.UniqueProcessId;
}

PEPROCESS ptl_ps_initial_system_process(void)
{
    return &ptl__ddi_enter("PsInitialSystemProcess")->procs.system->nt;
}

unsigned long __readcr3(void)
{
    return (unsigned long)ptl__ddi_enter("__readcr3")->mmu.cr3 << PTL_PAGE_SHIFT;
}
