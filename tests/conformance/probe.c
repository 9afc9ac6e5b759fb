/* Startup, vector table, default handlers and report helpers shared by the conformance probes
 * (mps2-an385 / mps2-an386 memory map: code at 0, RAM at 0x20000000; UART0 console). */
#include "probe.h"

/* ---------------------------------------------------------------- report */
void check(const char *name) { uart_puts(name); }

void kv(const char *key, uint32_t v)
{
    int i;

    uart_putc(' ');
    uart_puts(key);
    uart_puts("=0x");
    for (i = 28; i >= 0; i -= 4)
        uart_putc("0123456789abcdef"[(v >> i) & 0xfu]);
}

void kvd(const char *key, uint32_t v)
{
    uart_putc(' ');
    uart_puts(key);
    uart_putc('=');
    uart_putu(v);
}

void kvs(const char *key, const char *s)
{
    uart_putc(' ');
    uart_puts(key);
    uart_putc('=');
    uart_puts(s);
}

void endl(void) { uart_putc('\n'); }

void probe_init(const char *name)
{
    uart_init();
    uart_puts("probe ");
    uart_puts(name);
    uart_putc('\n');
}

void done(void)
{
    unsigned int i;

    uart_puts("DONE\n");
    SYST_CSR = 0;
    for (i = 0; i < 8; i++)
        NVIC_ICER(i) = 0xffffffffu;
    __asm volatile("cpsid i" ::: "memory");
    for (;;)
        __asm volatile("wfi");
}

/* ---------------------------------------------------------------- event log */
volatile char log_text[64];
static volatile unsigned int log_len;

void log_clear(void)
{
    log_len = 0;
    log_text[0] = '\0';
}

void note(char c)
{
    if (log_len < sizeof(log_text) - 1)
        log_text[log_len++] = c;
    log_text[log_len] = '\0';
}

void note_hex(uint32_t v) { note("0123456789abcdef"[v & 0xfu]); }

/* ---------------------------------------------------------------- default handlers */
void Unexpected_Handler(void)
{
    check("UNEXPECTED");
    kv("exc", get_ipsr());
    endl();
    done();
}

void default_hardfault_c(uint32_t *frame, uint32_t exc_return)
{
    check("HARDFAULT");
    kv("hfsr", SCB_HFSR);
    kv("cfsr", SCB_CFSR);
    kv("exc_return", exc_return);
    kv("pc", frame[6]);
    endl();
    done();
}
FRAME_SHIM(Default_HardFault, default_hardfault_c)

#define WEAK(target) __attribute__((weak, alias(#target)))
void NMI_Handler(void) WEAK(Unexpected_Handler);
void HardFault_Handler(void) WEAK(Default_HardFault);
void MemManage_Handler(void) WEAK(Unexpected_Handler);
void BusFault_Handler(void) WEAK(Unexpected_Handler);
void UsageFault_Handler(void) WEAK(Unexpected_Handler);
void SVC_Handler(void) WEAK(Unexpected_Handler);
void DebugMon_Handler(void) WEAK(Unexpected_Handler);
void PendSV_Handler(void) WEAK(Unexpected_Handler);
void SysTick_Handler(void) WEAK(Unexpected_Handler);
void IRQ_Handler(void) WEAK(Unexpected_Handler);
void IRQ0_Handler(void) WEAK(Unexpected_Handler);
void IRQ1_Handler(void) WEAK(Unexpected_Handler);
void IRQ8_Handler(void) WEAK(Unexpected_Handler);
void IRQ9_Handler(void) WEAK(Unexpected_Handler);
void IRQ10_Handler(void) WEAK(Unexpected_Handler);

/* ---------------------------------------------------------------- startup */
extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
int main(void);
void Reset_Handler(void);

#define V(f) ((uint32_t)(f))
__attribute__((section(".isr_vector"), used, aligned(256)))
const uint32_t vector_table[16 + 32] = {
    [0] = V(__stack_top),
    [1] = V(Reset_Handler),
    [2] = V(NMI_Handler),
    [3] = V(HardFault_Handler),
    [4] = V(MemManage_Handler),
    [5] = V(BusFault_Handler),
    [6] = V(UsageFault_Handler),
    [7 ... 10] = V(Unexpected_Handler),
    [11] = V(SVC_Handler),
    [12] = V(DebugMon_Handler),
    [13] = V(Unexpected_Handler),
    [14] = V(PendSV_Handler),
    [15] = V(SysTick_Handler),
    [16 + 0] = V(IRQ0_Handler),         /* UART0 RX */
    [16 + 1] = V(IRQ1_Handler),         /* UART0 TX */
    [16 + 2 ... 16 + 7] = V(IRQ_Handler),
    [16 + 8] = V(IRQ8_Handler),         /* APB timer 0 */
    [16 + 9] = V(IRQ9_Handler),         /* APB timer 1 */
    [16 + 10] = V(IRQ10_Handler),       /* dual timer */
    [16 + 11 ... 16 + 31] = V(IRQ_Handler),
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
    done();
}
