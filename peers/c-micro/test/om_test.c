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
        {
            size_t n1 = ab.len, n2 = ba.len;
            uint8_t x[sizeof ab.buf], y[sizeof ba.buf];
            memcpy(x, ab.buf, n1);
            memcpy(y, ba.buf, n2);
            ab.len = ba.len = 0;
            om_input(&b, x, n1, t);
            om_input(&a, y, n2, t);
        }
        om_tick(&a, t);
        om_tick(&b, t);
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
    test_garbage(rounds);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
