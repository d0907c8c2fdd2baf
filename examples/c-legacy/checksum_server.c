/*
 * checksum_server - the legacy checksum tool as an oscloud server.
 *
 *   checksum_server URI [NAME]
 *
 * A thin adapter: checksum.c is compiled in UNMODIFIED (its main is renamed
 * on the way in), and its checksum() function answers the calls of the
 * oscloud server NAME (default "checksum"): the request is a MessagePack
 * string (one line), the reply a MessagePack string in the tool's own
 * output format ("%08lx %lu"). The node listens at URI (for example
 * unix:///tmp/checksum.sock or tcp://0.0.0.0:7000) until SIGINT or SIGTERM.
 */
#define _POSIX_C_SOURCE 200809L /* sigaction, nanosleep */

#define main checksum_legacy_main
#include "checksum.c"
#undef main

#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "oscloud.h"

static volatile sig_atomic_t stop = 0;

static void on_signal(int sig)
{
    (void) sig;
    stop = 1;
}

/* Runs on the server's own thread, one call at a time (the legacy code
 * needs no locking). */
static void on_call(void *context, const uint8_t *data, size_t len,
                    oscloud_reply_t *reply)
{
    const char *text;
    size_t text_len;
    char out[64];
    oscloud_bytes_t encoded = oscloud_bytes_default();

    (void) context;
    if (oscloud_msgpack_decode_str(data, len, &text, &text_len) != OSCLOUD_OK) {
        oscloud_reply_error(&reply, "expected one line as a MessagePack string");
        return;
    }
    snprintf(out, sizeof out, "%08lx %lu", checksum(text, text_len),
             (unsigned long) text_len);
    if (oscloud_msgpack_encode_str(out, &encoded) != OSCLOUD_OK) {
        oscloud_reply_error(&reply, oscloud_last_error());
        return;
    }
    oscloud_reply_send(&reply, encoded.data, encoded.len);
    oscloud_bytes_drop(&encoded);
}

int main(int argc, char **argv)
{
    const char *name = argc > 2 ? argv[2] : "checksum";
    oscloud_node_t *node = NULL;
    oscloud_server_t *server = NULL;
    oscloud_server_callbacks_t callbacks = oscloud_server_callbacks_default();
    char bound[256];
    struct sigaction sa;
    int status = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: checksum_server URI [NAME]\n");
        return 2;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    callbacks.on_call = on_call;
    if (oscloud_node_new(NULL, &node) != OSCLOUD_OK ||
        oscloud_server_register(node, name, &callbacks, &server) != OSCLOUD_OK ||
        oscloud_node_listen(node, argv[1], bound, sizeof bound) != OSCLOUD_OK) {
        fprintf(stderr, "checksum_server: %s\n", oscloud_last_error());
        goto out;
    }
    printf("serving \"%s\" on %s\n", name, bound);
    fflush(stdout);
    while (!stop) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    status = 0;
out:
    oscloud_server_drop(&server);
    oscloud_node_drop(&node);
    return status;
}
