/* Faults on purpose, for `virsim debug`: greets, then divides by zero with CCR.DIV_0_TRP set.
 * The UsageFault is not enabled, so it escalates to a HardFault (HFSR.FORCED, CFSR.DIVBYZERO);
 * the handler is the startup code's Default_Handler loop, where the debugger reports the fault. */

#include <stdint.h>
#include "uart.h"

#define SCB_CCR         (*(volatile uint32_t *)0xE000ED14u)
#define CCR_DIV_0_TRP   (1u << 4)

volatile unsigned int divisor;  /* zero, and volatile so the compiler cannot fold the division */

__attribute__((noinline, noclone))
unsigned int divide(unsigned int a, unsigned int b)
{
    return a / b;
}

int main(void)
{
    uart_init();
    uart_puts("Hello from virsim on mps2-an385 (fault)\n");
    uart_puts("about to divide by zero\n");
    SCB_CCR |= CCR_DIV_0_TRP;
    uart_putu(divide(42u, divisor));
    uart_puts("\nnot reached\n");
    for (;;) {
    }
}
