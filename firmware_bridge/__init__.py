"""Robot I/O, no ML. The bottom layer: it never imports trainer/ or runtime/.

    protocol      frame codec and message types (docs/protocol.md)
    robot         the Robot interface the runtime drives, LinkStats, LinkError
    serial_link   SerialLink: host side over pyserial (needs the `robot` extra)
    emulator      an emulated microcontroller with the Push-T plant on a pty (needs the `sim` extra)
    franka        the Franka bridge (pylibfranka)

Submodules are imported explicitly, so a robot without pyserial or gym-pusht can still use the rest.
"""
