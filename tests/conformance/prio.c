/* Rule group 1: priority grouping and implemented priority bits.
 *  - AIRCR: PRIGROUP writes need VECTKEY 0x05FA; every PRIGROUP reads back; reads show 0xFA05.
 *  - priority registers: 0xFF written to an NVIC_IPR byte, a whole IPR word and the SHPR bytes
 *    (reserved ones too) read back as the implemented bits; out-of-range IRQs are RAZ/WI.
 *  - ordering: IRQs pended together are taken by group priority, then subpriority, then number;
 *    only a better *group* priority preempts. */
#include "probe.h"

static void set_prigroup(uint32_t g)
{
    SCB_AIRCR = AIRCR_VECTKEY | (g << 8);
    barrier();
}

/* Pend `mask` with PRIMASK set, so all are pending together, then let them in. */
static void pend_together(uint32_t mask)
{
    __asm volatile("cpsid i" ::: "memory");
    sw_pend(mask);
    __asm volatile("cpsie i\n\tisb" ::: "memory");
}

static void check_aircr(void)
{
    uint32_t g, reset = SCB_AIRCR, nokey;

    SCB_AIRCR = (5u << 8);                /* no VECTKEY: ignored */
    barrier();
    nokey = SCB_AIRCR;
    check("aircr");
    kv("reset", reset);
    kv("nokey_write", nokey);
    for (g = 0; g < 8; g++) {
        set_prigroup(g);
        kv(g == 0 ? "g0" : g == 1 ? "g1" : g == 2 ? "g2" : g == 3 ? "g3" : g == 4 ? "g4" : g == 5 ? "g5"
           : g == 6 ? "g6" : "g7", SCB_AIRCR);
    }
    set_prigroup(0);
    endl();
}

static void check_prio_bits(void)
{
    uint32_t byte, word, shpr1, shpr2, shpr3, high, ictr = ICTR, iser1;

    NVIC_IPR8(SWIRQ0) = 0xff;
    byte = NVIC_IPR8(SWIRQ0);
    NVIC_IPR(SWIRQ0 / 4 + 1) = 0xffffffffu;         /* IRQs 28..31 */
    word = NVIC_IPR(SWIRQ0 / 4 + 1);
    NVIC_IPR(SWIRQ0 / 4 + 1) = 0x80604020u;
    high = NVIC_IPR(SWIRQ0 / 4 + 1);
    check("ipr");
    kv("ictr", ictr);
    kv("byte_ff", byte);
    kv("word_ff", word);
    kv("word_80604020", high);
    /* IRQ 32+ do not exist on this board (ICTR says 32 lines): RAZ/WI */
    NVIC_IPR(8) = 0xffffffffu;
    kv("ipr_irq32", NVIC_IPR(8));
    NVIC_ISER(1) = 0xffffffffu;
    iser1 = NVIC_ISER(1);
    NVIC_ICER(1) = 0xffffffffu;
    kv("iser1", iser1);
    endl();

    SCB_SHPR1 = 0xffffffffu;    /* MemManage, BusFault, UsageFault, reserved */
    SCB_SHPR2 = 0xffffffffu;    /* reserved x3, SVCall */
    SCB_SHPR3 = 0xffffffffu;    /* DebugMonitor, reserved, PendSV, SysTick */
    shpr1 = SCB_SHPR1;
    shpr2 = SCB_SHPR2;
    shpr3 = SCB_SHPR3;
    check("shpr");
    kv("shpr1", shpr1);
    kv("shpr2", shpr2);
    kv("shpr3", shpr3);
    SCB_SHPR8(11) = 0x40;       /* byte access: SVCall */
    SCB_SHPR8(14) = 0x20;       /* PendSV */
    kv("bytes", SCB_SHPR2);
    kv("bytes3", SCB_SHPR3);
    SCB_SHPR1 = 0;
    SCB_SHPR2 = 0;
    SCB_SHPR3 = 0;
    kv("cleared", SCB_SHPR1 | SCB_SHPR2 | SCB_SHPR3);
    endl();
}

/* Priorities use the top three bits only, so they mean the same with 3..8 implemented bits. */
static void check_order(uint32_t prigroup, const char *name)
{
    set_prigroup(prigroup);
    sw_reset();
    sw_prio(0, 0x60);
    sw_prio(1, 0x40);
    sw_prio(2, 0x20);
    sw_prio(3, 0x60);
    sw_prio(4, 0xa0);
    sw_prio(5, 0x80);
    pend_together(0x3f);
    check(name);
    kvs("log", (const char *)log_text);
    endl();
    set_prigroup(0);
}

/* In the handler of sw0 (priority 0x60), pend sw1 (0x40) and later sw2 (0x20): with PRIGROUP=5
 * (group = bits 7:6) sw1 is in the same group (0x40) and must wait; sw2 (group 0) preempts. */
static void pend_sw2(void) { sw_pend(1u << 2); }

static void check_group_preempt(uint32_t prigroup, const char *name)
{
    set_prigroup(prigroup);
    sw_reset();
    sw_prio(0, 0x60);
    sw_prio(1, 0x40);
    sw_prio(2, 0x20);
    sw_hook[0] = pend_sw2;      /* first sw2 ... */
    sw_then_pend[0] = 1u << 1;  /* ... then sw1, in the same group as sw0 under PRIGROUP >= 5 */
    sw_pend(1u << 0);
    check(name);
    kvs("log", (const char *)log_text);
    endl();
    set_prigroup(0);
}

/* A priority change of a pending IRQ is seen at once: sw1 lowered below sw0 before PRIMASK clears. */
static void check_reprioritise(void)
{
    sw_reset();
    sw_prio(0, 0x40);
    sw_prio(1, 0x20);
    __asm volatile("cpsid i" ::: "memory");
    sw_pend(0x3);
    sw_prio(1, 0x80);
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("reprioritise");
    kvs("log", (const char *)log_text);
    endl();
}

/* ICSR.VECTPENDING names the pending exception that would be taken (by priority, then number),
 * ISRPENDING (bit 22) says an external IRQ is pending. */
static void check_vectpending(void)
{
    uint32_t icsr1, icsr2, icsr3;

    sw_reset();
    sw_prio(0, 0x80);
    sw_prio(1, 0x40);
    sw_prio(2, 0x40);
    __asm volatile("cpsid i" ::: "memory");
    sw_pend(0x1);
    icsr1 = SCB_ICSR;
    sw_pend(0x6);
    icsr2 = SCB_ICSR;
    NVIC_ICPR(0) = 0xffu << SWIRQ0;
    barrier();
    icsr3 = SCB_ICSR;
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("vectpending");
    kv("one", icsr1);
    kv("three", icsr2);
    kv("none", icsr3);
    kvs("log", (const char *)log_text);
    endl();
}

int main(void)
{
    probe_init("prio");
    check_aircr();
    check_prio_bits();
    check_order(0, "order_g0");
    check_order(5, "order_g5");
    check_order(6, "order_g6");
    check_order(7, "order_g7");
    check_group_preempt(0, "preempt_g0");
    check_group_preempt(4, "preempt_g4");
    check_group_preempt(5, "preempt_g5");
    check_group_preempt(7, "preempt_g7");
    check_reprioritise();
    check_vectpending();
    done();
}
