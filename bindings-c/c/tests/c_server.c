/* A C server in its own process: `c_server URI NAME` listens at URI,
 * registers the "upper" server (see common_server.h) as NAME, prints
 * "listening on ADDRESS" and serves until it gets the cast "stop" (exit 0)
 * or 30 s pass (exit 1). */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

#include "common_server.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: c_server URI NAME\n");
    return 2;
  }
  oscloud_node_t *node = NULL;
  CHECK_RC(oscloud_node_new(NULL, &node), OSCLOUD_OK);
  upper_state st = {0};
  oscloud_server_callbacks_t cb = upper_callbacks(&st);
  oscloud_server_t *server = NULL;
  CHECK_RC(oscloud_server_register(node, argv[2], &cb, &server), OSCLOUD_OK);
  char at[256];
  int rc = oscloud_node_listen(node, argv[1], at, sizeof at);
  if (rc != OSCLOUD_OK) {
    fprintf(stderr, "c_server: cannot listen on %s: %s\n", argv[1],
            oscloud_last_error());
    oscloud_server_drop(&server);
    oscloud_node_drop(&node);
    return 1;
  }
  printf("listening on %s\n", at);
  fflush(stdout);
  int stopped = 0;
  for (int i = 0; i < 30 * 200 && !stopped; i++) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
    stopped = atomic_load(&st.stop);
  }
  /* Let pipe threads finish before the server goes. */
  for (int i = 0; i < 1000 && atomic_load(&st.pipe_threads) > 0; i++) {
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
  oscloud_server_drop(&server);
  oscloud_node_drop(&node);
  if (!stopped) {
    fprintf(stderr, "c_server: no \"stop\" within 30 s\n");
    return 1;
  }
  printf("c_server: stopped after %d casts\n", atomic_load(&st.casts));
  return check_failures ? 1 : 0;
}
