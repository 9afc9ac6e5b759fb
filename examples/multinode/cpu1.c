/* cpu1 of the dual-core mailbox: sleeps; each doorbell interrupt reads the message cpu0 left in
 * shared memory, prints it and rings cpu0's doorbell back. Built a second time as cpu2.elf for the
 * three-node board (boards/tri-node-mixed.yaml): NODE_NAME "cpu2", the mailbox where that QEMU
 * node maps it (MAILBOX_ADDR, inside QEMU's PSRAM); its doorbell back goes nowhere there. */
#include "mailbox.h"
#include "uart.h"

#ifndef NODE_NAME
#define NODE_NAME "cpu1"
#endif

void IRQ7_Handler(void)
{
    uint32_t seq = MAILBOX->seq;
    uint32_t value = MAILBOX->value;

    uart_puts(NODE_NAME ": got ");
    uart_putu(seq);
    uart_puts(" (");
    uart_putu(value);
    uart_puts(")\n");
    ring();
}

int main(void)
{
    uart_init();
    uart_puts(NODE_NAME ": ready\n");
    doorbell_init();
    for (;;)
        __asm volatile("wfi");
}
