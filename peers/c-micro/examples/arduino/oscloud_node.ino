// An Arduino board as an oscloud node over its USB serial port.
//
// It serves two named servers to the Rust node at the other end of the
// cable (serial:///dev/ttyACM0?baud=115200 on the host):
//   "led"     call: payload "on"/"off" switches LED_BUILTIN, answers the state
//   "analog"  call: answers analogRead(A0) as two bytes, big-endian
// and every 5 s it casts the uptime (4 bytes, big-endian) to the server
// "uptime" on the Rust node, and calls "clock" there, printing nothing (the
// UART belongs to the protocol).
//
// Build: copy oscloud_micro.h and oscloud_micro.c next to this sketch (the
// Arduino IDE compiles .c files of the sketch folder as C). The sizes
// (OM_MAX_PACKET, OM_TX_SLOTS, ...) must be the same for the sketch and for
// oscloud_micro.c, so change them at the top of oscloud_micro.h, never with a
// #define in the sketch alone. With the defaults (256-byte packets, 4 slots)
// the node state takes about 2.4 KiB of RAM: fine on a Mega, a SAMD or an
// ESP32; for an ATmega328 (Uno, 2 KiB) set OM_MAX_PACKET 128 and OM_TX_SLOTS 2
// in the header (about 1.1 KiB). NOT compiled in CI: CI checks oscloud_micro.c with gcc
// (scripts/test-serial.sh), not this sketch.

extern "C" {
#include "oscloud_micro.h"
}

static om_node node;

static void line_write(void *ctx, const uint8_t *data, size_t len) {
  (void)ctx;
  Serial.write(data, len);
}

static int led(void *ctx, const uint8_t *req, size_t len, uint8_t *reply, size_t cap,
               size_t *reply_len) {
  (void)ctx;
  if (len == 2 && req[0] == 'o' && req[1] == 'n') digitalWrite(LED_BUILTIN, HIGH);
  else if (len == 3 && req[0] == 'o' && req[1] == 'f' && req[2] == 'f') digitalWrite(LED_BUILTIN, LOW);
  else return OM_ERR_DECODE;
  if (cap < 1) return OM_ERR_FAILED;
  reply[0] = digitalRead(LED_BUILTIN) ? 1 : 0;
  *reply_len = 1;
  return 0;
}

static int analog(void *ctx, const uint8_t *req, size_t len, uint8_t *reply, size_t cap,
                  size_t *reply_len) {
  (void)ctx;
  (void)req;
  (void)len;
  if (cap < 2) return OM_ERR_FAILED;
  int v = analogRead(A0);
  reply[0] = (uint8_t)(v >> 8);
  reply[1] = (uint8_t)v;
  *reply_len = 2;
  return 0;
}

static void on_reply(void *ctx, uint64_t id, int kind, const uint8_t *payload, size_t len) {
  (void)ctx; (void)id; (void)kind; (void)payload; (void)len;
  // An answer from the Rust node's "clock" server: use it here.
}

void setup() {
  pinMode(LED_BUILTIN, OUTPUT);
  Serial.begin(115200);
  // A per-board id: here a constant plus noise; use a chip serial number
  // where the board has one.
  uint8_t id[16] = {'a', 'r', 'd', 'u', 'i', 'n', 'o', 0};
  uint32_t noise = analogRead(A1) ^ (micros() << 10);
  for (int i = 8; i < 12; i++) id[i] = (uint8_t)(noise >> (8 * (i - 8)));
  om_init(&node, id, noise, line_write, on_reply, NULL, NULL, millis());
  om_add_server(&node, "led", led, NULL, NULL);
  om_add_server(&node, "analog", analog, NULL, NULL);
}

void loop() {
  static uint32_t last = 0;
  uint8_t buf[32];
  size_t n = 0;
  while (Serial.available() && n < sizeof buf) buf[n++] = (uint8_t)Serial.read();
  if (n) om_input(&node, buf, n, millis());
  om_tick(&node, millis());
  if (om_connected(&node) && millis() - last > 5000) {
    last = millis();
    uint8_t up[4] = {(uint8_t)(last >> 24), (uint8_t)(last >> 16), (uint8_t)(last >> 8), (uint8_t)last};
    om_cast(&node, "uptime", up, 4);
    uint64_t id;
    om_call(&node, "clock", NULL, 0, &id);
  }
}
