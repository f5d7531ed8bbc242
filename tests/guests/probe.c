// probe: the test guest of kwasi's end-to-end suite. The first argument picks what it does.
// Rebuild: tests/guests/build.sh
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static int cat(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char buf[256];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
}

// Allocates and touches memory 1 MiB at a time, pausing `ms` after each (none for 0), and
// prints its progress (every 16 MiB without pauses).
static int grow(long ms) {
    void *volatile *chain = 0;  // keeps every block reachable, so none is optimised away
    for (long mib = 1;; mib++) {
        void *volatile *p = malloc(1 << 20);
        if (!p) {
            printf("malloc failed after %ld MiB\n", mib);
            return 3;
        }
        for (size_t i = 0; i < (1 << 20) / sizeof *p; i += 512) p[i] = (void *)chain;
        chain = p;
        if (ms || mib % 16 == 0) {
            printf("%ld MiB\n", mib);
            fflush(stdout);
        }
        if (ms) usleep(ms * 1000);
    }
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "hello";
    if (!strcmp(cmd, "hello")) {
        printf("hello from wasm\n");
        fprintf(stderr, "hello on stderr\n");
        return 0;
    }
    if (!strcmp(cmd, "exit")) {
        printf("exiting with %s\n", argc > 2 ? argv[2] : "0");
        exit(argc > 2 ? atoi(argv[2]) : 0);
    }
    if (!strcmp(cmd, "args")) {
        for (int i = 0; i < argc; i++) printf("arg[%d]=%s\n", i, argv[i]);
        for (char **e = environ; *e; e++) printf("env %s\n", *e);
        return 0;
    }
    if (!strcmp(cmd, "read")) {  // read FILE: print a file's content
        return cat(argc > 2 ? argv[2] : "");
    }
    if (!strcmp(cmd, "write")) {  // write FILE TEXT: create FILE, then read it back
        const char *path = argc > 2 ? argv[2] : "";
        FILE *f = fopen(path, "w");
        if (!f) {
            printf("create %s: %s\n", path, strerror(errno));
            return 1;
        }
        fputs(argc > 3 ? argv[3] : "", f);
        fclose(f);
        return cat(path);
    }
    if (!strcmp(cmd, "cwd")) {  // cwd FILE: enter $PWD as a WASI program does, read FILE relatively
        const char *pwd = getenv("PWD");
        if (pwd && chdir(pwd) != 0) {
            printf("chdir %s: %s\n", pwd, strerror(errno));
            return 1;
        }
        char buf[256];
        printf("cwd=%s\n", getcwd(buf, sizeof buf) ? buf : "?");
        return cat(argc > 2 ? argv[2] : "");
    }
    if (!strcmp(cmd, "sleep")) {
        printf("sleeping\n");
        fflush(stdout);
        sleep(argc > 2 ? atoi(argv[2]) : 3600);
        printf("woke up\n");
        return 0;
    }
    if (!strcmp(cmd, "grow")) return grow(0);  // keep allocating and touching memory
    if (!strcmp(cmd, "grow-slowly"))  // grow-slowly MS: 1 MiB more every MS milliseconds
        return grow(argc > 2 ? atol(argv[2]) : 100);
    if (!strcmp(cmd, "cat")) {  // copy stdin to stdout until end of file
        char buf[256];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
        printf("[end of input]\n");
        return 0;
    }
    if (!strcmp(cmd, "tty")) {  // whether stdin is a terminal
        printf(isatty(0) ? "stdin is a terminal\n" : "stdin is not a terminal\n");
        return 0;
    }
    if (!strcmp(cmd, "trap")) {
        printf("about to trap\n");
        fflush(stdout);
        __builtin_trap();
    }
    printf("unknown command %s\n", cmd);
    return 2;
}
