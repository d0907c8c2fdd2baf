/* Links and routes seen from C: three nodes of one process in a chain,
 * a -- b over a Unix socket and b -- c over TCP (real sockets). a lists its
 * link (peer, addresses, counters), sees the counters move after a call,
 * lists its routes (c's server through b, cost 2; b's own server, cost 1),
 * gets OSCLOUD_ERR_INVALID and the count for too small an array, closes
 * the link and sees it, and the routes through it, go; reads each link's
 * health (round trip measured, nothing stalled). Ends by itself
 * within seconds; waits poll with a deadline. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <unistd.h>

#include "common_server.h"

/* The number of links (or routes) of `node` now; (size_t)-1 on error. */
static size_t link_count(const oscloud_node_t *node) {
  oscloud_link_t links[4];
  size_t n = 0;
  return oscloud_node_links(node, links, 4, &n) == OSCLOUD_OK ? n : (size_t)-1;
}

static size_t route_count(const oscloud_node_t *node) {
  oscloud_route_t routes[4];
  size_t n = 0;
  return oscloud_node_routes(node, routes, 4, &n) == OSCLOUD_OK ? n : (size_t)-1;
}

/* Whether a's first link now shows the call `before` was taken ahead of
 * (its counters show it by the time the call returns). */
static bool counters_moved(const oscloud_node_t *node,
                           const oscloud_link_t *before, oscloud_link_t *now) {
  size_t n = 0;
  if (oscloud_node_links(node, now, 1, &n) != OSCLOUD_OK || n != 1) return false;
  return now->stats.frames_sent > before->stats.frames_sent &&
         now->stats.bytes_sent > before->stats.bytes_sent &&
         now->stats.bytes_received > before->stats.bytes_received &&
         now->stats.payload_bytes_sent >= before->stats.payload_bytes_sent + 10 &&
         now->stats.payload_bytes_received >=
             before->stats.payload_bytes_received + 10;
}

/* Whether `node` has `want` links, each up with its peer known (both
 * sides mark a link up before they share or learn servers over it). */
static bool links_up(const oscloud_node_t *node, size_t want) {
  oscloud_link_t links[4];
  size_t n = 0;
  if (oscloud_node_links(node, links, 4, &n) != OSCLOUD_OK || n != want) return false;
  for (size_t i = 0; i < n; i++)
    if (!links[i].connected || links[i].peer[0] == '\0') return false;
  return true;
}

/* The health of `node`'s link `id` into `*h`; false if there is no such
 * link. */
static bool health(const oscloud_node_t *node, uint64_t id, oscloud_link_health_t *h) {
  return oscloud_node_link_health(node, id, h, sizeof *h) == OSCLOUD_OK;
}

/* Whether `node`'s link `id` measured its round trip (each node probes
 * its links as soon as they are up). */
static bool rtt_measured(const oscloud_node_t *node, uint64_t id) {
  oscloud_link_health_t h;
  return health(node, id, &h) && h.rtt_us > 0;
}

/* The plausible health of an up link over a local socket, after traffic. */
static void check_health(const oscloud_link_health_t *h, uint64_t id) {
  CHECK(h->id == id);
  /* A probe's round trip on a local socket: at least 1 µs, under 5 s. */
  CHECK(h->rtt_us > 0 && h->rtt_us < 5000000);
  CHECK(h->probe_rtt.count >= 1 && h->probe_rtt.sum_us > 0);
  uint64_t sum = 0;
  for (size_t i = 0; i < OSCLOUD_RTT_BUCKETS; i++) sum += h->probe_rtt.buckets[i];
  CHECK(sum == h->probe_rtt.count);
  CHECK(h->probe_rtt.buckets[OSCLOUD_RTT_BUCKETS - 1] == 0);
  CHECK(h->probe_rtt.bounds_ns[0] == 25000);
  CHECK(h->probe_rtt.bounds_ns[OSCLOUD_RTT_BOUNDS - 1] == 5000000000ULL);
  /* Reliable streams time nothing themselves. */
  CHECK(h->session_rtt.count == 0 && h->session_rtt.sum_us == 0);
  CHECK(h->session_rtt.bounds_ns[0] == 25000);
  /* No pipes: nothing waited for credit. */
  CHECK(h->credit_stalls == 0);
  CHECK(!h->closed && !h->close_remote && h->close_code == 0);
  CHECK(h->close_message[0] == '\0');
}

int main(void) {
  char dir[] = "/tmp/osc-c-links.XXXXXX";
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  char sock[128], uri[160];
  snprintf(sock, sizeof sock, "%s/b.sock", dir);
  snprintf(uri, sizeof uri, "unix://%s", sock);

  oscloud_node_t *a = NULL, *b = NULL, *c = NULL;
  CHECK_RC(oscloud_node_new(NULL, &a), OSCLOUD_OK);
  CHECK_RC(oscloud_node_new(NULL, &b), OSCLOUD_OK);
  CHECK_RC(oscloud_node_new(NULL, &c), OSCLOUD_OK);
  char a_id[OSCLOUD_NODE_ID_SIZE], b_id[OSCLOUD_NODE_ID_SIZE],
      c_id[OSCLOUD_NODE_ID_SIZE];
  CHECK_RC(oscloud_node_id(a, a_id, sizeof a_id), OSCLOUD_OK);
  CHECK_RC(oscloud_node_id(b, b_id, sizeof b_id), OSCLOUD_OK);
  CHECK_RC(oscloud_node_id(c, c_id, sizeof c_id), OSCLOUD_OK);

  /* No links yet: counting with NULL, 0 is fine. */
  size_t n = 99;
  CHECK_RC(oscloud_node_links(a, NULL, 0, &n), OSCLOUD_OK);
  CHECK(n == 0);
  CHECK_RC(oscloud_node_routes(a, NULL, 0, &n), OSCLOUD_OK);
  CHECK(n == 0);
  CHECK_RC(oscloud_node_links(a, NULL, 0, NULL), OSCLOUD_ERR_NULL);
  CHECK_RC(oscloud_node_links(NULL, NULL, 0, &n), OSCLOUD_ERR_NULL);
  CHECK_RC(oscloud_node_routes(a, NULL, 1, &n), OSCLOUD_ERR_NULL);
  CHECK_RC(oscloud_node_close_link(a, 1), OSCLOUD_ERR_NOT_FOUND);

  /* The servers: "upper" on c (two hops from a), "near" on b. */
  upper_state far_st = {0}, near_st = {0};
  oscloud_server_callbacks_t far_cb = upper_callbacks(&far_st);
  oscloud_server_callbacks_t near_cb = upper_callbacks(&near_st);
  oscloud_server_t *far = NULL, *near = NULL;
  CHECK_RC(oscloud_server_register(c, "upper", &far_cb, &far), OSCLOUD_OK);
  CHECK_RC(oscloud_server_register(b, "near", &near_cb, &near), OSCLOUD_OK);

  /* The chain: a -> b over a Unix socket, b -> c over TCP. */
  char b_at[256], c_at[256];
  CHECK_RC(oscloud_node_listen(b, uri, b_at, sizeof b_at), OSCLOUD_OK);
  CHECK_RC(oscloud_node_listen(c, "tcp://127.0.0.1:0", c_at, sizeof c_at),
           OSCLOUD_OK);
  CHECK_RC(oscloud_node_connect(b, c_at, 5000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_connect(a, b_at, 5000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(a, "upper", 5000), OSCLOUD_OK);
  CHECK_RC(oscloud_node_wait_for(a, "near", 5000), OSCLOUD_OK);

  /* a sees c's server through b: every link on the way shows it up. */
  CHECK(links_up(a, 1) && links_up(b, 2) && links_up(c, 1));

  /* a's one link: to b, dialled by a, up. */
  oscloud_link_t links[4];
  memset(links, 0xAB, sizeof links);
  CHECK_RC(oscloud_node_links(a, links, 0, &n), OSCLOUD_ERR_INVALID);
  CHECK(n == 1);
  CHECK(strstr(oscloud_last_error(), "room for 0 links") != NULL);
  CHECK_RC(oscloud_node_links(a, links, 4, &n), OSCLOUD_OK);
  CHECK(n == 1);
  oscloud_link_t before = links[0];
  CHECK(before.connected);
  CHECK(strcmp(before.peer, b_id) == 0);
  CHECK(strcmp(before.dialed, b_at) == 0);
  CHECK(strlen(before.remote) > 0 && strlen(before.remote) < OSCLOUD_ADDRESS_SIZE);
  CHECK(before.reconnects == 0);
  CHECK(before.stats.frames_sent > 0 && before.stats.bytes_received > 0);
  CHECK(before.stats.crc_failures == 0 && before.stats.auth_failures == 0);
  /* b sees two links: one accepted from a (no dialled address), one to c. */
  oscloud_link_t b_links[4];
  CHECK_RC(oscloud_node_links(b, b_links, 4, &n), OSCLOUD_OK);
  CHECK(n == 2);
  int from_a = 0, to_c = 0;
  for (size_t i = 0; i < n && i < 4; i++) {
    if (strcmp(b_links[i].peer, a_id) == 0 && b_links[i].dialed[0] == '\0') from_a++;
    if (strcmp(b_links[i].peer, c_id) == 0 && strcmp(b_links[i].dialed, c_at) == 0) to_c++;
  }
  CHECK(from_a == 1 && to_c == 1);

  /* A call through b to c moves a's counters. */
  char buf[256];
  CHECK_RC(call_str(a, "upper", "through b", 5000, buf, sizeof buf), OSCLOUD_OK);
  CHECK(strcmp(buf, "THROUGH B") == 0);
  oscloud_link_t after;
  CHECK(counters_moved(a, &before, &after));
  CHECK(after.id == before.id);
  printf("test_links: a's link %llu to b: %llu bytes sent, %llu received "
         "(%llu and %llu before the call)\n",
         (unsigned long long)after.id, (unsigned long long)after.stats.bytes_sent,
         (unsigned long long)after.stats.bytes_received,
         (unsigned long long)before.stats.bytes_sent,
         (unsigned long long)before.stats.bytes_received);

  /* a's link's health: its round trip measured, nothing stalled or
   * closed; the same on b's link from a. */
  WAIT_UNTIL(rtt_measured(a, after.id), 5000);
  oscloud_link_health_t h;
  memset(&h, 0xAB, sizeof h);
  CHECK(health(a, after.id, &h));
  check_health(&h, after.id);
  for (size_t i = 0; i < n && i < 4; i++) {
    if (strcmp(b_links[i].peer, a_id) != 0) continue;
    WAIT_UNTIL(rtt_measured(b, b_links[i].id), 5000);
    oscloud_link_health_t bh;
    CHECK(health(b, b_links[i].id, &bh));
    check_health(&bh, b_links[i].id);
  }
  printf("test_links: a's link to b: round trip %llu us, %llu probe(s)\n",
         (unsigned long long)h.rtt_us, (unsigned long long)h.probe_rtt.count);
  CHECK_RC(oscloud_node_link_health(a, after.id + 1000, &h, sizeof h),
           OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(oscloud_node_link_health(a, after.id, NULL, sizeof h), OSCLOUD_ERR_NULL);
  CHECK_RC(oscloud_node_link_health(NULL, after.id, &h, sizeof h), OSCLOUD_ERR_NULL);
  /* A caller with a shorter struct (an older header) gets its prefix
   * only: nothing past `size` is written. */
  memset(&h, 0xAB, sizeof h);
  CHECK_RC(oscloud_node_link_health(a, after.id, &h, sizeof h.id), OSCLOUD_OK);
  CHECK(h.id == after.id && h.rtt_us == 0xABABABABABABABABULL);

  /* a's routes: "near" on b (1 hop, cost 1), "upper" on c through b (2 hops,
   * cost 2), both over a's one link, both in use; sorted by name. */
  oscloud_route_t routes[4];
  CHECK_RC(oscloud_node_routes(a, routes, 4, &n), OSCLOUD_OK);
  CHECK(n == 2);
  if (n == 2) {
    CHECK(strcmp(routes[0].name, "near") == 0);
    CHECK(strcmp(routes[0].node, b_id) == 0 && strcmp(routes[0].via, b_id) == 0);
    CHECK(routes[0].hops == 1 && routes[0].cost == 1 && routes[0].best);
    CHECK(routes[0].link == after.id);
    CHECK(strcmp(routes[1].name, "upper") == 0);
    CHECK(strcmp(routes[1].node, c_id) == 0 && strcmp(routes[1].via, b_id) == 0);
    CHECK(routes[1].hops == 2 && routes[1].cost == 2 && routes[1].best);
    CHECK(routes[1].link == after.id);
  }
  /* Too small: the first route is written, the count is right. */
  oscloud_route_t one;
  CHECK_RC(oscloud_node_routes(a, &one, 1, &n), OSCLOUD_ERR_INVALID);
  CHECK(n == 2 && strcmp(one.name, "near") == 0);

  /* Close a's link: it is not dialled again; a's routes and b's link to a
   * go. */
  CHECK_RC(oscloud_node_close_link(a, after.id + 1000), OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(oscloud_node_close_link(a, after.id), OSCLOUD_OK);
  WAIT_UNTIL(link_count(a) == 0, 5000);
  CHECK(link_count(a) == 0);
  WAIT_UNTIL(route_count(a) == 0, 5000);
  CHECK(route_count(a) == 0);
  WAIT_UNTIL(link_count(b) == 1, 5000);
  CHECK(link_count(b) == 1);
  CHECK_RC(call_str(a, "upper", "gone", 500, NULL, 0), OSCLOUD_ERR_NOT_FOUND);
  CHECK_RC(oscloud_node_close_link(a, after.id), OSCLOUD_ERR_NOT_FOUND);
  /* b still reaches c. */
  CHECK_RC(call_str(b, "upper", "still", 5000, buf, sizeof buf), OSCLOUD_OK);

  oscloud_server_drop(&far);
  oscloud_server_drop(&near);
  oscloud_node_drop(&a);
  oscloud_node_drop(&b);
  oscloud_node_drop(&c);
  unlink(sock);
  rmdir(dir);
  if (check_failures) {
    fprintf(stderr, "test_links: %d check(s) failed\n", check_failures);
    return 1;
  }
  printf("test_links: all checks passed\n");
  return 0;
}
