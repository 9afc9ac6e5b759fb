/* Rule group 4 (continued): invalid exception returns, one case per ELF (invpc1..4.elf, built
 * with -DCASE=n) so that an engine that gets one wrong still shows the others.
 *  1: a reserved EXC_RETURN (0xFFFFFFF5: "handler mode on the process stack");
 *  2: 0xFFFFFFF1 (return to handler mode) from the only active exception, entered from thread
 *     mode: the unstacked IPSR is 0, inconsistent with handler mode;
 *  3: 0xFFFFFFF9 (return to thread mode) from a nested handler with CCR.NONBASETHRDENA clear.
 * Each raises an INVPC UsageFault (CFSR bit 18), taken on the frame already on the stack with the
 * offending value in LR; the returning exception is no longer active. The UsageFault handler
 * recovers by returning with an EXC_RETURN that fits.
 *  4: an EXC_RETURN value branched to in thread mode is an ordinary address: 0xFFFFFFF8 is in
 *     the execute-never system region, a MemManage fault (IACCVIOL), escalated to HardFault as
 *     MemManage is disabled. */
#include "probe.h"

#ifndef CASE
#define CASE 1
#endif

#define IRQ_A   (SWIRQ0 + 0)
#define IRQ_B   (SWIRQ0 + 1)
#define SHCSR_USGFAULTENA (1u << 18)

static volatile uint32_t a_ret, a_frame, a_pc, b_frame, a_finished;
static volatile uint32_t uf_lr, uf_cfsr, uf_ipsr, uf_frame_pc, uf_frame_xpsr, uf_active, uf_msp, uf_hits;

uint32_t irq_c(uint32_t *frame, uint32_t exc_return)
{
    uint32_t irq = get_ipsr() - 16u;

    if (irq == IRQ_A) {
        a_ret = exc_return;
        a_frame = (uint32_t)frame;
        a_pc = frame[6];
        if (CASE == 3) {
            pend_irq(IRQ_B);
            a_finished = 1;
        }
        if (CASE == 1)
            return 0xFFFFFFF5u;
        if (CASE == 2)
            return 0xFFFFFFF1u;
    } else if (irq == IRQ_B) {
        b_frame = (uint32_t)frame;
        if (CASE == 3)
            return 0xFFFFFFF9u;
    }
    return exc_return;
}
RETURN_SHIM(IRQ_Handler, irq_c)

/* The frame of interest is on the main stack whatever LR says (0xFFFFFFF5 has bit 2 set). */
uint32_t uf_c(uint32_t *msp, uint32_t exc_return)
{
    uf_hits++;
    uf_lr = exc_return;
    uf_cfsr = SCB_CFSR;
    SCB_CFSR = uf_cfsr;
    uf_ipsr = get_ipsr();
    uf_active = NVIC_IABR(0) >> SWIRQ0;
    uf_msp = (uint32_t)msp;
    uf_frame_pc = msp[6];
    uf_frame_xpsr = msp[7];
    if (CASE == 3)
        return 0xFFFFFFF1u;     /* back into A, which is still active */
    return 0xFFFFFFF9u;         /* back to thread mode on the frame that is there */
}

__attribute__((naked)) void UsageFault_Handler(void)
{
    __asm volatile("mrs r0, msp\n\t"
                   "mov r1, lr\n\t"
                   "push {r1, lr}\n\t"
                   "bl uf_c\n\t"
                   "pop {r1, r2}\n\t"
                   "bx r0");
}

static void check_invalid(const char *name)
{
    SCB_SHCSR |= SHCSR_USGFAULTENA;
    SCB_SHPR8(6) = 0x00;
    NVIC_IPR8(IRQ_A) = 0x80;
    NVIC_IPR8(IRQ_B) = 0x40;
    enable_irq(IRQ_A);
    enable_irq(IRQ_B);
    pend_irq(IRQ_A);
    check(name);
    kv("hits", uf_hits);
    kv("cfsr", uf_cfsr);
    kv("lr", uf_lr);
    kv("ipsr", uf_ipsr);
    kv("active", uf_active);
    if (CASE == 3) {
        kv("frame_is_b", uf_msp == b_frame && uf_frame_pc != a_pc);
        kv("a_finished", a_finished);
        kv("a_ret", a_ret);
    } else {
        kv("frame_is_a", uf_frame_pc == a_pc && uf_msp == a_frame);
    }
    kv("frame_xpsr", uf_frame_xpsr);
    kv("cfsr_after", SCB_CFSR);
    kv("active_after", NVIC_IABR(0) >> SWIRQ0);
    kv("ipsr_after", get_ipsr());
    endl();
}

/* ---- case 4: EXC_RETURN in thread mode, a plain branch to 0xFFFFFFF8 ---- */
static volatile uint32_t hf_hfsr, hf_cfsr, hf_pc, hf_hits;

void hf_c(uint32_t *frame)
{
    hf_hits++;
    hf_hfsr = SCB_HFSR;
    hf_cfsr = SCB_CFSR;
    hf_pc = frame[6];
    SCB_HFSR = hf_hfsr;
    SCB_CFSR = hf_cfsr;
    frame[6] = frame[5] & ~1u;  /* resume at the caller's return address */
    frame[7] |= 1u << 24;
}
FRAME_SHIM(HardFault_Handler, hf_c)

static void check_thread_branch(void)
{
    __asm volatile("blx %0" :: "r"(0xFFFFFFF9u) : "r0", "r1", "r2", "r3", "r12", "lr", "memory");
    check("thread_bx_excreturn");
    kv("hits", hf_hits);
    kv("hfsr", hf_hfsr);
    kv("cfsr", hf_cfsr);
    kv("pc", hf_pc);
    kv("ipsr_after", get_ipsr());
    endl();
}

int main(void)
{
    probe_init(CASE == 1 ? "invpc1" : CASE == 2 ? "invpc2" : CASE == 3 ? "invpc3" : "invpc4");
    if (CASE == 1)
        check_invalid("reserved_value");
    else if (CASE == 2)
        check_invalid("to_handler_from_base");
    else if (CASE == 3)
        check_invalid("to_thread_nested");
    else
        check_thread_branch();
    done();
}
