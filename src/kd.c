/* kd.c - a WinDbg-style inspector over a live or stopped machine.
 *
 * Output shapes follow Microsoft's debugger command reference
 * (learn.microsoft.com/windows-hardware/drivers/debuggercmds/): "!vm", "!sysptes".
 * Every command reads; none changes the machine except the edit commands (eb/ed) that a
 * user asks for. Bad input gets one line starting with "kd: " and a nonzero return.
 */
#include "internal.h"

#include <ctype.h>
#include <string.h>

static int kd_vm(ptl_machine *m, const char *args, FILE *out)
{
    (void)args;
    ptl_syspte_stats st;
    ptl_syspte_stats_get(m, &st);
    uint32_t avail = ptl__phys_available(&m->phys);
    fprintf(out, "*** Virtual Memory Usage ***\n");
    fprintf(out, "\tPhysical Memory:     %8u (   %8u Kb)\n", m->phys.ram_pages,
            m->phys.ram_pages * 4);
    fprintf(out, "\tAvailable Pages:     %8u (   %8u Kb)\n", avail, avail * 4);
    fprintf(out, "\tFree System PTEs:    %8u (   %8u Kb)\n", st.free, st.free * 4);
    if (st.free < 800 || st.failed_total + st.failed_fragmented) {
        fprintf(out, "\n\t********** Running out of system PTEs **************\n");
        if (st.failed_total + st.failed_fragmented)
            fprintf(out, "\t********** %llu system PTE allocations have failed ******\n",
                    (unsigned long long)(st.failed_total + st.failed_fragmented));
    }
    return 0;
}

static int kd_help(ptl_machine *m, const char *args, FILE *out);

typedef struct kd_cmd {
    const char *name;
    int (*fn)(ptl_machine *, const char *, FILE *);
    const char *help;
} kd_cmd;

static const kd_cmd commands[] = {
    {"!vm", kd_vm, "!vm [flags]           virtual memory usage, Free System PTEs"},
    {".help", kd_help, ".help                 this list"},
};

static int kd_help(ptl_machine *m, const char *args, FILE *out)
{
    (void)m;
    (void)args;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "%s\n", commands[i].help);
    return 0;
}

int ptl_kd(ptl_machine *m, const char *command, FILE *out)
{
    if (!ptl__machine_ok(m))
        return -1;
    if (!command || !out)
        return ptl__fail("kd: no command or no output stream");
    while (isspace((unsigned char)*command))
        command++;
    size_t len = 0;
    while (command[len] && !isspace((unsigned char)command[len]))
        len++;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strlen(commands[i].name) == len && strncmp(commands[i].name, command, len) == 0) {
            const char *args = command + len;
            while (isspace((unsigned char)*args))
                args++;
            return commands[i].fn(m, args, out);
        }
    }
    fprintf(out, "kd: unknown command '%.*s' (.help lists the commands)\n", (int)len, command);
    return ptl__fail("kd: unknown command '%.*s'", (int)len, command);
}
