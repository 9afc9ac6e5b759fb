/* The shared handler of the software IRQs (see probe.h). */
#include "probe.h"

volatile uint32_t sw_then_pend[NSW];
void (*volatile sw_hook[NSW])(void);
volatile uint32_t sw_exc_return[NSW], sw_icsr[NSW], sw_active[NSW], sw_frame[NSW];
volatile uint32_t sw_stacked_pc[NSW], sw_stacked_xpsr[NSW], sw_count[NSW];

void sw_reset(void)
{
    uint32_t i;

    NVIC_ICER(0) = 0xffu << SWIRQ0;
    NVIC_ICPR(0) = 0xffu << SWIRQ0;
    for (i = 0; i < NSW; i++) {
        sw_then_pend[i] = 0;
        sw_hook[i] = 0;
        sw_exc_return[i] = sw_icsr[i] = sw_active[i] = sw_frame[i] = 0;
        sw_stacked_pc[i] = sw_stacked_xpsr[i] = sw_count[i] = 0;
        NVIC_IPR8(SWIRQ0 + i) = 0;
    }
    NVIC_ISER(0) = 0xffu << SWIRQ0;
    log_clear();
    barrier();
}

void sw_prio(uint32_t i, uint32_t prio) { NVIC_IPR8(SWIRQ0 + i) = (uint8_t)prio; barrier(); }

void sw_pend(uint32_t mask)
{
    NVIC_ISPR(0) = (mask & 0xffu) << SWIRQ0;
    barrier();
}

uint32_t sw_pending(void) { return (NVIC_ISPR(0) >> SWIRQ0) & 0xffu; }

void sw_irq_c(uint32_t *frame, uint32_t exc_return)
{
    uint32_t exc = get_ipsr(), i = exc - 16u - SWIRQ0, then;

    if (exc < 16u + SWIRQ0 || i >= NSW) {
        check("UNEXPECTED");
        kv("exc", exc);
        endl();
        done();
    }
    note('[');
    note_hex(i);
    sw_count[i]++;
    sw_exc_return[i] = exc_return;
    sw_icsr[i] = SCB_ICSR;
    sw_active[i] = (NVIC_IABR(0) >> SWIRQ0) & 0xffu;
    sw_frame[i] = (uint32_t)frame;
    sw_stacked_pc[i] = frame[6];
    sw_stacked_xpsr[i] = frame[7];
    if (sw_hook[i])
        sw_hook[i]();
    then = sw_then_pend[i];
    sw_then_pend[i] = 0;
    if (then)
        sw_pend(then);
    note(']');
}
FRAME_SHIM(IRQ_Handler, sw_irq_c)
