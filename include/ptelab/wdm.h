/* ptelab/wdm.h - the WDK names a driver's memory-mapping code uses, bound to ptelab.
 *
 * Include this instead of the DDK's wdm.h/ntddk.h and run the code inside ptl_call(); the
 * DDIs act on the machine that ptl_call made current. Types, constants and macros have the
 * values of the WDK headers and learn.microsoft.com pages (sources and the constant table
 * test: docs/research/bugchecks-and-ddis.md, tests/test-wdm-constants.c).
 *
 * Addresses. An emulated x86 virtual address is a 32-bit value carried in a pointer type
 * (DESIGN.md), so the article's `(ULONG)PAGE_ALIGN(...)` casts are lossless. Because
 * those casts narrow a 64-bit host pointer, this header turns off GCC/Clang's
 * pointer/int size-mismatch warnings for the code that includes it. Emulated memory is
 * reached through the macros and DDIs below (READ_REGISTER_ULONG, RtlCopyMemory, ...),
 * which accept emulated and host addresses alike, told apart by value (host >= 4 GB).
 *
 * Exceptions. Calls that raise on NT (MmProbeAndLockPages, MmMapLockedPages(UserMode))
 * raise here too; catch them with
 *     PTL_TRY { ... } PTL_EXCEPT(EXCEPTION_EXECUTE_HANDLER) { status = GetExceptionCode(); }
 * Do not `return` out of a PTL_TRY body (NT's SEH unwinds that; setjmp cannot). An
 * exception nobody catches is KMODE_EXCEPTION_NOT_HANDLED (0x1E).
 *
 * Differences from the real headers are listed in docs/fidelity.md ("wdm.h").
 */
#ifndef PTELAB_WDM_H
#define PTELAB_WDM_H

#include <stdint.h>
#include <string.h>
#include <ptelab/ntbase.h>
#include <ptelab/ptelab.h>
#include <ptelab/fastpath.h>

#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpointer-to-int-cast"
#pragma GCC diagnostic ignored "-Wint-to-pointer-cast"
#pragma GCC diagnostic ignored "-Wmultichar" /* pool tags: 'gaTk' */
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- base types ----------------------------------------------------------------------- */

typedef int16_t CSHORT;
typedef CHAR CCHAR;
typedef CCHAR KPROCESSOR_MODE;
typedef UCHAR KPROCESSOR_MODE_U;
typedef void *PVOID64;
typedef ULONG *PACCESS_MASK;
#ifndef NTAPI
#define NTAPI
#endif
#ifndef IN
#define IN
#define OUT
#define OPTIONAL
#endif
#define NTSYSAPI
#define NTKERNELAPI
#define VOLATILE volatile

#define NT_SUCCESS(Status)     (((NTSTATUS)(Status)) >= 0)
#define NT_INFORMATION(Status) ((((ULONG)(Status)) >> 30) == 1)
#define NT_WARNING(Status)     ((((ULONG)(Status)) >> 30) == 2)
#define NT_ERROR(Status)       ((((ULONG)(Status)) >> 30) == 3)

/* ---- NTSTATUS --------------------------------------------------------------------------- */

#define STATUS_SUCCESS                 ((NTSTATUS)0x00000000L)
#define STATUS_GUARD_PAGE_VIOLATION    ((NTSTATUS)0x80000001L)
#define STATUS_DATATYPE_MISALIGNMENT   ((NTSTATUS)0x80000002L)
#define STATUS_BREAKPOINT              ((NTSTATUS)0x80000003L)
#define STATUS_NO_MORE_ENTRIES         ((NTSTATUS)0x8000001AL)
#define STATUS_UNSUCCESSFUL            ((NTSTATUS)0xC0000001L)
#define STATUS_NOT_IMPLEMENTED         ((NTSTATUS)0xC0000002L)
#define STATUS_ACCESS_VIOLATION        ((NTSTATUS)0xC0000005L)
#define STATUS_IN_PAGE_ERROR           ((NTSTATUS)0xC0000006L)
#define STATUS_INVALID_HANDLE          ((NTSTATUS)0xC0000008L)
#define STATUS_INVALID_PARAMETER       ((NTSTATUS)0xC000000DL)
#define STATUS_NO_MEMORY               ((NTSTATUS)0xC0000017L)
#define STATUS_CONFLICTING_ADDRESSES   ((NTSTATUS)0xC0000018L)
#define STATUS_NOT_MAPPED_VIEW         ((NTSTATUS)0xC0000019L)
#define STATUS_UNABLE_TO_FREE_VM       ((NTSTATUS)0xC000001AL)
#define STATUS_INVALID_VIEW_SIZE       ((NTSTATUS)0xC000001FL)
#define STATUS_ALREADY_COMMITTED       ((NTSTATUS)0xC0000021L)
#define STATUS_ACCESS_DENIED           ((NTSTATUS)0xC0000022L)
#define STATUS_OBJECT_TYPE_MISMATCH    ((NTSTATUS)0xC0000024L)
#define STATUS_NOT_COMMITTED           ((NTSTATUS)0xC000002DL)
#define STATUS_INVALID_PARAMETER_MIX   ((NTSTATUS)0xC0000030L)
#define STATUS_OBJECT_NAME_INVALID     ((NTSTATUS)0xC0000033L)
#define STATUS_OBJECT_NAME_NOT_FOUND   ((NTSTATUS)0xC0000034L)
#define STATUS_SECTION_TOO_BIG         ((NTSTATUS)0xC0000040L)
#define STATUS_INVALID_PAGE_PROTECTION ((NTSTATUS)0xC0000045L)
#define STATUS_SECTION_PROTECTION      ((NTSTATUS)0xC000004EL)
#define STATUS_PRIVILEGED_INSTRUCTION  ((NTSTATUS)0xC0000096L)
#define STATUS_INSUFFICIENT_RESOURCES  ((NTSTATUS)0xC000009AL)
#define STATUS_FREE_VM_NOT_AT_BASE     ((NTSTATUS)0xC000009FL)
#define STATUS_MEMORY_NOT_ALLOCATED    ((NTSTATUS)0xC00000A0L)
#define STATUS_WORKING_SET_QUOTA       ((NTSTATUS)0xC00000A1L)
#define STATUS_INVALID_PARAMETER_1     ((NTSTATUS)0xC00000EFL)
#define STATUS_INVALID_PARAMETER_2     ((NTSTATUS)0xC00000F0L)
#define STATUS_INVALID_PARAMETER_3     ((NTSTATUS)0xC00000F1L)
#define STATUS_INVALID_PARAMETER_4     ((NTSTATUS)0xC00000F2L)
#define STATUS_PROCESS_IS_TERMINATING  ((NTSTATUS)0xC000010AL)
#define STATUS_INVALID_ADDRESS         ((NTSTATUS)0xC0000141L)

/* ---- pages ------------------------------------------------------------------------------ */

#define PAGE_SIZE            0x1000
#define PAGE_SHIFT           12L
#define PAGE_ALIGN(Va)       ((PVOID)((ULONG_PTR)(Va) & ~(PAGE_SIZE - 1)))
#define BYTE_OFFSET(Va)      ((ULONG)((LONG_PTR)(Va) & (PAGE_SIZE - 1)))
#define ROUND_TO_PAGES(Size) (((ULONG_PTR)(Size) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
#define BYTES_TO_PAGES(Size) (((Size) >> PAGE_SHIFT) + (((Size) & (PAGE_SIZE - 1)) != 0))
#define ADDRESS_AND_SIZE_TO_SPAN_PAGES(Va, Size) \
    ((ULONG)((((ULONG_PTR)(Va) & (PAGE_SIZE - 1)) + (Size) + (PAGE_SIZE - 1)) >> PAGE_SHIFT))
#define COMPUTE_PAGES_SPANNED(Va, Size) ADDRESS_AND_SIZE_TO_SPAN_PAGES(Va, Size)

/* ---- IRQL ---------------------------------------------------------------------------- */

#define PASSIVE_LEVEL  0
#define LOW_LEVEL      0
#define APC_LEVEL      1
#define DISPATCH_LEVEL 2
#define PROFILE_LEVEL  27
#define CLOCK1_LEVEL   28
#define CLOCK2_LEVEL   28
#define CLOCK_LEVEL    28
#define IPI_LEVEL      29
#define POWER_LEVEL    30
#define HIGH_LEVEL     31

/* ---- enumerations ----------------------------------------------------------------------- */

typedef enum _MODE { KernelMode = 0, UserMode = 1, MaximumMode } MODE;

typedef enum _MEMORY_CACHING_TYPE_ORIG { MmFrameBufferCached = 2 } MEMORY_CACHING_TYPE_ORIG;
typedef enum _MEMORY_CACHING_TYPE {
    MmNonCached = 0,
    MmCached = 1,
    MmWriteCombined = 2,
    MmHardwareCoherentCached = 3,
    MmNonCachedUnordered = 4,
    MmUSWCCached = 5,
    MmMaximumCacheType = 6
} MEMORY_CACHING_TYPE;

typedef enum _LOCK_OPERATION {
    IoReadAccess = 0,
    IoWriteAccess = 1,
    IoModifyAccess = 2
} LOCK_OPERATION;

typedef enum _SECTION_INHERIT { ViewShare = 1, ViewUnmap = 2 } SECTION_INHERIT;

typedef enum _MM_PAGE_PRIORITY {
    LowPagePriority = 0,
    NormalPagePriority = 16,
    HighPagePriority = 32
} MM_PAGE_PRIORITY;

typedef enum _POOL_TYPE {
    NonPagedPool = 0,
    PagedPool = 1,
    NonPagedPoolMustSucceed = 2,
    DontUseThisType = 3,
    NonPagedPoolCacheAligned = 4,
    PagedPoolCacheAligned = 5,
    NonPagedPoolCacheAlignedMustS = 6,
    MaxPoolType = 7
} POOL_TYPE;

/* ---- access rights, attributes, protections ---------------------------------------------- */

#define DELETE                   0x00010000L
#define READ_CONTROL             0x00020000L
#define WRITE_DAC                0x00040000L
#define WRITE_OWNER              0x00080000L
#define STANDARD_RIGHTS_REQUIRED 0x000F0000L
#define SECTION_QUERY            0x0001
#define SECTION_MAP_WRITE        0x0002
#define SECTION_MAP_READ         0x0004
#define SECTION_MAP_EXECUTE      0x0008
#define SECTION_EXTEND_SIZE      0x0010
#define SECTION_ALL_ACCESS                                                             \
    (STANDARD_RIGHTS_REQUIRED | SECTION_QUERY | SECTION_MAP_WRITE | SECTION_MAP_READ | \
     SECTION_MAP_EXECUTE | SECTION_EXTEND_SIZE)

#define OBJ_INHERIT          0x00000002L
#define OBJ_PERMANENT        0x00000010L
#define OBJ_EXCLUSIVE        0x00000020L
#define OBJ_CASE_INSENSITIVE 0x00000040L
#define OBJ_OPENIF           0x00000080L
#define OBJ_OPENLINK         0x00000100L
#define OBJ_KERNEL_HANDLE    0x00000200L
#define OBJ_VALID_ATTRIBUTES 0x000003F2L

#define PAGE_NOACCESS          0x01
#define PAGE_READONLY          0x02
#define PAGE_READWRITE         0x04
#define PAGE_WRITECOPY         0x08
#define PAGE_EXECUTE           0x10
#define PAGE_EXECUTE_READ      0x20
#define PAGE_EXECUTE_READWRITE 0x40
#define PAGE_EXECUTE_WRITECOPY 0x80
#define PAGE_GUARD             0x100
#define PAGE_NOCACHE           0x200
#define PAGE_WRITECOMBINE      0x400

#define MEM_COMMIT      0x1000
#define MEM_RESERVE     0x2000
#define MEM_DECOMMIT    0x4000
#define MEM_RELEASE     0x8000
#define MEM_FREE        0x10000
#define MEM_PRIVATE     0x20000
#define MEM_MAPPED      0x40000
#define MEM_RESET       0x80000
#define MEM_TOP_DOWN    0x100000
#define MEM_LARGE_PAGES 0x20000000
#define SEC_RESERVE     0x4000000
#define SEC_COMMIT      0x8000000

#define EXCEPTION_EXECUTE_HANDLER    1
#define EXCEPTION_CONTINUE_SEARCH    0
#define EXCEPTION_CONTINUE_EXECUTION (-1)

/* ---- strings and object attributes ------------------------------------------------------ */

typedef struct _UNICODE_STRING {
    USHORT Length;        /* bytes, without the terminator */
    USHORT MaximumLength; /* bytes */
    PWSTR Buffer;
} UNICODE_STRING, *PUNICODE_STRING;
typedef const UNICODE_STRING *PCUNICODE_STRING;

typedef struct _OBJECT_ATTRIBUTES {
    ULONG Length;
    HANDLE RootDirectory;
    PUNICODE_STRING ObjectName;
    ULONG Attributes;
    PVOID SecurityDescriptor;
    PVOID SecurityQualityOfService;
} OBJECT_ATTRIBUTES, *POBJECT_ATTRIBUTES;

#define InitializeObjectAttributes(p, n, a, r, s) \
    do {                                          \
        (p)->Length = sizeof(OBJECT_ATTRIBUTES);  \
        (p)->RootDirectory = (r);                 \
        (p)->Attributes = (a);                    \
        (p)->ObjectName = (n);                    \
        (p)->SecurityDescriptor = (s);            \
        (p)->SecurityQualityOfService = NULL;     \
    } while (0)

VOID RtlInitUnicodeString(PUNICODE_STRING DestinationString, PCWSTR SourceString);

/* ---- processes, objects ------------------------------------------------------------------ */

/* EPROCESS and KPROCESS are in <ptelab/ntbase.h>: a PEPROCESS is ptelab's process record,
 * whose first member is the EPROCESS; kd shows the emulated EPROCESS address. */
typedef struct _KAPC_STATE {
    PEPROCESS Process; /* the process attached from */
    ULONG Attached;
    ULONG Magic;
} KAPC_STATE, *PKAPC_STATE, *PRKAPC_STATE;

typedef struct _OBJECT_TYPE *POBJECT_TYPE;
typedef struct _OBJECT_HANDLE_INFORMATION {
    ULONG HandleAttributes;
    ACCESS_MASK GrantedAccess;
} OBJECT_HANDLE_INFORMATION, *POBJECT_HANDLE_INFORMATION;

#define NtCurrentProcess() ((HANDLE)(LONG_PTR)-1)
#define ZwCurrentProcess() NtCurrentProcess()

/* ---- MDLs --------------------------------------------------------------------------------- */

typedef struct _MDL {
    struct _MDL *Next;
    CSHORT Size;
    CSHORT MdlFlags;
    PEPROCESS Process;
    PVOID MappedSystemVa;
    PVOID StartVa;
    ULONG ByteCount;
    ULONG ByteOffset;
} MDL, *PMDL;

#define MDL_MAPPED_TO_SYSTEM_VA     0x0001
#define MDL_PAGES_LOCKED            0x0002
#define MDL_SOURCE_IS_NONPAGED_POOL 0x0004
#define MDL_ALLOCATED_FIXED_SIZE    0x0008
#define MDL_PARTIAL                 0x0010
#define MDL_PARTIAL_HAS_BEEN_MAPPED 0x0020
#define MDL_IO_PAGE_READ            0x0040
#define MDL_WRITE_OPERATION         0x0080
#define MDL_PARENT_MAPPED_SYSTEM_VA 0x0100
#define MDL_FREE_EXTRA_PTES         0x0200
#define MDL_DESCRIBES_AWE           0x0400
#define MDL_IO_SPACE                0x0800
#define MDL_NETWORK_HEADER          0x1000
#define MDL_MAPPING_CAN_FAIL        0x2000
#define MDL_ALLOCATED_MUST_SUCCEED  0x4000
#define MDL_INTERNAL                0x8000
#define MDL_MAPPING_FLAGS                                                       \
    (MDL_MAPPED_TO_SYSTEM_VA | MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL | \
     MDL_PARTIAL_HAS_BEEN_MAPPED | MDL_PARENT_MAPPED_SYSTEM_VA | MDL_IO_SPACE)

#define MmGetMdlPfnArray(Mdl)       ((PPFN_NUMBER)((Mdl) + 1))
#define MmGetMdlVirtualAddress(Mdl) ((PVOID)((PCHAR)((Mdl)->StartVa) + (Mdl)->ByteOffset))
#define MmGetMdlByteCount(Mdl)      ((Mdl)->ByteCount)
#define MmGetMdlByteOffset(Mdl)     ((Mdl)->ByteOffset)
#define MmGetMdlBaseVa(Mdl)         ((Mdl)->StartVa)

/* MmGetSystemAddressForMdl: obsolete since Windows 2000; stops with 0x3F when no system
 * PTEs can be had (unless MDL_MAPPING_CAN_FAIL is set). */
#define MmGetSystemAddressForMdl(MDL)                                            \
    (((MDL)->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL)) \
         ? ((MDL)->MappedSystemVa)                                               \
         : (MmMapLockedPages((MDL), KernelMode)))
#define MmGetSystemAddressForMdlSafe(MDL, PRIORITY)                              \
    (((MDL)->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL)) \
         ? ((MDL)->MappedSystemVa)                                               \
         : (MmMapLockedPagesSpecifyCache((MDL), KernelMode, MmCached, NULL, FALSE, (PRIORITY))))

/* ---- exceptions -------------------------------------------------------------------------- */

#define PTL_TRY                                                                               \
    for (ptl_frame ptl__tf, *ptl__once = ptl_try_push(&ptl__tf); ptl__once; ptl__once = NULL) \
        if (setjmp(ptl__tf.jb) == 0) {
#define PTL_EXCEPT(filter) \
    ptl_try_pop(&ptl__tf); \
    }                      \
    else if (ptl_try_filter(&ptl__tf, (filter)))
#define GetExceptionCode() ((NTSTATUS)ptl_exception_code())
/* Period code's own spelling: __try { ... } __except (filter) { ... }. No __finally or
 * __leave, and no return out of the __try body (docs/fidelity.md). */
#if !defined(_MSC_VER) && !defined(PTELAB_NO_SEH_KEYWORDS)
/* clang-format takes __except for the keyword and would put a space before its ( */
// clang-format off
#define __try        PTL_TRY
#define __except(f)  PTL_EXCEPT(f)
// clang-format on
#endif
#define ExRaiseStatus(Status) ptl_raise_status((int32_t)(Status))

/* ---- the DDIs ------------------------------------------------------------------------------ */

/* HAL */
BOOLEAN HalTranslateBusAddress(INTERFACE_TYPE InterfaceType, ULONG BusNumber,
                               PHYSICAL_ADDRESS BusAddress, PULONG AddressSpace,
                               PPHYSICAL_ADDRESS TranslatedAddress);

/* I/O space, noncached memory, addresses */
PVOID MmMapIoSpace(PHYSICAL_ADDRESS PhysicalAddress, SIZE_T NumberOfBytes,
                   MEMORY_CACHING_TYPE CacheType);
VOID MmUnmapIoSpace(PVOID BaseAddress, SIZE_T NumberOfBytes);
PVOID MmAllocateNonCachedMemory(SIZE_T NumberOfBytes);
VOID MmFreeNonCachedMemory(PVOID BaseAddress, SIZE_T NumberOfBytes);
PHYSICAL_ADDRESS MmGetPhysicalAddress(PVOID BaseAddress);
BOOLEAN MmIsAddressValid(PVOID VirtualAddress);

/* MDLs */
PMDL IoAllocateMdl(PVOID VirtualAddress, ULONG Length, BOOLEAN SecondaryBuffer, BOOLEAN ChargeQuota,
                   PVOID Irp);
VOID IoFreeMdl(PMDL Mdl);
VOID MmBuildMdlForNonPagedPool(PMDL MemoryDescriptorList);
VOID MmProbeAndLockPages(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode,
                         LOCK_OPERATION Operation);
VOID MmUnlockPages(PMDL MemoryDescriptorList);
PVOID MmMapLockedPages(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode);
PVOID MmMapLockedPagesSpecifyCache(PMDL MemoryDescriptorList, KPROCESSOR_MODE AccessMode,
                                   MEMORY_CACHING_TYPE CacheType, PVOID RequestedAddress,
                                   ULONG BugCheckOnFailure, ULONG Priority);
VOID MmUnmapLockedPages(PVOID BaseAddress, PMDL MemoryDescriptorList);

/* virtual memory and sections */
NTSTATUS ZwAllocateVirtualMemory(HANDLE ProcessHandle, PVOID *BaseAddress, ULONG_PTR ZeroBits,
                                 PSIZE_T RegionSize, ULONG AllocationType, ULONG Protect);
NTSTATUS ZwFreeVirtualMemory(HANDLE ProcessHandle, PVOID *BaseAddress, PSIZE_T RegionSize,
                             ULONG FreeType);
NTSTATUS ZwOpenSection(PHANDLE SectionHandle, ACCESS_MASK DesiredAccess,
                       POBJECT_ATTRIBUTES ObjectAttributes);
NTSTATUS ZwMapViewOfSection(HANDLE SectionHandle, HANDLE ProcessHandle, PVOID *BaseAddress,
                            ULONG_PTR ZeroBits, SIZE_T CommitSize, PLARGE_INTEGER SectionOffset,
                            PSIZE_T ViewSize, SECTION_INHERIT InheritDisposition,
                            ULONG AllocationType, ULONG Win32Protect);
NTSTATUS ZwUnmapViewOfSection(HANDLE ProcessHandle, PVOID BaseAddress);
NTSTATUS ZwClose(HANDLE Handle);
NTSTATUS ObReferenceObjectByHandle(HANDLE Handle, ACCESS_MASK DesiredAccess,
                                   POBJECT_TYPE ObjectType, KPROCESSOR_MODE AccessMode,
                                   PVOID *Object, POBJECT_HANDLE_INFORMATION HandleInformation);
VOID ObDereferenceObject(PVOID Object);
#define ObDereferenceObjectDeferDelete ObDereferenceObject

/* probes, process identity, CR3 */
VOID ProbeForRead(const volatile VOID *Address, SIZE_T Length, ULONG Alignment);
VOID ProbeForWrite(volatile VOID *Address, SIZE_T Length, ULONG Alignment);
HANDLE PsGetCurrentProcessId(void);
PEPROCESS ptl_ps_initial_system_process(void);
#define PsInitialSystemProcess (ptl_ps_initial_system_process())
unsigned long __readcr3(void);

/* system threads */
typedef struct _CLIENT_ID {
    HANDLE UniqueProcess;
    HANDLE UniqueThread;
} CLIENT_ID, *PCLIENT_ID;
typedef VOID (*PKSTART_ROUTINE)(PVOID StartContext);
NTSTATUS PsCreateSystemThread(PHANDLE ThreadHandle, ULONG DesiredAccess,
                              POBJECT_ATTRIBUTES ObjectAttributes, HANDLE ProcessHandle,
                              PCLIENT_ID ClientId, PKSTART_ROUTINE StartRoutine,
                              PVOID StartContext);
NTSTATUS PsTerminateSystemThread(NTSTATUS ExitStatus);

/* pools */
PVOID ExAllocatePool(POOL_TYPE PoolType, SIZE_T NumberOfBytes);
PVOID ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag);
VOID ExFreePool(PVOID P);
VOID ExFreePoolWithTag(PVOID P, ULONG Tag);

/* processes, IRQL, bug checks */
VOID KeStackAttachProcess(PRKPROCESS Process, PRKAPC_STATE ApcState);
VOID KeUnstackDetachProcess(PRKAPC_STATE ApcState);
PEPROCESS PsGetCurrentProcess(void);
#define IoGetCurrentProcess PsGetCurrentProcess
KIRQL KeGetCurrentIrql(void);
VOID KeRaiseIrql(KIRQL NewIrql, PKIRQL OldIrql);
VOID KeLowerIrql(KIRQL NewIrql);
KIRQL KeRaiseIrqlToDpcLevel(void);
VOID KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR BugCheckParameter1, ULONG_PTR BugCheckParameter2,
                  ULONG_PTR BugCheckParameter3, ULONG_PTR BugCheckParameter4)
    __attribute__((noreturn));
VOID KeBugCheck(ULONG BugCheckCode) __attribute__((noreturn));

/* MDL pages, contiguous memory, reserved mappings (src/mdl_ext.c, src/reserved.c). A routine
 * the profile's release does not export logs a "misuse" event and fails (NULL, or does
 * nothing): on NT such a driver would not load. Availability: MmSizeOfMdl, MmCreateMdl,
 * IoBuildPartialMdl, MmAllocateContiguousMemory, MmFreeContiguousMemory on every profile;
 * MmAllocatePagesForMdl, MmFreePagesFromMdl, MmAllocateContiguousMemorySpecifyCache,
 * MmFreeContiguousMemorySpecifyCache from PTL_WIN2000; MmAllocatePagesForMdlEx and the
 * reserved-mapping routines on PTL_WINXP only (docs/fidelity.md). */
#define MM_DONT_ZERO_ALLOCATION          0x00000001
#define MM_ALLOCATE_FROM_LOCAL_NODE_ONLY 0x00000002

SIZE_T MmSizeOfMdl(PVOID Base, SIZE_T Length);
/* As the WDK defines it (a statement; Size counts this build's MDL and PFN_NUMBER). */
#define MmInitializeMdl(_MemoryDescriptorList, _BaseVa, _Length)                                   \
    do {                                                                                           \
        (_MemoryDescriptorList)->Next = (PMDL)NULL;                                                \
        (_MemoryDescriptorList)->Size =                                                            \
            (CSHORT)(sizeof(MDL) +                                                                 \
                     (sizeof(PFN_NUMBER) * ADDRESS_AND_SIZE_TO_SPAN_PAGES((_BaseVa), (_Length)))); \
        (_MemoryDescriptorList)->MdlFlags = 0;                                                     \
        (_MemoryDescriptorList)->StartVa = (PVOID)PAGE_ALIGN((_BaseVa));                           \
        (_MemoryDescriptorList)->ByteOffset = BYTE_OFFSET((_BaseVa));                              \
        (_MemoryDescriptorList)->ByteCount = (ULONG)(_Length);                                     \
    } while (0)
/* As the WDK defines it: unmap a partial MDL's mapping before the MDL is built again. */
#define MmPrepareMdlForReuse(MDL)                                 \
    do {                                                          \
        if (((MDL)->MdlFlags & MDL_PARTIAL_HAS_BEEN_MAPPED) != 0) \
            MmUnmapLockedPages((MDL)->MappedSystemVa, (MDL));     \
    } while (0)
/* Obsolete: MmSizeOfMdl + allocation + MmInitializeMdl; free the MDL with IoFreeMdl. */
PMDL MmCreateMdl(PMDL MemoryDescriptorList, PVOID Base, SIZE_T Length);
VOID IoBuildPartialMdl(PMDL SourceMdl, PMDL TargetMdl, PVOID VirtualAddress, ULONG Length);
PMDL MmAllocatePagesForMdl(PHYSICAL_ADDRESS LowAddress, PHYSICAL_ADDRESS HighAddress,
                           PHYSICAL_ADDRESS SkipBytes, SIZE_T TotalBytes);
PMDL MmAllocatePagesForMdlEx(PHYSICAL_ADDRESS LowAddress, PHYSICAL_ADDRESS HighAddress,
                             PHYSICAL_ADDRESS SkipBytes, SIZE_T TotalBytes,
                             MEMORY_CACHING_TYPE CacheType, ULONG Flags);
VOID MmFreePagesFromMdl(PMDL MemoryDescriptorList);
PVOID MmAllocateContiguousMemory(SIZE_T NumberOfBytes, PHYSICAL_ADDRESS HighestAcceptableAddress);
PVOID MmAllocateContiguousMemorySpecifyCache(SIZE_T NumberOfBytes,
                                             PHYSICAL_ADDRESS LowestAcceptableAddress,
                                             PHYSICAL_ADDRESS HighestAcceptableAddress,
                                             PHYSICAL_ADDRESS BoundaryAddressMultiple,
                                             MEMORY_CACHING_TYPE CacheType);
VOID MmFreeContiguousMemory(PVOID BaseAddress);
VOID MmFreeContiguousMemorySpecifyCache(PVOID BaseAddress, SIZE_T NumberOfBytes,
                                        MEMORY_CACHING_TYPE CacheType);
PVOID MmAllocateMappingAddress(SIZE_T NumberOfBytes, ULONG PoolTag);
VOID MmFreeMappingAddress(PVOID BaseAddress, ULONG PoolTag);
PVOID MmMapLockedPagesWithReservedMapping(PVOID MappingAddress, ULONG PoolTag,
                                          PMDL MemoryDescriptorList, MEMORY_CACHING_TYPE CacheType);
VOID MmUnmapReservedMapping(PVOID BaseAddress, ULONG PoolTag, PMDL MemoryDescriptorList);

/* ---- memory access: registers, buffers, Rtl ------------------------------------------------ */

/* Access n bytes at an emulated or host address from driver code (kernel mode, current
 * IRQL and context). Faults become what NT makes of them. */
void ptl_kread(const volatile void *addr, void *out, size_t n);
void ptl_kwrite(volatile void *addr, const void *in, size_t n);

/* ---- the inline register path: see ptelab/fastpath.h ---- */

/* The host bytes behind an n-byte access at r on a TLB hit (a write needs the page
 * writable and already dirty), or NULL. */
static inline uint8_t *ptl__register_hit(const volatile void *r, size_t n, int write)
{
    const ptl__fastpath *f = (const ptl__fastpath *)(const void *)ptl__tls_machine;
    uint64_t a = (uint64_t)(uintptr_t)r;
    if (!f || a < f->min_va || a >= (1ull << 32) || (a & 0xFFF) + n > 0x1000)
        return NULL;
    const ptl__tlbe *e = &f->tlb[(a >> 12) % PTL__TLB_ENTRIES];
    if (e->tag != (uint32_t)(a >> 12) + 1 || !e->host || (write && !(e->writable && e->dirty)))
        return NULL;
    return e->host + (a & 0xFFF);
}

#define PTL__REGISTER_RW(type, suffix)                                              \
    static inline type READ_REGISTER_##suffix(volatile type *Register)              \
    {                                                                               \
        type v;                                                                     \
        uint8_t *host = ptl__register_hit(Register, sizeof v, 0);                   \
        if (host)                                                                   \
            memcpy(&v, host, sizeof v);                                             \
        else                                                                        \
            ptl_kread(Register, &v, sizeof v);                                      \
        return v;                                                                   \
    }                                                                               \
    static inline VOID WRITE_REGISTER_##suffix(volatile type *Register, type Value) \
    {                                                                               \
        uint8_t *host = ptl__register_hit(Register, sizeof Value, 1);               \
        if (host)                                                                   \
            memcpy(host, &Value, sizeof Value);                                     \
        else                                                                        \
            ptl_kwrite(Register, &Value, sizeof Value);                             \
    }
PTL__REGISTER_RW(UCHAR, UCHAR)
PTL__REGISTER_RW(USHORT, USHORT)
PTL__REGISTER_RW(ULONG, ULONG)
#undef PTL__REGISTER_RW

/* The _BUFFER_ forms read or write Count elements at consecutive addresses. */
static inline VOID READ_REGISTER_BUFFER_UCHAR(volatile UCHAR *Register, PUCHAR Buffer, ULONG Count)
{
    ptl_kread(Register, Buffer, Count);
}
static inline VOID READ_REGISTER_BUFFER_USHORT(volatile USHORT *Register, PUSHORT Buffer,
                                               ULONG Count)
{
    ptl_kread(Register, Buffer, (size_t)Count * 2);
}
static inline VOID READ_REGISTER_BUFFER_ULONG(volatile ULONG *Register, PULONG Buffer, ULONG Count)
{
    ptl_kread(Register, Buffer, (size_t)Count * 4);
}
static inline VOID WRITE_REGISTER_BUFFER_UCHAR(volatile UCHAR *Register, PUCHAR Buffer, ULONG Count)
{
    ptl_kwrite(Register, Buffer, Count);
}
static inline VOID WRITE_REGISTER_BUFFER_USHORT(volatile USHORT *Register, PUSHORT Buffer,
                                                ULONG Count)
{
    ptl_kwrite(Register, Buffer, (size_t)Count * 2);
}
static inline VOID WRITE_REGISTER_BUFFER_ULONG(volatile ULONG *Register, PULONG Buffer, ULONG Count)
{
    ptl_kwrite(Register, Buffer, (size_t)Count * 4);
}

void ptl_rtl_copy(void *dst, const void *src, size_t n);
void ptl_rtl_fill(void *dst, size_t n, int value);
size_t ptl_rtl_compare(const void *a, const void *b, size_t n);
#define RtlCopyMemory(Destination, Source, Length) ptl_rtl_copy((Destination), (Source), (Length))
#define RtlMoveMemory(Destination, Source, Length) ptl_rtl_copy((Destination), (Source), (Length))
#define RtlFillMemory(Destination, Length, Fill)   ptl_rtl_fill((Destination), (Length), (Fill))
#define RtlZeroMemory(Destination, Length)         ptl_rtl_fill((Destination), (Length), 0)
#define RtlCompareMemory(Source1, Source2, Length) ptl_rtl_compare((Source1), (Source2), (Length))

#ifdef __cplusplus
}
#endif

#endif /* PTELAB_WDM_H */
