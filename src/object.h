/* object.h - handles, object references, \Device\PhysicalMemory and its views. See
 * object.c. */
#ifndef PTELAB_OBJECT_H
#define PTELAB_OBJECT_H

#include <stdint.h>

typedef struct ptl__section {
    uint32_t magic; /* PTL__SECTION_MAGIC: what ObReferenceObjectByHandle hands out */
    uint32_t refs;  /* references beyond the name (it is permanent) */
} ptl__section;

typedef struct ptl__handle {
    uint8_t in_use;
    uint8_t kernel; /* OBJ_KERNEL_HANDLE: in the system handle table */
    uint32_t access;
    struct ptl_process *owner; /* whose handle table holds it (not for kernel handles) */
    uint8_t is_thread;         /* a thread object (PsCreateSystemThread); else the section */
    uint32_t tid;
} ptl__handle;

typedef struct ptl__view {
    uint32_t id;
    struct ptl_process *process;
    uint32_t va, bytes; /* page aligned */
    uint64_t pa;        /* physical address of the first page */
    int cache;
    uint32_t driver;
    uint32_t site;   /* the verifier's call site of its mapping (0: none) */
    uint8_t checked; /* the last incremental check found its PTEs right */
} ptl__view;

typedef struct ptl__objects {
    ptl__section physmem;
    ptl__handle *handles;
    uint32_t nhandles;
    ptl__view *views;
    uint32_t nviews, views_cap, next_view_id;
    uint64_t views_mapped, views_unmapped;
} ptl__objects;

#define PTL__SECTION_MAGIC 0x54434553u /* "SECT" */

struct ptl_machine;
struct ptl_process;
void ptl__objects_init(struct ptl_machine *m);
void ptl__objects_free(struct ptl_machine *m);
/* Views of a process that exits are removed with its address space. */
void ptl__objects_process_exit(struct ptl_machine *m, struct ptl_process *p);
int ptl__objects_check(struct ptl_machine *m, FILE *why);
/* The same, reading the PTEs only of views whose page tables changed (ptl_check). */
int ptl__objects_check_changed(struct ptl_machine *m, FILE *why);
/* A handle to a thread object, as PsCreateSystemThread returns it. */
void *ptl__thread_handle(struct ptl_machine *m, uint32_t tid, int kernel);
/* Open \Device\PhysicalMemory as if from `mode` (0 kernel, 1 user) in process p. */
int32_t ptl__open_physical_memory(struct ptl_machine *m, struct ptl_process *p, int mode,
                                  uint32_t access, int kernel_handle, void **handle);

#endif
