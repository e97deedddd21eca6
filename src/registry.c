/* registry.c - the Memory Management key, imported from a .reg file as regedit exports it.
 *
 * Models the values of
 *     HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management
 * that size the system PTE pool and the pools at boot (the article names SystemPages;
 * TechNet's "Memory Management registry keys" documents the rest): SystemPages,
 * PagedPoolSize, NonPagedPoolSize (REG_DWORD, bytes or pages as documented) and TrackPtes.
 *
 * File format (regedit's export): a header line "REGEDIT4" (ANSI) or "Windows Registry
 * Editor Version 5.00" (written as UTF-16LE with a byte-order mark), key lines in
 * brackets, "name"=dword:xxxxxxxx values, ';' comments, blank lines, CRLF endings, and
 * long hex values continued with a trailing backslash. Keys other than the Memory
 * Management key are skipped; so are value types and names ptelab does not model.
 * ControlSet001 is accepted for CurrentControlSet, and key names compare without case.
 *
 * An error names the file, the line and the reason, and leaves the configuration as it
 * was: values are staged and copied only when the whole file parsed.
 *
 * Invariant: an import that fails leaves the configuration exactly as it was.
 */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

static const char *const mm_key_names[] = {
    "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Memory Management",
    "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\Session Manager\\Memory Management",
};

/* UTF-16LE with a BOM becomes 8-bit text; characters above 0xFF become '?', which only
 * matters inside names ptelab ignores. */
static char *to_text(const unsigned char *data, size_t len, size_t *out_len)
{
    if (len >= 2 && data[0] == 0xFF && data[1] == 0xFE) {
        size_t n = (len - 2) / 2;
        char *t = ptl__xcalloc(n + 1, 1);
        for (size_t i = 0; i < n; i++) {
            unsigned c = data[2 + 2 * i] | (unsigned)data[3 + 2 * i] << 8;
            t[i] = c == 0 ? ' ' : (c < 0x100 ? (char)c : '?');
        }
        *out_len = n;
        return t;
    }
    size_t skip = (len >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF) ? 3 : 0;
    char *t = ptl__xcalloc(len - skip + 1, 1);
    if (len > skip) /* data may be NULL when len is 0 */
        memcpy(t, data + skip, len - skip);
    for (size_t i = 0; i < len - skip; i++)
        if (t[i] == '\0')
            t[i] = ' ';
    *out_len = len - skip;
    return t;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

typedef struct staged {
    ptl_config cfg;
    int seen;
} staged;

static int apply_value(staged *st, const char *name, uint32_t v)
{
    if (strcasecmp(name, "SystemPages") == 0)
        st->cfg.system_pages = v;
    else if (strcasecmp(name, "PagedPoolSize") == 0)
        st->cfg.paged_pool_size = v;
    else if (strcasecmp(name, "NonPagedPoolSize") == 0)
        st->cfg.nonpaged_pool_size = v;
    else if (strcasecmp(name, "TrackPtes") == 0)
        st->cfg.track_ptes = v != 0;
    else
        return 0; /* a value ptelab does not model */
    st->seen++;
    return 1;
}

int ptl_registry_import_text(ptl_config *cfg, const char *data, size_t len, const char *name)
{
    if (!cfg || (!data && len))
        return ptl__fail("registry: no configuration or no data");
    const char *file = name ? name : "<text>";
    size_t tlen;
    char *text = to_text((const unsigned char *)data, len, &tlen);
    staged st = {*cfg, 0};
    int line_no = 0, header = 0, in_mm = 0, rc = 0;
    char *cont = NULL; /* a value continued with a backslash */
    char *next = text;
    while (next && *next) {
        char *raw = next;
        char *nl = strchr(raw, '\n');
        if (nl) {
            *nl = '\0';
            next = nl + 1;
        } else {
            next = NULL;
        }
        line_no++;
        char *line = trim(raw);
        if (cont) { /* the tail of a continued value: only hex values continue */
            if (line[0] && line[strlen(line) - 1] != '\\')
                cont = NULL;
            continue;
        }
        if (!header) {
            if (line[0] == '\0')
                continue;
            if (strcmp(line, "REGEDIT4") != 0 &&
                strcmp(line, "Windows Registry Editor Version 5.00") != 0) {
                rc = ptl__fail("%s:%d: not a .reg file: the first line must be REGEDIT4 or "
                               "\"Windows Registry Editor Version 5.00\"",
                               file, line_no);
                break;
            }
            header = 1;
            continue;
        }
        if (line[0] == '\0' || line[0] == ';')
            continue;
        if (line[0] == '[') {
            char *end = strrchr(line, ']');
            if (!end || end[1] != '\0') {
                rc = ptl__fail("%s:%d: a key line must end with ']'", file, line_no);
                break;
            }
            *end = '\0';
            const char *key = line + 1;
            in_mm = 0;
            if (key[0] == '-') /* a key deletion: not for the Memory Management key */
                key++;
            for (size_t k = 0; k < sizeof mm_key_names / sizeof mm_key_names[0]; k++)
                if (strcasecmp(key, mm_key_names[k]) == 0)
                    in_mm = line[1] != '-';
            continue;
        }
        /* a value: "name"=type:data, or @=... for the default value */
        char *eq;
        char vname[128];
        if (line[0] == '"') {
            char *close = strchr(line + 1, '"');
            if (!close || close[1] != '=') {
                rc = ptl__fail("%s:%d: a value line needs \"name\"=data", file, line_no);
                break;
            }
            size_t n = (size_t)(close - line - 1);
            if (n >= sizeof vname)
                n = sizeof vname - 1;
            memcpy(vname, line + 1, n);
            vname[n] = '\0';
            eq = close + 1;
        } else if (line[0] == '@' && line[1] == '=') {
            strcpy(vname, "@");
            eq = line + 1;
        } else {
            rc = ptl__fail("%s:%d: expected a [key], a \"value\"=data or a ; comment, got '%.40s'",
                           file, line_no, line);
            break;
        }
        char *val = trim(eq + 1);
        if (val[0] && val[strlen(val) - 1] == '\\')
            cont = val;
        if (!in_mm)
            continue;
        if (strncasecmp(val, "dword:", 6) == 0) {
            const char *hex = val + 6;
            size_t n = strlen(hex);
            if (n == 0 || n > 8 || strspn(hex, "0123456789abcdefABCDEF") != n) {
                rc = ptl__fail("%s:%d: \"%s\"=dword: needs 1 to 8 hex digits, got '%.20s'", file,
                               line_no, vname, hex);
                break;
            }
            apply_value(&st, vname, (uint32_t)strtoul(hex, NULL, 16));
        } else if (strcasecmp(vname, "SystemPages") == 0 ||
                   strcasecmp(vname, "PagedPoolSize") == 0 ||
                   strcasecmp(vname, "NonPagedPoolSize") == 0 ||
                   strcasecmp(vname, "TrackPtes") == 0) {
            rc = ptl__fail("%s:%d: \"%s\" must be a dword (REG_DWORD), got '%.20s'", file, line_no,
                           vname, val);
            break;
        }
    }
    if (rc == 0 && !header)
        rc = ptl__fail("%s: empty: not a .reg file", file);
    free(text);
    if (rc == 0)
        *cfg = st.cfg;
    return rc;
}

int ptl_registry_import(ptl_config *cfg, const char *path)
{
    if (!cfg || !path)
        return ptl__fail("registry: no configuration or no file name");
    FILE *f = fopen(path, "rb");
    if (!f)
        return ptl__fail("%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            if (cap > (16u << 20)) {
                free(buf);
                fclose(f);
                return ptl__fail("%s: larger than 16 MB: not a .reg export ptelab reads", path);
            }
            buf = ptl__xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return ptl__fail("%s: read error", path);
    }
    int rc = ptl_registry_import_text(cfg, buf, len, path);
    free(buf);
    return rc;
}
