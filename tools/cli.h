/* cli.h - what the command-line front ends share: how a number on the command line reads.
 *
 * Decimal, or hexadecimal after 0x (SystemPages values are often written 0xFFFFFFFF). A
 * leading zero is not octal (strtoull's base 0 would read 040000 as 16384), and no sign
 * or space is taken (strtoull would turn " -1" into 2^64-1). */
#ifndef PTELAB_TOOLS_CLI_H
#define PTELAB_TOOLS_CLI_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* 0 and *out set, or -1 when s is not such a number or does not fit 64 bits. */
static inline int ptl_cli_parse_u64(const char *s, uint64_t *out)
{
    if (!(s[0] >= '0' && s[0] <= '9'))
        return -1;
    int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, hex ? 16 : 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

#endif
