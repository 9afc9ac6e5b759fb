/* Cortex-M3 startup for the RTOS and multi-node examples on mps2-an385: like ../hello/startup.c,
 * but the vector table also has the 32 external interrupts (the UART0 RX interrupt is IRQ 0,
 * IRQs 2-9 have weak IRQn_Handler names). */

#include <stdint.h>

extern uint32_t __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];

int main(void);

void Reset_Handler(void);

/* Every exception we do not handle parks the CPU in a loop. */
void Default_Handler(void)
{
    for (;;) {
    }
}

#define WEAK_DEFAULT __attribute__((weak, alias("Default_Handler")))
void NMI_Handler(void) WEAK_DEFAULT;
void HardFault_Handler(void) WEAK_DEFAULT;
void MemManage_Handler(void) WEAK_DEFAULT;
void BusFault_Handler(void) WEAK_DEFAULT;
void UsageFault_Handler(void) WEAK_DEFAULT;
void SVC_Handler(void) WEAK_DEFAULT;
void DebugMon_Handler(void) WEAK_DEFAULT;
void PendSV_Handler(void) WEAK_DEFAULT;
void SysTick_Handler(void) WEAK_DEFAULT;
void UART0_RX_IRQHandler(void) WEAK_DEFAULT;
void UART0_TX_IRQHandler(void) WEAK_DEFAULT;
/* IRQs 2-9 by number, for firmware that wires its own lines (examples/multinode: a doorbell on IRQ 7). */
void IRQ2_Handler(void) WEAK_DEFAULT;
void IRQ3_Handler(void) WEAK_DEFAULT;
void IRQ4_Handler(void) WEAK_DEFAULT;
void IRQ5_Handler(void) WEAK_DEFAULT;
void IRQ6_Handler(void) WEAK_DEFAULT;
void IRQ7_Handler(void) WEAK_DEFAULT;
void IRQ8_Handler(void) WEAK_DEFAULT;
void IRQ9_Handler(void) WEAK_DEFAULT;

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used))
const vector_t vector_table[16 + 32] = {
    (vector_t)__stack_top,  /* 0: initial stack pointer */
    Reset_Handler,          /* 1: reset */
    NMI_Handler,            /* 2 */
    HardFault_Handler,      /* 3 */
    MemManage_Handler,      /* 4 */
    BusFault_Handler,       /* 5 */
    UsageFault_Handler,     /* 6 */
    0, 0, 0, 0,             /* 7-10: reserved */
    SVC_Handler,            /* 11 */
    DebugMon_Handler,       /* 12 */
    0,                      /* 13: reserved */
    PendSV_Handler,         /* 14 */
    SysTick_Handler,        /* 15 */
    UART0_RX_IRQHandler,    /* 16: IRQ 0 */
    UART0_TX_IRQHandler,    /* 17: IRQ 1 */
    IRQ2_Handler, IRQ3_Handler, IRQ4_Handler, IRQ5_Handler, IRQ6_Handler, IRQ7_Handler,
    IRQ8_Handler, IRQ9_Handler,
    [26 ... 16 + 31] = Default_Handler,     /* IRQs 10-31 */
};

void Reset_Handler(void)
{
    uint32_t *src = __data_load;
    uint32_t *dst = __data_start;

    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;

    main();
    for (;;) {
    }
}
