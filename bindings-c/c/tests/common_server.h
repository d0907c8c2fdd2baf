/* The "upper" server used by several C tests: calls upper-case a
 * MessagePack string; the request "silence" is kept unanswered (so callers
 * time out) until the next call; "fail" is answered with an error; a cast
 * "stop" sets *stop; pipes on port "upper" get every frame back
 * upper-cased, on a thread per pipe, until the opener closes its side. */
#ifndef OSCLOUD_TEST_COMMON_SERVER_H
#define OSCLOUD_TEST_COMMON_SERVER_H

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>

#include "check.h"

typedef struct {
  atomic_int stop;        /* set by the cast "stop" */
  atomic_int casts;       /* casts received */
  oscloud_reply_t *held;  /* the reply kept for "silence" */
  atomic_int pipe_threads; /* pipe threads still running */
  atomic_int dropped;     /* on_drop ran */
} upper_state;

static inline void upper_cast(void *ctx, const uint8_t *data, size_t len) {
  upper_state *st = ctx;
  char text[256];
  atomic_fetch_add(&st->casts, 1);
  if (msgpack_read_str(data, len, text, sizeof text) == 0 &&
      strcmp(text, "stop") == 0) {
    atomic_store(&st->stop, 1);
  }
}

static inline void upper_call(void *ctx, const uint8_t *data, size_t len,
                       oscloud_reply_t *reply) {
  upper_state *st = ctx;
  char text[1024];
  /* A call after "silence" gives up on the held one. */
  oscloud_reply_drop(&st->held);
  if (msgpack_read_str(data, len, text, sizeof text) != 0) {
    oscloud_reply_error(&reply, "expected a MessagePack string");
    return;
  }
  if (strcmp(text, "silence") == 0) {
    st->held = reply; /* moved: answered (dropped) later */
    return;
  }
  if (strcmp(text, "fail") == 0) {
    oscloud_reply_error(&reply, "asked to fail");
    return;
  }
  for (char *p = text; *p; p++) *p = (char)toupper((unsigned char)*p);
  oscloud_bytes_t out = oscloud_bytes_default();
  if (msgpack_str(text, &out) != OSCLOUD_OK) {
    oscloud_reply_error(&reply, "cannot encode");
    return;
  }
  oscloud_reply_send(&reply, out.data, out.len);
  oscloud_bytes_drop(&out);
}

typedef struct {
  oscloud_pipe_t *pipe;
  upper_state *st;
} pipe_job;

static inline void *upper_pipe_thread(void *arg) {
  pipe_job *job = arg;
  for (;;) {
    oscloud_bytes_t frame = oscloud_bytes_default();
    int rc = oscloud_pipe_read(job->pipe, &frame, 10000);
    if (rc != OSCLOUD_OK) break; /* OSCLOUD_END, or a timeout */
    for (size_t i = 0; i < frame.len; i++)
      frame.data[i] = (uint8_t)toupper(frame.data[i]);
    rc = oscloud_pipe_write(job->pipe, frame.data, frame.len, 10000);
    oscloud_bytes_drop(&frame);
    if (rc != OSCLOUD_OK) break;
  }
  oscloud_pipe_close_write(job->pipe);
  oscloud_pipe_drop(&job->pipe);
  atomic_fetch_sub(&job->st->pipe_threads, 1);
  free(job);
  return NULL;
}

static inline int upper_pipe(void *ctx, const char *port, oscloud_pipe_t **pipe) {
  upper_state *st = ctx;
  if (strcmp(port, "upper") != 0) return -1;
  pipe_job *job = malloc(sizeof *job);
  if (!job) return -1;
  job->pipe = *pipe;
  job->st = st;
  *pipe = NULL; /* taken */
  atomic_fetch_add(&st->pipe_threads, 1);
  pthread_t t;
  if (pthread_create(&t, NULL, upper_pipe_thread, job) != 0) {
    *pipe = job->pipe; /* give it back: the library drops it */
    atomic_fetch_sub(&st->pipe_threads, 1);
    free(job);
    return -1;
  }
  pthread_detach(t);
  return 0;
}

static inline void upper_drop(void *ctx) {
  upper_state *st = ctx;
  oscloud_reply_drop(&st->held);
  atomic_store(&st->dropped, 1);
}

static inline oscloud_server_callbacks_t upper_callbacks(upper_state *st) {
  oscloud_server_callbacks_t cb = oscloud_server_callbacks_default();
  cb.context = st;
  cb.on_cast = upper_cast;
  cb.on_call = upper_call;
  cb.on_pipe = upper_pipe;
  cb.on_drop = upper_drop;
  return cb;
}

/* Calls `server` with the string `text`; copies the string reply into
 * `buf`. Returns the oscloud code. */
static inline int call_str(const oscloud_node_t *node, const char *server,
                    const char *text, uint64_t timeout_ms, char *buf,
                    size_t cap) {
  if (buf && cap) buf[0] = '\0';
  oscloud_bytes_t req = oscloud_bytes_default();
  oscloud_bytes_t rep = oscloud_bytes_default();
  int rc = msgpack_str(text, &req);
  if (rc != OSCLOUD_OK) return rc;
  rc = oscloud_call(node, server, req.data, req.len, timeout_ms, &rep);
  if (rc == OSCLOUD_OK && buf &&
      msgpack_read_str(rep.data, rep.len, buf, cap) != 0) {
    rc = OSCLOUD_ERR_DECODE;
  }
  oscloud_bytes_drop(&req);
  oscloud_bytes_drop(&rep);
  return rc;
}

static inline int cast_str(const oscloud_node_t *node, const char *server,
                    const char *text) {
  oscloud_bytes_t req = oscloud_bytes_default();
  int rc = msgpack_str(text, &req);
  if (rc == OSCLOUD_OK) rc = oscloud_cast(node, server, req.data, req.len);
  oscloud_bytes_drop(&req);
  return rc;
}

/* Opens a pipe to `server`'s port "upper", writes three frames, waits until
 * the server took them, closes its writing half and checks the three
 * upper-cased frames and the end. */
static inline void check_upper_pipe(const oscloud_node_t *node, const char *server) {
  oscloud_pipe_t *pipe = NULL;
  CHECK_RC(oscloud_pipe_open(node, server, "upper", 5000, &pipe), OSCLOUD_OK);
  if (!pipe) return;
  const char *frames[] = {"one", "two", "three"};
  const char *want[] = {"ONE", "TWO", "THREE"};
  for (int i = 0; i < 3; i++) {
    CHECK_RC(oscloud_pipe_write(pipe, (const uint8_t *)frames[i],
                                strlen(frames[i]), 5000),
             OSCLOUD_OK);
  }
  /* The server takes the three frames (and answers them). */
  CHECK_RC(oscloud_pipe_drain(pipe, 5000), OSCLOUD_OK);
  CHECK_RC(oscloud_pipe_close_write(pipe), OSCLOUD_OK);
  CHECK_RC(oscloud_pipe_close_write(pipe), OSCLOUD_OK); /* twice: no-op */
  CHECK_RC(oscloud_pipe_drain(pipe, 100), OSCLOUD_ERR_PIPE_CLOSED);
  CHECK_RC(oscloud_pipe_write(pipe, (const uint8_t *)"x", 1, 100),
           OSCLOUD_ERR_PIPE_CLOSED);
  for (int i = 0; i < 3; i++) {
    oscloud_bytes_t frame = oscloud_bytes_default();
    CHECK_RC(oscloud_pipe_read(pipe, &frame, 5000), OSCLOUD_OK);
    CHECK(frame.len == strlen(want[i]) &&
          memcmp(frame.data, want[i], frame.len) == 0);
    oscloud_bytes_drop(&frame);
    oscloud_bytes_drop(&frame); /* twice: no-op */
  }
  oscloud_bytes_t frame = oscloud_bytes_default();
  CHECK_RC(oscloud_pipe_read(pipe, &frame, 5000), OSCLOUD_END);
  oscloud_pipe_drop(&pipe);
  oscloud_pipe_drop(&pipe); /* twice: no-op */
  CHECK(pipe == NULL);
}

#endif
