/* cpu0 of the dual-core mailbox: writes ten messages into shared memory, rings cpu1's doorbell
 * for each and waits (asleep) for cpu1's answering doorbell before the next one. */
#include "mailbox.h"
#include "uart.h"

#define MESSAGES 10u

static volatile uint32_t acked;

void IRQ7_Handler(void)
{
    acked = 1u;
}

int main(void)
{
    uint32_t n;

    uart_init();
    doorbell_init();
    uart_puts("cpu0: start\n");
    for (n = 1; n <= MESSAGES; n++) {
        MAILBOX->value = n * n;
        MAILBOX->seq = n;
        acked = 0u;
        ring();
        while (!acked)
            __asm volatile("wfi");
        uart_puts("cpu0: sent ");
        uart_putu(n);
        uart_putc('\n');
    }
    uart_puts("cpu0: done\n");
    for (;;)
        __asm volatile("wfi");
}
