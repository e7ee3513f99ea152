/* Board port: ATmega2560 at 16 MHz (Arduino Mega 2560 class), bare avr-libc, with a simulated joint
 * plant inside the MCU (each joint slews towards its target at max_velocity), as run in simavr by
 * imle-simavr. A port for real actuators replaces only the plant functions (see ../arduino/).
 *
 * UART0 500000 baud 8N1 (U2X, exact at 16 MHz): the protocol, interrupt-driven RX and TX FIFOs.
 * UART1: a binary log of applied commands (0xA5, seq u16, valid u8, n u8, n x f32), for tests.
 * Timer0: 1 kHz millisecond clock. EEPROM: optional configuration (magic, watchdog_ms, state period,
 * max_step). The e-stop latch and boot count live in .noinit: a reset does not clear them. */
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <string.h>
#include <util/atomic.h>

#include "imle_device.h"
#include "imle_hal.h"

#define JOINTS 2
#define RX_SIZE 128u   /* powers of two */
#define TX_SIZE 256u
#define LOG_SIZE 256u  /* the test log; uint8_t indices wrap at 256. A long burst still overflows it (docs/firmware.md) */

static volatile uint32_t ms_clock;
static volatile uint8_t rx_buf[RX_SIZE], rx_head, rx_tail;
static volatile uint8_t tx_buf[TX_SIZE];
static volatile uint16_t tx_head, tx_tail;
static uint8_t log_buf[LOG_SIZE];
static uint8_t log_head, log_tail;

imle_retained_t retained __attribute__((section(".noinit")));
imle_device_t dev;  /* imle-simavr reads the counters at this symbol's address */

typedef struct {
    uint16_t magic;       /* 0x1E20 when the rest is valid */
    uint16_t watchdog_ms;
    uint32_t state_period_us;
    float max_step;
} ee_config_t;
static ee_config_t EEMEM ee_config;

static const char *const joint_names[JOINTS] = {"agent_x", "agent_y"};
static const float lower[JOINTS] = {0, 0}, upper[JOINTS] = {512, 512}, vmax[JOINTS] = {400, 400};
static float steps[JOINTS] = {200, 200};
static imle_config_t config = {"imle-firmware 0.1.0 (atmega2560, simulated plant)", JOINTS, 0, joint_names, NULL,
                               lower, upper, vmax, steps, 300, 20000, 1};

static float pos[JOINTS] = {256, 256}, target[JOINTS] = {256, 256};
static uint32_t plant_ms;

ISR(TIMER0_COMPA_vect) { ms_clock++; }

ISR(USART0_RX_vect) {
    uint8_t b = UDR0, next = (uint8_t)((rx_head + 1u) & (RX_SIZE - 1u));
    if (next != rx_tail) { rx_buf[rx_head] = b; rx_head = next; }  /* full: the byte is lost (a CRC catches it) */
}

ISR(USART0_UDRE_vect) {
    if (tx_tail == tx_head) { UCSR0B &= (uint8_t)~_BV(UDRIE0); return; }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint16_t)((tx_tail + 1u) & (TX_SIZE - 1u));
}

uint32_t imle_hal_millis(void) {
    uint32_t v;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { v = ms_clock; }
    return v;
}

uint8_t imle_hal_tx(const uint8_t *frame, uint16_t len) {
    uint16_t used, head;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { used = (uint16_t)((tx_head - tx_tail) & (TX_SIZE - 1u)); }
    if (len > TX_SIZE - 1u - used) return 0;  /* dropped whole, counted as tx_overflow */
    head = tx_head;
    for (uint16_t i = 0; i < len; i++) { tx_buf[head] = frame[i]; head = (uint16_t)((head + 1u) & (TX_SIZE - 1u)); }
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { tx_head = head; UCSR0B |= _BV(UDRIE0); }
    return 1;
}

static void plant_advance(void) {
    uint32_t now = imle_hal_millis();
    float dt = (float)(now - plant_ms) * 0.001f;
    plant_ms = now;
    for (uint8_t i = 0; i < JOINTS; i++) {
        float d = target[i] - pos[i], lim = vmax[i] * dt;
        pos[i] += d > lim ? lim : d < -lim ? -lim : d;
    }
}

void imle_hal_set_targets(const float *t) { plant_advance(); memcpy(target, t, sizeof target); }
void imle_hal_get_positions(float *p) { plant_advance(); memcpy(p, pos, sizeof pos); }
void imle_hal_get_extras(float *e) { (void)e; }

uint8_t imle_hal_plant_reset(uint64_t seed, uint8_t k, const float *state) {
    (void)seed;
    if (k != 0 && k != JOINTS) return 0;
    for (uint8_t i = 0; i < k; i++)
        if (!(state[i] >= lower[i] && state[i] <= upper[i])) return 0;
    for (uint8_t i = 0; i < JOINTS; i++) pos[i] = target[i] = k ? state[i] : 256.0f;
    return 1;
}

static void log_byte(uint8_t b) {
    uint8_t next = (uint8_t)((log_head + 1u) & (LOG_SIZE - 1u));
    if (next != log_tail) { log_buf[log_head] = b; log_head = next; }
}

void imle_hal_applied(uint16_t seq, uint8_t valid, const float *t) {
    const uint8_t *raw = (const uint8_t *)t;  /* AVR is little-endian: the wire's byte order */
    log_byte(0xA5);
    log_byte((uint8_t)seq);
    log_byte((uint8_t)(seq >> 8));
    log_byte(valid);
    log_byte(JOINTS);
    for (uint8_t i = 0; i < 4 * JOINTS; i++) log_byte(raw[i]);
}

static void load_config(void) {
    ee_config_t c;
    eeprom_read_block(&c, &ee_config, sizeof c);
    if (c.magic != 0x1E20u) return;
    config.watchdog_ms = c.watchdog_ms;
    config.state_period_us = c.state_period_us;
    steps[0] = steps[1] = c.max_step;
}

int main(void) {
    DDRB |= _BV(PB7);
    UBRR0 = 3; UCSR0A = _BV(U2X0); UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);    /* 500000 baud 8N1 */
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UBRR1 = 3; UCSR1A = _BV(U2X1); UCSR1C = _BV(UCSZ11) | _BV(UCSZ10);
    UCSR1B = _BV(TXEN1);
    TCCR0A = _BV(WGM01); TCCR0B = _BV(CS01) | _BV(CS00); OCR0A = 249;     /* 16 MHz / 64 / 250 = 1 kHz */
    TIMSK0 = _BV(OCIE0A);
    load_config();
    sei();
    if (!imle_device_init(&dev, &config, &retained)) for (;;) {}  /* bad config: never drive anything */
    set_sleep_mode(SLEEP_MODE_IDLE);
    uint8_t chunk[32];
    for (;;) {
        uint8_t n = 0;
        while (n < sizeof chunk && rx_tail != rx_head) {
            chunk[n++] = rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1u) & (RX_SIZE - 1u));
        }
        if (n) imle_device_receive(&dev, chunk, n);
        imle_device_tick(&dev);
        while (log_tail != log_head && (UCSR1A & _BV(UDRE1))) {
            UDR1 = log_buf[log_tail];
            log_tail = (uint8_t)((log_tail + 1u) & (LOG_SIZE - 1u));
        }
        cli();
        if (rx_tail == rx_head && log_tail == log_head) { sleep_enable(); sei(); sleep_cpu(); sleep_disable(); }
        sei();  /* woken by the next byte or the next millisecond */
    }
}
