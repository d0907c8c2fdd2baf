/*
 * oscloud_micro: a tiny oscloud peer for microcontrollers (C99).
 *
 * It speaks the oscloud wire protocol v1 (docs/PROTOCOL.md) over a lossy
 * byte stream (a UART): COBS + CRC-32 framing (section 2.2) and a subset of
 * the session (sections 3, 4, 6, 7):
 *
 *   - Hello / HelloAck handshake, re-sent until confirmed;
 *   - reliable ordered delivery: sequence numbers, cumulative acks,
 *     go-back-N retransmission of up to OM_TX_SLOTS packets; a receive
 *     window of 1 (packets out of order are dropped and re-sent by the peer);
 *   - keepalive pings, Ping -> Ack, idle timeout;
 *   - Announce of the node's named servers on every new session;
 *   - Cast and Call/Reply both ways, with the optional trace context
 *     (a W3C traceparent's 25 bytes) both ways;
 *   - Close; a PipeOpen is refused with PipeClose (no pipes).
 *
 * No malloc, no OS, no clock of its own: the node lives in a caller-owned
 * `om_node` (all buffers inside, sized by the macros below), bytes go in with
 * om_input(), out through the `write` callback, and the caller passes the
 * time in milliseconds (any wrapping 32-bit counter, e.g. Arduino millis()).
 * Handlers run synchronously inside om_input(); om_cast() and om_call()
 * return OM_BUSY while a handler runs (send after om_input() returns).
 *
 * After a session ends (Close received, idle timeout, a peer restarting with
 * a new session) the node starts a new session by itself: a device is
 * always trying to be linked.
 */
#ifndef OSCLOUD_MICRO_H
#define OSCLOUD_MICRO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest packet (MessagePack bytes) sent or accepted; advertised as
 * max_frame in the Hello. At least 128. */
#ifndef OM_MAX_PACKET
#define OM_MAX_PACKET 256
#endif
/* Messages queued or unacknowledged towards the peer. */
#ifndef OM_TX_SLOTS
#define OM_TX_SLOTS 4
#endif
/* Most named servers. */
#ifndef OM_MAX_SERVERS
#define OM_MAX_SERVERS 4
#endif
/* Timers, milliseconds. */
#ifndef OM_RTO_MS
#define OM_RTO_MS 250u
#endif
#ifndef OM_MAX_RTO_MS
#define OM_MAX_RTO_MS 4000u
#endif
#ifndef OM_KEEPALIVE_MS
#define OM_KEEPALIVE_MS 1000u
#endif
#ifndef OM_IDLE_MS
#define OM_IDLE_MS 10000u
#endif

/* Results of the API calls. */
typedef enum {
    OM_OK = 0,
    OM_NOT_CONNECTED = -1, /* no session open yet */
    OM_BUSY = -2,          /* every send slot is taken: retry later */
    OM_TOO_BIG = -3,       /* the message does not fit a packet */
    OM_FULL = -4,          /* too many servers */
    OM_BAD_TRACE = -5      /* a trace context with a zero trace-id or parent-id */
} om_result;

/* Bytes of a trace context (the optional last element of Cast and Call):
 * trace-id (16), parent-id (8), trace-flags (1), the values of a W3C
 * Trace Context `traceparent` of version 00. */
#define OM_TRACE_LEN 25

/* Remote error kinds (PROTOCOL.md 5.3) a call handler may return. */
enum {
    OM_ERR_NOT_FOUND = 1,
    OM_ERR_STOPPED = 2,
    OM_ERR_TIMEOUT = 3,
    OM_ERR_DECODE = 4,
    OM_ERR_FAILED = 5
};

/* Bytes to the line. Must take all `len` bytes (buffer or block). */
typedef void (*om_write_fn)(void *ctx, const uint8_t *data, size_t len);
/* A call for one of our servers: write at most `reply_cap` bytes to
 * `reply`, set *reply_len, return 0, or return an OM_ERR_* kind. */
typedef int (*om_call_fn)(void *ctx, const uint8_t *req, size_t req_len, uint8_t *reply,
                          size_t reply_cap, size_t *reply_len);
/* A cast for one of our servers. */
typedef void (*om_cast_fn)(void *ctx, const uint8_t *msg, size_t len);
/* The answer to a call we made: kind 0 with the payload, or an error kind
 * with its message as payload. */
typedef void (*om_reply_fn)(void *ctx, uint64_t call_id, int kind, const uint8_t *payload,
                            size_t len);
/* The session opened (connected = 1) or ended (connected = 0). */
typedef void (*om_link_fn)(void *ctx, int connected);

/* Counters, for diagnostics. */
typedef struct {
    uint32_t frames_sent;
    uint32_t frames_received;   /* intact frames */
    uint32_t crc_failures;      /* dropped for a bad CRC */
    uint32_t framing_failures;  /* dropped: bad COBS, too short, too long */
    uint32_t decode_failures;   /* intact but not a valid packet (closes) */
    uint32_t retransmissions;   /* Data packets (and Hellos) sent again */
    uint32_t dropped;           /* Data packets dropped (out of order, no room) */
    uint32_t sessions;          /* sessions opened */
    uint32_t traces_ignored;    /* trace elements ignored: not a bin of 25 bytes, or a zero id */
} om_stats;

typedef struct {
    const char *name;
    om_call_fn call; /* may be NULL: calls get NotFound */
    om_cast_fn cast; /* may be NULL: casts are dropped */
    void *ctx;
} om_server;

typedef struct {
    uint64_t seq;
    uint16_t len;
    uint8_t msg[OM_MAX_PACKET];
} om_slot;

/* The whole node. Treat the fields as private. */
typedef struct {
    /* configuration */
    uint8_t node_id[16];
    om_write_fn write;
    om_reply_fn on_reply;
    om_link_fn on_link;
    void *ctx;
    om_server servers[OM_MAX_SERVERS];
    uint8_t n_servers;
    uint64_t rng;
    /* framing, receive side */
    uint8_t run[OM_MAX_PACKET + 4 + (OM_MAX_PACKET + 4) / 254 + 2];
    size_t run_len;
    uint8_t skipping;
    uint8_t raw[OM_MAX_PACKET + 4];
    /* session */
    uint8_t state; /* 0 handshake, 1 open */
    uint8_t hello_confirmed;
    uint64_t session_id;
    uint64_t peer_session;
    uint8_t peer_id[16];
    uint32_t peer_max_frame;
    uint32_t peer_window;
    uint64_t next_seq;    /* our next Data seq */
    uint64_t next_expect; /* the peer's next Data seq we expect */
    uint64_t next_call;   /* our next call id */
    uint8_t ack_due;
    uint8_t in_handler;
    const uint8_t *trace; /* the trace context of the message being handled */
    om_slot slots[OM_TX_SLOTS];
    uint8_t n_slots;   /* queued messages */
    uint8_t n_sent;    /* of which sent (unacknowledged) */
    uint32_t now;
    uint32_t last_recv;
    uint32_t last_sent;
    uint32_t rto;
    uint32_t rto_at;
    uint8_t rto_armed;
    uint8_t scratch[OM_MAX_PACKET];
    uint8_t out[OM_MAX_PACKET + 24];
    om_stats stats;
} om_node;

/* Set up `node`. `node_id`: 16 bytes unique to the device; `seed`: any
 * varying number (noise, a serial number) for session ids. */
void om_init(om_node *node, const uint8_t node_id[16], uint64_t seed, om_write_fn write,
             om_reply_fn on_reply, om_link_fn on_link, void *ctx, uint32_t now_ms);

/* Add a named server, announced on every session. Before the first om_input
 * or om_tick. */
om_result om_add_server(om_node *node, const char *name, om_call_fn call, om_cast_fn cast,
                        void *ctx);

/* Bytes received from the line. Any bytes at all are safe. */
void om_input(om_node *node, const uint8_t *data, size_t len, uint32_t now_ms);

/* Run the timers; call often (every few ms, or when idle). */
void om_tick(om_node *node, uint32_t now_ms);

/* Whether a session is open. */
int om_connected(const om_node *node);

/* One-way message to the server `to` on the peer. */
om_result om_cast(om_node *node, const char *to, const uint8_t *payload, size_t len);

/* A call to the server `to` on the peer; its id goes to *call_id and the
 * answer to the on_reply callback. */
om_result om_call(om_node *node, const char *to, const uint8_t *payload, size_t len,
                  uint64_t *call_id);

/* The same, with a trace context (OM_TRACE_LEN bytes; NULL: none), e.g.
 * the one om_trace() gave for a message this device passes on. A context
 * whose trace-id or parent-id is all zero is refused (OM_BAD_TRACE). */
om_result om_cast_traced(om_node *node, const char *to, const uint8_t *payload, size_t len,
                         const uint8_t *trace);
om_result om_call_traced(om_node *node, const char *to, const uint8_t *payload, size_t len,
                         const uint8_t *trace, uint64_t *call_id);

/* Inside a call or cast handler: the trace context (OM_TRACE_LEN bytes)
 * the sender gave the message, or NULL when it gave none (or one that is
 * not a bin of 25 bytes with non-zero ids: ignored, the message is
 * delivered and counted in `traces_ignored`). NULL outside handlers; the
 * bytes are valid until the handler returns (copy them to pass the
 * context on later with om_cast_traced / om_call_traced). */
const uint8_t *om_trace(const om_node *node);

/* Counters. */
const om_stats *om_get_stats(const om_node *node);

/* The framing alone, for tests: CRC-32/ISO-HDLC of `len` bytes. */
uint32_t om_crc32(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* OSCLOUD_MICRO_H */
