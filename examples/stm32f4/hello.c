/* "hello" for the STM32F4-Discovery (STM32F407): greets on USART2, prints "tick N" every second
 * of the board's time from the SysTick, and echoes each line typed on USART2 as "echo: <line>",
 * received in its interrupt. Renode runs it on its stock stm32f4_discovery-kit platform; QEMU on
 * netduinoplus2 (STM32F405, the same USART2). Between interrupts the CPU sleeps (WFI). */

#include <stdint.h>

#define REG(addr)       (*(volatile uint32_t *)(addr))

#define RCC_APB1ENR     REG(0x40023840u)
#define RCC_USART2EN    (1u << 17)

#define USART2_BASE     0x40004400u
#define USART_SR        REG(USART2_BASE + 0x00)
#define USART_DR        REG(USART2_BASE + 0x04)
#define USART_BRR       REG(USART2_BASE + 0x08)
#define USART_CR1       REG(USART2_BASE + 0x0C)
#define SR_RXNE         (1u << 5)
#define SR_TXE          (1u << 7)
#define CR1_RE          (1u << 2)
#define CR1_TE          (1u << 3)
#define CR1_RXNEIE      (1u << 5)
#define CR1_UE          (1u << 13)
#define USART2_IRQ      38u

#define SYST_CSR        REG(0xE000E010u)
#define SYST_RVR        REG(0xE000E014u)
#define SYST_CVR        REG(0xE000E018u)
#define NVIC_ISER1      REG(0xE000E104u)

/* The board's clock (boards/stm32f4-discovery.yaml): Renode's stock STM32F4 clocks the SysTick at
 * 72 MHz. Ten SysTick interrupts a second; a tick every ten. */
#ifndef CORE_HZ
#define CORE_HZ         72000000u
#endif
#define SYSTICK_HZ      10u

volatile unsigned int tick_count;
static volatile uint32_t systicks;

static char line[80];
static volatile uint32_t line_len;
static volatile uint32_t line_ready;

static void putc_(char c)
{
    while (!(USART_SR & SR_TXE)) {
    }
    USART_DR = (uint8_t)c;
}

static void puts_(const char *s)
{
    while (*s)
        putc_(*s++);
}

static void putu(uint32_t n)
{
    char buf[11];
    int i = 0;

    do {
        buf[i++] = (char)('0' + n % 10u);
        n /= 10u;
    } while (n);
    while (i)
        putc_(buf[--i]);
}

void SysTick_Handler(void)
{
    systicks++;
}

/* A byte arrived: keep it; a line end hands the line to main. */
void USART2_IRQHandler(void)
{
    while (USART_SR & SR_RXNE) {
        char c = (char)(USART_DR & 0xFFu);

        if (line_ready)
            continue;  /* main has not printed the last line yet */
        if (c == '\n' || c == '\r') {
            if (line_len)
                line_ready = 1u;
        } else if (line_len < sizeof(line) - 1) {
            line[line_len++] = c;
        }
    }
}

__attribute__((noinline, noclone))
void on_tick(unsigned int n)
{
    puts_("tick ");
    putu(n);
    putc_('\n');
}

int main(void)
{
    uint32_t seen = 0;

    RCC_APB1ENR |= RCC_USART2EN;
    USART_BRR = 0x0683u;  /* 9600 baud at 16 MHz: the UARTs here ignore it, hardware would not */
    USART_CR1 = CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE;
    NVIC_ISER1 = 1u << (USART2_IRQ - 32u);
    puts_("Hello from virsim on stm32f4-discovery\n");

    SYST_RVR = CORE_HZ / SYSTICK_HZ - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;  /* processor clock, interrupt, enable */

    for (;;) {
        __asm volatile("wfi");
        if (line_ready) {
            line[line_len] = '\0';
            puts_("echo: ");
            puts_(line);
            putc_('\n');
            line_len = 0;
            line_ready = 0;
        }
        while (systicks - seen >= SYSTICK_HZ) {
            seen += SYSTICK_HZ;
            tick_count++;
            on_tick(tick_count);
        }
    }
}
