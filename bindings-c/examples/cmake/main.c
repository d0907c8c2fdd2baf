/* hello_oscloud: registers a C server and calls it through the kernel. */
#include <stdio.h>
#include <string.h>

#include <oscloud.h>

static void echo(void *context, const uint8_t *data, size_t len,
                 oscloud_reply_t *reply) {
  (void)context;
  oscloud_reply_send(&reply, data, len);
}

int main(void) {
  oscloud_node_t *node = NULL;
  oscloud_server_t *server = NULL;
  oscloud_bytes_t request = oscloud_bytes_default();
  oscloud_bytes_t reply = oscloud_bytes_default();
  oscloud_server_callbacks_t callbacks = oscloud_server_callbacks_default();
  const char *text = NULL;
  size_t len = 0;
  int status = 1;

  callbacks.on_call = echo;
  if (oscloud_node_new(NULL, &node) != OSCLOUD_OK ||
      oscloud_server_register(node, "echo", &callbacks, &server) != OSCLOUD_OK ||
      oscloud_msgpack_encode_str("hello from C", &request) != OSCLOUD_OK ||
      oscloud_call(node, "echo", request.data, request.len, 1000, &reply) != OSCLOUD_OK ||
      oscloud_msgpack_decode_str(reply.data, reply.len, &text, &len) != OSCLOUD_OK) {
    fprintf(stderr, "hello_oscloud: %s\n", oscloud_last_error());
  } else {
    printf("echo answered: %.*s\n", (int)len, text);
    status = 0;
  }
  oscloud_bytes_drop(&request);
  oscloud_bytes_drop(&reply);
  oscloud_server_drop(&server);
  oscloud_node_drop(&node);
  return status;
}
