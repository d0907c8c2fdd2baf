/* A C worker of an oscloud pool (oscloud_servers::pool): `pool_worker URI
 * GROUP JOBS` links to the node at URI and registers as GROUP/c-<pid> (a
 * name under GROUP/ makes it a worker of GROUP; C servers do not join
 * registry groups), prints "serving NAME", answers JOBS jobs, then exits 0
 * (or 1 after 30 s). A job is a MessagePack string holding a number; its
 * result the number squared, as a string. "fail" is answered with an
 * error, which the pool returns to the submitter as the job's failure. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

typedef struct {
  atomic_int served;
} worker_state;

static void square_call(void *ctx, const uint8_t *data, size_t len,
                        oscloud_reply_t *reply) {
  worker_state *st = ctx;
  char text[64];
  char *end = NULL;
  atomic_fetch_add(&st->served, 1);
  if (msgpack_read_str(data, len, text, sizeof text) != 0) {
    oscloud_reply_error(&reply, "expected a MessagePack string");
    return;
  }
  long long n = strtoll(text, &end, 10);
  if (end == text || *end != '\0') {
    oscloud_reply_error(&reply, "not a number");
    return;
  }
  char out[64];
  snprintf(out, sizeof out, "%lld", n * n);
  oscloud_bytes_t bytes = {0};
  if (msgpack_str(out, &bytes) != OSCLOUD_OK) {
    oscloud_reply_error(&reply, "cannot encode the result");
    return;
  }
  oscloud_reply_send(&reply, bytes.data, bytes.len);
  oscloud_bytes_drop(&bytes);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: pool_worker URI GROUP JOBS\n");
    return 2;
  }
  int jobs = atoi(argv[3]);
  oscloud_node_t *node = NULL;
  CHECK_RC(oscloud_node_new(NULL, &node), OSCLOUD_OK);
  int rc = oscloud_node_connect(node, argv[1], 10000);
  if (rc != OSCLOUD_OK) {
    fprintf(stderr, "pool_worker: cannot link to %s: %s\n", argv[1],
            oscloud_last_error());
    oscloud_node_drop(&node);
    return 1;
  }
  worker_state st = {0};
  oscloud_server_callbacks_t cb = oscloud_server_callbacks_default();
  cb.context = &st;
  cb.on_call = square_call;
  char name[128];
  snprintf(name, sizeof name, "%s/c-%ld", argv[2], (long)getpid());
  oscloud_server_t *server = NULL;
  CHECK_RC(oscloud_server_register(node, name, &cb, &server), OSCLOUD_OK);
  printf("serving %s\n", name);
  fflush(stdout);
  for (int i = 0; i < 30 * 200 && atomic_load(&st.served) < jobs; i++) {
    sleep_ms(5);
  }
  int served = atomic_load(&st.served);
  oscloud_server_drop(&server);
  oscloud_node_drop(&node);
  printf("pool_worker: served %d jobs\n", served);
  if (served < jobs) {
    fprintf(stderr, "pool_worker: %d of %d jobs within 30 s\n", served, jobs);
    return 1;
  }
  return check_failures ? 1 : 0;
}
