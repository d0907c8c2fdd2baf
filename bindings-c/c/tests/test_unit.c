/* liboscloud in one process: two nodes linked over mem://, a C server,
 * calls, casts, replies from another thread, pipes both ways, the registry
 * watch, trace contexts, and every error path (bad URI, unknown server,
 * timeout, double drop, NULL arguments, a provoked panic). Ends by itself within seconds. */
#define _POSIX_C_SOURCE 200809L

#include "common_server.h"

/* ---- a server that answers later, from another thread ---- */

static void *answer_later(void *arg) {
  oscloud_reply_t *reply = arg;
  sleep_ms(20);
  oscloud_bytes_t out = oscloud_bytes_default();
  oscloud_msgpack_encode_str("later", &out);
  oscloud_reply_send(&reply, out.data, out.len);
  oscloud_bytes_drop(&out);
  return NULL;
}

static void later_call(void *ctx, const uint8_t *data, size_t len,
                       oscloud_reply_t *reply) {
  (void)ctx;
  (void)data;
  (void)len;
  pthread_t t;
  if (pthread_create(&t, NULL, answer_later, reply) == 0) {
    pthread_detach(t);
  } else {
    oscloud_reply_drop(&reply);
  }
}

/* ---- a server that forgets to answer (drops the reply) ---- */

static void drop_call(void *ctx, const uint8_t *data, size_t len,
                      oscloud_reply_t *reply) {
  (void)ctx;
  (void)data;
  (void)len;
  oscloud_reply_drop(&reply);
  oscloud_reply_drop(&reply); /* twice: no-op */
  CHECK(reply == NULL);
  CHECK_RC(oscloud_reply_send(&reply, NULL, 0), OSCLOUD_ERR_NULL);
}

/* ---- the watch ---- */

typedef struct {
  atomic_int added_upper;
  atomic_int removed_upper;
  atomic_int remote_added;
} watch_state;

static void on_event(void *ctx, const oscloud_registry_event_t *ev) {
  watch_state *ws = ctx;
  if (strcmp(ev->name, "upper") == 0) {
    if (ev->kind == OSCLOUD_EVENT_ADDED) atomic_fetch_add(&ws->added_upper, 1);
    if (ev->kind == OSCLOUD_EVENT_REMOVED)
      atomic_fetch_add(&ws->removed_upper, 1);
  }
  if (strcmp(ev->name, "remote-upper") == 0 && !ev->is_local &&
      ev->kind == OSCLOUD_EVENT_ADDED)
    atomic_fetch_add(&ws->remote_added, 1);
}

static void test_errors(void) {
  oscloud_node_t *node = NULL;
  CHECK_RC(oscloud_node_new(NULL, NULL), OSCLOUD_ERR_NULL);
  CHECK(strstr(oscloud_last_error(), "out") != NULL);
  oscloud_node_options_t opts = oscloud_node_options_default();
  opts.enable_tcp = false;
  /* Node settings: a bad one is refused, naming it; good ones are taken. */
  opts.config = "resume_grace=30s, idle_timeout=soon";
  CHECK_RC(oscloud_node_new(&opts, &node), OSCLOUD_ERR_INVALID);
  CHECK(node == NULL);
  CHECK(strstr(oscloud_last_error(), "idle_timeout") != NULL);
  opts.config = "no_such_setting=1";
  CHECK_RC(oscloud_node_new(&opts, &node), OSCLOUD_ERR_INVALID);
  CHECK(strstr(oscloud_last_error(), "unknown setting") != NULL);
  /* Each valid alone, but every quiet link would be closed. */
  opts.config = "keepalive=2s, idle_timeout=2s";
  CHECK_RC(oscloud_node_new(&opts, &node), OSCLOUD_ERR_INVALID);
  CHECK(node == NULL);
  CHECK(strstr(oscloud_last_error(), "not shorter than idle_timeout") != NULL);
  opts.config = "resume_grace=30s; idle_timeout=1.5s\nkeepalive=250ms";
  CHECK_RC(oscloud_node_new(&opts, &node), OSCLOUD_OK);

  /* Bad URIs: not a URI, and a scheme with no transport. */
  CHECK_RC(oscloud_node_listen(node, "not a uri", NULL, 0),
           OSCLOUD_ERR_BAD_ADDRESS);
  CHECK(strlen(oscloud_last_error()) > 0);
  CHECK_RC(oscloud_node_connect(node, "tcp://127.0.0.1:1", 0),
           OSCLOUD_ERR_BAD_ADDRESS); /* tcp disabled in the options */
  CHECK_RC(oscloud_node_connect(node, "unix:///nonexistent/dir/x.sock", 0),
           OSCLOUD_ERR_LINK);
  /* ws:// is enabled by default: nothing listens there, so the link fails. */
  CHECK_RC(oscloud_node_connect(node, "ws://127.0.0.1:1/oscloud", 0),
           OSCLOUD_ERR_LINK);
  CHECK_RC(oscloud_node_listen(node, NULL, NULL, 0), OSCLOUD_ERR_NULL);
  char small[4];
  CHECK_RC(oscloud_node_id(node, small, sizeof small), OSCLOUD_ERR_INVALID);
  char id[33];
  CHECK_RC(oscloud_node_id(node, id, sizeof id), OSCLOUD_OK);
  CHECK(strlen(id) == 32);

  /* Unknown server. */
  CHECK_RC(oscloud_call(node, "nobody", NULL, 0, 100, NULL),
           OSCLOUD_ERR_NOT_FOUND);
  CHECK(strstr(oscloud_last_error(), "nobody") != NULL);
  CHECK_RC(oscloud_cast(node, "nobody", NULL, 0), OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(oscloud_try_cast(node, "nobody", NULL, 0), OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(oscloud_lookup(node, "nobody", NULL), OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(oscloud_node_wait_for(node, "nobody", 50), OSCLOUD_ERR_TIMEOUT);
  oscloud_pipe_t *pipe = NULL;
  CHECK_RC(oscloud_pipe_open(node, "nobody", "p", 100, &pipe),
           OSCLOUD_ERR_NOT_FOUND);
  CHECK(pipe == NULL);
  /* NULL data with a length. */
  CHECK_RC(oscloud_call(node, "nobody", NULL, 3, 100, NULL), OSCLOUD_ERR_NULL);
  /* Not UTF-8. */
  CHECK_RC(oscloud_lookup(node, "\xff", NULL), OSCLOUD_ERR_INVALID);

  /* MessagePack helpers. */
  const char *text = NULL;
  size_t n = 0;
  const uint8_t not_str[] = {0x01};
  CHECK_RC(oscloud_msgpack_decode_str(not_str, 1, &text, &n),
           OSCLOUD_ERR_DECODE);
  oscloud_bytes_t b = oscloud_bytes_default();
  CHECK_RC(oscloud_msgpack_encode_str("hé", &b), OSCLOUD_OK);
  CHECK_RC(oscloud_msgpack_decode_str(b.data, b.len, &text, &n), OSCLOUD_OK);
  CHECK(n == 3 && memcmp(text, "hé", 3) == 0);
  oscloud_bytes_drop(&b);
  oscloud_bytes_drop(&b);
  oscloud_bytes_drop(NULL);

  /* A panic inside the library becomes an error code; it stays usable. */
  fprintf(stderr, "test_unit: provoking a panic (its message below is expected)\n");
  CHECK_RC(oscloud_debug_panic(), OSCLOUD_ERR_PANIC);
  CHECK(strstr(oscloud_last_error(), "oscloud_debug_panic") != NULL);
  CHECK_RC(oscloud_lookup(node, "nobody", NULL), OSCLOUD_ERR_NOT_FOUND);

  /* Double drop and NULL drops are harmless. */
  oscloud_node_drop(&node);
  CHECK(node == NULL);
  oscloud_node_drop(&node);
  oscloud_node_drop(NULL);
  oscloud_server_drop(NULL);
  oscloud_pipe_drop(NULL);
  oscloud_watch_drop(NULL);
  oscloud_reply_drop(NULL);
}

static void test_server_and_links(void) {
  oscloud_node_t *a = NULL, *b = NULL;
  CHECK_RC(oscloud_node_new(NULL, &a), OSCLOUD_OK);
  CHECK_RC(oscloud_node_new(NULL, &b), OSCLOUD_OK);

  watch_state ws = {0};
  oscloud_watch_t *watch = NULL;
  CHECK_RC(oscloud_watch_new(a, NULL, NULL, &watch), OSCLOUD_ERR_NULL);
  CHECK_RC(oscloud_watch_new(a, on_event, &ws, &watch), OSCLOUD_OK);

  upper_state st = {0};
  oscloud_server_callbacks_t cb = upper_callbacks(&st);
  oscloud_server_t *server = NULL;
  CHECK_RC(oscloud_server_register(a, "upper", &cb, &server), OSCLOUD_OK);
  oscloud_server_t *dup = NULL;
  CHECK_RC(oscloud_server_register(a, "upper", &cb, &dup), OSCLOUD_ERR_NAME);
  CHECK(dup == NULL);

  /* Local call, cast, error reply, timeout. */
  bool local = false;
  CHECK_RC(oscloud_lookup(a, "upper", &local), OSCLOUD_OK);
  CHECK(local);
  char buf[256];
  CHECK_RC(call_str(a, "upper", "hello", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, "HELLO") == 0);
  CHECK_RC(cast_str(a, "upper", "ping"), OSCLOUD_OK);
  CHECK_RC(cast_str(a, "upper", "ping"), OSCLOUD_OK);
  /* Casts and calls share the server's queue: after this call both casts
   * were handled. */
  CHECK_RC(call_str(a, "upper", "x", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(atomic_load(&st.casts) == 2);
  CHECK_RC(call_str(a, "upper", "fail", 2000, NULL, 0), OSCLOUD_ERR_REMOTE);
  CHECK(strstr(oscloud_last_error(), "asked to fail") != NULL);
  CHECK_RC(call_str(a, "upper", "silence", 100, NULL, 0), OSCLOUD_ERR_TIMEOUT);
  const uint8_t garbage[] = {0xc1};
  CHECK_RC(oscloud_call(a, "upper", garbage, 1, 2000, NULL),
           OSCLOUD_ERR_REMOTE);

  /* Replies from another thread; a dropped reply. */
  oscloud_server_callbacks_t lcb = oscloud_server_callbacks_default();
  lcb.on_call = later_call;
  oscloud_server_t *later = NULL;
  CHECK_RC(oscloud_server_register(a, "later", &lcb, &later), OSCLOUD_OK);
  CHECK_RC(call_str(a, "later", "?", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, "later") == 0);
  oscloud_server_callbacks_t dcb = oscloud_server_callbacks_default();
  dcb.on_call = drop_call;
  oscloud_server_t *dropper = NULL;
  CHECK_RC(oscloud_server_register(a, "dropper", &dcb, &dropper), OSCLOUD_OK);
  CHECK_RC(call_str(a, "dropper", "?", 2000, NULL, 0), OSCLOUD_ERR_REMOTE);
  CHECK(strstr(oscloud_last_error(), "without replying") != NULL);
  /* A server without on_call or on_pipe. */
  oscloud_server_callbacks_t none = oscloud_server_callbacks_default();
  oscloud_server_t *mute = NULL;
  CHECK_RC(oscloud_server_register(a, "mute", &none, &mute), OSCLOUD_OK);
  CHECK_RC(call_str(a, "mute", "?", 2000, NULL, 0), OSCLOUD_ERR_REMOTE);
  CHECK_RC(cast_str(a, "mute", "?"), OSCLOUD_OK);
  oscloud_pipe_t *p = NULL;
  CHECK_RC(oscloud_pipe_open(a, "mute", "x", 2000, &p), OSCLOUD_ERR_NO_SUCH_PORT);

  /* Pipes both ways, locally; an unknown port. */
  check_upper_pipe(a, "upper");
  CHECK_RC(oscloud_pipe_open(a, "upper", "nope", 2000, &p),
           OSCLOUD_ERR_NO_SUCH_PORT);

  /* Link b to a over mem://: b reaches a's C server like a local one. */
  char at[128];
  CHECK_RC(oscloud_node_listen(a, "mem://unit-a", at, sizeof at), OSCLOUD_OK);
  CHECK(strcmp(at, "mem://unit-a") == 0);
  CHECK_RC(oscloud_node_connect(b, at, 2000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(b, "upper", 5000), OSCLOUD_OK);
  local = true;
  CHECK_RC(oscloud_lookup(b, "upper", &local), OSCLOUD_OK);
  CHECK(!local);
  CHECK_RC(call_str(b, "upper", "remote", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, "REMOTE") == 0);
  CHECK_RC(call_str(b, "upper", "fail", 2000, NULL, 0), OSCLOUD_ERR_REMOTE);
  CHECK_RC(call_str(b, "upper", "silence", 100, NULL, 0), OSCLOUD_ERR_TIMEOUT);
  check_upper_pipe(b, "upper");
  /* Over a link, a frame longer than the peer's pipe window (256 KiB by
   * default) is refused, not written, and the pipe goes on. */
  CHECK_RC(oscloud_pipe_open(b, "upper", "upper", 2000, &p), OSCLOUD_OK);
  size_t big_len = 256 * 1024 + 1;
  uint8_t *big = calloc(big_len, 1);
  CHECK(big != NULL);
  CHECK_RC(oscloud_pipe_write(p, big, big_len, 2000), OSCLOUD_ERR_INVALID);
  CHECK(strstr(oscloud_last_error(), "longer than the 262144 bytes") != NULL);
  free(big);
  CHECK_RC(oscloud_pipe_write(p, (const uint8_t *)"after", 5, 2000), OSCLOUD_OK);
  oscloud_bytes_t after = oscloud_bytes_default();
  CHECK_RC(oscloud_pipe_read(p, &after, 5000), OSCLOUD_OK);
  CHECK(after.len == 5 && memcmp(after.data, "AFTER", 5) == 0);
  oscloud_bytes_drop(&after);
  oscloud_pipe_drop(&p);
  /* Over a link, opening is optimistic (see docs/PROTOCOL.md): a refused
   * port shows as a pipe that ends at once. */
  CHECK_RC(oscloud_pipe_open(b, "upper", "nope", 2000, &p), OSCLOUD_OK);
  oscloud_bytes_t none_frame = oscloud_bytes_default();
  CHECK_RC(oscloud_pipe_read(p, &none_frame, 5000), OSCLOUD_END);
  oscloud_pipe_drop(&p);

  /* A server on b, seen by a's watch as remote. */
  upper_state st2 = {0};
  oscloud_server_callbacks_t cb2 = upper_callbacks(&st2);
  oscloud_server_t *remote = NULL;
  CHECK_RC(oscloud_server_register(b, "remote-upper", &cb2, &remote),
           OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(a, "remote-upper", 5000), OSCLOUD_OK);
  CHECK_RC(call_str(a, "remote-upper", "back", 2000, buf, sizeof buf),
           OSCLOUD_OK);
  CHECK(strcmp(buf, "BACK") == 0);
  WAIT_UNTIL(atomic_load(&ws.remote_added) == 1, 5000);
  CHECK(atomic_load(&ws.remote_added) == 1);

  /* Dropping the server unregisters it; the watch sees it go. */
  WAIT_UNTIL(atomic_load(&st.pipe_threads) == 0, 5000);
  oscloud_server_drop(&server);
  CHECK(server == NULL);
  CHECK(atomic_load(&st.dropped) == 1);
  oscloud_server_drop(&server); /* twice: no-op */
  CHECK_RC(call_str(a, "upper", "gone", 500, NULL, 0), OSCLOUD_ERR_NOT_FOUND);
  WAIT_UNTIL(atomic_load(&ws.removed_upper) == 1, 5000);
  CHECK(atomic_load(&ws.added_upper) == 1);
  CHECK(atomic_load(&ws.removed_upper) == 1);

  WAIT_UNTIL(atomic_load(&st2.pipe_threads) == 0, 5000);
  oscloud_watch_drop(&watch);
  oscloud_watch_drop(&watch);
  oscloud_server_drop(&remote);
  oscloud_server_drop(&later);
  oscloud_server_drop(&dropper);
  oscloud_server_drop(&mute);
  oscloud_node_drop(&b);
  oscloud_node_drop(&a);
}

/* ---- trace context (docs/PROTOCOL.md section 4.2) ---- */

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/* Answers the traceparent of the call it handles, or "none". */
static void tp_call(void *ctx, const uint8_t *data, size_t len,
                    oscloud_reply_t *reply) {
  (void)ctx;
  (void)data;
  (void)len;
  char tp[OSCLOUD_TRACEPARENT_LEN];
  char small[8];
  int rc = oscloud_trace_get(tp, sizeof tp);
  if (rc == OSCLOUD_OK) {
    CHECK_RC(oscloud_trace_get(small, sizeof small), OSCLOUD_ERR_INVALID);
  } else {
    CHECK_RC(rc, OSCLOUD_ERR_NOT_FOUND);
  }
  oscloud_bytes_t out = oscloud_bytes_default();
  msgpack_str(rc == OSCLOUD_OK ? tp : "none", &out);
  oscloud_reply_send(&reply, out.data, out.len);
  oscloud_bytes_drop(&out);
}

/* Calls "tp" on the node in ctx while handling a call: the trace goes on. */
static void hop_call(void *ctx, const uint8_t *data, size_t len,
                     oscloud_reply_t *reply) {
  (void)data;
  (void)len;
  char buf[128];
  int rc = call_str(ctx, "tp", "?", 2000, buf, sizeof buf);
  oscloud_bytes_t out = oscloud_bytes_default();
  msgpack_str(rc == OSCLOUD_OK ? buf : "error", &out);
  oscloud_reply_send(&reply, out.data, out.len);
  oscloud_bytes_drop(&out);
}

static void test_trace(void) {
  oscloud_node_t *a = NULL, *b = NULL;
  CHECK_RC(oscloud_node_new(NULL, &a), OSCLOUD_OK);
  CHECK_RC(oscloud_node_new(NULL, &b), OSCLOUD_OK);
  oscloud_server_callbacks_t tcb = oscloud_server_callbacks_default();
  tcb.on_call = tp_call;
  oscloud_server_t *tp = NULL;
  CHECK_RC(oscloud_server_register(a, "tp", &tcb, &tp), OSCLOUD_OK);
  oscloud_server_callbacks_t hcb = oscloud_server_callbacks_default();
  hcb.on_call = hop_call;
  hcb.context = b;
  oscloud_server_t *hop = NULL;
  CHECK_RC(oscloud_server_register(b, "hop", &hcb, &hop), OSCLOUD_OK);
  char at[128];
  CHECK_RC(oscloud_node_listen(a, "mem://unit-trace", at, sizeof at),
           OSCLOUD_OK);
  CHECK_RC(oscloud_node_connect(b, at, 2000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(b, "tp", 5000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(a, "hop", 5000), OSCLOUD_OK);

  char buf[128];
  char got[OSCLOUD_TRACEPARENT_LEN];
  CHECK_RC(oscloud_trace_get(got, sizeof got), OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(call_str(a, "tp", "?", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, "none") == 0);
  CHECK_RC(oscloud_trace_set("00-not-a-trace"), OSCLOUD_ERR_INVALID);
  CHECK_RC(oscloud_trace_set(TP), OSCLOUD_OK);
  CHECK_RC(oscloud_trace_get(got, sizeof got), OSCLOUD_OK);
  CHECK(strcmp(got, TP) == 0);
  /* Local, over the link, and through a server on b that calls a. */
  CHECK_RC(call_str(a, "tp", "?", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, TP) == 0);
  CHECK_RC(call_str(b, "tp", "?", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, TP) == 0);
  CHECK_RC(call_str(a, "hop", "?", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, TP) == 0);
  CHECK_RC(oscloud_trace_set(NULL), OSCLOUD_OK);
  CHECK_RC(call_str(a, "hop", "?", 2000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, "none") == 0);

  oscloud_server_drop(&hop);
  oscloud_server_drop(&tp);
  oscloud_node_drop(&b);
  oscloud_node_drop(&a);
}

int main(void) {
  test_errors();
  test_server_and_links();
  test_trace();
  if (check_failures) {
    fprintf(stderr, "test_unit: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_unit: all checks passed\n");
  return 0;
}
