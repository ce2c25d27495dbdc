/* The local cluster's pod sandbox process: it holds a pod's namespaces and does nothing else.
 * Built static by runnel-cluster (`cc -static -Os -s`) and packed as runnel.local/pause:3.10,
 * the node's pinned sandbox image. It also serves tests as a container that just stays up.
 * It reaps orphans (it is PID 1 of the pod when the pod shares its PID namespace) and exits at
 * once on SIGTERM or SIGINT, so a pod's deletion does not wait for the grace period. */
#include <signal.h>
#include <stdlib.h>
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

int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
  return EXIT_SUCCESS;
}
