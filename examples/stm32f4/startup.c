/* Cortex-M4 startup for the STM32F4: the vector table up to USART2's interrupt (IRQ 38), .data
 * copy, .bss clear, then main(). No C library. */

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
void USART2_IRQHandler(void) WEAK_DEFAULT;

typedef void (*vector_t)(void);

#define USART2_IRQ 38u

__attribute__((section(".isr_vector"), used))
const vector_t vector_table[16 + USART2_IRQ + 1] = {
    [0] = (vector_t)__stack_top,  /* initial stack pointer */
    [1] = Reset_Handler,
    [2] = NMI_Handler,
    [3] = HardFault_Handler,
    [4] = MemManage_Handler,
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [11] = SVC_Handler,
    [12] = DebugMon_Handler,
    [14] = PendSV_Handler,
    [15] = SysTick_Handler,
    [16 + USART2_IRQ] = USART2_IRQHandler,
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
