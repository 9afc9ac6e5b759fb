/* Rule group 3: preemption, nesting, tail-chaining and late arrival.
 *  - a higher-priority IRQ pended in a handler preempts it at once (nesting to three levels),
 *    with ICSR/IABR showing the nesting and EXC_RETURN 0xFFFFFFF1 for the nested ones;
 *  - IRQs of equal or lower priority pended in a handler wait and then tail-chain, in priority
 *    order, without a thread instruction between them: every one of them stacked the same
 *    return address;
 *  - two IRQs pended by one write from a handler: the better one runs first, then the other still
 *    preempts the handler ("late arrival" approximated);
 *  - an IRQ re-pended by its own handler runs again; a disabled pending IRQ waits for its enable;
 *    STIR pends; PendSV at the lowest priority runs after all IRQs. */
#include "probe.h"

static void check_nested(void)
{
    sw_reset();
    sw_prio(0, 0xc0);
    sw_prio(1, 0x80);
    sw_prio(2, 0x40);
    sw_then_pend[0] = 1u << 1;
    sw_then_pend[1] = 1u << 2;
    sw_pend(0x1);
    check("nested");
    kvs("log", (const char *)log_text);
    kv("ret0", sw_exc_return[0]);
    kv("ret1", sw_exc_return[1]);
    kv("ret2", sw_exc_return[2]);
    kv("icsr0", sw_icsr[0]);
    kv("icsr2", sw_icsr[2]);
    kv("active2", sw_active[2]);
    kv("frame_gap", sw_frame[0] - sw_frame[2]);   /* bytes stacked by the handlers between them */
    endl();
}

/* sw0 pends sw1..sw3 (equal, lower, equal): none preempts; afterwards they run in priority order,
 * lower number first among equals. */
static void check_tailchain(void)
{
    uint32_t sp_before, sp_after;

    sw_reset();
    sw_prio(0, 0x40);
    sw_prio(1, 0x40);
    sw_prio(2, 0x80);
    sw_prio(3, 0x40);
    sw_then_pend[0] = 0xe;
    sp_before = get_msp();
    sw_pend(0x1);
    sp_after = get_msp();
    check("tailchain");
    kvs("log", (const char *)log_text);
    kv("same_pc", sw_stacked_pc[0] == sw_stacked_pc[1] && sw_stacked_pc[1] == sw_stacked_pc[2]
       && sw_stacked_pc[2] == sw_stacked_pc[3]);
    kv("same_frame", sw_frame[0] == sw_frame[1] && sw_frame[1] == sw_frame[2] && sw_frame[2] == sw_frame[3]);
    kv("ret3", sw_exc_return[3]);
    kv("sp_restored", sp_before == sp_after);
    endl();
}

/* Two IRQs pended at once from thread mode with PRIMASK set: the second is entered with the same
 * stacked return address (no thread instruction ran between them), and thread code counting in
 * between would show it. */
static volatile uint32_t thread_steps, steps_seen[2];

static void see0(void) { steps_seen[0] = thread_steps; }
static void see1(void) { steps_seen[1] = thread_steps; }

static void check_tailchain_thread(void)
{
    sw_reset();
    sw_prio(0, 0x80);
    sw_prio(1, 0x80);
    sw_hook[0] = see0;
    sw_hook[1] = see1;
    thread_steps = 0;
    __asm volatile("cpsid i" ::: "memory");
    sw_pend(0x3);
    __asm volatile("cpsie i\n\t"
                   "isb\n\t"
                   "ldr r1, [%0]\n\t"
                   "adds r1, #1\n\t"
                   "str r1, [%0]\n\t"
                   "ldr r1, [%0]\n\t"
                   "adds r1, #1\n\t"
                   "str r1, [%0]"
                   :: "r"(&thread_steps) : "r1", "memory");
    check("tailchain_thread");
    kvs("log", (const char *)log_text);
    kv("steps0", steps_seen[0]);
    kv("steps1", steps_seen[1]);
    kv("steps", thread_steps);
    kv("same_pc", sw_stacked_pc[0] == sw_stacked_pc[1]);
    endl();
}

/* Late arrival, approximated: sw0 (0xc0) pends sw1 (0x80) and sw2 (0x40) in one write. */
static void check_late(void)
{
    sw_reset();
    sw_prio(0, 0xc0);
    sw_prio(1, 0x80);
    sw_prio(2, 0x40);
    sw_then_pend[0] = 0x6;
    sw_pend(0x1);
    check("late_arrival");
    kvs("log", (const char *)log_text);
    kv("ret1", sw_exc_return[1]);
    kv("ret2", sw_exc_return[2]);
    kv("same_frame", sw_frame[1] == sw_frame[2]);
    endl();
}

/* A handler that pends itself runs again once it returns. */
static void check_self_pend(void)
{
    sw_reset();
    sw_prio(0, 0x80);
    sw_then_pend[0] = 0x1;      /* one-shot: only the first run re-pends */
    sw_pend(0x1);
    check("self_pend");
    kvs("log", (const char *)log_text);
    kv("count", sw_count[0]);
    endl();
}

/* A pending IRQ that is disabled waits (and stays pending) until enabled. */
static void check_disabled(void)
{
    uint32_t pend;

    sw_reset();
    disable_irq(SWIRQ0 + 0);
    sw_pend(0x1);
    pend = sw_pending();
    check("disabled");
    kvs("log_disabled", (const char *)log_text);
    kv("pending", pend);
    enable_irq(SWIRQ0 + 0);
    kvs("log_enabled", (const char *)log_text);
    kv("pending_after", sw_pending());
    endl();
}

/* Software Trigger Interrupt Register. */
static void check_stir(void)
{
    sw_reset();
    STIR = SWIRQ0 + 5;
    barrier();
    check("stir");
    kvs("log", (const char *)log_text);
    endl();
}

/* An IRQ handler of priority 0x80 pends PendSV (0xff) and sw1 (0xc0): sw1 does not preempt it,
 * PendSV runs last. PendSV's frame is the same one. */
static volatile uint32_t pendsv_icsr, pendsv_frame_pc;

void pendsv_c(uint32_t *frame)
{
    note('P');
    pendsv_icsr = SCB_ICSR;
    pendsv_frame_pc = frame[6];
}
FRAME_SHIM(PendSV_Handler, pendsv_c)

static void pend_pendsv(void) { SCB_ICSR = ICSR_PENDSVSET; barrier(); }

static void check_pendsv_last(void)
{
    sw_reset();
    SCB_SHPR8(14) = 0xff;
    sw_prio(0, 0x80);
    sw_prio(1, 0xc0);
    sw_hook[0] = pend_pendsv;
    sw_then_pend[0] = 0x2;
    sw_pend(0x1);
    SCB_SHPR8(14) = 0;
    check("pendsv_last");
    kvs("log", (const char *)log_text);
    kv("icsr", pendsv_icsr);
    kv("same_pc", pendsv_frame_pc == sw_stacked_pc[0]);
    endl();
}

/* An active IRQ's priority lowered (numerically raised) while it runs: it keeps running, and what
 * it pends is compared against its new priority. */
static void lower_self(void)
{
    sw_prio(0, 0xe0);
    sw_pend(0x2);               /* 0xc0: better than 0xe0 now, so it preempts */
}

static void check_active_reprio(void)
{
    sw_reset();
    sw_prio(0, 0x40);
    sw_prio(1, 0xc0);
    sw_hook[0] = lower_self;
    sw_pend(0x1);
    check("active_reprio");
    kvs("log", (const char *)log_text);
    endl();
}

int main(void)
{
    probe_init("preempt");
    check_nested();
    check_tailchain();
    check_tailchain_thread();
    check_late();
    check_self_pend();
    check_disabled();
    check_stir();
    check_pendsv_last();
    check_active_reprio();
    done();
}
