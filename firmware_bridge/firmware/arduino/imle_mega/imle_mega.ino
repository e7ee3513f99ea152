// imle-policy reference firmware for an Arduino Mega 2560 (docs/firmware.md): two hobby servos driven
// from the protocol's JointCommands, positions read back from feedback potentiometers.
//
// Build:  arduino-cli compile --fqbn arduino:avr:mega --library ../../ImleFirmware .
// Flash:  arduino-cli upload -p /dev/ttyACM0 --fqbn arduino:avr:mega .   (or avrdude, see docs/firmware.md)
//
// Wiring: servo signal wires on D9 (joint 0) and D10 (joint 1), servo power from a separate 5-6 V supply
// (common ground with the Arduino); feedback potentiometer wipers on A0 and A1 (0-5 V across the joint
// range); an e-stop switch is NOT a replacement for cutting servo power in hardware.
#include <Servo.h>
#include <imle_device.h>
#include <imle_hal.h>

static const uint8_t JOINTS = 2;
static const char *const joint_names[JOINTS] = {"agent_x", "agent_y"};
// The robot's own limits: the host may narrow them, never widen them.
static const float lower[JOINTS] = {0, 0}, upper[JOINTS] = {512, 512};
static const float max_velocity[JOINTS] = {400, 400};  // units/s the servos can follow
static const float max_step[JOINTS] = {200, 200};      // largest target change per command
static const uint8_t servo_pins[JOINTS] = {9, 10};
static const uint8_t feedback_pins[JOINTS] = {A0, A1};
static const imle_config_t config = {"imle-firmware 0.1.0 (arduino mega, servos)", JOINTS, 0, joint_names, NULL,
                                     lower, upper, max_velocity, max_step, 300 /* watchdog ms */,
                                     20000 /* State every 20 ms */, 0 /* real hardware: no Reset */};

static Servo servos[JOINTS];
static imle_device_t dev;
// Survives a reset (not cleared by the C runtime): the e-stop latch and the boot count.
imle_retained_t retained __attribute__((section(".noinit")));

extern "C" {
uint32_t imle_hal_millis(void) { return millis(); }

uint8_t imle_hal_tx(const uint8_t *frame, uint16_t len) {
    if ((uint16_t)Serial.availableForWrite() < len && len <= SERIAL_TX_BUFFER_SIZE - 1) {
        // Wait for room only if the frame can ever fit; Serial's buffer drains at 50 bytes/ms.
        uint32_t t0 = micros();
        while ((uint16_t)Serial.availableForWrite() < len)
            if (micros() - t0 > 2000) return 0;  // dropped whole, counted as tx_overflow
    }
    Serial.write(frame, len);
    return 1;
}

void imle_hal_set_targets(const float *targets) {
    for (uint8_t i = 0; i < JOINTS; i++) {
        float u = (targets[i] - lower[i]) / (upper[i] - lower[i]);  // 0..1 across the joint range
        servos[i].writeMicroseconds(1000 + (int)(u * 1000.0f + 0.5f));
    }
}

void imle_hal_get_positions(float *positions) {
    for (uint8_t i = 0; i < JOINTS; i++)
        positions[i] = lower[i] + (upper[i] - lower[i]) * (float)analogRead(feedback_pins[i]) / 1023.0f;
}

void imle_hal_get_extras(float *extras) { (void)extras; }
uint8_t imle_hal_plant_reset(uint64_t seed, uint8_t k, const float *state) { (void)seed; (void)k; (void)state; return 0; }
void imle_hal_applied(uint16_t seq, uint8_t valid, const float *targets) { (void)seq; (void)valid; (void)targets; }
}

void setup() {
    Serial.begin(500000);  // 500 kbaud: exact at 16 MHz; the Mega's USB bridge carries it
    for (uint8_t i = 0; i < JOINTS; i++) servos[i].attach(servo_pins[i]);
    if (!imle_device_init(&dev, &config, &retained)) {
        for (;;) {}  // invalid configuration: never drive anything
    }
}

void loop() {
    uint8_t chunk[32];
    uint8_t n = 0;
    while (n < sizeof chunk && Serial.available() > 0) chunk[n++] = (uint8_t)Serial.read();
    if (n) imle_device_receive(&dev, chunk, n);
    imle_device_tick(&dev);
}
