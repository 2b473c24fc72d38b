/*
 * crius-pause: the init process of every pod sandbox.
 *
 * It holds the pod's namespaces open, reaps any child that is reparented to it
 * (it is PID 1 of the pod's PID namespace when the pod has one) and exits 0 on
 * SIGINT or SIGTERM. Built statically so it runs from an image with nothing
 * else in it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int sig) {
  (void)sig;
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("crius-pause 1");
    return 0;
  }
  struct sigaction term = {0};
  term.sa_handler = on_terminate;
  sigemptyset(&term.sa_mask);
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0) {
    perror("crius-pause: sigaction");
    return 1;
  }
  struct sigaction child = {0};
  child.sa_handler = on_child;
  sigemptyset(&child.sa_mask);
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &child, NULL) < 0) {
    perror("crius-pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
}
