/* vm.c - the DDIs that work on a process's address space: ZwAllocateVirtualMemory,
 * ZwFreeVirtualMemory, KeStackAttachProcess and KeUnstackDetachProcess.
 *
 * NT behaviour followed (learn.microsoft.com "ZwAllocateVirtualMemory",
 * "ZwFreeVirtualMemory", "KeStackAttachProcess"):
 *   - MEM_RESERVE takes a range at 64 KB granularity (the base rounded down), MEM_COMMIT
 *     backs pages of a reserved range with demand-zero memory, both together do both;
 *     a reserve that overlaps is STATUS_CONFLICTING_ADDRESSES;
 *   - MEM_RELEASE needs the base of the reservation and a size of 0
 *     (STATUS_FREE_VM_NOT_AT_BASE otherwise); MEM_DECOMMIT frees the pages and keeps the
 *     reservation;
 *   - only NtCurrentProcess() is accepted as the process handle (ptelab has no process
 *     handles yet; docs/fidelity.md);
 *   - attaching switches the address space of the running thread to another process,
 *     below DISPATCH_LEVEL, and every attach has its detach; ApcState remembers the
 *     process to return to.
 *
 * Invariants: this file keeps no state of its own; the VADs it changes are checked by
 * ptl__process_check, the attach depth by ptl__kernel_check (PASSIVE outside calls).
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>

#define GRANULARITY     0x10000u
#define APC_STATE_MAGIC 0x41504353u

NTSTATUS ZwAllocateVirtualMemory(HANDLE ProcessHandle, PVOID *BaseAddress, ULONG_PTR ZeroBits,
                                 PSIZE_T RegionSize, ULONG AllocationType, ULONG Protect)
{
    ptl_machine *m = ptl__ddi_enter("ZwAllocateVirtualMemory");
    if (ProcessHandle != NtCurrentProcess())
        return STATUS_INVALID_HANDLE;
    if (!BaseAddress || !RegionSize || ZeroBits >= 21 || (uintptr_t)*BaseAddress > 0xFFFFFFFFu)
        return STATUS_INVALID_PARAMETER;
    if (!(AllocationType & (MEM_COMMIT | MEM_RESERVE)) ||
        (AllocationType & ~(ULONG)(MEM_COMMIT | MEM_RESERVE | MEM_TOP_DOWN)))
        return STATUS_INVALID_PARAMETER;
    int prot = ptl__protect_from_win32(Protect);
    if (prot < 0)
        return STATUS_INVALID_PAGE_PROTECTION;
    ptl_process *p = m->procs.current;
    uint32_t base = (uint32_t)(uintptr_t)*BaseAddress;
    uint64_t size = *RegionSize;
    if (size == 0 || size > 0xFFFFFFFFu)
        return STATUS_INVALID_PARAMETER;
    if (AllocationType & MEM_RESERVE) {
        uint32_t start = base & ~(GRANULARITY - 1u);
        uint64_t end = ((uint64_t)base + size + PTL_PAGE_MASK) & ~(uint64_t)PTL_PAGE_MASK;
        if (end > 0xFFFFFFFFull)
            return STATUS_INVALID_PARAMETER;
        uint32_t len = (uint32_t)(end - start);
        uint32_t va = ptl__vad_find_free(p, start, len);
        if (!va)
            return base ? STATUS_CONFLICTING_ADDRESSES : STATUS_NO_MEMORY;
        ptl__vad_insert(p, va, va + len, PTL_VAD_PRIVATE, prot, 1, 0);
        if ((AllocationType & MEM_COMMIT) && ptl__process_commit(p, va, va + len, prot) != 0) {
            ptl__process_decommit(p, va, va + len);
            ptl__vad_remove(p, ptl__vad_find(p, va));
            return STATUS_NO_MEMORY;
        }
        *BaseAddress = (PVOID)(uintptr_t)va;
        *RegionSize = len;
        return STATUS_SUCCESS;
    }
    /* MEM_COMMIT alone: inside an existing private reservation */
    uint32_t start = base & ~PTL_PAGE_MASK;
    uint64_t end = ((uint64_t)base + size + PTL_PAGE_MASK) & ~(uint64_t)PTL_PAGE_MASK;
    ptl__vad *v = ptl__vad_find(p, start);
    if (!v || v->kind != PTL_VAD_PRIVATE || end > v->end)
        return STATUS_CONFLICTING_ADDRESSES;
    if (ptl__process_commit(p, start, (uint32_t)end, prot) != 0)
        return STATUS_NO_MEMORY;
    *BaseAddress = (PVOID)(uintptr_t)start;
    *RegionSize = (SIZE_T)(end - start);
    return STATUS_SUCCESS;
}

NTSTATUS ZwFreeVirtualMemory(HANDLE ProcessHandle, PVOID *BaseAddress, PSIZE_T RegionSize,
                             ULONG FreeType)
{
    ptl_machine *m = ptl__ddi_enter("ZwFreeVirtualMemory");
    if (ProcessHandle != NtCurrentProcess())
        return STATUS_INVALID_HANDLE;
    if (!BaseAddress || !RegionSize || (uintptr_t)*BaseAddress > 0xFFFFFFFFu)
        return STATUS_INVALID_PARAMETER;
    if (FreeType != MEM_RELEASE && FreeType != MEM_DECOMMIT)
        return STATUS_INVALID_PARAMETER;
    ptl_process *p = m->procs.current;
    uint32_t base = (uint32_t)(uintptr_t)*BaseAddress;
    ptl__vad *v = ptl__vad_find(p, base);
    if (!v || v->kind != PTL_VAD_PRIVATE)
        return STATUS_MEMORY_NOT_ALLOCATED;
    if (FreeType == MEM_RELEASE) {
        if (base != v->start)
            return STATUS_FREE_VM_NOT_AT_BASE;
        if (*RegionSize != 0)
            return STATUS_UNABLE_TO_FREE_VM;
        uint32_t len = v->end - v->start;
        ptl__process_decommit(p, v->start, v->end);
        ptl__vad_remove(p, v);
        *RegionSize = len;
        return STATUS_SUCCESS;
    }
    uint32_t start = base & ~PTL_PAGE_MASK;
    uint64_t end = *RegionSize
                       ? (((uint64_t)base + *RegionSize + PTL_PAGE_MASK) & ~(uint64_t)PTL_PAGE_MASK)
                       : v->end;
    if (end > v->end)
        return STATUS_UNABLE_TO_FREE_VM;
    ptl__process_decommit(p, start, (uint32_t)end);
    *BaseAddress = (PVOID)(uintptr_t)start;
    *RegionSize = (SIZE_T)(end - start);
    return STATUS_SUCCESS;
}

VOID KeStackAttachProcess(PRKPROCESS Pcb, PRKAPC_STATE ApcState)
{
    ptl_machine *m = ptl__ddi_enter("KeStackAttachProcess");
    ptl_process *Process = (ptl_process *)(void *)Pcb; /* Pcb is the record's first member */
    if (m->kernel.irql >= DISPATCH_LEVEL)
        ptl__bugcheck_why(m, 0x05, (uintptr_t)Process & 0xFFFFFFFFu, m->procs.current->eprocess_va,
                          m->kernel.attach_depth, (uint32_t)m->kernel.irql,
                          "KeStackAttachProcess at IRQL %d", m->kernel.irql);
    if (!Process || !ptl__process_ok(Process) || Process->m != m || !ApcState)
        ptl__bugcheck_why(m, 0x05, (uintptr_t)Process & 0xFFFFFFFFu, 0, 0, 0,
                          "KeStackAttachProcess to something that is not a live process");
    ApcState->Process = &m->procs.current->nt;
    ApcState->Attached = 1;
    ApcState->Magic = APC_STATE_MAGIC;
    m->kernel.attach_depth++;
    ptl__process_switch(m, Process);
}

VOID KeUnstackDetachProcess(PRKAPC_STATE ApcState)
{
    ptl_machine *m = ptl__ddi_enter("KeUnstackDetachProcess");
    if (!ApcState || ApcState->Magic != APC_STATE_MAGIC || !ApcState->Attached ||
        m->kernel.attach_depth == 0)
        ptl__bugcheck_why(m, 0x06, 0, 0, m->kernel.attach_depth, 0,
                          "KeUnstackDetachProcess without a matching attach");
    ptl_process *back = (ptl_process *)(void *)ApcState->Process;
    /* the state lives in driver memory: it may name a process of another machine (a
     * state saved by an attach there) or one that is gone */
    if (!back || back->magic != PTL__PROCESS_MAGIC || back->m != m)
        ptl__bugcheck_why(m, 0x06, (uintptr_t)back & 0xFFFFFFFFu, 0, m->kernel.attach_depth, 0,
                          "KeUnstackDetachProcess with an APC state that names no process of "
                          "this machine");
    ApcState->Attached = 0;
    ApcState->Magic = 0;
    m->kernel.attach_depth--;
    if (back->exited)
        back = m->procs.system;
    ptl__process_switch(m, back);
}
