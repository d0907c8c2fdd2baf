/* A C client in its own process:
 *   c_client URI NAME [--c-server]
 * links to the node at URI and calls NAME with "hello", checking that the
 * reply starts with "HELLO". With --c-server (NAME is served by c_server)
 * it also checks pipes both ways, a timeout, an error reply and an unknown
 * server over the link, then casts "stop" to the server. */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

#include "common_server.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: c_client URI NAME [--c-server]\n");
    return 2;
  }
  const char *uri = argv[1], *name = argv[2];
  int c_server = argc > 3 && strcmp(argv[3], "--c-server") == 0;
  oscloud_node_t *node = NULL;
  CHECK_RC(oscloud_node_new(NULL, &node), OSCLOUD_OK);
  CHECK_RC(oscloud_node_connect(node, uri, 10000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(node, name, 10000), OSCLOUD_OK);
  bool local = true;
  CHECK_RC(oscloud_lookup(node, name, &local), OSCLOUD_OK);
  CHECK(!local);

  char buf[512];
  CHECK_RC(call_str(node, name, "hello", 5000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strncmp(buf, "HELLO", 5) == 0);
  printf("c_client: %s answered \"%s\"\n", name, buf);
  CHECK_RC(call_str(node, "nobody", "hello", 1000, NULL, 0),
           OSCLOUD_ERR_NOT_FOUND);

  if (c_server) {
    check_upper_pipe(node, name);
    CHECK_RC(call_str(node, name, "silence", 200, NULL, 0),
             OSCLOUD_ERR_TIMEOUT);
    CHECK_RC(call_str(node, name, "fail", 5000, NULL, 0), OSCLOUD_ERR_REMOTE);
    CHECK(strstr(oscloud_last_error(), "asked to fail") != NULL);
    CHECK_RC(call_str(node, name, "again", 5000, buf, sizeof buf), OSCLOUD_OK);
    CHECK(strcmp(buf, "AGAIN") == 0);
    CHECK_RC(cast_str(node, name, "stop"), OSCLOUD_OK);
    /* Stay linked until the server is gone, so the cast surely went out. */
    int gone = 0;
    for (int i = 0; i < 2000 && !gone; i++) {
      gone = oscloud_lookup(node, name, NULL) == OSCLOUD_ERR_NOT_FOUND;
      if (!gone) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
      }
    }
    CHECK(gone);
  }
  oscloud_node_drop(&node);
  oscloud_node_drop(&node);
  if (check_failures) {
    fprintf(stderr, "c_client: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("c_client: all checks passed\n");
  return 0;
}
