/* The receiving end of the flood tests (tests/tests/flood.rs) as a C
 * program: `flood_server NAME URI SETTINGS` starts a node with SETTINGS
 * (`key=value, ...`, as `oscloud_node_options_t.config`), listens at URI
 * and registers two C servers, named after NAME as oscloud-testnode's are:
 *
 * - `upper-NAME`: a call with a MessagePack string answers it upper-cased,
 *   tagged " from NAME";
 * - `slow-NAME`: handles casts slowly (10 000 a second at most); a call
 *   answers how many casts it handled, as a string. Its mailbox is large
 *   (1 << 20 messages), so that the node's link budget, not the mailbox,
 *   is what holds a flood of casts back.
 *
 * It prints `listening ADDRESS` and `ready`, then serves until its stdin
 * ends (or reads `quit`). */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oscloud.h>

static const char *node_name;
static atomic_ullong handled;

static void reply_text(oscloud_reply_t *reply, const char *text) {
  oscloud_bytes_t out = oscloud_bytes_default();
  if (oscloud_msgpack_encode_str(text, &out) != OSCLOUD_OK) {
    oscloud_reply_error(&reply, "cannot encode the reply");
    return;
  }
  oscloud_reply_send(&reply, out.data, out.len);
  oscloud_bytes_drop(&out);
}

static void upper_call(void *ctx, const uint8_t *data, size_t len,
                       oscloud_reply_t *reply) {
  (void)ctx;
  const char *text = NULL;
  size_t text_len = 0;
  if (oscloud_msgpack_decode_str(data, len, &text, &text_len) != OSCLOUD_OK) {
    oscloud_reply_error(&reply, "expected a MessagePack string");
    return;
  }
  size_t tag = strlen(" from ") + strlen(node_name);
  char *out = malloc(text_len + tag + 1);
  if (!out) {
    oscloud_reply_error(&reply, "out of memory");
    return;
  }
  for (size_t i = 0; i < text_len; i++)
    out[i] = (char)toupper((unsigned char)text[i]);
  snprintf(out + text_len, tag + 1, " from %s", node_name);
  reply_text(reply, out);
  free(out);
}

static void slow_cast(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  (void)data;
  (void)len;
  unsigned long long n = atomic_fetch_add(&handled, 1) + 1;
  if (n % 10 == 0) {
    struct timespec ms = {0, 1000000L};
    nanosleep(&ms, NULL);
  }
}

static void slow_call(void *ctx, const uint8_t *data, size_t len,
                      oscloud_reply_t *reply) {
  (void)ctx;
  (void)data;
  (void)len;
  char count[32];
  snprintf(count, sizeof count, "%llu", atomic_load(&handled));
  reply_text(reply, count);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: flood_server NAME URI SETTINGS\n");
    return 2;
  }
  node_name = argv[1];
  oscloud_node_options_t opts = oscloud_node_options_default();
  opts.config = argv[3];
  oscloud_node_t *node = NULL;
  if (oscloud_node_new(&opts, &node) != OSCLOUD_OK) {
    fprintf(stderr, "flood_server: %s\n", oscloud_last_error());
    return 1;
  }
  char upper_name[128], slow_name[128];
  snprintf(upper_name, sizeof upper_name, "upper-%s", node_name);
  snprintf(slow_name, sizeof slow_name, "slow-%s", node_name);
  oscloud_server_callbacks_t upper = oscloud_server_callbacks_default();
  upper.on_call = upper_call;
  oscloud_server_callbacks_t slow = oscloud_server_callbacks_default();
  slow.on_cast = slow_cast;
  slow.on_call = slow_call;
  oscloud_server_options_t big = oscloud_server_options_default();
  big.mailbox = 1 << 20;
  oscloud_server_t *upper_server = NULL, *slow_server = NULL;
  char at[256];
  int rc = oscloud_server_register(node, upper_name, &upper, &upper_server);
  if (rc == OSCLOUD_OK)
    rc = oscloud_server_register_with(node, slow_name, &slow, &big, &slow_server);
  if (rc == OSCLOUD_OK) rc = oscloud_node_listen(node, argv[2], at, sizeof at);
  if (rc == OSCLOUD_OK) {
    printf("listening %s\nready\n", at);
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin) && strncmp(line, "quit", 4) != 0) {
    }
  } else {
    fprintf(stderr, "flood_server: %s\n", oscloud_last_error());
  }
  oscloud_server_drop(&slow_server);
  oscloud_server_drop(&upper_server);
  oscloud_node_drop(&node);
  return rc == OSCLOUD_OK ? 0 : 1;
}
