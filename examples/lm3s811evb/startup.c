/* Minimal Cortex-M3 startup for QEMU's lm3s811evb: vector table, .data
 * copy, .bss clear, then main().  Unhandled exceptions loop forever. */

#include <stdint.h>

extern uint32_t __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];

int main(void);
void Reset_Handler(void);

void Default_Handler(void)
{
    for (;;) {
    }
}

typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used))
const vector_t vector_table[16] = {
    (vector_t)__stack_top,  /* 0: initial stack pointer */
    Reset_Handler,          /* 1: reset */
    Default_Handler,        /* 2: NMI */
    Default_Handler,        /* 3: HardFault */
    Default_Handler,        /* 4: MemManage */
    Default_Handler,        /* 5: BusFault */
    Default_Handler,        /* 6: UsageFault */
    0, 0, 0, 0,             /* 7-10: reserved */
    Default_Handler,        /* 11: SVCall */
    Default_Handler,        /* 12: DebugMonitor */
    0,                      /* 13: reserved */
    Default_Handler,        /* 14: PendSV */
    Default_Handler,        /* 15: SysTick */
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
