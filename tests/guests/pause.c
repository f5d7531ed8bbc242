// pause: the sandbox container of the CRI end-to-end tests, doing what Kubernetes' pause does:
// hold the pod's namespaces, reap orphans, and end (status 0) on SIGINT or SIGTERM.
// The harness builds it static with gcc when it builds the pause image (tests/src/cri.rs).
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static void on(int sig, void (*handler)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(sig, &action, NULL);
}

int main(void) {
    on(SIGINT, stop);
    on(SIGTERM, stop);
    on(SIGCHLD, reap);
    for (;;) pause();
}
