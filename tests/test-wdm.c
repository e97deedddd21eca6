/* test-wdm.c - <ptelab/wdm.h> against the documented values, and the article's statements
 * compiled verbatim.
 *
 * The expected values are typed in from Microsoft's documentation (learn.microsoft.com:
 * "NTSTATUS Values", "MEMORY_CACHING_TYPE", "INTERFACE_TYPE", "LOCK_OPERATION", "MDL",
 * "Managing Hardware Priorities", "Memory Protection Constants", "POOL_TYPE") as collected
 * in docs/research/bugchecks-and-ddis.md, not derived from the header, so a wrong value in
 * the header fails here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/wdm.h>
#include <ptelab/ptelab.h> /* either order works: each header stands alone */

typedef struct constant {
    const char *name;
    long long value, documented;
} constant;

#define C(name, doc)                               \
    {                                              \
#name, (long long)(name), (long long)(doc) \
    }

static const constant constants[] = {
    C(STATUS_SUCCESS, 0x00000000),
    C((ULONG)STATUS_ACCESS_VIOLATION, 0xC0000005),
    C((ULONG)STATUS_IN_PAGE_ERROR, 0xC0000006),
    C((ULONG)STATUS_INVALID_HANDLE, 0xC0000008),
    C((ULONG)STATUS_INVALID_PARAMETER, 0xC000000D),
    C((ULONG)STATUS_NO_MEMORY, 0xC0000017),
    C((ULONG)STATUS_CONFLICTING_ADDRESSES, 0xC0000018),
    C((ULONG)STATUS_NOT_MAPPED_VIEW, 0xC0000019),
    C((ULONG)STATUS_UNABLE_TO_FREE_VM, 0xC000001A),
    C((ULONG)STATUS_INVALID_VIEW_SIZE, 0xC000001F),
    C((ULONG)STATUS_ACCESS_DENIED, 0xC0000022),
    C((ULONG)STATUS_OBJECT_TYPE_MISMATCH, 0xC0000024),
    C((ULONG)STATUS_OBJECT_NAME_NOT_FOUND, 0xC0000034),
    C((ULONG)STATUS_INVALID_PAGE_PROTECTION, 0xC0000045),
    C((ULONG)STATUS_INSUFFICIENT_RESOURCES, 0xC000009A),
    C((ULONG)STATUS_FREE_VM_NOT_AT_BASE, 0xC000009F),
    C((ULONG)STATUS_MEMORY_NOT_ALLOCATED, 0xC00000A0),
    C((ULONG)STATUS_PROCESS_IS_TERMINATING, 0xC000010A),
    C((ULONG)STATUS_INVALID_ADDRESS, 0xC0000141),
    C((ULONG)STATUS_NO_MORE_ENTRIES, 0x8000001A),
    C(PAGE_SIZE, 4096),
    C(PAGE_SHIFT, 12),
    C(PASSIVE_LEVEL, 0),
    C(APC_LEVEL, 1),
    C(DISPATCH_LEVEL, 2),
    C(PROFILE_LEVEL, 27),
    C(CLOCK2_LEVEL, 28),
    C(IPI_LEVEL, 29),
    C(POWER_LEVEL, 30),
    C(HIGH_LEVEL, 31),
    C(MmNonCached, 0),
    C(MmCached, 1),
    C(MmWriteCombined, 2),
    C(MmFrameBufferCached, 2),
    C(MmHardwareCoherentCached, 3),
    C(MmNonCachedUnordered, 4),
    C(MmUSWCCached, 5),
    C(MmMaximumCacheType, 6),
    C(InterfaceTypeUndefined, -1),
    C(Internal, 0),
    C(Isa, 1),
    C(Eisa, 2),
    C(MicroChannel, 3),
    C(TurboChannel, 4),
    C(PCIBus, 5),
    C(VMEBus, 6),
    C(NuBus, 7),
    C(PCMCIABus, 8),
    C(CBus, 9),
    C(MPIBus, 10),
    C(MPSABus, 11),
    C(ProcessorInternal, 12),
    C(InternalPowerBus, 13),
    C(PNPISABus, 14),
    C(PNPBus, 15),
    C(KernelMode, 0),
    C(UserMode, 1),
    C(IoReadAccess, 0),
    C(IoWriteAccess, 1),
    C(IoModifyAccess, 2),
    C(ViewShare, 1),
    C(ViewUnmap, 2),
    C(LowPagePriority, 0),
    C(NormalPagePriority, 16),
    C(HighPagePriority, 32),
    C(NonPagedPool, 0),
    C(PagedPool, 1),
    C(NonPagedPoolMustSucceed, 2),
    C(NonPagedPoolCacheAligned, 4),
    C(PagedPoolCacheAligned, 5),
    C(NonPagedPoolCacheAlignedMustS, 6),
    C(MDL_MAPPED_TO_SYSTEM_VA, 0x0001),
    C(MDL_PAGES_LOCKED, 0x0002),
    C(MDL_SOURCE_IS_NONPAGED_POOL, 0x0004),
    C(MDL_ALLOCATED_FIXED_SIZE, 0x0008),
    C(MDL_PARTIAL, 0x0010),
    C(MDL_PARTIAL_HAS_BEEN_MAPPED, 0x0020),
    C(MDL_IO_PAGE_READ, 0x0040),
    C(MDL_WRITE_OPERATION, 0x0080),
    C(MDL_PARENT_MAPPED_SYSTEM_VA, 0x0100),
    C(MDL_FREE_EXTRA_PTES, 0x0200),
    C(MDL_IO_SPACE, 0x0800),
    C(MDL_NETWORK_HEADER, 0x1000),
    C(MDL_MAPPING_CAN_FAIL, 0x2000),
    C(MDL_ALLOCATED_MUST_SUCCEED, 0x4000),
    C(OBJ_INHERIT, 0x2),
    C(OBJ_PERMANENT, 0x10),
    C(OBJ_EXCLUSIVE, 0x20),
    C(OBJ_CASE_INSENSITIVE, 0x40),
    C(OBJ_OPENIF, 0x80),
    C(OBJ_KERNEL_HANDLE, 0x200),
    C(SECTION_QUERY, 0x1),
    C(SECTION_MAP_WRITE, 0x2),
    C(SECTION_MAP_READ, 0x4),
    C(SECTION_MAP_EXECUTE, 0x8),
    C(SECTION_EXTEND_SIZE, 0x10),
    C(SECTION_ALL_ACCESS, 0x000F001F),
    C(PAGE_NOACCESS, 0x01),
    C(PAGE_READONLY, 0x02),
    C(PAGE_READWRITE, 0x04),
    C(PAGE_WRITECOPY, 0x08),
    C(PAGE_EXECUTE, 0x10),
    C(PAGE_EXECUTE_READ, 0x20),
    C(PAGE_EXECUTE_READWRITE, 0x40),
    C(PAGE_NOCACHE, 0x200),
    C(PAGE_WRITECOMBINE, 0x400),
    C(MEM_COMMIT, 0x1000),
    C(MEM_RESERVE, 0x2000),
    C(MEM_DECOMMIT, 0x4000),
    C(MEM_RELEASE, 0x8000),
    C(EXCEPTION_EXECUTE_HANDLER, 1),
    C(EXCEPTION_CONTINUE_SEARCH, 0),
    C(EXCEPTION_CONTINUE_EXECUTION, -1),
};

static void test_constants(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
        if (constants[i].value != constants[i].documented) {
            fprintf(stderr, "%s is %lld, documented %lld\n", constants[i].name, constants[i].value,
                    constants[i].documented);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_macros(void **state)
{
    (void)state;
    assert_int_equal((uintptr_t)PAGE_ALIGN((PVOID)0x12345678), 0x12345000);
    assert_int_equal(BYTE_OFFSET((PVOID)0x12345678), 0x678);
    assert_int_equal(ADDRESS_AND_SIZE_TO_SPAN_PAGES((PVOID)0x1FFF, 2), 2);
    assert_int_equal(ADDRESS_AND_SIZE_TO_SPAN_PAGES((PVOID)0x1000, 0x1000), 1);
    assert_int_equal(ADDRESS_AND_SIZE_TO_SPAN_PAGES((PVOID)0x1100, 0x3000), 4);
    assert_int_equal(BYTES_TO_PAGES(4097), 2);
    assert_int_equal(ROUND_TO_PAGES(1), 4096);
    assert_true(NT_SUCCESS(STATUS_SUCCESS));
    assert_true(NT_SUCCESS(0x40000000));
    assert_false(NT_SUCCESS(STATUS_ACCESS_VIOLATION));
    assert_true(NT_ERROR(STATUS_ACCESS_VIOLATION));
    assert_true(NT_WARNING(STATUS_NO_MORE_ENTRIES));
    assert_true(NtCurrentProcess() == (HANDLE)(LONG_PTR)-1);
    UNICODE_STRING u;
    RtlInitUnicodeString(&u, L"\\Device\\PhysicalMemory");
    assert_int_equal(u.Length, 22 * sizeof(WCHAR));
    assert_int_equal(u.MaximumLength, 23 * sizeof(WCHAR));
    OBJECT_ATTRIBUTES oa;
    InitializeObjectAttributes(&oa, &u, OBJ_CASE_INSENSITIVE, NULL, NULL);
    assert_int_equal(oa.Length, sizeof(OBJECT_ATTRIBUTES));
    assert_ptr_equal(oa.ObjectName, &u);
    assert_int_equal(oa.Attributes, OBJ_CASE_INSENSITIVE);
    MDL mdl;
    memset(&mdl, 0, sizeof mdl);
    mdl.StartVa = (PVOID)0x00450000;
    mdl.ByteOffset = 0x123;
    mdl.ByteCount = 99;
    assert_int_equal((uintptr_t)MmGetMdlVirtualAddress(&mdl), 0x00450123);
    assert_int_equal(MmGetMdlByteCount(&mdl), 99);
    assert_int_equal(MmGetMdlByteOffset(&mdl), 0x123);
    assert_ptr_equal(MmGetMdlPfnArray(&mdl), (PPFN_NUMBER)(&mdl + 1));
}

/* ---- the article's statements, verbatim ------------------------------------------------ */

typedef struct article_ctx {
    PVOID SystemVirtualAddress, UserVirtualAddress;
    ULONG pages_before, pages_mapped;
    ptl_machine *m;
} article_ctx;

static void article_code(void *arg)
{
    article_ctx *c = arg;
    PHYSICAL_ADDRESS PhysicalAddress;
    ULONG SizeofMemory = 2 * PAGE_SIZE, SizeOfMemory = SizeofMemory; /* both spellings occur */
    BOOLEAN CacheEnable = FALSE; /* the NT 4.0 DDK's form of MmMapIoSpace */
    KPROCESSOR_MODE Mode = UserMode;
    PVOID SystemVirtualAddress, UserVirtualAddress;
    PMDL Mdl;
    PhysicalAddress.QuadPart = 0xE0000000;
    c->pages_before = ptl_free_system_ptes(c->m);

    /* clang-format off: the article's lines, line breaks included */
    // clang-format off
    SystemVirtualAddress = MmMapIoSpace(PhysicalAddress, SizeofMemory,
CacheEnable);
    Mdl = IoAllocateMdl(SystemVirtualAddress, SizeOfMemory, FALSE, FALSE,
NULL);
    MmBuildMdlForNonPagedPool(Mdl);
    UserVirtualAddress = (PVOID)(((ULONG)PAGE_ALIGN(MmMapLockedPages(Mdl,
Mode))) + MmGetMdlByteOffset(Mdl));
    // clang-format on

    c->pages_mapped = c->pages_before - ptl_free_system_ptes(c->m);
    c->SystemVirtualAddress = SystemVirtualAddress;
    c->UserVirtualAddress = UserVirtualAddress;

    MmUnmapIoSpace(SystemVirtualAddress, SizeofMemory);
    MmUnmapLockedPages(UserVirtualAddress, Mdl);
    IoFreeMdl(Mdl);
}

static void test_article_statements_verbatim(void **state)
{
    (void)state;
    ptl_config cfg;
    ptl_config_init(&cfg);
    ptl_machine *m = ptl_boot(&cfg);
    assert_non_null(m);
    assert_int_equal(ptl_adapter_add(m, PCIBus, 0, 0xE0000000ull, 1u << 20), 0);
    ptl_process *p = ptl_process_create(m, "app.exe");
    article_ctx c = {NULL, NULL, 0, 0, m};
    ptl_stop stop;
    assert_int_equal(ptl_call(m, p, NULL, article_code, &c, &stop), 0);
    assert_non_null(c.SystemVirtualAddress);
    assert_non_null(c.UserVirtualAddress);
    assert_int_equal(c.pages_mapped, 2);
    assert_int_equal(ptl_free_system_ptes(m), c.pages_before);
    assert_int_equal(ptl_check(m), 0);
    ptl_shutdown(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constants),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_article_statements_verbatim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
