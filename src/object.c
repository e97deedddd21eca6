/* object.c - the object manager as the Section Object method uses it: handles, object
 * references, the \Device\PhysicalMemory section and views of it.
 *
 * The article's first method: open \Device\PhysicalMemory (ZwOpenSection), reference the
 * handle (ObReferenceObjectByHandle), map a view into the current process
 * (ZwMapViewOfSection), and unmap it (ZwUnmapViewOfSection) "in the same process context
 * that you mapped before it exits". NT behaviour followed (learn.microsoft.com pages of
 * each routine; docs/research/bugchecks-and-ddis.md):
 *   - a handle lives in the current process's handle table unless OBJ_KERNEL_HANDLE puts
 *     it in the system table; using a process handle from another process is
 *     STATUS_INVALID_HANDLE;
 *   - the view's base is chosen at 64 KB granularity, SectionOffset is rounded down to the
 *     64 KB allocation granularity and written back, ViewSize grows by the rounding and
 *     is rounded up to pages and written back (which is why MAPMEM adds the difference);
 *   - the view exists only in the process that was current; other processes fault there;
 *   - Win32Protect PAGE_NOCACHE maps noncached, PAGE_WRITECOMBINE write-combined;
 *   - on Windows XP a cache attribute that conflicts with a current mapping of the same
 *     physical page fails with STATUS_CONFLICTING_ADDRESSES; NT 4.0 and 2000 map it and
 *     ptelab records the hazard;
 *   - mapping RAM one does not own succeeds, as on NT, and is recorded as a hazard naming
 *     what the frame is (page table, pool, another process's page...);
 *   - a view is never paged out: swap-out leaves it valid (the article's NOTE);
 *   - process exit removes the process's views;
 *   - opening \Device\PhysicalMemory from user mode (PreviousMode UserMode) is refused
 *     with STATUS_ACCESS_DENIED unless the process is privileged (the object's ACL admits
 *     only administrators before Windows Server 2003 SP1; docs/fidelity.md).
 *
 * Invariants (ptl__objects_check): every view has a PHYSICAL VAD of its size in a live
 * process, and its PTEs are valid and user-accessible. The incremental twin
 * (ptl__objects_check_changed, for ptl_check) reads a view's PTEs again only when its
 * page tables changed since it last found them right (icheck.c says which did).
 */
#include "internal.h"

#include <ptelab/wdm.h>
#include <string.h>
#include <wctype.h>

#define GRANULARITY   0x10000u
#define KERNEL_HANDLE 0x80000000u

void ptl__objects_init(ptl_machine *m)
{
    memset(&m->objects, 0, sizeof m->objects);
    m->objects.physmem.magic = PTL__SECTION_MAGIC;
    m->objects.next_view_id = 1;
}

void ptl__objects_free(ptl_machine *m)
{
    free(m->objects.handles);
    free(m->objects.views);
    memset(&m->objects, 0, sizeof m->objects);
}

/* ---- handles ------------------------------------------------------------------------ */

static void *handle_value(uint32_t index, int kernel)
{
    return (void *)(uintptr_t)(((index + 1u) * 4u) | (kernel ? KERNEL_HANDLE : 0u));
}

/* The handle slot `h` names in the current context, or NULL. */
static ptl__handle *handle_get(ptl_machine *m, HANDLE h)
{
    uintptr_t v = (uintptr_t)h;
    if (v > 0xFFFFFFFFu || (v & 3) || !(v & ~(uintptr_t)KERNEL_HANDLE))
        return NULL;
    uint32_t index = (uint32_t)((v & ~(uintptr_t)KERNEL_HANDLE) / 4u) - 1u;
    if (index >= m->objects.nhandles)
        return NULL;
    ptl__handle *e = &m->objects.handles[index];
    if (!e->in_use || e->kernel != ((v & KERNEL_HANDLE) != 0))
        return NULL;
    if (!e->kernel && e->owner != m->procs.current)
        return NULL; /* a process handle used in another process's context */
    return e;
}

static void *handle_new(ptl_machine *m, ptl_process *owner, uint32_t access, int kernel)
{
    uint32_t i;
    for (i = 0; i < m->objects.nhandles; i++)
        if (!m->objects.handles[i].in_use)
            break;
    if (i == m->objects.nhandles) {
        m->objects.handles =
            ptl__xrealloc(m->objects.handles, (m->objects.nhandles + 1) * sizeof(ptl__handle));
        m->objects.nhandles++;
    }
    m->objects.handles[i] = (ptl__handle){1, (uint8_t)(kernel != 0), access, owner, 0, 0};
    m->objects.physmem.refs++;
    return handle_value(i, kernel);
}

void *ptl__thread_handle(ptl_machine *m, uint32_t tid, int kernel)
{
    void *h = handle_new(m, m->procs.current, 0x1F03FF /* THREAD_ALL_ACCESS */, kernel);
    uint32_t index = (uint32_t)(((uintptr_t)h & ~(uintptr_t)KERNEL_HANDLE) / 4u) - 1u;
    m->objects.handles[index].is_thread = 1;
    m->objects.handles[index].tid = tid;
    m->objects.physmem.refs--; /* not a reference on the section */
    return h;
}

static int name_is_physical_memory(const UNICODE_STRING *u, int case_insensitive)
{
    static const wchar_t want[] = L"\\Device\\PhysicalMemory";
    size_t n = wcslen(want);
    if (!u || !u->Buffer || u->Length != n * sizeof(WCHAR))
        return 0;
    for (size_t i = 0; i < n; i++) {
        wchar_t a = u->Buffer[i], b = want[i];
        if (case_insensitive ? towlower((wint_t)a) != towlower((wint_t)b) : a != b)
            return 0;
    }
    return 1;
}

int32_t ptl__open_physical_memory(ptl_machine *m, ptl_process *p, int mode, uint32_t access,
                                  int kernel_handle, void **handle)
{
    if (mode == 1 && !p->privileged) {
        ptl__perf_event(m, PTL_EV_FAIL,
                        "%s opened \\Device\\PhysicalMemory from user mode: "
                        "STATUS_ACCESS_DENIED (only administrators may)",
                        p->name);
        return STATUS_ACCESS_DENIED;
    }
    *handle = handle_new(m, p, access, kernel_handle);
    ptl__perf_event(m, PTL_EV_NOTE, "\\Device\\PhysicalMemory opened (%s handle %p)",
                    kernel_handle ? "kernel" : p->name, *handle);
    return STATUS_SUCCESS;
}

VOID RtlInitUnicodeString(PUNICODE_STRING DestinationString, PCWSTR SourceString)
{
    if (!DestinationString)
        return;
    size_t n = SourceString ? wcslen(SourceString) * sizeof(WCHAR) : 0;
    if (n > 0xFFFC)
        n = 0xFFFC;
    DestinationString->Buffer = (PWSTR)(uintptr_t)SourceString;
    DestinationString->Length = (USHORT)n;
    DestinationString->MaximumLength = (USHORT)(SourceString ? n + sizeof(WCHAR) : 0);
}

NTSTATUS ZwOpenSection(PHANDLE SectionHandle, ACCESS_MASK DesiredAccess,
                       POBJECT_ATTRIBUTES ObjectAttributes)
{
    ptl_machine *m = ptl__ddi_enter("ZwOpenSection");
    if (!SectionHandle || !ObjectAttributes || !ObjectAttributes->ObjectName)
        return STATUS_INVALID_PARAMETER;
    if (ObjectAttributes->Attributes & ~(ULONG)OBJ_VALID_ATTRIBUTES)
        return STATUS_INVALID_PARAMETER;
    if (!name_is_physical_memory(ObjectAttributes->ObjectName,
                                 (ObjectAttributes->Attributes & OBJ_CASE_INSENSITIVE) != 0))
        return STATUS_OBJECT_NAME_NOT_FOUND;
    void *h;
    NTSTATUS st =
        ptl__open_physical_memory(m, m->procs.current, 0, DesiredAccess,
                                  (ObjectAttributes->Attributes & OBJ_KERNEL_HANDLE) != 0, &h);
    if (NT_SUCCESS(st))
        *SectionHandle = h;
    return st;
}

NTSTATUS ZwClose(HANDLE Handle)
{
    ptl_machine *m = ptl__ddi_enter("ZwClose");
    ptl__handle *e = handle_get(m, Handle);
    if (!e) {
        ptl__perf_event(m, PTL_EV_MISUSE, "ZwClose(%p): not a handle in the context of %s", Handle,
                        m->procs.current->name);
        return STATUS_INVALID_HANDLE;
    }
    e->in_use = 0;
    if (e->is_thread)
        return STATUS_SUCCESS;
    PTL_ASSERT(m->objects.physmem.refs > 0);
    m->objects.physmem.refs--;
    return STATUS_SUCCESS;
}

NTSTATUS ObReferenceObjectByHandle(HANDLE Handle, ACCESS_MASK DesiredAccess,
                                   POBJECT_TYPE ObjectType, KPROCESSOR_MODE AccessMode,
                                   PVOID *Object, POBJECT_HANDLE_INFORMATION HandleInformation)
{
    ptl_machine *m = ptl__ddi_enter("ObReferenceObjectByHandle");
    (void)ObjectType;
    ptl__handle *e = handle_get(m, Handle);
    if (!e || !Object)
        return STATUS_INVALID_HANDLE;
    if (e->is_thread)
        return STATUS_OBJECT_TYPE_MISMATCH; /* ptelab hands out no thread objects */
    if (AccessMode == UserMode && (DesiredAccess & ~e->access))
        return STATUS_ACCESS_DENIED;
    m->objects.physmem.refs++;
    *Object = &m->objects.physmem;
    if (HandleInformation) {
        HandleInformation->HandleAttributes = 0;
        HandleInformation->GrantedAccess = e->access;
    }
    return STATUS_SUCCESS;
}

VOID ObDereferenceObject(PVOID Object)
{
    ptl_machine *m = ptl__ddi_enter("ObDereferenceObject");
    if (Object != &m->objects.physmem) {
        ptl__perf_event(m, PTL_EV_MISUSE,
                        "ObDereferenceObject(%p): not an object ptelab "
                        "handed out",
                        Object);
        return;
    }
    if (m->objects.physmem.refs == 0)
        ptl__bugcheck_why(m, 0x18, 0, (uintptr_t)Object & 0xFFFFFFFFu, 1, 0,
                          "ObDereferenceObject took the section's reference count below zero");
    m->objects.physmem.refs--;
}

/* ---- views -------------------------------------------------------------------------- */

static int protect_to_cache(uint32_t protect, int *cache, int *writable)
{
    uint32_t base = protect & 0xFFu;
    if (base == PAGE_READWRITE)
        *writable = 1;
    else if (base == PAGE_READONLY)
        *writable = 0;
    else
        return -1;
    uint32_t mods = protect & ~0xFFu;
    if (mods == 0)
        *cache = MmCached;
    else if (mods == PAGE_NOCACHE)
        *cache = MmNonCached;
    else if (mods == PAGE_WRITECOMBINE)
        *cache = MmWriteCombined;
    else
        return -1;
    return 0;
}

static void view_remove(ptl_machine *m, uint32_t k)
{
    ptl__view *v = &m->objects.views[k];
    ptl_process *p = v->process;
    ptl__vad *vad = ptl__vad_find(p, v->va);
    PTL_ASSERT(vad && vad->kind == PTL_VAD_PHYSICAL);
    ptl__cache_unref_run(m, (uint32_t)(v->pa >> PTL_PAGE_SHIFT), v->bytes / PTL_PAGE_SIZE,
                         v->cache);
    ptl__process_decommit(p, vad->start, vad->end);
    ptl__vad_remove(p, vad);
    m->objects.views_unmapped++;
    m->objects.views[k] = m->objects.views[--m->objects.nviews];
}

NTSTATUS ZwMapViewOfSection(HANDLE SectionHandle, HANDLE ProcessHandle, PVOID *BaseAddress,
                            ULONG_PTR ZeroBits, SIZE_T CommitSize, PLARGE_INTEGER SectionOffset,
                            PSIZE_T ViewSize, SECTION_INHERIT InheritDisposition,
                            ULONG AllocationType, ULONG Win32Protect)
{
    ptl_machine *m = ptl__ddi_enter("ZwMapViewOfSection");
    (void)CommitSize;
    (void)AllocationType;
    if (m->kernel.irql != PASSIVE_LEVEL)
        ptl__bugcheck_why(m, 0x0A, 0, (uint32_t)m->kernel.irql, 0, ptl__kernel_ip(m),
                          "ZwMapViewOfSection at IRQL %d (PASSIVE_LEVEL only)", m->kernel.irql);
    ptl__handle *e = handle_get(m, SectionHandle);
    if (!e)
        return STATUS_INVALID_HANDLE;
    if (e->is_thread)
        return STATUS_OBJECT_TYPE_MISMATCH;
    if (ProcessHandle != NtCurrentProcess())
        return STATUS_INVALID_HANDLE; /* ptelab: views go into the current process only */
    if (!BaseAddress || !ViewSize || ZeroBits >= 21)
        return STATUS_INVALID_PARAMETER;
    if (InheritDisposition != ViewShare && InheritDisposition != ViewUnmap)
        return STATUS_INVALID_PARAMETER;
    int cache, writable;
    if (protect_to_cache(Win32Protect, &cache, &writable) != 0)
        return STATUS_INVALID_PAGE_PROTECTION;
    if (!(e->access & SECTION_MAP_READ) || (writable && !(e->access & SECTION_MAP_WRITE)))
        return STATUS_ACCESS_DENIED;
    uint64_t offset = SectionOffset ? (uint64_t)SectionOffset->QuadPart : 0;
    if (SectionOffset && SectionOffset->QuadPart < 0)
        return STATUS_INVALID_PARAMETER;
    uint64_t rounded = offset & ~(uint64_t)(GRANULARITY - 1);
    /* *ViewSize is a SIZE_T from the caller: near 2^64 the sum below would wrap */
    if (*ViewSize > 0xFFFFFFFFull)
        return STATUS_INVALID_VIEW_SIZE;
    uint64_t size = (uint64_t)*ViewSize + (offset - rounded);
    size = (size + PTL_PAGE_MASK) & ~(uint64_t)PTL_PAGE_MASK;
    if (*ViewSize == 0 || size > 0xFFFFFFFFull || rounded + size > (4ull << 30))
        return STATUS_INVALID_VIEW_SIZE;
    ptl_process *p = m->procs.current;
    uint32_t hint = (uint32_t)(uintptr_t)*BaseAddress;
    if ((uintptr_t)*BaseAddress > 0xFFFFFFFFu)
        return STATUS_INVALID_PARAMETER;
    uint32_t va = ptl__vad_find_free(p, hint, (uint32_t)size);
    if (!va)
        return hint ? STATUS_CONFLICTING_ADDRESSES : STATUS_NO_MEMORY;
    uint32_t pfn = (uint32_t)(rounded >> PTL_PAGE_SHIFT), pages = (uint32_t)(size >> 12), at;
    int existing;
    if (ptl__cache_conflict(m, pfn, pages, cache, &at, &existing)) {
        if (m->cfg.profile >= PTL_WINXP) {
            ptl__perf_event(m, PTL_EV_FAIL,
                            "ZwMapViewOfSection of %llx %s: STATUS_CONFLICTING_ADDRESSES, "
                            "page %llx is mapped %s",
                            (unsigned long long)rounded, ptl__cache_name(cache),
                            (unsigned long long)at << PTL_PAGE_SHIFT, ptl__cache_name(existing));
            return STATUS_CONFLICTING_ADDRESSES;
        }
        ptl__perf_event(m, PTL_EV_HAZARD,
                        "view of %llx maps page %llx %s while it is mapped %s: the TLB "
                        "corruption the article forbids (XP would refuse)",
                        (unsigned long long)rounded, (unsigned long long)at << PTL_PAGE_SHIFT,
                        ptl__cache_name(cache), ptl__cache_name(existing));
    }
    uint32_t ram_pages_mapped = 0, uses = 0;
    for (uint32_t i = 0; i < pages; i++) {
        uint32_t f = pfn + i;
        if (f >= m->phys.ram_pages)
            break; /* and so are all after it */
        ram_pages_mapped++;
        uses |= 1u << (f < m->phys.hwm ? m->phys.pfn[f].Use : PTL_USE_FREE);
    }
    if (ram_pages_mapped) {
        char what[160] = "";
        for (int u = 0; u < PTL_USE_MAX; u++)
            if (uses & (1u << u))
                snprintf(what + strlen(what), sizeof what - strlen(what), "%s%s",
                         what[0] ? ", " : "", ptl__frame_use_name(u));
        ptl__perf_event(m, PTL_EV_HAZARD,
                        "view maps %u RAM pages at %llx that the driver does not own (%s): "
                        "their owner can change or free them under the mapping",
                        ram_pages_mapped, (unsigned long long)rounded, what);
    }
    ptl__vad_insert(p, va, va + (uint32_t)size, PTL_VAD_PHYSICAL,
                    writable ? MM_READWRITE : MM_READONLY, cache, m->objects.next_view_id);
    /* a page table at a time: one run of PTEs over consecutive frames */
    for (uint32_t i = 0; i < pages;) {
        uint32_t at_va = va + i * PTL_PAGE_SIZE;
        uint32_t k = 1024 - ((at_va >> 12) & 0x3FF);
        if (k > pages - i)
            k = pages - i;
        if (ptl__pte_ensure_table(m, p->pd, at_va) != 0) {
            ptl__process_decommit(p, va, at_va);
            ptl__vad_remove(p, ptl__vad_find(p, va));
            return STATUS_NO_MEMORY;
        }
        ptl__pte_write_run(m, p->pd, at_va, k, ptl__pte_make(pfn + i, writable, 1, cache),
                           PTL_PAGE_SIZE);
        i += k;
    }
    ptl__cache_ref_run(m, pfn, pages, cache);
    ptl__objects *o = &m->objects;
    if (o->nviews == o->views_cap) {
        o->views_cap = o->views_cap ? o->views_cap * 2 : 8;
        o->views = ptl__xrealloc(o->views, o->views_cap * sizeof *o->views);
    }
    o->views[o->nviews++] = (ptl__view){
        o->next_view_id++,     p, va, (uint32_t)size, rounded, cache, m->kernel.current_driver,
        ptl__verifier_site(m), 0};
    o->views_mapped++;
    *BaseAddress = (PVOID)(uintptr_t)va;
    *ViewSize = (SIZE_T)size;
    if (SectionOffset)
        SectionOffset->QuadPart = (LONGLONG)rounded;
    ptl__perf_event(m, PTL_EV_MAP, "view of physical %llx+0x%llx at %08x in %s (%s)",
                    (unsigned long long)rounded, (unsigned long long)size, va, p->name,
                    ptl__cache_name(cache));
    return STATUS_SUCCESS;
}

NTSTATUS ZwUnmapViewOfSection(HANDLE ProcessHandle, PVOID BaseAddress)
{
    ptl_machine *m = ptl__ddi_enter("ZwUnmapViewOfSection");
    if (ProcessHandle != NtCurrentProcess())
        return STATUS_INVALID_HANDLE;
    uint32_t va = (uint32_t)(uintptr_t)BaseAddress;
    ptl_process *p = m->procs.current;
    for (uint32_t k = 0; k < m->objects.nviews; k++) {
        ptl__view *v = &m->objects.views[k];
        if (va < v->va || va - v->va >= v->bytes)
            continue;
        if (v->process != p) {
            ptl__perf_event(m, PTL_EV_MISUSE,
                            "ZwUnmapViewOfSection(%08x) in %s, but the view at that address "
                            "belongs to %s: unmap in the process that mapped it",
                            va, p->name, v->process->name);
            continue;
        }
        ptl__perf_event(m, PTL_EV_UNMAP, "view at %08x unmapped from %s", v->va, p->name);
        view_remove(m, k);
        return STATUS_SUCCESS;
    }
    return STATUS_NOT_MAPPED_VIEW;
}

void ptl__objects_process_exit(ptl_machine *m, ptl_process *p)
{
    for (uint32_t k = 0; k < m->objects.nviews;) {
        if (m->objects.views[k].process == p) {
            ptl__perf_event(m, PTL_EV_UNMAP,
                            "process %s exits: its view at %08x goes with its address space",
                            p->name, m->objects.views[k].va);
            view_remove(m, k);
        } else {
            k++;
        }
    }
    for (uint32_t i = 0; i < m->objects.nhandles; i++) {
        ptl__handle *e = &m->objects.handles[i];
        if (e->in_use && !e->kernel && e->owner == p) {
            e->in_use = 0;
            if (!e->is_thread)
                m->objects.physmem.refs--;
        }
    }
}

/* One view: its VAD, and (when all_pages, or where its page tables changed since the
 * last check) its PTEs, one page table at a time: views reach 2 GB, and a check after
 * every DDI (the fuzzers') must not re-read half a million PTEs that did not change. */
static int view_check(ptl_machine *m, const ptl__view *v, int all_pages, FILE *why)
{
    ptl__vad *vad = v->process->exited ? NULL : ptl__vad_find(v->process, v->va);
    if (!vad || vad->kind != PTL_VAD_PHYSICAL || vad->start != v->va ||
        vad->end - vad->start != v->bytes) {
        fprintf(why, "objects: view %u at %08x has no matching VAD\n", v->id, v->va);
        return -1;
    }
    uint32_t pd = v->process->pd;
    const uint32_t *dir = ptl__phys_words_ro(&m->phys, pd);
    for (uint64_t at = v->va, end = (uint64_t)v->va + v->bytes; at < end;) {
        uint64_t table_end = (at | 0x3FFFFF) + 1, stop = table_end < end ? table_end : end;
        uint32_t span = (uint32_t)(stop - at);
        if (!all_pages && !ptl__icheck_range_changed(m, pd, (uint32_t)at, span)) {
            at = stop;
            continue;
        }
        uint32_t pde = dir[at >> 22];
        const uint32_t *ptes = (pde & PTL_PTE_VALID) && (pde >> PTL_PAGE_SHIFT) < m->phys.ram_pages
                                   ? ptl__phys_words_ro(&m->phys, pde >> PTL_PAGE_SHIFT)
                                   : NULL;
        for (; at < stop; at += PTL_PAGE_SIZE) {
            uint32_t pte = ptes ? ptes[(at >> 12) & 0x3FF] : 0;
            uint32_t want = (uint32_t)((v->pa + (at - v->va)) >> PTL_PAGE_SHIFT);
            if (!(pte & PTL_PTE_VALID) || !(pte & PTL_PTE_OWNER) ||
                (pte >> PTL_PAGE_SHIFT) != want) {
                fprintf(why, "objects: view %u page %08x has PTE %08x\n", v->id, (uint32_t)at, pte);
                return -1;
            }
        }
    }
    return 0;
}

int ptl__objects_check(ptl_machine *m, FILE *why)
{
    for (uint32_t k = 0; k < m->objects.nviews; k++)
        if (view_check(m, &m->objects.views[k], 1, why) != 0)
            return -1;
    return 0;
}

int ptl__objects_check_changed(ptl_machine *m, FILE *why)
{
    for (uint32_t k = 0; k < m->objects.nviews; k++) {
        ptl__view *v = &m->objects.views[k];
        int all_pages = !v->checked;
        v->checked = 0;
        if (view_check(m, v, all_pages, why) != 0)
            return -1;
        v->checked = 1;
    }
    return 0;
}

NTSTATUS ptl_user_open_section(ptl_process *p, const char *name, uint32_t access, uint32_t *handle)
{
    if (!ptl__process_ok(p))
        return STATUS_INVALID_HANDLE;
    ptl_machine *m = p->m;
    if (m->stop.stopped)
        return STATUS_UNSUCCESSFUL;
    if (!name || !handle)
        return STATUS_INVALID_PARAMETER;
    if (strcmp(name, "\\Device\\PhysicalMemory") != 0)
        return STATUS_OBJECT_NAME_NOT_FOUND;
    ptl__perf_tick(m);
    ptl__process_switch(m, p); /* the application's thread is running */
    void *h = NULL;
    NTSTATUS st = ptl__open_physical_memory(m, p, 1, access, 0, &h);
    *handle = NT_SUCCESS(st) ? (uint32_t)(uintptr_t)h : 0;
    return st;
}

void ptl_process_set_privileged(ptl_process *p, int privileged)
{
    if (ptl__process_ok(p))
        p->privileged = privileged != 0;
}
