/* C servers' bounded mailbox and supervision, in one process on one node:
 * casts past the bound are refused with OSCLOUD_ERR_BUSY; a server that
 * reports failure (oscloud_server_fail) leaves the registry and, when
 * supervised, comes back with fresh state (on_stop, then on_init) per the
 * strategy (one-for-one, one-for-all, rest-for-one), until the restart
 * intensity is exceeded; an on_init that fails refuses the registration.
 * Ends by itself within seconds. */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>

#include "check.h"

/* ---- a server whose casts wait until released ---- */

typedef struct {
  atomic_int entered; /* casts whose callback started */
  atomic_int release; /* set: callbacks return */
} gate_state;

static void gate_cast(void *ctx, const uint8_t *data, size_t len) {
  gate_state *st = ctx;
  (void)data;
  (void)len;
  atomic_fetch_add(&st->entered, 1);
  for (int i = 0; i < 2000 && !atomic_load(&st->release); i++) sleep_ms(5);
}

static void test_bounded_mailbox(oscloud_node_t *node) {
  gate_state st = {0};
  oscloud_server_callbacks_t cb = oscloud_server_callbacks_default();
  cb.context = &st;
  cb.on_cast = gate_cast;
  oscloud_server_options_t opts = oscloud_server_options_default();
  CHECK(opts.mailbox == OSCLOUD_DEFAULT_MAILBOX);
  CHECK(opts.supervisor == NULL);
  opts.mailbox = 2;
  oscloud_server_t *server = NULL;
  CHECK_RC(oscloud_server_register_with(node, "gate", &cb, &opts, &server),
           OSCLOUD_OK);
  const uint8_t x = 'x';
  /* The first is taken by the callback, which waits; two more wait in the
   * mailbox; the fourth does not fit. */
  CHECK_RC(oscloud_cast(node, "gate", &x, 1), OSCLOUD_OK);
  WAIT_UNTIL(atomic_load(&st.entered) == 1, 5000);
  CHECK_RC(oscloud_cast(node, "gate", &x, 1), OSCLOUD_OK);
  CHECK_RC(oscloud_cast(node, "gate", &x, 1), OSCLOUD_OK);
  CHECK_RC(oscloud_cast(node, "gate", &x, 1), OSCLOUD_ERR_BUSY);
  CHECK_RC(oscloud_try_cast(node, "gate", &x, 1), OSCLOUD_ERR_BUSY);
  CHECK(strstr(oscloud_last_error(), "busy") != NULL);
  oscloud_bytes_t reply = oscloud_bytes_default();
  CHECK_RC(oscloud_call(node, "gate", &x, 1, 1000, &reply), OSCLOUD_ERR_BUSY);
  CHECK(strcmp(oscloud_strerror(OSCLOUD_ERR_BUSY), "other error") != 0);
  atomic_store(&st.release, 1);
  WAIT_UNTIL(atomic_load(&st.entered) == 3, 5000);
  CHECK(atomic_load(&st.entered) == 3);
  /* Room again once they are handled. */
  CHECK_RC(oscloud_cast(node, "gate", &x, 1), OSCLOUD_OK);
  oscloud_server_drop(&server);
  CHECK(atomic_load(&st.entered) == 4);
}

/* ---- a server with state set up by on_init: calls "inc" count, "crash"
 * fails the server ---- */

typedef struct {
  atomic_int inits;
  atomic_int stops;
  atomic_int drops;
  atomic_int count;
  atomic_int refuse_init; /* set: on_init fails */
} life_state;

static int life_init(void *ctx) {
  life_state *st = ctx;
  atomic_fetch_add(&st->inits, 1);
  atomic_store(&st->count, 0);
  return atomic_load(&st->refuse_init) ? 7 : 0;
}

static void life_stop(void *ctx) { atomic_fetch_add(&((life_state *)ctx)->stops, 1); }

static void life_drop(void *ctx) { atomic_fetch_add(&((life_state *)ctx)->drops, 1); }

static void life_call(void *ctx, const uint8_t *data, size_t len,
                      oscloud_reply_t *reply) {
  life_state *st = ctx;
  if (len == 5 && memcmp(data, "crash", 5) == 0) {
    CHECK_RC(oscloud_server_fail("asked to crash"), OSCLOUD_OK);
    oscloud_reply_error(&reply, "crashing");
    return;
  }
  uint8_t n = (uint8_t)(atomic_fetch_add(&st->count, 1) + 1);
  oscloud_reply_send(&reply, &n, 1);
}

static oscloud_server_callbacks_t life_callbacks(life_state *st) {
  oscloud_server_callbacks_t cb = oscloud_server_callbacks_default();
  cb.context = st;
  cb.on_call = life_call;
  cb.on_init = life_init;
  cb.on_stop = life_stop;
  cb.on_drop = life_drop;
  return cb;
}

/* Calls `name` with "inc": the count it answers, or the negative code. */
static int inc(oscloud_node_t *node, const char *name) {
  oscloud_bytes_t reply = oscloud_bytes_default();
  int rc = oscloud_call(node, name, (const uint8_t *)"inc", 3, 2000, &reply);
  if (rc == OSCLOUD_OK) rc = reply.len == 1 ? reply.data[0] : -100;
  oscloud_bytes_drop(&reply);
  return rc;
}

static int crash(oscloud_node_t *node, const char *name) {
  oscloud_bytes_t reply = oscloud_bytes_default();
  int rc = oscloud_call(node, name, (const uint8_t *)"crash", 5, 2000, &reply);
  oscloud_bytes_drop(&reply);
  return rc;
}

static oscloud_server_t *start_life(oscloud_node_t *node, const char *name,
                                    life_state *st, oscloud_supervisor_t *sup) {
  oscloud_server_callbacks_t cb = life_callbacks(st);
  oscloud_server_options_t opts = oscloud_server_options_default();
  opts.supervisor = sup;
  oscloud_server_t *server = NULL;
  CHECK_RC(oscloud_server_register_with(node, name, &cb, &opts, &server),
           OSCLOUD_OK);
  return server;
}

static uint64_t restarts(const oscloud_supervisor_t *sup) {
  oscloud_supervisor_status_t s = {0};
  CHECK_RC(oscloud_supervisor_status(sup, &s), OSCLOUD_OK);
  return s.restarts;
}

static void test_unsupervised_failure(oscloud_node_t *node) {
  life_state st = {0};
  oscloud_server_t *server = start_life(node, "alone", &st, NULL);
  CHECK(inc(node, "alone") == 1);
  CHECK_RC(crash(node, "alone"), OSCLOUD_ERR_REMOTE);
  /* It left the registry and stays down. */
  WAIT_UNTIL(inc(node, "alone") == OSCLOUD_ERR_NOT_FOUND, 5000);
  CHECK(inc(node, "alone") == OSCLOUD_ERR_NOT_FOUND);
  CHECK(atomic_load(&st.inits) == 1);
  CHECK(atomic_load(&st.stops) == 1);
  /* Outside a callback, oscloud_server_fail is refused. */
  CHECK_RC(oscloud_server_fail("not here"), OSCLOUD_ERR_INVALID);
  oscloud_server_drop(&server);
  CHECK(atomic_load(&st.stops) == 1);
  CHECK(atomic_load(&st.drops) == 1);
  /* An on_init that fails: no server, no on_drop. */
  life_state refused = {0};
  atomic_store(&refused.refuse_init, 1);
  oscloud_server_callbacks_t cb = life_callbacks(&refused);
  CHECK_RC(oscloud_server_register(node, "refused", &cb, &server),
           OSCLOUD_ERR_OTHER);
  CHECK(server == NULL);
  CHECK(strstr(oscloud_last_error(), "on_init returned 7") != NULL);
  CHECK(inc(node, "refused") == OSCLOUD_ERR_NOT_FOUND);
  CHECK(atomic_load(&refused.drops) == 0);
}

static void test_one_for_one(oscloud_node_t *node) {
  oscloud_supervisor_options_t so = oscloud_supervisor_options_default();
  CHECK(so.strategy == OSCLOUD_STRATEGY_ONE_FOR_ONE);
  CHECK(so.max_restarts == 3 && so.period_ms == 5000);
  oscloud_supervisor_t *sup = NULL;
  CHECK_RC(oscloud_supervisor_new(&so, &sup), OSCLOUD_OK);
  life_state a = {0}, b = {0};
  oscloud_server_t *sa = start_life(node, "one-a", &a, sup);
  oscloud_server_t *sb = start_life(node, "one-b", &b, sup);
  CHECK(inc(node, "one-a") == 1);
  CHECK(inc(node, "one-a") == 2);
  CHECK(inc(node, "one-b") == 1);
  CHECK_RC(crash(node, "one-a"), OSCLOUD_ERR_REMOTE);
  WAIT_UNTIL(restarts(sup) == 1 && inc(node, "one-a") > 0, 5000);
  CHECK(restarts(sup) == 1);
  /* Fresh state from on_init; the sibling untouched. */
  CHECK(atomic_load(&a.inits) == 2 && atomic_load(&a.stops) == 1);
  CHECK(atomic_load(&a.count) == 1);
  CHECK(atomic_load(&b.inits) == 1 && atomic_load(&b.stops) == 0);
  CHECK(inc(node, "one-b") == 2);
  oscloud_supervisor_status_t s = {0};
  CHECK_RC(oscloud_supervisor_status(sup, &s), OSCLOUD_OK);
  CHECK(s.servers == 2 && !s.failed);
  oscloud_server_drop(&sb);
  oscloud_server_drop(&sa);
  CHECK_RC(oscloud_supervisor_status(sup, &s), OSCLOUD_OK);
  CHECK(s.servers == 0);
  CHECK(atomic_load(&a.drops) == 1 && atomic_load(&b.drops) == 1);
  oscloud_supervisor_drop(&sup);
  oscloud_supervisor_drop(&sup);
  CHECK(sup == NULL);
}

/* Three servers under `strategy`; the middle one crashes. */
static void test_strategy(oscloud_node_t *node, int strategy, int first_restarted) {
  oscloud_supervisor_options_t so = oscloud_supervisor_options_default();
  so.strategy = strategy;
  oscloud_supervisor_t *sup = NULL;
  CHECK_RC(oscloud_supervisor_new(&so, &sup), OSCLOUD_OK);
  life_state st[3] = {0};
  const char *names[3] = {"s-1", "s-2", "s-3"};
  oscloud_server_t *s[3];
  for (int i = 0; i < 3; i++) s[i] = start_life(node, names[i], &st[i], sup);
  for (int i = 0; i < 3; i++) CHECK(inc(node, names[i]) == 1);
  CHECK_RC(crash(node, "s-2"), OSCLOUD_ERR_REMOTE);
  uint64_t want = first_restarted ? 3 : 2;
  WAIT_UNTIL(restarts(sup) == want, 5000);
  CHECK(restarts(sup) == want);
  for (int i = 0; i < 3; i++) {
    int again = i > 0 || first_restarted;
    CHECK(atomic_load(&st[i].inits) == (again ? 2 : 1));
    CHECK(atomic_load(&st[i].stops) == (again ? 1 : 0));
    WAIT_UNTIL(inc(node, names[i]) > 0, 5000);
  }
  CHECK(atomic_load(&st[0].count) == (first_restarted ? 1 : 2));
  for (int i = 2; i >= 0; i--) oscloud_server_drop(&s[i]);
  oscloud_supervisor_drop(&sup);
}

static void test_intensity(oscloud_node_t *node) {
  oscloud_supervisor_options_t so = oscloud_supervisor_options_default();
  so.max_restarts = 1;
  oscloud_supervisor_t *sup = NULL;
  CHECK_RC(oscloud_supervisor_new(&so, &sup), OSCLOUD_OK);
  life_state a = {0}, b = {0};
  oscloud_server_t *sa = start_life(node, "int-a", &a, sup);
  oscloud_server_t *sb = start_life(node, "int-b", &b, sup);
  CHECK_RC(crash(node, "int-a"), OSCLOUD_ERR_REMOTE);
  WAIT_UNTIL(restarts(sup) == 1 && inc(node, "int-a") > 0, 5000);
  CHECK(restarts(sup) == 1);
  CHECK_RC(crash(node, "int-a"), OSCLOUD_ERR_REMOTE);
  oscloud_supervisor_status_t s = {0};
  for (int i = 0; i < 1000 && !s.failed; i++) {
    CHECK_RC(oscloud_supervisor_status(sup, &s), OSCLOUD_OK);
    sleep_ms(5);
  }
  CHECK(s.failed);
  CHECK(s.restarts == 1);
  /* It gave up: every server is stopped, none comes back. */
  WAIT_UNTIL(atomic_load(&b.stops) == 1, 5000);
  CHECK(inc(node, "int-a") == OSCLOUD_ERR_NOT_FOUND);
  CHECK(inc(node, "int-b") == OSCLOUD_ERR_NOT_FOUND);
  CHECK(atomic_load(&a.inits) == 2 && atomic_load(&a.stops) == 2);
  /* And takes no more servers. */
  life_state c = {0};
  oscloud_server_callbacks_t cb = life_callbacks(&c);
  oscloud_server_options_t opts = oscloud_server_options_default();
  opts.supervisor = sup;
  oscloud_server_t *sc = NULL;
  CHECK_RC(oscloud_server_register_with(node, "int-c", &cb, &opts, &sc),
           OSCLOUD_ERR_SERVER_STOPPED);
  oscloud_supervisor_drop(&sup); /* before its servers: they stay valid */
  oscloud_server_drop(&sa);
  oscloud_server_drop(&sb);
  CHECK(atomic_load(&a.drops) == 1 && atomic_load(&b.drops) == 1);
  /* Bad options. */
  so.strategy = 42;
  CHECK_RC(oscloud_supervisor_new(&so, &sup), OSCLOUD_ERR_INVALID);
  CHECK_RC(oscloud_supervisor_new(NULL, NULL), OSCLOUD_ERR_NULL);
  CHECK_RC(oscloud_supervisor_status(NULL, &s), OSCLOUD_ERR_NULL);
}

int main(void) {
  oscloud_node_t *node = NULL;
  CHECK_RC(oscloud_node_new(NULL, &node), OSCLOUD_OK);
  test_bounded_mailbox(node);
  test_unsupervised_failure(node);
  test_one_for_one(node);
  test_strategy(node, OSCLOUD_STRATEGY_ONE_FOR_ALL, 1);
  test_strategy(node, OSCLOUD_STRATEGY_REST_FOR_ONE, 0);
  test_intensity(node);
  oscloud_node_drop(&node);
  if (check_failures) {
    fprintf(stderr, "test_supervision: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_supervision: ok\n");
  return 0;
}
