/* Rule group 8: WFI and the SCR sleep controls, woken by APB timer 0 (IRQ 8).
 *  - WFI with PRIMASK set still wakes for a pending interrupt that would preempt were PRIMASK
 *    clear, and the handler runs only once PRIMASK clears (software-pended and timer IRQs);
 *  - SCR reads back SEVONPEND, SLEEPDEEP and SLEEPONEXIT (reserved bits RAZ/WI);
 *  - SLEEPONEXIT: returning from the handler to thread mode sleeps again instead, so thread code
 *    after the WFI runs only after the handler that cleared it (QEMU 7.2 does not model this, nor
 *    SLEEPDEEP: see QEMU_DEVIATIONS in tests/test_conformance.py).
 * WFE is in wfe.c. */
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

static volatile uint32_t timer_hits, sw_hits, stop_at;

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

void IRQ_Handler(void) { sw_hits++; }

static void check_scr(void)
{
    uint32_t reset = SCB_SCR, all, ff;

    __asm volatile("cpsid i" ::: "memory");
    SCB_SCR = SCR_SEVONPEND | SCR_SLEEPDEEP | SCR_SLEEPONEXIT;
    all = SCB_SCR;
    SCB_SCR = 0xffffffffu;
    ff = SCB_SCR;
    SCB_SCR = 0;
    __asm volatile("cpsie i" ::: "memory");
    check("scr");
    kv("reset", reset);
    kv("three_bits", all);
    kv("ffffffff", ff);
    endl();
}

/* A software-pended IRQ is already pending: WFI returns at once, the handler waits for PRIMASK. */
static void check_wfi_primask_sw(void)
{
    uint32_t hits, pend;

    sw_hits = 0;
    enable_irq(SWIRQ0);
    __asm volatile("cpsid i" ::: "memory");
    pend_irq(SWIRQ0);
    __asm volatile("wfi");
    hits = sw_hits;
    pend = irq_pending(SWIRQ0);
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("wfi_primask_sw");
    kv("hits_after_wfi", hits);
    kv("pending", pend);
    kv("hits_after_cpsie", sw_hits);
    endl();
}

/* The timer pends its IRQ while the core sleeps with PRIMASK set. */
static void check_wfi_primask_timer(void)
{
    uint32_t i, hits, pend;

    timer_hits = 0;
    stop_at = 0;
    enable_irq(TIMER_IRQ);
    __asm volatile("cpsid i" ::: "memory");
    timer_start(2000, 1);
    for (i = 0; i < SPIN_MAX && !irq_pending(TIMER_IRQ); i++)
        __asm volatile("wfi");
    T0_CTRL = 0;
    hits = timer_hits;
    pend = irq_pending(TIMER_IRQ);
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("wfi_primask_timer");
    kv("hits_after_wfi", hits);
    kv("pending", pend);
    kv("hits_after_cpsie", timer_hits);
    if (i == SPIN_MAX)
        kvs("timeout", "1");
    endl();
    timer_stop();
}

static void check_wfi_wakes(void)
{
    uint32_t i;

    timer_hits = 0;
    stop_at = 1;
    timer_start(2000, 1);
    for (i = 0; i < SPIN_MAX && timer_hits == 0; i++)
        __asm volatile("wfi");
    check("wfi_wakes");
    kv("hits", timer_hits);
    if (i == SPIN_MAX)
        kvs("timeout", "1");
    endl();
    timer_stop();
}

/* SLEEPONEXIT: the handler runs three times before thread mode sees the WFI return. */
static void check_sleeponexit(void)
{
    uint32_t i, at_return;

    timer_hits = 0;
    stop_at = 3;
    timer_start(2000, 1);
    SCB_SCR = SCR_SLEEPONEXIT;
    __asm volatile("wfi" ::: "memory");
    at_return = timer_hits;
    for (i = 0; i < SPIN_MAX && timer_hits < 3; i++)
        __asm volatile("wfi");
    SCB_SCR = 0;
    check("sleeponexit");
    kv("hits_at_wfi_return", at_return);
    kv("hits", timer_hits);
    endl();
    timer_stop();
}

int main(void)
{
    probe_init("sleep");
    check_scr();
    check_wfi_primask_sw();
    check_wfi_primask_timer();
    check_wfi_wakes();
    check_sleeponexit();
    done();
}
