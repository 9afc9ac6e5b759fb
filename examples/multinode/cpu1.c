/* cpu1 of the dual-core mailbox: sleeps; each doorbell interrupt reads the message cpu0 left in
 * shared memory, prints it and rings cpu0's doorbell back. */
#include "mailbox.h"
#include "uart.h"

void IRQ7_Handler(void)
{
    uint32_t seq = MAILBOX->seq;
    uint32_t value = MAILBOX->value;

    uart_puts("cpu1: got ");
    uart_putu(seq);
    uart_puts(" (");
    uart_putu(value);
    uart_puts(")\n");
    ring();
}

int main(void)
{
    uart_init();
    uart_puts("cpu1: ready\n");
    doorbell_init();
    for (;;)
        __asm volatile("wfi");
}
