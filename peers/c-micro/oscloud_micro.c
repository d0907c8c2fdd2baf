/* oscloud_micro: see oscloud_micro.h. C99, no malloc, no OS. */
#include "oscloud_micro.h"

#include <string.h>

#define MAGIC 0x4F53434Cu
#define VERSION 1u

enum { P_HELLO = 1, P_HELLO_ACK = 2, P_DATA = 3, P_ACK = 4, P_PING = 5, P_CLOSE = 6 };
enum {
    M_ANNOUNCE = 16,
    M_WITHDRAW = 17,
    M_CAST = 32,
    M_CALL = 33,
    M_REPLY_OK = 34,
    M_REPLY_ERR = 35,
    M_PIPE_OPEN = 48,
    M_PIPE_DATA = 49,
    M_PIPE_CREDIT = 50,
    M_PIPE_CLOSE = 51,
    M_PIPE_END = 52
};
enum { C_NORMAL = 0, C_PROTOCOL = 1, C_VERSION = 2, C_BAD_MAGIC = 3, C_DECODE = 5, C_IDLE = 9 };

/* ---------------------------------------------------------------- CRC-32 */

uint32_t om_crc32(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        for (k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

/* ------------------------------------------------------- MessagePack out */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int err;
} wbuf;

static void w_raw(wbuf *w, const uint8_t *d, size_t n) {
    if (w->err || n > w->cap - w->len) {
        w->err = 1;
        return;
    }
    if (n) memcpy(w->p + w->len, d, n);
    w->len += n;
}

static void w_byte(wbuf *w, uint8_t b) { w_raw(w, &b, 1); }

static void w_be(wbuf *w, uint8_t tag, uint64_t v, int bytes) {
    uint8_t b[9];
    int i;
    b[0] = tag;
    for (i = 0; i < bytes; i++) b[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    w_raw(w, b, (size_t)bytes + 1);
}

static void w_uint(wbuf *w, uint64_t v) {
    if (v < 128) w_byte(w, (uint8_t)v);
    else if (v <= 0xFF) w_be(w, 0xcc, v, 1);
    else if (v <= 0xFFFF) w_be(w, 0xcd, v, 2);
    else if (v <= 0xFFFFFFFFu) w_be(w, 0xce, v, 4);
    else w_be(w, 0xcf, v, 8);
}

static void w_array(wbuf *w, uint8_t n) { w_byte(w, (uint8_t)(0x90 | n)); } /* n < 16 */

static void w_str(wbuf *w, const char *s, size_t n) {
    if (n < 32) w_byte(w, (uint8_t)(0xa0 | n));
    else if (n <= 0xFF) w_be(w, 0xd9, n, 1);
    else w_be(w, 0xda, n, 2);
    w_raw(w, (const uint8_t *)s, n);
}

static void w_bin(wbuf *w, const uint8_t *d, size_t n) {
    if (n <= 0xFF) w_be(w, 0xc4, n, 1);
    else w_be(w, 0xc5, n, 2);
    w_raw(w, d, n);
}

/* -------------------------------------------------------- MessagePack in */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    int err;
} rbuf;

static int r_have(rbuf *r, size_t n) {
    if (r->err || n > r->len - r->pos) {
        r->err = 1;
        return 0;
    }
    return 1;
}

static uint64_t r_be(rbuf *r, int bytes) {
    uint64_t v = 0;
    int i;
    if (!r_have(r, (size_t)bytes)) return 0;
    for (i = 0; i < bytes; i++) v = (v << 8) | r->p[r->pos++];
    return v;
}

static uint8_t r_tag(rbuf *r) {
    if (!r_have(r, 1)) return 0xc1; /* never valid */
    return r->p[r->pos++];
}

static uint64_t r_uint(rbuf *r) {
    uint8_t t = r_tag(r);
    if (t < 0x80) return t;
    switch (t) {
    case 0xcc: return r_be(r, 1);
    case 0xcd: return r_be(r, 2);
    case 0xce: return r_be(r, 4);
    case 0xcf: return r_be(r, 8);
    default: r->err = 1; return 0;
    }
}

static uint32_t r_u32(rbuf *r) {
    uint64_t v = r_uint(r);
    if (v > 0xFFFFFFFFu) r->err = 1;
    return (uint32_t)v;
}

static uint32_t r_array(rbuf *r) {
    uint8_t t = r_tag(r);
    if ((t & 0xf0) == 0x90) return t & 0x0f;
    if (t == 0xdc) return (uint32_t)r_be(r, 2);
    if (t == 0xdd) return (uint32_t)r_be(r, 4);
    r->err = 1;
    return 0;
}

static const uint8_t *r_span(rbuf *r, size_t n) {
    const uint8_t *s;
    if (!r_have(r, n)) return NULL;
    s = r->p + r->pos;
    r->pos += n;
    return s;
}

static const uint8_t *r_str(rbuf *r, size_t *n) {
    uint8_t t = r_tag(r);
    if ((t & 0xe0) == 0xa0) *n = t & 0x1f;
    else if (t == 0xd9) *n = (size_t)r_be(r, 1);
    else if (t == 0xda) *n = (size_t)r_be(r, 2);
    else if (t == 0xdb) *n = (size_t)r_be(r, 4);
    else {
        r->err = 1;
        *n = 0;
        return NULL;
    }
    return r_span(r, *n);
}

static const uint8_t *r_bin(rbuf *r, size_t *n) {
    uint8_t t = r_tag(r);
    if (t == 0xc4) *n = (size_t)r_be(r, 1);
    else if (t == 0xc5) *n = (size_t)r_be(r, 2);
    else if (t == 0xc6) *n = (size_t)r_be(r, 4);
    else {
        r->err = 1;
        *n = 0;
        return NULL;
    }
    return r_span(r, *n);
}

/* Skip one value of any type (bounded nesting). */
static void r_skip(rbuf *r, int depth) {
    uint8_t t;
    uint64_t n = 0, i;
    int pairs = 0;
    if (depth > 16) {
        r->err = 1;
        return;
    }
    t = r_tag(r);
    if (r->err) return;
    if (t < 0x80 || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return;
    if ((t & 0xe0) == 0xa0) {
        r_span(r, t & 0x1f);
        return;
    }
    if ((t & 0xf0) == 0x90) n = t & 0x0f;
    else if ((t & 0xf0) == 0x80) {
        n = t & 0x0f;
        pairs = 1;
    } else {
        switch (t) {
        case 0xcc: case 0xd0: r_span(r, 1); return;
        case 0xcd: case 0xd1: r_span(r, 2); return;
        case 0xce: case 0xd2: case 0xca: r_span(r, 4); return;
        case 0xcf: case 0xd3: case 0xcb: r_span(r, 8); return;
        case 0xc4: case 0xd9: r_span(r, (size_t)r_be(r, 1)); return;
        case 0xc5: case 0xda: r_span(r, (size_t)r_be(r, 2)); return;
        case 0xc6: case 0xdb: r_span(r, (size_t)r_be(r, 4)); return;
        case 0xd4: r_span(r, 2); return;
        case 0xd5: r_span(r, 3); return;
        case 0xd6: r_span(r, 5); return;
        case 0xd7: r_span(r, 9); return;
        case 0xd8: r_span(r, 17); return;
        case 0xc7: r_span(r, (size_t)r_be(r, 1) + 1); return;
        case 0xc8: r_span(r, (size_t)r_be(r, 2) + 1); return;
        case 0xc9: r_span(r, (size_t)r_be(r, 4) + 1); return;
        case 0xdc: n = r_be(r, 2); break;
        case 0xdd: n = r_be(r, 4); break;
        case 0xde: n = r_be(r, 2); pairs = 1; break;
        case 0xdf: n = r_be(r, 4); pairs = 1; break;
        default: r->err = 1; return;
        }
    }
    if (pairs) n *= 2;
    /* Every element takes at least one byte: a count beyond what is left
     * is invalid (and bounds the loop). */
    if (n > r->len - r->pos) {
        r->err = 1;
        return;
    }
    for (i = 0; i < n && !r->err; i++) r_skip(r, depth + 1);
}

/* Skip the `left` remaining elements of an array (forward compatibility). */
static void r_rest(rbuf *r, uint32_t left) {
    uint32_t i;
    for (i = 0; i < left && !r->err; i++) r_skip(r, 0);
}

/* Whether `t` (OM_TRACE_LEN bytes) has a non-zero trace-id and parent-id. */
static int trace_valid(const uint8_t *t) {
    int i, id = 0, parent = 0;
    for (i = 0; i < 16; i++) id |= t[i];
    for (i = 16; i < 24; i++) parent |= t[i];
    return id && parent;
}

/* The optional trace element (PROTOCOL.md 4.2): a bin of OM_TRACE_LEN
 * bytes with non-zero ids, else NULL. Any other value is skipped and
 * `*ignored` set: it never fails the message. */
static const uint8_t *r_trace(rbuf *r, int *ignored) {
    const uint8_t *t;
    size_t n;
    uint8_t tag;
    if (!r_have(r, 1)) return NULL;
    tag = r->p[r->pos];
    if (tag != 0xc4 && tag != 0xc5 && tag != 0xc6) {
        r_skip(r, 0);
        *ignored = 1;
        return NULL;
    }
    t = r_bin(r, &n);
    if (r->err) return NULL;
    if (n != OM_TRACE_LEN || !trace_valid(t)) {
        *ignored = 1;
        return NULL;
    }
    return t;
}

/* --------------------------------------------------------------- framing */

/* Write `packet` framed: COBS(packet || crc32_le) 0x00. Streams through the
 * node's small output buffer. */
static void frame_out(om_node *n, const uint8_t *packet, size_t len) {
    uint8_t crc[4];
    uint32_t c = om_crc32(packet, len);
    size_t total = len + 4, i = 0, o = 0;
    size_t cap = sizeof n->out;
    crc[0] = (uint8_t)c;
    crc[1] = (uint8_t)(c >> 8);
    crc[2] = (uint8_t)(c >> 16);
    crc[3] = (uint8_t)(c >> 24);
#define RAW(k) ((k) < len ? packet[k] : crc[(k)-len])
    while (i <= total) {
        /* One COBS block: up to 254 non-zero bytes, then a code byte. */
        size_t j = i, k;
        while (j < total && RAW(j) != 0 && j - i < 254) j++;
        if (o + 1 + (j - i) > cap) {
            n->write(n->ctx, n->out, o);
            o = 0;
        }
        n->out[o++] = (uint8_t)(j - i + 1);
        for (k = i; k < j; k++) n->out[o++] = RAW(k);
        if (j - i == 254) {
            i = j; /* a full block: no implied zero */
            if (i == total) break;
        } else {
            i = j + 1; /* skip the zero (or the virtual one at the end) */
        }
    }
#undef RAW
    if (o + 1 > cap) {
        n->write(n->ctx, n->out, o);
        o = 0;
    }
    n->out[o++] = 0;
    n->write(n->ctx, n->out, o);
    n->stats.frames_sent++;
    n->last_sent = n->now;
}

static void handle_packet(om_node *n, const uint8_t *p, size_t len);

/* A complete run (without its 0x00): decode COBS, check the CRC. */
static void frame_in(om_node *n) {
    size_t i = 0, o = 0;
    uint32_t crc;
    while (i < n->run_len) {
        uint8_t code = n->run[i++];
        size_t k;
        if (code == 0 || i + (size_t)(code - 1) > n->run_len) {
            n->stats.framing_failures++;
            return;
        }
        for (k = 1; k < code; k++) {
            if (o >= sizeof n->raw) {
                n->stats.framing_failures++;
                return;
            }
            n->raw[o++] = n->run[i++];
        }
        if (code < 0xFF && i < n->run_len) {
            if (o >= sizeof n->raw) {
                n->stats.framing_failures++;
                return;
            }
            n->raw[o++] = 0;
        }
    }
    if (o < 4) {
        n->stats.framing_failures++;
        return;
    }
    o -= 4;
    crc = (uint32_t)n->raw[o] | ((uint32_t)n->raw[o + 1] << 8) | ((uint32_t)n->raw[o + 2] << 16) |
          ((uint32_t)n->raw[o + 3] << 24);
    if (om_crc32(n->raw, o) != crc) {
        n->stats.crc_failures++;
        return;
    }
    n->stats.frames_received++;
    handle_packet(n, n->raw, o);
}

/* --------------------------------------------------------------- session */

static uint64_t next_random(om_node *n) {
    /* splitmix64 */
    uint64_t z = (n->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int due(const om_node *n, uint32_t at) { return (int32_t)(n->now - at) >= 0; }

static void send_hello(om_node *n) {
    wbuf w = {n->scratch, 0, sizeof n->scratch, 0};
    w_array(&w, 10);
    w_uint(&w, P_HELLO);
    w_uint(&w, MAGIC);
    w_uint(&w, VERSION);
    w_bin(&w, n->node_id, 16);
    w_uint(&w, 0);
    w_uint(&w, n->session_id);
    w_byte(&w, 0xc0);
    w_uint(&w, OM_MAX_PACKET);
    w_uint(&w, 1); /* recv_window: in-order packets only */
    w_uint(&w, 1); /* pipe_window: we accept no pipes */
    frame_out(n, w.p, w.len);
}

static void send_small(om_node *n, uint8_t type, uint64_t v) {
    uint8_t b[12];
    wbuf w = {b, 0, sizeof b, 0};
    w_array(&w, 2);
    w_uint(&w, type);
    w_uint(&w, v);
    frame_out(n, w.p, w.len);
}

static void send_close(om_node *n, uint8_t code, const char *why) {
    uint8_t b[64];
    wbuf w = {b, 0, sizeof b, 0};
    w_array(&w, 3);
    w_uint(&w, P_CLOSE);
    w_uint(&w, code);
    w_str(&w, why, strlen(why));
    frame_out(n, w.p, w.len);
}

static void arm_rto(om_node *n) {
    n->rto_armed = 1;
    n->rto_at = n->now + n->rto;
}

static void send_slot(om_node *n, const om_slot *s) {
    wbuf w = {n->scratch, 0, sizeof n->scratch, 0};
    w_array(&w, 4);
    w_uint(&w, P_DATA);
    w_uint(&w, s->seq);
    w_uint(&w, n->next_expect - 1);
    w_raw(&w, s->msg, s->len);
    if (w.err) return; /* cannot happen: slots are checked when queued */
    frame_out(n, w.p, w.len);
    n->ack_due = 0;
}

/* Send queued messages the peer's window allows. */
static void pump(om_node *n) {
    uint32_t window = n->peer_window < OM_TX_SLOTS ? n->peer_window : OM_TX_SLOTS;
    if (n->state != 1) return;
    while (n->n_sent < n->n_slots && n->n_sent < window) {
        om_slot *s = &n->slots[n->n_sent++];
        s->seq = n->next_seq++;
        send_slot(n, s);
        if (!n->rto_armed) arm_rto(n);
    }
    if (n->ack_due) {
        send_small(n, P_ACK, n->next_expect - 1);
        n->ack_due = 0;
    }
}

static void start_session(om_node *n) {
    n->state = 0;
    n->hello_confirmed = 0;
    n->session_id = next_random(n);
    n->peer_session = 0;
    n->next_seq = 1;
    n->next_expect = 1;
    n->next_call = 1;
    n->ack_due = 0;
    n->n_slots = 0;
    n->n_sent = 0;
    n->rto = OM_RTO_MS;
    n->last_recv = n->now;
    send_hello(n);
    arm_rto(n);
}

/* End the session (sending Close with `code` if code >= 0) and start anew. */
static void restart(om_node *n, int code, const char *why) {
    int was_open = n->state == 1;
    if (code >= 0) send_close(n, (uint8_t)code, why);
    if (was_open && n->on_link) n->on_link(n->ctx, 0);
    start_session(n);
}

/* Queue a message built by `w` (already in slot memory). */
static om_slot *free_slot(om_node *n) {
    if (n->n_slots >= OM_TX_SLOTS) return NULL;
    return &n->slots[n->n_slots];
}

static size_t max_message(const om_node *n) {
    /* Data header: fixarray + type + seq (<= 9) + ack (<= 9). */
    uint32_t peer = n->peer_max_frame < OM_MAX_PACKET ? n->peer_max_frame : OM_MAX_PACKET;
    return peer > 20 ? peer - 20 : 0;
}

static om_result queue(om_node *n, om_slot *s, const wbuf *w) {
    if (w->err || w->len > max_message(n)) return OM_TOO_BIG;
    s->len = (uint16_t)w->len;
    n->n_slots++;
    return OM_OK;
}

static void announce_all(om_node *n) {
    uint8_t i;
    for (i = 0; i < n->n_servers; i++) {
        om_slot *s = free_slot(n);
        const char *name = n->servers[i].name;
        wbuf w;
        if (!s) return; /* OM_TX_SLOTS >= OM_MAX_SERVERS is checked at build */
        w.p = s->msg;
        w.len = 0;
        w.cap = sizeof s->msg;
        w.err = 0;
        /* [16, entry_id, name, [accepts, produces, features, metadata], group] */
        w_array(&w, 5);
        w_uint(&w, M_ANNOUNCE);
        w_uint(&w, (uint64_t)i + 1);
        w_str(&w, name, strlen(name));
        w_array(&w, 4);
        w_array(&w, 0);
        w_array(&w, 0);
        w_array(&w, 0);
        w_byte(&w, 0x80);
        w_byte(&w, 0xc2);
        (void)queue(n, s, &w);
    }
}

static const om_server *find_server(const om_node *n, const uint8_t *name, size_t len) {
    uint8_t i;
    for (i = 0; i < n->n_servers; i++) {
        const char *s = n->servers[i].name;
        if (strlen(s) == len && memcmp(s, name, len) == 0) return &n->servers[i];
    }
    return NULL;
}

/* One message of an in-order Data packet. Returns 0 if it was handled, 1
 * if it needs a send slot that is not free (the packet is then dropped
 * unacknowledged, and the peer sends it again), -1 if undecodable. */
static int handle_message(om_node *n, rbuf *r, int dry_run) {
    uint32_t count = r_array(r);
    uint64_t type, id;
    const uint8_t *to, *payload, *trace = NULL;
    size_t to_len, len;
    int ignored = 0;
    if (r->err || count < 1) return -1;
    type = r_uint(r);
    switch (type) {
    case M_CAST:
        if (count < 3) return -1;
        to = r_str(r, &to_len);
        payload = r_bin(r, &len);
        if (count > 3) trace = r_trace(r, &ignored);
        r_rest(r, count > 4 ? count - 4 : 0);
        if (r->err) return -1;
        if (!dry_run) {
            const om_server *s = find_server(n, to, to_len);
            if (ignored) n->stats.traces_ignored++;
            if (s && s->cast) {
                n->in_handler = 1;
                n->trace = trace;
                s->cast(s->ctx, payload, len);
                n->trace = NULL;
                n->in_handler = 0;
            }
        }
        return 0;
    case M_CALL: {
        const om_server *s;
        om_slot *slot;
        wbuf w;
        size_t reply_len = 0;
        int kind;
        if (count < 4) return -1;
        id = r_uint(r);
        to = r_str(r, &to_len);
        payload = r_bin(r, &len);
        if (count > 4) trace = r_trace(r, &ignored);
        r_rest(r, count > 5 ? count - 5 : 0);
        if (r->err) return -1;
        slot = free_slot(n);
        if (!slot) return 1;
        if (dry_run) return 0;
        if (ignored) n->stats.traces_ignored++;
        s = find_server(n, to, to_len);
        w.p = slot->msg;
        w.len = 0;
        w.cap = sizeof slot->msg;
        w.err = 0;
        if (!s || !s->call) {
            w_array(&w, 4);
            w_uint(&w, M_REPLY_ERR);
            w_uint(&w, id);
            w_uint(&w, OM_ERR_NOT_FOUND);
            w_str(&w, "no such server", 14);
        } else {
            /* Room for [34, id, bin16 header]: 1 + 1 + 9 + 3. */
            size_t room = max_message(n) > 14 ? max_message(n) - 14 : 0;
            n->in_handler = 1;
            n->trace = trace;
            kind = s->call(s->ctx, payload, len, n->scratch, room, &reply_len);
            n->trace = NULL;
            n->in_handler = 0;
            if (kind == 0 && reply_len <= room) {
                w_array(&w, 3);
                w_uint(&w, M_REPLY_OK);
                w_uint(&w, id);
                w_bin(&w, n->scratch, reply_len);
            } else {
                w_array(&w, 4);
                w_uint(&w, M_REPLY_ERR);
                w_uint(&w, id);
                w_uint(&w, kind == 0 ? OM_ERR_FAILED : (uint64_t)(kind & 0xFF));
                w_str(&w, kind == 0 ? "reply too big" : "failed", kind == 0 ? 13 : 6);
            }
        }
        (void)queue(n, slot, &w);
        return 0;
    }
    case M_REPLY_OK:
    case M_REPLY_ERR: {
        uint64_t kind = 0;
        if (count < (type == M_REPLY_OK ? 3u : 4u)) return -1;
        id = r_uint(r);
        if (type == M_REPLY_OK) {
            payload = r_bin(r, &len);
        } else {
            kind = r_uint(r);
            payload = r_str(r, &len);
            if (kind > 255) r->err = 1;
        }
        r_rest(r, count - (type == M_REPLY_OK ? 3u : 4u));
        if (r->err) return -1;
        if (id == 0 || id >= n->next_call) return -2; /* a reply for a call never made */
        if (!dry_run && n->on_reply) n->on_reply(n->ctx, id, (int)kind, payload, len);
        return 0;
    }
    case M_PIPE_OPEN: {
        om_slot *slot;
        wbuf w;
        if (count < 4) return -1;
        id = r_uint(r);
        r_str(r, &len);
        r_str(r, &len);
        r_rest(r, count - 4);
        if (r->err) return -1;
        slot = free_slot(n);
        if (!slot) return 1;
        if (dry_run) return 0;
        w.p = slot->msg;
        w.len = 0;
        w.cap = sizeof slot->msg;
        w.err = 0;
        /* [51, id as we number it (the peer's pipe: odd), [1, text]] */
        w_array(&w, 3);
        w_uint(&w, M_PIPE_CLOSE);
        w_uint(&w, id ^ 1u);
        w_array(&w, 2);
        w_uint(&w, 1);
        w_str(&w, "this node has no pipes", 22);
        (void)queue(n, slot, &w);
        return 0;
    }
    case M_ANNOUNCE:
    case M_WITHDRAW:
    case M_PIPE_DATA:
    case M_PIPE_CREDIT:
    case M_PIPE_CLOSE:
    case M_PIPE_END:
        /* Registry news and messages for pipes we refused: not used. */
        r_rest(r, count - 1);
        return r->err ? -1 : 0;
    default:
        return -1;
    }
}

/* The peer acknowledged everything up to `ack`. */
static int take_ack(om_node *n, uint64_t ack) {
    uint8_t done = 0, i;
    if (ack >= n->next_seq) return -1;
    while (done < n->n_sent && n->slots[done].seq <= ack) done++;
    if (!done) return 0;
    for (i = done; i < n->n_slots; i++) n->slots[i - done] = n->slots[i];
    n->n_slots = (uint8_t)(n->n_slots - done);
    n->n_sent = (uint8_t)(n->n_sent - done);
    n->rto = OM_RTO_MS;
    n->rto_armed = 0;
    if (n->n_sent) arm_rto(n);
    return 0;
}

static void handle_hello(om_node *n, rbuf *r, uint32_t count) {
    uint64_t magic, version, session;
    const uint8_t *id;
    size_t id_len, auth_len;
    uint32_t max_frame, window, pipe_window;
    if (count < 3) {
        restart(n, C_DECODE, "bad hello");
        return;
    }
    magic = r_uint(r);
    version = r_uint(r);
    if (r->err) {
        restart(n, C_DECODE, "bad hello");
        return;
    }
    if (magic != MAGIC) {
        restart(n, C_BAD_MAGIC, "bad magic");
        return;
    }
    if (version != VERSION) {
        restart(n, C_VERSION, "version 1 only");
        return;
    }
    if (count < 10) {
        restart(n, C_DECODE, "bad hello");
        return;
    }
    id = r_bin(r, &id_len);
    (void)r_uint(r); /* features */
    session = r_uint(r);
    if (!r->err && r->pos < r->len && r->p[r->pos] == 0xc0) r->pos++;
    else r_bin(r, &auth_len); /* auth: bin, ignored */
    max_frame = r_u32(r);
    window = r_u32(r);
    pipe_window = r_u32(r);
    r_rest(r, count - 10);
    if (r->err || r->pos != r->len || id_len != 16) {
        restart(n, C_DECODE, "bad hello");
        return;
    }
    if (max_frame < 128 || window == 0 || pipe_window == 0) {
        restart(n, C_PROTOCOL, "limits too small");
        return;
    }
    if (n->state == 1) {
        if (session == n->peer_session && memcmp(id, n->peer_id, 16) == 0) {
            send_small(n, P_HELLO_ACK, session); /* our HelloAck was lost */
            return;
        }
        /* A new session while open. PROTOCOL.md 6 says: close (code 1). On
         * a point-to-point line this only happens when the peer restarted
         * (its software, or it reopened the port), and a Close would end
         * its new session too; so a device takes it as the end of the old
         * session and joins the new one at once. */
        if (n->on_link) n->on_link(n->ctx, 0);
        start_session(n); /* sends our new Hello */
    } else if (!n->hello_confirmed) {
        send_hello(n); /* the peer may have just started */
    }
    memcpy(n->peer_id, id, 16);
    n->peer_session = session;
    n->peer_max_frame = max_frame;
    n->peer_window = window;
    n->state = 1;
    n->stats.sessions++;
    send_small(n, P_HELLO_ACK, session);
    announce_all(n);
    if (n->on_link) n->on_link(n->ctx, 1);
}

static void handle_data(om_node *n, rbuf *r, uint32_t count) {
    uint64_t seq, ack;
    size_t start;
    int res;
    if (count < 4) {
        restart(n, C_DECODE, "bad data");
        return;
    }
    seq = r_uint(r);
    ack = r_uint(r);
    if (r->err) {
        restart(n, C_DECODE, "bad data");
        return;
    }
    if (n->state != 1) {
        n->stats.dropped++; /* before the peer's Hello: it will re-send */
        return;
    }
    /* Any Data proves the peer has our Hello. */
    if (!n->hello_confirmed) {
        n->hello_confirmed = 1;
        if (!n->n_sent) n->rto_armed = 0;
    }
    if (take_ack(n, ack) < 0) {
        restart(n, C_PROTOCOL, "ack for an unsent packet");
        return;
    }
    start = r->pos;
    /* Check the whole packet decodes before acting on it. */
    res = handle_message(n, r, 1);
    r_rest(r, count - 4);
    if (res == -1 || r->err || r->pos != r->len) {
        restart(n, C_DECODE, "undecodable data");
        return;
    }
    if (res == -2) {
        restart(n, C_PROTOCOL, "reply for an unused call id");
        return;
    }
    if (seq != n->next_expect) {
        /* A duplicate, or ahead of a gap (we buffer nothing): ack at once. */
        n->stats.dropped++;
        n->ack_due = 1;
        return;
    }
    if (res == 1) {
        n->stats.dropped++; /* no slot for the answer: let it come again */
        return;
    }
    r->pos = start;
    r->err = 0;
    (void)handle_message(n, r, 0);
    n->next_expect++;
    n->ack_due = 1;
}

static void handle_packet(om_node *n, const uint8_t *p, size_t len) {
    rbuf r = {p, len, 0, 0};
    uint32_t count = r_array(&r);
    uint64_t type;
    if (r.err || count < 1) goto bad;
    type = r_uint(&r);
    if (r.err) goto bad;
    n->last_recv = n->now;
    switch (type) {
    case P_HELLO:
        handle_hello(n, &r, count);
        return;
    case P_HELLO_ACK: {
        uint64_t s = r_uint(&r);
        r_rest(&r, count - 2);
        if (count < 2 || r.err || r.pos != r.len) goto bad;
        if (s == n->session_id && !n->hello_confirmed) {
            n->hello_confirmed = 1;
            if (!n->n_sent) n->rto_armed = 0;
        }
        return;
    }
    case P_DATA:
        handle_data(n, &r, count);
        return;
    case P_ACK: {
        uint64_t a = r_uint(&r);
        r_rest(&r, count - 2);
        if (count < 2 || r.err || r.pos != r.len) goto bad;
        if (n->state == 1 && take_ack(n, a) < 0) restart(n, C_PROTOCOL, "ack for an unsent packet");
        return;
    }
    case P_PING:
        r_rest(&r, count - 1);
        if (r.err || r.pos != r.len) goto bad;
        if (n->state == 1) n->ack_due = 1;
        return;
    case P_CLOSE:
        /* The peer ended the session: start a new one, say nothing. */
        restart(n, -1, "");
        return;
    default:
        break;
    }
bad:
    n->stats.decode_failures++;
    restart(n, C_DECODE, "undecodable packet");
}

/* ------------------------------------------------------------------ API */

void om_init(om_node *n, const uint8_t node_id[16], uint64_t seed, om_write_fn write,
             om_reply_fn on_reply, om_link_fn on_link, void *ctx, uint32_t now_ms) {
    memset(n, 0, sizeof *n);
    memcpy(n->node_id, node_id, 16);
    n->rng = seed;
    n->write = write;
    n->on_reply = on_reply;
    n->on_link = on_link;
    n->ctx = ctx;
    n->now = now_ms;
    n->last_sent = now_ms;
    n->state = 2; /* not started: the first om_input/om_tick sends Hello */
}

om_result om_add_server(om_node *n, const char *name, om_call_fn call, om_cast_fn cast,
                        void *ctx) {
    om_server *s;
    if (n->n_servers >= OM_MAX_SERVERS || n->n_servers >= OM_TX_SLOTS) return OM_FULL;
    if (strlen(name) + 16 > OM_MAX_PACKET - 20) return OM_TOO_BIG;
    s = &n->servers[n->n_servers++];
    s->name = name;
    s->call = call;
    s->cast = cast;
    s->ctx = ctx;
    return OM_OK;
}

static void begin(om_node *n, uint32_t now) {
    n->now = now;
    if (n->state == 2) start_session(n);
}

void om_input(om_node *n, const uint8_t *data, size_t len, uint32_t now_ms) {
    size_t i;
    begin(n, now_ms);
    for (i = 0; i < len; i++) {
        uint8_t b = data[i];
        if (b == 0) {
            if (!n->skipping && n->run_len) frame_in(n);
            n->skipping = 0;
            n->run_len = 0;
        } else if (!n->skipping) {
            if (n->run_len >= sizeof n->run) {
                n->stats.framing_failures++;
                n->skipping = 1;
                n->run_len = 0;
            } else {
                n->run[n->run_len++] = b;
            }
        }
    }
    pump(n);
}

void om_tick(om_node *n, uint32_t now_ms) {
    begin(n, now_ms);
    if (due(n, n->last_recv + OM_IDLE_MS)) {
        restart(n, n->state == 1 ? C_IDLE : -1, "idle");
        return;
    }
    if (n->rto_armed && due(n, n->rto_at)) {
        uint8_t i;
        if (!n->hello_confirmed) {
            send_hello(n);
            n->stats.retransmissions++;
        }
        if (n->state == 1) {
            for (i = 0; i < n->n_sent; i++) {
                send_slot(n, &n->slots[i]);
                n->stats.retransmissions++;
            }
        }
        n->rto = n->rto * 2 > OM_MAX_RTO_MS ? OM_MAX_RTO_MS : n->rto * 2;
        n->rto_armed = 0;
        if (!n->hello_confirmed || n->n_sent) arm_rto(n);
    }
    if (n->state == 1 && due(n, n->last_sent + OM_KEEPALIVE_MS)) {
        uint8_t b[2] = {0x91, P_PING};
        frame_out(n, b, 2);
    }
    pump(n);
}

int om_connected(const om_node *n) { return n->state == 1; }

static om_result send_message(om_node *n, uint8_t type, uint64_t id, const char *to,
                              const uint8_t *payload, size_t len, const uint8_t *trace) {
    om_slot *s;
    wbuf w;
    if (trace && !trace_valid(trace)) return OM_BAD_TRACE;
    if (n->state != 1) return OM_NOT_CONNECTED;
    if (n->in_handler) return OM_BUSY; /* handlers must not send: see the header */
    s = free_slot(n);
    if (!s) return OM_BUSY;
    w.p = s->msg;
    w.len = 0;
    w.cap = sizeof s->msg;
    w.err = 0;
    w_array(&w, (uint8_t)((type == M_CALL ? 4 : 3) + (trace ? 1 : 0)));
    w_uint(&w, type);
    if (type == M_CALL) w_uint(&w, id);
    w_str(&w, to, strlen(to));
    w_bin(&w, payload, len);
    if (trace) w_bin(&w, trace, OM_TRACE_LEN);
    if (queue(n, s, &w) != OM_OK) return OM_TOO_BIG;
    pump(n);
    return OM_OK;
}

om_result om_cast(om_node *n, const char *to, const uint8_t *payload, size_t len) {
    return send_message(n, M_CAST, 0, to, payload, len, NULL);
}

om_result om_cast_traced(om_node *n, const char *to, const uint8_t *payload, size_t len,
                         const uint8_t *trace) {
    return send_message(n, M_CAST, 0, to, payload, len, trace);
}

om_result om_call_traced(om_node *n, const char *to, const uint8_t *payload, size_t len,
                         const uint8_t *trace, uint64_t *call_id) {
    om_result res = send_message(n, M_CALL, n->next_call, to, payload, len, trace);
    if (res == OM_OK) {
        if (call_id) *call_id = n->next_call;
        n->next_call++;
    }
    return res;
}

om_result om_call(om_node *n, const char *to, const uint8_t *payload, size_t len,
                  uint64_t *call_id) {
    return om_call_traced(n, to, payload, len, NULL, call_id);
}

const uint8_t *om_trace(const om_node *n) { return n->trace; }

const om_stats *om_get_stats(const om_node *n) { return &n->stats; }
