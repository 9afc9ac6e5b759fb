/* Entry for QEMU's virt machine (Cortex-A15, ARM state): set a stack and call main. QEMU's
 * -kernel loads this ELF into RAM at 0x40000000 and jumps to _start with the MMU off. */
    .syntax unified
    .arm
    .section .text.start, "ax"
    .global _start
_start:
    ldr sp, =__stack_top
    bl main
1:  wfi
    b 1b
