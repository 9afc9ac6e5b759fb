/* Crashes QEMU's Cortex-M model on purpose: the reset vector and the HardFault vector point to
 * ARM-state addresses (bit 0 clear), so reset takes an INVSTATE UsageFault that escalates to a
 * HardFault that faults again: a lockup, on which QEMU 7.2 aborts with "Lockup" on stderr.
 * Tests use it to check that an emulator crash turns the session into `failed` with that reason. */
    .syntax unified
    .thumb
    .section .vectors, "a"
    .word 0x20001000        /* initial SP */
    .word 0x00000040        /* reset: bit 0 clear -> INVSTATE */
    .word 0x00000040        /* NMI */
    .word 0x00000040        /* HardFault: faults again -> lockup */
    .text
    .org 0x40
    b .
