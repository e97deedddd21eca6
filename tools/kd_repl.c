/* kd_repl.c - the `ptelab kd` session: WinDbg-style commands on a machine.
 *
 * As windbg does, `-c "cmd; cmd"` runs the commands in order and echoes each as
 * "kd> cmd" before its output. Without -c, a terminal gets a "kd> " prompt with line
 * editing and history (libedit, when the build found it: PTELAB_HAVE_LIBEDIT), and a
 * pipe or file is read line by line with no prompt, so the output is only what the
 * commands print. `q` quits, as in kd.
 */
#include "kd_repl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KD_LINE_MAX 65536 /* a piped command line, its newline and NUL included */

#ifdef PTELAB_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

/* Run every ';'-separated command of line (modified in place). 1 when `q` was met. */
static int run_line(ptl_machine *m, char *line, int echo, int *failed)
{
    char *save = NULL;
    for (char *tok = strtok_r(line, ";\r\n", &save); tok; tok = strtok_r(NULL, ";\r\n", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
            tok[--n] = 0;
        if (!*tok)
            continue;
        if (strcmp(tok, "q") == 0)
            return 1;
        if (echo)
            printf("kd> %s\n", tok);
        if (ptl_kd(m, tok, stdout) != 0)
            *failed = 1;
        fflush(stdout);
    }
    return 0;
}

static int interactive(ptl_machine *m)
{
    int failed = 0;
#ifdef PTELAB_HAVE_LIBEDIT
    using_history();
    for (;;) {
        char *line = readline("kd> ");
        if (!line)
            break;
        if (line[strspn(line, " \t")])
            add_history(line);
        int quit = run_line(m, line, 0, &failed);
        free(line);
        if (quit)
            break;
    }
    clear_history();
#else
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        printf("kd> ");
        fflush(stdout);
        if (getline(&line, &cap, stdin) < 0)
            break;
        if (run_line(m, line, 0, &failed))
            break;
    }
    free(line);
#endif
    printf("\n");
    return 0;
}

int ptl_cli_kd_session(ptl_machine *m, const char *commands)
{
    int failed = 0;
    if (commands) {
        char *copy = strdup(commands);
        if (!copy)
            return 1;
        run_line(m, copy, 1, &failed);
        free(copy);
        return failed ? 65 : 0; /* a command kd refused is bad data */
    }
    if (isatty(STDIN_FILENO))
        return interactive(m);
    /* A pipe or a file: lines of a bounded length (a stream with no newline, /dev/zero,
     * would otherwise grow one line without end), and a read error is not an end. */
    static char line[KD_LINE_MAX];
    for (;;) {
        if (!fgets(line, sizeof line, stdin))
            break;
        if (!strchr(line, '\n') && !feof(stdin)) {
            fprintf(stderr, "ptelab: kd: a command line longer than %d characters\n",
                    KD_LINE_MAX - 2);
            return 65;
        }
        if (run_line(m, line, 0, &failed))
            break;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "ptelab: kd: cannot read the commands: %s\n", strerror(errno));
        return 65;
    }
    return failed ? 65 : 0;
}
