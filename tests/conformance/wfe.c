/* Rule group 8 (continued): WFE and the event register, woken by APB timer 0 (IRQ 8).
 *  - WFE returns at once when the event register is set (SEV);
 *  - the usual "while (!flag) wfe()" ends once an interrupt has been taken;
 *  - with SCR.SEVONPEND a disabled interrupt becoming pending is an event too.
 * A WFE may return early (spuriously), so loops are used wherever that could matter. QEMU 7.2
 * treats WFE as a NOP (allowed, as an always-spurious wake-up), so on QEMU these only show that
 * the code runs through; the built-in engine must at least not sleep where the ARM ARM says not. */
#include "probe.h"

#define T0_CTRL         REG(0x40000000u)
#define T0_VALUE        REG(0x40000004u)
#define T0_RELOAD       REG(0x40000008u)
#define T0_INTCLEAR     REG(0x4000000Cu)
#define TIMER_IRQ       8u
#define SCR_SLEEPONEXIT (1u << 1)
#define SCR_SLEEPDEEP   (1u << 2)
#define SCR_SEVONPEND   (1u << 4)
#define SPIN_MAX        100000u

static volatile uint32_t timer_hits, stop_at;

static void timer_start(uint32_t reload, int irq)
{
    T0_CTRL = 0;
    T0_INTCLEAR = 1;
    T0_RELOAD = reload;
    T0_VALUE = reload;
    T0_CTRL = 1u | (irq ? 8u : 0u);
}

static void timer_stop(void)
{
    T0_CTRL = 0;
    T0_INTCLEAR = 1;
    unpend_irq(TIMER_IRQ);
}

void IRQ8_Handler(void)
{
    T0_INTCLEAR = 1;
    timer_hits++;
    if (stop_at && timer_hits >= stop_at) {
        T0_CTRL = 0;
        SCB_SCR &= ~SCR_SLEEPONEXIT;
    }
}

/* SEV sets the event register, so the next WFE returns at once (the fallback timer is far off). */
static void check_wfe_after_sev(void)
{
    uint32_t hits;

    timer_hits = 0;
    stop_at = 1;
    enable_irq(TIMER_IRQ);
    timer_start(200000, 1);
    __asm volatile("sev\n\twfe" ::: "memory");
    hits = timer_hits;
    timer_stop();
    check("wfe_after_sev");
    kv("hits_at_return", hits);
    endl();
}

static void check_wfe_loop(void)
{
    uint32_t i;

    timer_hits = 0;
    stop_at = 1;
    enable_irq(TIMER_IRQ);
    timer_start(2000, 1);
    for (i = 0; i < SPIN_MAX && timer_hits == 0; i++)
        __asm volatile("wfe");
    check("wfe_loop");
    kv("hits", timer_hits);
    if (i == SPIN_MAX)
        kvs("timeout", "1");
    endl();
    timer_stop();
}

/* SEVONPEND: the timer IRQ is disabled in the NVIC; its becoming pending still ends a WFE. */
static void check_sevonpend(void)
{
    uint32_t i, pend;

    timer_hits = 0;
    stop_at = 0;
    disable_irq(TIMER_IRQ);
    unpend_irq(TIMER_IRQ);
    SCB_SCR = SCR_SEVONPEND;
    timer_start(2000, 1);
    for (i = 0; i < SPIN_MAX && !irq_pending(TIMER_IRQ); i++)
        __asm volatile("wfe");
    pend = irq_pending(TIMER_IRQ);
    SCB_SCR = 0;
    timer_stop();
    check("sevonpend");
    kv("pending", pend);
    kv("hits", timer_hits);
    if (i == SPIN_MAX)
        kvs("timeout", "1");
    endl();
}

int main(void)
{
    probe_init("wfe");
    check_wfe_after_sev();
    check_wfe_loop();
    check_sevonpend();
    done();
}
