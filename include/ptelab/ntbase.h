/* ptelab/ntbase.h - the few WDK base types that both ptelab.h and wdm.h use.
 *
 * Models: the scalar types of the NT DDK (ntdef.h, wdm.h) for an x86 target, spelled so
 * that they mean the same thing on a 64-bit Linux host:
 *   - ULONG/LONG are 32 bits (not the host's 64-bit long), as on every Windows target;
 *   - pointer-sized integers (ULONG_PTR, SIZE_T) are host pointer-sized, so a pointer can
 *     round-trip through them; an emulated x86 virtual address is a 32-bit value carried
 *     in a pointer type (see DESIGN.md, "Addresses");
 *   - WCHAR is the host's wchar_t so that L"\\Device\\PhysicalMemory" compiles as written
 *     (4 bytes on Linux where Windows has 2: documented in docs/fidelity.md).
 * Values follow the WDK headers and learn.microsoft.com (INTERFACE_TYPE:
 * "INTERFACE_TYPE enumeration (wdm.h)").
 *
 * This header is included by both public headers and compiles on its own.
 */
#ifndef PTELAB_NTBASE_H
#define PTELAB_NTBASE_H

#include <stddef.h>
#include <stdint.h>
#include <wchar.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void VOID;
typedef void *PVOID;
typedef uint8_t UCHAR, *PUCHAR;
typedef uint16_t USHORT, *PUSHORT;
typedef uint32_t ULONG, *PULONG;
typedef int32_t LONG, *PLONG;
typedef int64_t LONGLONG;
typedef uint64_t ULONGLONG;
typedef char CHAR, *PCHAR;
typedef const char *PCSTR;
typedef wchar_t WCHAR, *PWCHAR, *PWSTR;
typedef const wchar_t *PCWSTR;
typedef uint8_t BOOLEAN, *PBOOLEAN;
typedef uintptr_t ULONG_PTR, *PULONG_PTR;
typedef intptr_t LONG_PTR;
typedef size_t SIZE_T, *PSIZE_T;
typedef LONG NTSTATUS;
typedef UCHAR KIRQL, *PKIRQL;
typedef ULONG PFN_NUMBER, *PPFN_NUMBER;
typedef ULONG ACCESS_MASK;
typedef PVOID HANDLE, *PHANDLE;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

typedef union _LARGE_INTEGER {
    struct {
        ULONG LowPart;
        LONG HighPart;
    };
    struct {
        ULONG LowPart;
        LONG HighPart;
    } u;
    LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER;

typedef LARGE_INTEGER PHYSICAL_ADDRESS, *PPHYSICAL_ADDRESS;

/* Bus types, at the values of the WDK's INTERFACE_TYPE. */
typedef enum _INTERFACE_TYPE {
    InterfaceTypeUndefined = -1,
    Internal = 0,
    Isa = 1,
    Eisa = 2,
    MicroChannel = 3,
    TurboChannel = 4,
    PCIBus = 5,
    VMEBus = 6,
    NuBus = 7,
    PCMCIABus = 8,
    CBus = 9,
    MPIBus = 10,
    MPSABus = 11,
    ProcessorInternal = 12,
    InternalPowerBus = 13,
    PNPISABus = 14,
    PNPBus = 15,
    Vmcs = 16,
    ACPIBus = 17,
    MaximumInterfaceType
} INTERFACE_TYPE,
    *PINTERFACE_TYPE;

/* The process object, with the fields driver code and kd read. The pointer a DDI hands
 * out (PsGetCurrentProcess) is also ptelab's ptl_process, whose first member this is. */
typedef struct _KPROCESS {
    ULONG DirectoryTableBase[2]; /* [0]: the page directory's physical address (CR3) */
} KPROCESS, *PKPROCESS;

/* As in the WDK, a PRKPROCESS and a PEPROCESS point at the same object, so that
 * KeStackAttachProcess(PsGetCurrentProcess(), ...) compiles without a cast. */
typedef struct _EPROCESS {
    KPROCESS Pcb;
    HANDLE UniqueProcessId;
    UCHAR ImageFileName[16];
} EPROCESS, *PEPROCESS, *PRKPROCESS;

#ifdef __cplusplus
}
#endif

#endif /* PTELAB_NTBASE_H */
