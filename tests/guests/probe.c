// probe: the test guest of kwasi's end-to-end suite. The first argument picks what it does.
// Rebuild: tests/guests/build.sh
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>

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

// The fd of the preopened directory named `name`, or -1.
static int preopen_named(const char *name) {
    for (__wasi_fd_t fd = 3;; fd++) {
        __wasi_prestat_t prestat;
        if (__wasi_fd_prestat_get(fd, &prestat) != 0) return -1;
        char dir[256];
        size_t len = prestat.u.dir.pr_name_len;
        if (len >= sizeof dir || __wasi_fd_prestat_dir_name(fd, (uint8_t *)dir, len) != 0) continue;
        dir[len] = 0;
        if (!strcmp(dir, name)) return (int)fd;
    }
}

// Prints `what ok`, or `what: <error>` when `result` is not 0; returns whether it failed.
static int step(const char *what, int result) {
    if (result == 0) {
        printf("%s ok\n", what);
        return 0;
    }
    printf("%s: %s\n", what, strerror(errno));
    return 1;
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
    if (!strcmp(cmd, "cwd")) {  // cwd FILE: wasi-libc's getcwd, then FILE read through `.`
        char buf[256];
        printf("getcwd=%s\n", getcwd(buf, sizeof buf) ? buf : "?");
        int dot = preopen_named(".");
        if (dot < 0) {
            printf("no preopen named .\n");
            return 1;
        }
        const char *path = argc > 2 ? argv[2] : "";
        int fd = openat(dot, path, O_RDONLY);
        if (fd < 0) {
            printf("open ./%s: %s\n", path, strerror(errno));
            return 1;
        }
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
        close(fd);
        return 0;
    }
    if (!strcmp(cmd, "fs")) {  // fs DIR: mkdir, create, rename, unlink, rmdir below DIR
        char d[256], f[300], g[300];
        const char *dir = argc > 2 ? argv[2] : "/";
        snprintf(d, sizeof d, "%s/probe.d", dir);
        snprintf(f, sizeof f, "%s/f", d);
        snprintf(g, sizeof g, "%s/g", d);
        if (step("mkdir", mkdir(d, 0755))) return 1;
        FILE *file = fopen(f, "w");
        if (step("create", file ? fclose(file) : -1)) return 1;
        if (step("rename", rename(f, g))) return 1;
        if (step("unlink", unlink(g))) return 1;
        return step("rmdir", rmdir(d));
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
