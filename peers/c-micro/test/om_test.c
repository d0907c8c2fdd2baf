/*
 * Self-tests of oscloud_micro, no OS needed beyond stdio: the CRC check
 * value, the Hello it sends (against docs/PROTOCOL.md), two C nodes talking
 * to each other through an in-memory line, and a garbage run: millions of
 * random bytes, damaged frames and well-framed random packets fed to a node,
 * which must never crash (build with -fsanitize=address,undefined to make
 * "crash" include every out-of-bounds access and undefined behaviour).
 *
 * Usage: om_test [garbage_rounds]   (prints "ok ..." lines, exits 1 on failure)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../oscloud_micro.h"

static int failures;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* ---- a line: bytes written by one node, read by the other */
typedef struct {
    uint8_t buf[1 << 16];
    size_t len;
} line_t;

static void line_write(void *ctx, const uint8_t *d, size_t n) {
    line_t *l = (line_t *)ctx;
    if (n > sizeof l->buf - l->len) n = sizeof l->buf - l->len;
    memcpy(l->buf + l->len, d, n);
    l->len += n;
}

/* COBS-decode and CRC-check the first frame of `in`; the packet length or -1. */
static long unframe(const uint8_t *in, size_t n, uint8_t *out) {
    size_t i = 0, o = 0, end = 0;
    uint32_t crc;
    while (end < n && in[end] != 0) end++;
    if (end == n) return -1;
    while (i < end) {
        uint8_t code = in[i++];
        uint8_t k;
        for (k = 1; k < code && i < end; k++) out[o++] = in[i++];
        if (code < 0xFF && i < end) out[o++] = 0;
    }
    if (o < 4) return -1;
    o -= 4;
    crc = (uint32_t)out[o] | ((uint32_t)out[o + 1] << 8) | ((uint32_t)out[o + 2] << 16) |
          ((uint32_t)out[o + 3] << 24);
    return om_crc32(out, o) == crc ? (long)o : -1;
}

/* Frame `packet` (COBS of packet||crc, then 0x00) into `out`; its length. */
static size_t frame(const uint8_t *packet, size_t len, uint8_t *out) {
    uint8_t raw[1024];
    size_t n = len + 4, i, o = 1, code_at = 0;
    uint8_t code = 1;
    uint32_t c = om_crc32(packet, len);
    memcpy(raw, packet, len);
    raw[len] = (uint8_t)c;
    raw[len + 1] = (uint8_t)(c >> 8);
    raw[len + 2] = (uint8_t)(c >> 16);
    raw[len + 3] = (uint8_t)(c >> 24);
    for (i = 0; i < n; i++) {
        if (raw[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = raw[i];
            if (++code == 0xFF) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out[o++] = 0;
    return o;
}

static int upper(void *ctx, const uint8_t *req, size_t len, uint8_t *reply, size_t cap,
                 size_t *reply_len) {
    size_t i;
    (void)ctx;
    if (len > cap) return OM_ERR_FAILED;
    for (i = 0; i < len; i++) reply[i] = (uint8_t)(req[i] >= 'a' && req[i] <= 'z' ? req[i] - 32 : req[i]);
    *reply_len = len;
    return 0;
}

static char last_reply[256];
static int last_kind = -1;
static void on_reply(void *ctx, uint64_t id, int kind, const uint8_t *p, size_t len) {
    (void)ctx;
    (void)id;
    last_kind = kind;
    if (len > 255) len = 255;
    memcpy(last_reply, p, len);
    last_reply[len] = 0;
}

static void test_crc(void) {
    CHECK(om_crc32((const uint8_t *)"123456789", 9) == 0xCBF43926u);
    printf("ok crc32 check value\n");
}

static void test_hello(void) {
    static om_node n;
    static line_t out;
    uint8_t id[16], pkt[512];
    static const uint8_t head[] = {0x9a, 0x01, 0xce, 0x4f, 0x53, 0x43, 0x4c, 0x01, 0xc4, 0x10};
    static const uint8_t tail[] = {0xc0, 0xcd, 0x01, 0x00, 0x01, 0x01};
    long len;
    memset(id, 0xab, 16);
    out.len = 0;
    om_init(&n, id, 42, line_write, NULL, NULL, &out, 0);
    om_tick(&n, 0);
    len = unframe(out.buf, out.len, pkt);
    CHECK(len > 0);
    if (len > 0) {
        CHECK(memcmp(pkt, head, sizeof head) == 0);
        CHECK(pkt[26] == 0x00); /* features */
        CHECK(memcmp(pkt + len - (long)sizeof tail, tail, sizeof tail) == 0);
    }
    printf("ok hello layout (%ld bytes)\n", len);
}

/* Deliver what each of two nodes wrote to the other, then run both timers. */
static void exchange(om_node *a, line_t *ab, om_node *b, line_t *ba, uint32_t t) {
    static uint8_t x[sizeof ab->buf], y[sizeof ba->buf];
    size_t n1 = ab->len, n2 = ba->len;
    memcpy(x, ab->buf, n1);
    memcpy(y, ba->buf, n2);
    ab->len = ba->len = 0;
    om_input(b, x, n1, t);
    om_input(a, y, n2, t);
    om_tick(a, t);
    om_tick(b, t);
}

/* Two C nodes over an in-memory line, optionally damaging bytes. */
static void test_two_nodes(unsigned damage_every) {
    static om_node a, b;
    static line_t ab, ba;
    uint8_t ida[16] = {1}, idb[16] = {2};
    uint32_t t = 0;
    int i, answered = 0;
    unsigned damaged = 0;
    uint64_t call_id = 0;
    ab.len = ba.len = 0;
    om_init(&a, ida, 1, line_write, NULL, NULL, &ab, t);
    om_init(&b, idb, 2, line_write, on_reply, NULL, &ba, t);
    CHECK(om_add_server(&a, "upper", upper, NULL, NULL) == OM_OK);
    for (i = 0; i < 20000 && answered < 50; i++) {
        size_t k;
        t += 5;
        if (damage_every) {
            for (k = 0; k < ab.len; k++)
                if ((unsigned)rand() % damage_every == 0) {
                    ab.buf[k] ^= (uint8_t)(1u << (rand() % 8));
                    damaged++;
                }
            for (k = 0; k < ba.len; k++)
                if ((unsigned)rand() % damage_every == 0) {
                    ba.buf[k] ^= (uint8_t)(1u << (rand() % 8));
                    damaged++;
                }
        }
        exchange(&a, &ab, &b, &ba, t);
        if (om_connected(&b)) {
            if (last_kind >= 0 && call_id) {
                char expect[32];
                sprintf(expect, "PING %d", answered);
                CHECK(last_kind == 0 && strcmp(last_reply, expect) == 0);
                answered++;
                call_id = 0;
                last_kind = -1;
            }
            if (!call_id) {
                char msg[32];
                sprintf(msg, "ping %d", answered);
                if (om_call(&b, "upper", (const uint8_t *)msg, strlen(msg), &call_id) != OM_OK)
                    call_id = 0;
            }
        }
    }
    CHECK(answered == 50);
    printf("ok two C nodes, damage 1/%u: %d calls answered, a sent %lu frames, b sent %lu, %u bytes damaged, "
           "crc failures %lu+%lu, retransmissions %lu+%lu\n",
           damage_every, answered, (unsigned long)om_get_stats(&a)->frames_sent,
           (unsigned long)om_get_stats(&b)->frames_sent, damaged,
           (unsigned long)om_get_stats(&a)->crc_failures,
           (unsigned long)om_get_stats(&b)->crc_failures,
           (unsigned long)om_get_stats(&a)->retransmissions,
           (unsigned long)om_get_stats(&b)->retransmissions);
    CHECK(om_connected(&a) && om_connected(&b));
}

/* ---- trace context: the optional last element of Cast and Call */

/* The W3C Trace Context example: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 */
static const uint8_t TRACE[OM_TRACE_LEN] = {0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84,
                                            0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c, 0xb7, 0xad,
                                            0x6b, 0x71, 0x69, 0x20, 0x33, 0x31, 0x01};

static om_node traced; /* the node whose handlers record om_trace() */
static uint8_t seen_trace[OM_TRACE_LEN];
static int seen_has_trace = -1; /* -1: no handler ran */
static unsigned traced_casts;

static void record_trace(void) {
    const uint8_t *t = om_trace(&traced);
    seen_has_trace = t != NULL;
    if (t) memcpy(seen_trace, t, OM_TRACE_LEN);
}

static int traced_upper(void *ctx, const uint8_t *req, size_t len, uint8_t *reply, size_t cap,
                        size_t *reply_len) {
    record_trace();
    return upper(ctx, req, len, reply, cap, reply_len);
}

static void traced_cast(void *ctx, const uint8_t *msg, size_t len) {
    (void)ctx;
    (void)msg;
    (void)len;
    record_trace();
    traced_casts++;
}

/* A peer's Hello (node 07.., session 5, max_frame 256, recv_window 4). */
static const uint8_t PEER_HELLO[] = {0x9a, 0x01, 0xce, 0x4f, 0x53, 0x43, 0x4c, 0x01, 0xc4, 0x10,
                                     7,    7,    7,    7,    7,    7,    7,    7,    7,    7,
                                     7,    7,    7,    7,    7,    7,    0x00, 0x05, 0xc0, 0xcd,
                                     0x01, 0x00, 0x04, 0xcd, 0x10, 0x00};

/* Feed `n` one packet, framed. */
static void feed(om_node *n, const uint8_t *packet, size_t len, uint32_t t) {
    uint8_t buf[1100];
    om_input(n, buf, frame(packet, len, buf), t);
}

/* A Data packet [3, seq, 0, msg] around the message bytes `msg`. */
static size_t data_packet(uint8_t *out, uint8_t seq, const uint8_t *msg, size_t len) {
    out[0] = 0x94;
    out[1] = 0x03;
    out[2] = seq;
    out[3] = 0x00;
    memcpy(out + 4, msg, len);
    return len + 4;
}

/* Bytes written by hand from the wire layout (PROTOCOL.md 4, trace element):
 * [33, 1, "upper", bin (str "hello"), bin trace] and [32, "count", bin (str "hi"), bin trace]. */
static const uint8_t CALL_TRACED[] = {
    0x95, 0x21, 0x01, 0xa5, 0x75, 0x70, 0x70, 0x65, 0x72, 0xc4, 0x06, 0xa5, 0x68, 0x65, 0x6c, 0x6c,
    0x6f, 0xc4, 0x19, 0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c,
    0x80, 0x31, 0x9c, 0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31, 0x01};
static const uint8_t CAST_TRACED[] = {
    0x94, 0x20, 0xa5, 0x63, 0x6f, 0x75, 0x6e, 0x74, 0xc4, 0x03, 0xa2, 0x68, 0x69, 0xc4, 0x19, 0x0a,
    0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c, 0xb7,
    0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31, 0x01};

/* Received: a handler sees the trace of the message; bad traces are ignored, never fatal. */
static void test_trace_received(void) {
    static line_t out;
    uint8_t id[16] = {3}, pkt[600], msg[128];
    size_t len, k;
    uint8_t seq = 1;
    out.len = 0;
    om_init(&traced, id, 11, line_write, NULL, NULL, &out, 0);
    CHECK(om_add_server(&traced, "upper", traced_upper, NULL, NULL) == OM_OK);
    CHECK(om_add_server(&traced, "count", NULL, traced_cast, NULL) == OM_OK);
    feed(&traced, PEER_HELLO, sizeof PEER_HELLO, 1);
    CHECK(om_connected(&traced));
    CHECK(om_trace(&traced) == NULL);

    seen_has_trace = -1;
    feed(&traced, pkt, data_packet(pkt, seq++, CALL_TRACED, sizeof CALL_TRACED), 2);
    CHECK(seen_has_trace == 1 && memcmp(seen_trace, TRACE, OM_TRACE_LEN) == 0);
    CHECK(om_trace(&traced) == NULL); /* only inside the handler */
    seen_has_trace = -1;
    feed(&traced, pkt, data_packet(pkt, seq++, CAST_TRACED, sizeof CAST_TRACED), 3);
    CHECK(seen_has_trace == 1 && memcmp(seen_trace, TRACE, OM_TRACE_LEN) == 0);
    CHECK(traced_casts == 1);

    /* Bad trace elements (24 bytes, a str, nil, zero trace-id, zero parent-id), and
     * one more element after a good trace: delivered, the bad ones without a context. */
    {
        static const struct {
            uint8_t tail[30];
            size_t len;
            int has;
        } tails[] = {
            {{0xc4, 0x18, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 26, 0},
            {{0xa3, 0x61, 0x62, 0x63}, 4, 0},
            {{0xc0}, 1, 0},
            {{0xc4, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 27, 0},
            {{0xc4, 0x19, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 27, 0},
            {{0xc4, 0x19, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 1, 0xc3}, 28, 1},
        };
        size_t i;
        for (i = 0; i < sizeof tails / sizeof tails[0]; i++) {
            /* [33, id, "upper", bin "x", tail...] (one more element when the tail has two) */
            uint8_t head[] = {0x95, 0x21, 0x00, 0xa5, 0x75, 0x70, 0x70, 0x65, 0x72, 0xc4, 0x01, 0x78};
            uint32_t before = om_get_stats(&traced)->traces_ignored;
            head[0] = (uint8_t)(i == 5 ? 0x96 : 0x95);
            head[2] = (uint8_t)(i + 2);
            memcpy(msg, head, sizeof head);
            memcpy(msg + sizeof head, tails[i].tail, tails[i].len);
            len = data_packet(pkt, seq++, msg, sizeof head + tails[i].len);
            seen_has_trace = -1;
            feed(&traced, pkt, len, 4 + (uint32_t)i);
            CHECK(seen_has_trace == tails[i].has);
            CHECK(om_get_stats(&traced)->traces_ignored == before + (tails[i].has ? 0u : 1u));
            CHECK(om_connected(&traced));
            /* Answers (and acknowledgements) leave room for the next call. */
            feed(&traced, (const uint8_t[]){0x92, 0x04, (uint8_t)(traced.next_seq - 1)}, 3, 4 + (uint32_t)i);
        }
    }
    CHECK(om_get_stats(&traced)->sessions == 1);
    CHECK(om_get_stats(&traced)->decode_failures == 0);
    k = om_get_stats(&traced)->traces_ignored;
    printf("ok trace received: handlers see it, %lu bad trace elements ignored, session kept\n",
           (unsigned long)k);
}

/* Sent: om_call_traced / om_cast_traced write the trace element (bytes by hand). */
static void test_trace_sent(void) {
    static om_node n;
    static line_t out;
    uint8_t id[16] = {4}, pkt[600], expect[128];
    static const uint8_t hello[] = {0xa5, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t hi[] = {0xa2, 0x68, 0x69};
    static const uint8_t zero[OM_TRACE_LEN] = {0};
    uint64_t call_id = 0;
    long len;
    out.len = 0;
    om_init(&n, id, 12, line_write, NULL, NULL, &out, 0);
    feed(&n, PEER_HELLO, sizeof PEER_HELLO, 1); /* no servers: nothing announced */
    CHECK(om_connected(&n));
    out.len = 0;
    CHECK(om_call_traced(&n, "upper", hello, sizeof hello, TRACE, &call_id) == OM_OK);
    CHECK(call_id == 1);
    len = unframe(out.buf, out.len, pkt);
    CHECK(len == (long)data_packet(expect, 1, CALL_TRACED, sizeof CALL_TRACED));
    CHECK(len > 0 && memcmp(pkt, expect, (size_t)len) == 0);
    feed(&n, (const uint8_t[]){0x92, 0x04, 0x01}, 3, 2);
    out.len = 0;
    CHECK(om_cast_traced(&n, "count", hi, sizeof hi, TRACE) == OM_OK);
    len = unframe(out.buf, out.len, pkt);
    CHECK(len == (long)data_packet(expect, 2, CAST_TRACED, sizeof CAST_TRACED));
    CHECK(len > 0 && memcmp(pkt + 4, CAST_TRACED, sizeof CAST_TRACED) == 0 && pkt[2] == 2);
    /* No trace: the element is left out (the golden vectors are unchanged). */
    out.len = 0;
    CHECK(om_cast_traced(&n, "count", hi, sizeof hi, NULL) == OM_OK);
    len = unframe(out.buf, out.len, pkt);
    CHECK(len == 4 + 13 && pkt[4] == 0x93);
    CHECK(om_cast_traced(&n, "count", hi, sizeof hi, zero) == OM_BAD_TRACE);
    CHECK(om_call_traced(&n, "upper", hi, sizeof hi, zero, &call_id) == OM_BAD_TRACE);
    printf("ok trace sent: Call and Cast carry it as their last element\n");
}

/* Two C nodes: a traced call and cast arrive with their context, an untraced one without. */
static void test_trace_two_nodes(void) {
    static om_node b;
    static line_t ab, ba;
    uint8_t ida[16] = {5}, idb[16] = {6};
    uint32_t t = 0;
    int i, step = 0;
    uint64_t call_id;
    ab.len = ba.len = 0;
    last_kind = -1;
    traced_casts = 0;
    om_init(&traced, ida, 21, line_write, NULL, NULL, &ab, t);
    om_init(&b, idb, 22, line_write, on_reply, NULL, &ba, t);
    CHECK(om_add_server(&traced, "upper", traced_upper, NULL, NULL) == OM_OK);
    CHECK(om_add_server(&traced, "count", NULL, traced_cast, NULL) == OM_OK);
    for (i = 0; i < 2000 && step < 4; i++) {
        t += 5;
        exchange(&traced, &ab, &b, &ba, t);
        if (!om_connected(&b)) continue;
        if (step == 0 && om_call_traced(&b, "upper", (const uint8_t *)"a", 1, TRACE, &call_id) == OM_OK) {
            seen_has_trace = -1;
            step = 1;
        } else if (step == 1 && last_kind == 0) {
            CHECK(seen_has_trace == 1 && memcmp(seen_trace, TRACE, OM_TRACE_LEN) == 0);
            CHECK(strcmp(last_reply, "A") == 0);
            last_kind = -1;
            if (om_call(&b, "upper", (const uint8_t *)"b", 1, &call_id) == OM_OK) step = 2;
        } else if (step == 2 && last_kind == 0) {
            CHECK(seen_has_trace == 0);
            if (om_cast_traced(&b, "count", (const uint8_t *)"c", 1, TRACE) == OM_OK) {
                seen_has_trace = -1;
                step = 3;
            }
        } else if (step == 3 && traced_casts == 1) {
            CHECK(seen_has_trace == 1 && memcmp(seen_trace, TRACE, OM_TRACE_LEN) == 0);
            step = 4;
        }
    }
    CHECK(step == 4);
    printf("ok trace between two C nodes: a traced call and cast keep their context\n");
}

static void sink(void *ctx, const uint8_t *d, size_t n) {
    (void)ctx;
    (void)d;
    (void)n;
}

/* Random MessagePack-ish bytes: mostly plausible tags so the parser gets
 * deep, sometimes anything. */
static size_t random_packet(uint8_t *p, size_t cap) {
    static const uint8_t tags[] = {0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x9a, 0x9f, 0x01, 0x02,
                                   0x03, 0x04, 0x05, 0x06, 0x10, 0x20, 0x21, 0x22, 0x23, 0x30,
                                   0x33, 0xa3, 0xc4, 0xc5, 0xc0, 0xc2, 0xc3, 0xcc, 0xcd, 0xce,
                                   0xcf, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0x80, 0x81, 0xff, 0x7f};
    size_t n = (size_t)rand() % cap, i;
    for (i = 0; i < n; i++)
        p[i] = rand() % 4 ? tags[(size_t)rand() % sizeof tags] : (uint8_t)rand();
    return n;
}

static void test_garbage(long rounds) {
    static om_node n;
    static line_t hello_out;
    uint8_t id[16] = {9}, buf[2048], pkt[600];
    uint32_t t = 0;
    long r;
    unsigned long fed = 0;
    om_init(&n, id, 7, sink, on_reply, NULL, NULL, 0);
    om_add_server(&n, "upper", upper, NULL, NULL);
    (void)hello_out;
    for (r = 0; r < rounds; r++) {
        int what = rand() % 4;
        size_t len;
        t += (uint32_t)(rand() % 50);
        if (what == 0) {
            /* raw noise, sometimes with zeros */
            len = (size_t)rand() % sizeof buf;
            for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)(rand() % 3 ? rand() : 0);
            om_input(&n, buf, len, t);
        } else if (what == 1) {
            /* a valid peer Hello now and then, so Data gets parsed OPEN */
            static const uint8_t hello[] = {0x9a, 0x01, 0xce, 0x4f, 0x53, 0x43, 0x4c, 0x01, 0xc4,
                                            0x10, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                                            0x00, 0x05, 0xc0, 0xcd, 0x01, 0x00, 0x04, 0xcd, 0x10,
                                            0x00};
            uint8_t h[sizeof hello];
            memcpy(h, hello, sizeof h);
            h[27] = (uint8_t)(rand() % 3); /* sometimes a new session */
            len = frame(h, sizeof h, buf);
            om_input(&n, buf, len, t);
        } else {
            /* a well-framed random packet, often shaped like Data */
            size_t k = 0;
            if (what == 2) {
                pkt[k++] = 0x94;
                pkt[k++] = 0x03;
                pkt[k++] = (uint8_t)(rand() % 4);
                pkt[k++] = (uint8_t)(rand() % 4);
            }
            k += random_packet(pkt + k, 300);
            len = frame(pkt, k, buf);
            if (rand() % 8 == 0) buf[(size_t)rand() % len] ^= (uint8_t)(1u << (rand() % 8));
            om_input(&n, buf, len, t);
        }
        fed += len;
        if (rand() % 16 == 0) {
            uint64_t id2;
            (void)om_call(&n, "x", buf, (size_t)rand() % 300, &id2);
            (void)om_cast(&n, "y", buf, (size_t)rand() % 300);
        }
        om_tick(&n, t);
    }
    printf("ok garbage: %ld rounds, %lu bytes fed, %lu frames intact, %lu crc, %lu framing, "
           "%lu decode failures, %lu sessions\n",
           rounds, fed, (unsigned long)om_get_stats(&n)->frames_received,
           (unsigned long)om_get_stats(&n)->crc_failures,
           (unsigned long)om_get_stats(&n)->framing_failures,
           (unsigned long)om_get_stats(&n)->decode_failures,
           (unsigned long)om_get_stats(&n)->sessions);
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
    srand(1234);
    test_crc();
    test_hello();
    test_two_nodes(0);
    test_two_nodes(500);
    test_trace_received();
    test_trace_sent();
    test_trace_two_nodes();
    test_garbage(rounds);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
