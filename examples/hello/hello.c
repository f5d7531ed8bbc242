// The demo and benchmark guest: prints a greeting and its arguments.
// Rebuild: clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o hello.wasm hello.c
#include <stdio.h>

int main(int argc, char **argv) {
    printf("Hello from WebAssembly, run by kwasi!\n");
    for (int i = 1; i < argc; i++) printf("  argument %d: %s\n", i, argv[i]);
    return 0;
}
