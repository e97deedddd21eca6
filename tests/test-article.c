/* test-article.c - the article's two methods of mapping adapter memory, step by step, as
 * a driver of the period writes them, with data going both ways between the device and
 * the application and the system PTE count checked before and after each step.
 *
 * Source: Microsoft KB "How to map adapter RAM to user-space and system-space"
 * (../shared/seed/kb-map-adapter-memory.txt): "Section Object Method" and "MmMapIoSpace
 * Method".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <ptelab/ptelab.h>
#include <ptelab/wdm.h>

#define ADAPTER_BUS_ADDRESS 0xE0000000ull
#define ADAPTER_BYTES       (1u << 20)

typedef struct rig {
    ptl_machine *m;
    ptl_process *app, *other;
    ptl_driver *drv;
} rig;

/* Each method runs twice: with the software MMU, and in native mode where the host allows
 * it (emulated addresses are host addresses; src/native.c). */
static int native_mode = PTL_NATIVE_OFF;

static rig boot_rig(ptl_profile profile)
{
    ptl_config cfg;
    ptl_config_init(&cfg);
    cfg.profile = profile;
    cfg.native = native_mode;
    rig r;
    r.m = ptl_boot(&cfg);
    assert_non_null(r.m);
    assert_int_equal(ptl_adapter_add(r.m, PCIBus, 0, ADAPTER_BUS_ADDRESS, ADAPTER_BYTES), 0);
    r.app = ptl_process_create(r.m, "app.exe");
    r.other = ptl_process_create(r.m, "other.exe");
    r.drv = ptl_driver_load(r.m, "mapmem.sys", 16384);
    assert_non_null(r.app);
    assert_non_null(r.other);
    assert_non_null(r.drv);
    return r;
}

static uint32_t call(rig *r, ptl_process *p, void (*fn)(void *), void *arg)
{
    ptl_stop stop;
    return ptl_call(r->m, p, r->drv, fn, arg, &stop);
}

/* ---- Section Object method ----------------------------------------------------------- */

typedef struct section_ctx {
    NTSTATUS st_open, st_ref, st_map, st_unmap, st_close;
    BOOLEAN translated;
    PHYSICAL_ADDRESS physical;
    HANDLE section;
    PVOID object;
    PVOID view_base;
    PVOID user_va; /* the adapter byte the application sees */
    SIZE_T view_size;
} section_ctx;

/* MAPMEM's outline: translate, open, reference, map (and compensate for the rounding). */
static void section_map(void *arg)
{
    section_ctx *c = arg;
    PHYSICAL_ADDRESS bus;
    ULONG space = 0;
    bus.QuadPart = ADAPTER_BUS_ADDRESS + 0x1234; /* not aligned: the rounding matters */
    c->translated = HalTranslateBusAddress(PCIBus, 0, bus, &space, &c->physical);
    if (!c->translated)
        return;
    UNICODE_STRING name;
    OBJECT_ATTRIBUTES oa;
    RtlInitUnicodeString(&name, L"\\Device\\PhysicalMemory");
    InitializeObjectAttributes(&oa, &name, OBJ_CASE_INSENSITIVE, (HANDLE)NULL, (PVOID)NULL);
    c->st_open = ZwOpenSection(&c->section, SECTION_ALL_ACCESS, &oa);
    if (!NT_SUCCESS(c->st_open))
        return;
    c->st_ref = ObReferenceObjectByHandle(c->section, SECTION_ALL_ACCESS, (POBJECT_TYPE)NULL,
                                          KernelMode, &c->object, NULL);
    PHYSICAL_ADDRESS view_base = c->physical;
    c->view_size = 0x3000;
    c->view_base = NULL;
    c->st_map =
        ZwMapViewOfSection(c->section, NtCurrentProcess(), &c->view_base, 0L, c->view_size,
                           &view_base, &c->view_size, ViewShare, 0, PAGE_READWRITE | PAGE_NOCACHE);
    if (!NT_SUCCESS(c->st_map))
        return;
    /* the view starts at the rounded-down offset: add back what was rounded off */
    c->user_va =
        (PVOID)((ULONG)c->view_base + (ULONG)c->physical.LowPart - (ULONG)view_base.LowPart);
}

static void section_unmap(void *arg)
{
    section_ctx *c = arg;
    c->st_unmap = ZwUnmapViewOfSection(NtCurrentProcess(), c->view_base);
}

static void section_close(void *arg)
{
    section_ctx *c = arg;
    ObDereferenceObject(c->object);
    c->st_close = ZwClose(c->section);
}

static void section_object_method(void)
{
    rig r = boot_rig(PTL_NT4_SP4);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    section_ctx c;
    memset(&c, 0, sizeof c);
    assert_int_equal(call(&r, r.app, section_map, &c), 0);
    assert_true(c.translated);
    assert_int_equal(c.physical.QuadPart, ADAPTER_BUS_ADDRESS + 0x1234);
    assert_int_equal(c.st_open, STATUS_SUCCESS);
    assert_int_equal(c.st_ref, STATUS_SUCCESS);
    assert_int_equal(c.st_map, STATUS_SUCCESS);
    /* a view lives in user space and costs no system PTEs */
    assert_true((uintptr_t)c.view_base >= 0x10000 && (uintptr_t)c.view_base < 0x7FFF0000);
    assert_int_equal((uintptr_t)c.view_base & 0xFFFF, 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    /* the view was grown by the 64 KB rounding (0x1234) and rounded up to pages */
    assert_int_equal(c.view_size, 0x5000);

    /* device -> application */
    uint32_t word = 0xCAFEBABE, back = 0;
    assert_int_equal(ptl_phys_write(r.m, ADAPTER_BUS_ADDRESS + 0x1234, &word, 4), 0);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user_va, &back, 4),
                     STATUS_SUCCESS);
    assert_int_equal(back, word);
    /* application -> device */
    const char msg[] = "hello, adapter";
    char got[sizeof msg];
    assert_int_equal(ptl_user_write(r.app, (uint32_t)(uintptr_t)c.user_va + 8, msg, sizeof msg),
                     STATUS_SUCCESS);
    assert_int_equal(ptl_phys_read(r.m, ADAPTER_BUS_ADDRESS + 0x1234 + 8, got, sizeof got), 0);
    assert_string_equal(got, msg);

    /* "only valid in the context of the process it is mapped" */
    assert_int_equal(ptl_user_read(r.other, (uint32_t)(uintptr_t)c.user_va, &back, 4),
                     STATUS_ACCESS_VIOLATION);

    /* the adapter pages are not used for page replacement: swap-out leaves them mapped */
    uint32_t buf = ptl_user_alloc(r.app, 8192);
    assert_true(buf != 0);
    assert_int_equal(ptl_user_write(r.app, buf, &word, 4), STATUS_SUCCESS);
    assert_true(ptl_process_swap_out(r.app) >= 1);
    word = 0x12345678;
    assert_int_equal(ptl_phys_write(r.m, ADAPTER_BUS_ADDRESS + 0x1234, &word, 4), 0);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user_va, &back, 4),
                     STATUS_SUCCESS);
    assert_int_equal(back, 0x12345678);
    assert_int_equal(ptl_check(r.m), 0);

    /* unmapping from the wrong process fails and is diagnosed */
    uint64_t misuse0 = ptl_event_count_type(r.m, "misuse");
    assert_int_equal(call(&r, r.other, section_unmap, &c), 0);
    assert_int_equal(c.st_unmap, STATUS_NOT_MAPPED_VIEW);
    assert_int_equal(ptl_event_count_type(r.m, "misuse"), misuse0 + 1);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user_va, &back, 4),
                     STATUS_SUCCESS);

    /* unmapping in the right process removes the view */
    assert_int_equal(call(&r, r.app, section_unmap, &c), 0);
    assert_int_equal(c.st_unmap, STATUS_SUCCESS);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.user_va, &back, 4),
                     STATUS_ACCESS_VIOLATION);
    assert_int_equal(call(&r, r.app, section_close, &c), 0);
    assert_int_equal(c.st_close, STATUS_SUCCESS);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

static void test_section_object_method(void **state)
{
    (void)state;
    for (native_mode = PTL_NATIVE_OFF; native_mode >= PTL_NATIVE_AUTO; native_mode -= 2)
        section_object_method();
}

/* ---- MmMapIoSpace method ---------------------------------------------------------------- */

#define SIZE_OF_MEMORY (3 * PAGE_SIZE)
#define ADAPTER_OFFSET 0x100 /* the buffer starts inside a page */

typedef struct iospace_ctx {
    PVOID SystemVirtualAddress, UserVirtualAddress, RawUser;
    PMDL Mdl;
    ULONG seen_by_driver;
    ULONG seen_by_dpc;
    ULONG seen_raw; /* native mode: through the pointer itself */
    int native;
} iospace_ctx;

static void iospace_map(void *arg)
{
    iospace_ctx *c = arg;
    PHYSICAL_ADDRESS BusAddress, PhysicalAddress;
    ULONG AddressSpace = 0;
    ULONG SizeOfMemory = SIZE_OF_MEMORY;
    KPROCESSOR_MODE Mode = UserMode;
    BusAddress.QuadPart = ADAPTER_BUS_ADDRESS + ADAPTER_OFFSET;
    if (!HalTranslateBusAddress(PCIBus, 0, BusAddress, &AddressSpace, &PhysicalAddress))
        return;
    /* the article's statements, as written */
    PVOID SystemVirtualAddress = MmMapIoSpace(PhysicalAddress, SizeOfMemory, FALSE);
    if (!SystemVirtualAddress)
        return;
    PMDL Mdl = IoAllocateMdl(SystemVirtualAddress, SizeOfMemory, FALSE, FALSE, NULL);
    MmBuildMdlForNonPagedPool(Mdl);
    c->RawUser = MmMapLockedPages(Mdl, Mode);
    PVOID UserVirtualAddress = (PVOID)(((ULONG)PAGE_ALIGN(c->RawUser)) + MmGetMdlByteOffset(Mdl));
    c->SystemVirtualAddress = SystemVirtualAddress;
    c->UserVirtualAddress = UserVirtualAddress;
    c->Mdl = Mdl;
    c->seen_by_driver = READ_REGISTER_ULONG((volatile ULONG *)SystemVirtualAddress);
    c->native = ptl_native(ptl_current());
    if (c->native)
        c->seen_raw = *(volatile ULONG *)SystemVirtualAddress;
}

static void iospace_dpc(void *arg)
{
    iospace_ctx *c = arg;
    c->seen_by_dpc = READ_REGISTER_ULONG((volatile ULONG *)c->SystemVirtualAddress);
    WRITE_REGISTER_ULONG((volatile ULONG *)c->SystemVirtualAddress + 1, 0xD0C0FFEE);
}

static void iospace_unmap(void *arg)
{
    iospace_ctx *c = arg;
    MmUnmapLockedPages(c->UserVirtualAddress, c->Mdl);
    MmUnmapIoSpace(c->SystemVirtualAddress, SIZE_OF_MEMORY);
    IoFreeMdl(c->Mdl);
}

static void iospace_method(ptl_profile profile)
{
    rig r = boot_rig(profile);
    uint32_t free0 = ptl_free_system_ptes(r.m);
    uint32_t word = 0x0BADF00D, back = 0;
    assert_int_equal(ptl_phys_write(r.m, ADAPTER_BUS_ADDRESS + ADAPTER_OFFSET, &word, 4), 0);
    iospace_ctx c;
    memset(&c, 0, sizeof c);
    assert_int_equal(call(&r, r.app, iospace_map, &c), 0);
    assert_non_null(c.SystemVirtualAddress);
    assert_non_null(c.UserVirtualAddress);
    assert_int_equal((uintptr_t)c.SystemVirtualAddress & 0xFFF, ADAPTER_OFFSET);
    assert_int_equal((uintptr_t)c.UserVirtualAddress & 0xFFF, ADAPTER_OFFSET);
    /* KB 199311: SP3 returns the page-aligned base, SP4 and later the actual address */
    if (profile == PTL_NT4_SP3)
        assert_int_equal((uintptr_t)c.RawUser & 0xFFF, 0);
    else
        assert_ptr_equal(c.RawUser, c.UserVirtualAddress);
    /* exactly the span's pages of system PTEs: 0x100 + 3 pages spans 4 pages; the user
     * mapping costs none */
    assert_int_equal(ptl_free_system_ptes(r.m), free0 - 4);
    assert_int_equal(c.seen_by_driver, word);
    if (native_mode == PTL_NATIVE_AUTO && c.native)
        assert_int_equal(c.seen_raw, word);
    /* device -> application, through the user mapping */
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.UserVirtualAddress, &back, 4),
                     STATUS_SUCCESS);
    assert_int_equal(back, word);
    /* application -> device */
    word = 0xFEEDFACE;
    assert_int_equal(ptl_user_write(r.app, (uint32_t)(uintptr_t)c.UserVirtualAddress + 8, &word, 4),
                     STATUS_SUCCESS);
    assert_int_equal(ptl_phys_read(r.m, ADAPTER_BUS_ADDRESS + ADAPTER_OFFSET + 8, &back, 4), 0);
    assert_int_equal(back, 0xFEEDFACE);
    /* the system address works from a DPC in whatever process ran last */
    assert_int_equal(ptl_user_read(r.other, 0x10000, &back, 4), STATUS_ACCESS_VIOLATION);
    ptl_stop stop;
    assert_int_equal(ptl_call_dpc(r.m, r.drv, iospace_dpc, &c, &stop), 0);
    assert_int_equal(c.seen_by_dpc, 0x0BADF00D);
    assert_int_equal(ptl_phys_read(r.m, ADAPTER_BUS_ADDRESS + ADAPTER_OFFSET + 4, &back, 4), 0);
    assert_int_equal(back, 0xD0C0FFEE);
    /* the user address is not valid in another process */
    assert_int_equal(ptl_user_read(r.other, (uint32_t)(uintptr_t)c.UserVirtualAddress, &back, 4),
                     STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_check(r.m), 0);
    /* unmap in the process that mapped, free the MDL: every PTE comes back */
    assert_int_equal(call(&r, r.app, iospace_unmap, &c), 0);
    assert_int_equal(ptl_free_system_ptes(r.m), free0);
    assert_int_equal(ptl_user_read(r.app, (uint32_t)(uintptr_t)c.UserVirtualAddress, &back, 4),
                     STATUS_ACCESS_VIOLATION);
    assert_int_equal(ptl_event_count_type(r.m, "misuse"), 0);
    assert_int_equal(ptl_check(r.m), 0);
    ptl_shutdown(r.m);
}

static void both_modes(ptl_profile profile)
{
    for (native_mode = PTL_NATIVE_OFF; native_mode >= PTL_NATIVE_AUTO; native_mode -= 2)
        iospace_method(profile);
}

static void test_iospace_method_nt4_sp3(void **state)
{
    (void)state;
    both_modes(PTL_NT4_SP3);
}

static void test_iospace_method_nt4_sp4(void **state)
{
    (void)state;
    both_modes(PTL_NT4_SP4);
}

static void test_iospace_method_win2000(void **state)
{
    (void)state;
    both_modes(PTL_WIN2000);
}

static void test_iospace_method_winxp(void **state)
{
    (void)state;
    both_modes(PTL_WINXP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_section_object_method),
        cmocka_unit_test(test_iospace_method_nt4_sp3),
        cmocka_unit_test(test_iospace_method_nt4_sp4),
        cmocka_unit_test(test_iospace_method_win2000),
        cmocka_unit_test(test_iospace_method_winxp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
