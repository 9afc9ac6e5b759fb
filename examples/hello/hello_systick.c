/* SysTick-driven "hello" for QEMU's mps2-an385: greets, then sleeps in WFI
 * and prints "tick N" each time the SysTick interrupt (10 Hz of virtual
 * time, processor clock 25 MHz) has advanced tick_count. */

#include <stdint.h>
#include "uart.h"

#define CPU_CLOCK_HZ    25000000u
#define TICK_HZ         10u

#define SYST_CSR        (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR        (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR        (*(volatile uint32_t *)0xE000E018u)

#define CSR_ENABLE      (1u << 0)
#define CSR_TICKINT     (1u << 1)
#define CSR_CLKSOURCE   (1u << 2)

volatile unsigned int tick_count;

__attribute__((noinline, noclone))
void on_tick(unsigned int n)
{
    uart_puts("tick ");
    uart_putu(n);
    uart_putc('\n');
}

void SysTick_Handler(void)
{
    tick_count++;
}

int main(void)
{
    unsigned int seen = 0;

    uart_init();
    uart_puts("Hello from virsim on mps2-an385 (SysTick)\n");

    SYST_RVR = CPU_CLOCK_HZ / TICK_HZ - 1;
    SYST_CVR = 0;
    SYST_CSR = CSR_CLKSOURCE | CSR_TICKINT | CSR_ENABLE;

    for (;;) {
        unsigned int n;

        __asm__ volatile ("wfi");
        n = tick_count;
        if (n != seen) {
            seen = n;
            on_tick(n);
        }
    }
}
