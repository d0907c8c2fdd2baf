/*
 * A Linux host for oscloud_micro: the "microcontroller" runs as a process
 * whose UART is the master side of a pseudo-terminal. It prints
 * `tty /dev/pts/N` (the slave a Rust node opens as serial:///dev/pts/N),
 * then serves and obeys stdin. With an argument, it opens that device
 * instead (raw mode), e.g. one end of oscloud-serial-relay.
 *
 *
 *   servers:  "upper" (call: the payload in upper case; payload "fail"
 *             answers a Failed error), "count" (cast: counted)
 *   commands: "call SERVER TEXT"  -> prints "reply ID KIND TEXT" later
 *             "cast SERVER TEXT"  -> prints "cast-sent" or "error N"
 *             "tcall SERVER TRACEPARENT TEXT", "tcast SERVER TRACEPARENT TEXT":
 *                                    the same with a trace context (a W3C
 *                                    traceparent, version 00)
 *             "stats"             -> prints the counters
 *             "garbage N"         -> writes N random bytes to the line
 *   events:   "linked" / "unlinked", "cast-received COUNT TEXT", and
 *             "trace TRACEPARENT" before a call's or cast's handling when it
 *             carried a trace context
 *
 * End of stdin ends the program.
 */
#define _XOPEN_SOURCE 600
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../oscloud_micro.h"

static int master = -1;
static unsigned casts_received;

static uint32_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint32_t)((uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u);
}

static void line_write(void *ctx, const uint8_t *data, size_t len) {
    (void)ctx;
    while (len) {
        ssize_t n = write(master, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {master, POLLOUT, 0};
            if (poll(&p, 1, 50) > 0 && (p.revents & POLLHUP) && !(p.revents & POLLOUT)) return;
        } else {
            return; /* nobody at the other end: the bytes are lost */
        }
    }
}

static om_node node;

/* Prints "trace TRACEPARENT" when the message being handled carried one. */
static void print_trace(void) {
    const uint8_t *t = om_trace(&node);
    int i;
    if (!t) return;
    printf("trace 00-");
    for (i = 0; i < OM_TRACE_LEN; i++) printf(i == 16 || i == 24 ? "-%02x" : "%02x", t[i]);
    printf("\n");
}

/* The trace context of a version 00 traceparent; 0 if it is not one. */
static int parse_traceparent(const char *s, uint8_t t[OM_TRACE_LEN]) {
    int i, o = 0;
    if (strlen(s) != 55 || strncmp(s, "00-", 3) != 0 || s[35] != '-' || s[52] != '-') return 0;
    for (i = 3; i < 55 && o < OM_TRACE_LEN; i += 2) {
        unsigned v;
        if (s[i] == '-') i++;
        if (!isxdigit((unsigned char)s[i]) || !isxdigit((unsigned char)s[i + 1]) ||
            sscanf(s + i, "%2x", &v) != 1)
            return 0;
        t[o++] = (uint8_t)v;
    }
    return o == OM_TRACE_LEN;
}

static int upper(void *ctx, const uint8_t *req, size_t len, uint8_t *reply, size_t cap,
                 size_t *reply_len) {
    size_t i;
    (void)ctx;
    print_trace();
    if (len == 4 && memcmp(req, "fail", 4) == 0) return OM_ERR_FAILED;
    if (len > cap) return OM_ERR_FAILED;
    for (i = 0; i < len; i++) reply[i] = (uint8_t)toupper(req[i]);
    *reply_len = len;
    return 0;
}

static void count(void *ctx, const uint8_t *msg, size_t len) {
    (void)ctx;
    print_trace();
    casts_received++;
    printf("cast-received %u %.*s\n", casts_received, (int)len, (const char *)msg);
    fflush(stdout);
}

static void on_reply(void *ctx, uint64_t id, int kind, const uint8_t *payload, size_t len) {
    (void)ctx;
    printf("reply %llu %d %.*s\n", (unsigned long long)id, kind, (int)len, (const char *)payload);
    fflush(stdout);
}

static void on_link(void *ctx, int up) {
    (void)ctx;
    printf(up ? "linked\n" : "unlinked\n");
    fflush(stdout);
}

static void command(char *line) {
    char *verb = strtok(line, " \n");
    char *server = strtok(NULL, " \n");
    char *text = strtok(NULL, "\n");
    if (!verb) return;
    if (!text) text = "";
    if (strcmp(verb, "call") == 0 && server) {
        uint64_t id = 0;
        om_result r = om_call(&node, server, (const uint8_t *)text, strlen(text), &id);
        if (r == OM_OK) printf("call-sent %llu\n", (unsigned long long)id);
        else printf("error %d\n", (int)r);
    } else if (strcmp(verb, "cast") == 0 && server) {
        om_result r = om_cast(&node, server, (const uint8_t *)text, strlen(text));
        if (r == OM_OK) printf("cast-sent\n");
        else printf("error %d\n", (int)r);
    } else if ((strcmp(verb, "tcall") == 0 || strcmp(verb, "tcast") == 0) && server) {
        uint8_t trace[OM_TRACE_LEN];
        char *tp = strtok(text, " ");
        char *rest = strtok(NULL, "");
        om_result r;
        uint64_t id = 0;
        if (!rest) rest = "";
        if (!tp || !parse_traceparent(tp, trace)) {
            printf("error bad traceparent\n");
        } else if (verb[1] == 'c' && verb[2] == 'a' && verb[3] == 'l') {
            r = om_call_traced(&node, server, (const uint8_t *)rest, strlen(rest), trace, &id);
            if (r == OM_OK) printf("call-sent %llu\n", (unsigned long long)id);
            else printf("error %d\n", (int)r);
        } else {
            r = om_cast_traced(&node, server, (const uint8_t *)rest, strlen(rest), trace);
            if (r == OM_OK) printf("cast-sent\n");
            else printf("error %d\n", (int)r);
        }
    } else if (strcmp(verb, "stats") == 0) {
        const om_stats *s = om_get_stats(&node);
        printf("stats frames_sent=%lu frames_received=%lu crc_failures=%lu framing_failures=%lu "
               "decode_failures=%lu retransmissions=%lu dropped=%lu sessions=%lu traces_ignored=%lu\n",
               (unsigned long)s->frames_sent, (unsigned long)s->frames_received,
               (unsigned long)s->crc_failures, (unsigned long)s->framing_failures,
               (unsigned long)s->decode_failures, (unsigned long)s->retransmissions,
               (unsigned long)s->dropped, (unsigned long)s->sessions,
               (unsigned long)s->traces_ignored);
    } else if (strcmp(verb, "garbage") == 0 && server) {
        long n = strtol(server, NULL, 10);
        uint8_t buf[256];
        while (n > 0) {
            size_t k = n > 256 ? 256 : (size_t)n, i;
            for (i = 0; i < k; i++) buf[i] = (uint8_t)rand();
            line_write(NULL, buf, k);
            n -= (long)k;
        }
        printf("garbage-sent\n");
    } else {
        printf("error unknown command\n");
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    static const uint8_t id[16] = {0xc0, 0xde, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    struct termios t;
    char line[4096];
    size_t line_len = 0;
    if (argc > 1) {
        /* A given device (e.g. one end of a relay). */
        master = open(argv[1], O_RDWR | O_NOCTTY);
        if (master < 0) {
            perror(argv[1]);
            return 1;
        }
    } else {
        master = posix_openpt(O_RDWR | O_NOCTTY);
        if (master < 0 || grantpt(master) || unlockpt(master)) {
            perror("openpty");
            return 1;
        }
    }
    if (tcgetattr(master, &t) == 0) {
        /* cfmakeraw is not POSIX: the same by hand. */
        t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
        t.c_oflag &= ~(tcflag_t)OPOST;
        t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
        t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
        t.c_cflag |= CS8;
        tcsetattr(master, TCSANOW, &t);
    }
    fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
    srand((unsigned)now_ms());
    om_init(&node, id, ((uint64_t)now_ms() << 20) ^ (uint64_t)getpid(), line_write, on_reply,
            on_link, NULL, now_ms());
    om_add_server(&node, "upper", upper, NULL, NULL);
    om_add_server(&node, "count", NULL, count, NULL);
    printf("tty %s\n", argc > 1 ? argv[1] : ptsname(master));
    fflush(stdout);
    for (;;) {
        struct pollfd p[2] = {{master, POLLIN, 0}, {0, POLLIN, 0}};
        uint8_t buf[512];
        if (poll(p, 2, 5) < 0 && errno != EINTR) return 1;
        if (p[0].revents & POLLIN) {
            ssize_t n = read(master, buf, sizeof buf);
            if (n > 0) om_input(&node, buf, (size_t)n, now_ms());
        } else if (p[0].revents & POLLHUP) {
            /* Nobody holds the serial side open: wait for one. */
            struct timespec d = {0, 10000000};
            nanosleep(&d, NULL);
        }
        if (p[1].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
            size_t i, start = 0;
            if (n <= 0) break;
            line_len += (size_t)n;
            for (i = 0; i < line_len; i++) {
                if (line[i] == '\n') {
                    line[i] = 0;
                    command(line + start);
                    start = i + 1;
                }
            }
            memmove(line, line + start, line_len - start);
            line_len -= start;
            if (line_len == sizeof line - 1) line_len = 0;
        }
        om_tick(&node, now_ms());
    }
    return 0;
}
