/* Tiny test helpers shared by the C tests of liboscloud. */
#ifndef OSCLOUD_TEST_CHECK_H
#define OSCLOUD_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h> /* nanosleep: define _POSIX_C_SOURCE before any include */

#include "oscloud.h"

static int check_failures = 0;

/* Fails the test (and goes on) when `cond` is false. */
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n",         \
              __FILE__, __LINE__, #cond, oscloud_last_error());             \
      check_failures++;                                                     \
    }                                                                       \
  } while (0)

/* Checks that `expr` returns the code `want`. */
#define CHECK_RC(expr, want)                                                \
  do {                                                                      \
    int rc_ = (expr);                                                       \
    if (rc_ != (want)) {                                                    \
      fprintf(stderr, "%s:%d: %s returned %d (%s), wanted %d (%s); "        \
              "last error: %s\n", __FILE__, __LINE__, #expr, rc_,           \
              oscloud_strerror(rc_), (want), oscloud_strerror(want),        \
              oscloud_last_error());                                        \
      check_failures++;                                                     \
    }                                                                       \
  } while (0)

/* Sleeps `ms` milliseconds: the pause between two polls. */
static inline void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Polls `cond` every 5 ms for at most `ms` ms. */
#define WAIT_UNTIL(cond, ms)                                                \
  do {                                                                      \
    for (long waited_ = 0; !(cond) && waited_ < (ms); waited_ += 5)         \
      sleep_ms(5);                                                          \
  } while (0)

/* Encodes `text` as a MessagePack string (the caller drops `out`). */
static inline int msgpack_str(const char *text, oscloud_bytes_t *out) {
  return oscloud_msgpack_encode_str(text, out);
}

/* Copies the MessagePack string in `data` into `buf` (NUL-terminated);
 * returns 0 on success. */
static inline int msgpack_read_str(const uint8_t *data, size_t len, char *buf,
                                   size_t cap) {
  const char *text = NULL;
  size_t n = 0;
  if (oscloud_msgpack_decode_str(data, len, &text, &n) != OSCLOUD_OK ||
      n >= cap) {
    return -1;
  }
  memcpy(buf, text, n);
  buf[n] = '\0';
  return 0;
}

#endif
