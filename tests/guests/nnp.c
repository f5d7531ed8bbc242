// nnp: critest's no-new-privileges probe (its image registry.k8s.io/e2e-test-images/nonewprivs
// installs it setuid root). Prints the effective uid it runs with. Built at test time with
// `gcc -static` (tests/src/critest.rs).
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("Effective uid: %d\n", (int)geteuid());
    return 0;
}
