/* Rule group 6: SVC and PendSV.
 *  - the SVC number is read from the SVC instruction before the stacked PC; arguments and results
 *    pass through the stacked r0-r3;
 *  - SVC in a handler of lower priority nests (EXC_RETURN 0xFFFFFFF1);
 *  - SVC that cannot be taken at once (PRIMASK set, BASEPRI masking it, or in a handler of equal or
 *    higher priority) escalates to HardFault with HFSR.FORCED, the return address after the SVC;
 *  - SHCSR shows SVCall active in its handler; its SVCALLPENDED bit is writable and pends SVCall;
 *  - PendSV: PENDSVSET pends (at once from thread mode), PENDSVCLR removes a pending one, ICSR
 *    shows it, SHCSR shows it active. */
#include "probe.h"

#define SHCSR_SVCALLACT     (1u << 7)
#define SHCSR_PENDSVACT     (1u << 10)
#define SHCSR_SVCALLPENDED  (1u << 15)
#define ICSR_PENDSVCLR      (1u << 27)

static volatile uint32_t svc_number, svc_exc_return, svc_shcsr, svc_ipsr, svc_hits;

void svc_c(uint32_t *frame, uint32_t exc_return)
{
    svc_hits++;
    svc_number = ((const uint8_t *)frame[6])[-2];
    svc_exc_return = exc_return;
    svc_shcsr = SCB_SHCSR;
    svc_ipsr = get_ipsr();
    note('S');
    /* SVC 0: r0 = r0 + r1 + r2 + r3; the others: r0 = r0 + number */
    frame[0] += svc_number ? svc_number : frame[1] + frame[2] + frame[3];
}
FRAME_SHIM(SVC_Handler, svc_c)

static uint32_t svc_call0(uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    register uint32_t r0 __asm("r0") = a;
    register uint32_t r1 __asm("r1") = b;
    register uint32_t r2 __asm("r2") = c;
    register uint32_t r3 __asm("r3") = d;

    __asm volatile("svc #0" : "+r"(r0) : "r"(r1), "r"(r2), "r"(r3) : "memory");
    return r0;
}

static uint32_t svc_call_42(uint32_t a)
{
    register uint32_t r0 __asm("r0") = a;

    __asm volatile("svc #0x42" : "+r"(r0) :: "r1", "r2", "r3", "memory");
    return r0;
}

static uint32_t svc_call_ff(uint32_t a)
{
    register uint32_t r0 __asm("r0") = a;

    __asm volatile("svc #255" : "+r"(r0) :: "r1", "r2", "r3", "memory");
    return r0;
}

static void check_numbers(void)
{
    uint32_t r_0, r_42, r_ff;

    svc_hits = 0;
    r_0 = svc_call0(1, 2, 3, 4);
    r_42 = svc_call_42(0x1000);
    r_ff = svc_call_ff(0x2000);
    check("svc_numbers");
    kv("hits", svc_hits);
    kv("r0_sum", r_0);  /* 1+2+3+4 */
    kv("r0_42", r_42);
    kv("r0_ff", r_ff);
    kv("exc_return", svc_exc_return);
    kv("shcsr_in", svc_shcsr);
    kv("ipsr_in", svc_ipsr);
    kv("shcsr_after", SCB_SHCSR);
    endl();
}

/* SVC from an IRQ handler of priority 0x80 with SVCall at 0x40: nests. */
static void svc_from_irq(void) { note(svc_call_42(1) == 0x43 ? 'k' : 'x'); }

static void check_nested(void)
{
    sw_reset();
    SCB_SHPR8(11) = 0x40;
    sw_prio(0, 0x80);
    sw_hook[0] = svc_from_irq;
    sw_pend(0x1);
    SCB_SHPR8(11) = 0;
    check("svc_nested");
    kvs("log", (const char *)log_text);
    kv("exc_return", svc_exc_return);
    kv("ipsr_in", svc_ipsr);
    endl();
}

/* ---- escalation ---- */
static volatile uint32_t hf_hits, hf_hfsr, hf_cfsr, hf_pc_off, hf_exc_return, hf_shcsr;
static volatile uint32_t svc_site;      /* address of the SVC the next escalation is expected at */

void hf_c(uint32_t *frame, uint32_t exc_return)
{
    hf_hits++;
    hf_hfsr = SCB_HFSR;
    hf_cfsr = SCB_CFSR;
    hf_shcsr = SCB_SHCSR;
    SCB_HFSR = hf_hfsr;
    hf_pc_off = frame[6] - svc_site;
    hf_exc_return = exc_return;
    note('H');
    if (frame[6] == svc_site)
        frame[6] += 2;          /* never re-run the SVC */
}
FRAME_SHIM(HardFault_Handler, hf_c)

/* The SVC site's address comes from a local label; the asm block has the SVC at that label. */
static uint32_t blocked_svc(void)
{
    register uint32_t r0 __asm("r0") = 7;

    __asm volatile("adr r1, 1f\n\t"
                   "str r1, [%1]\n\t"
                   ".balign 4\n"
                   "1: svc #3\n\t"
                   "nop"
                   : "+r"(r0) : "r"(&svc_site) : "r1", "r2", "r3", "memory");
    return r0;
}

static void report_escalation(const char *name, uint32_t r0)
{
    check(name);
    kvs("log", (const char *)log_text);
    kv("hf_hits", hf_hits);
    kv("hfsr", hf_hfsr);
    kv("cfsr", hf_cfsr);
    kv("pc_off", hf_pc_off);
    kv("exc_return", hf_exc_return);
    kv("shcsr", hf_shcsr);
    kv("r0", r0);
    endl();
}

static void reset_hf(void)
{
    hf_hits = hf_hfsr = hf_cfsr = hf_pc_off = hf_exc_return = hf_shcsr = 0;
    svc_hits = 0;
    log_clear();
}

static void check_primask_blocks(void)
{
    uint32_t r0;

    reset_hf();
    __asm volatile("cpsid i" ::: "memory");
    r0 = blocked_svc();
    __asm volatile("cpsie i" ::: "memory");
    report_escalation("svc_primask", r0);
}

static void check_basepri_blocks(void)
{
    uint32_t r0;

    reset_hf();
    SCB_SHPR8(11) = 0x80;
    set_basepri(0x40);
    r0 = blocked_svc();
    set_basepri(0);
    SCB_SHPR8(11) = 0;
    report_escalation("svc_basepri", r0);
}

static volatile uint32_t irq_r0;
static void blocked_from_irq(void) { irq_r0 = blocked_svc(); }

static void check_equal_priority_blocks(void)
{
    reset_hf();
    sw_reset();
    SCB_SHPR8(11) = 0x40;
    sw_prio(0, 0x40);
    sw_hook[0] = blocked_from_irq;
    sw_pend(0x1);
    SCB_SHPR8(11) = 0;
    report_escalation("svc_equal_priority", irq_r0);
}

/* SHCSR.SVCALLPENDED written with PRIMASK set: SVCall pends, and runs once PRIMASK clears. */
static void check_svcall_pended(void)
{
    uint32_t shcsr_pending;

    reset_hf();
    __asm volatile("cpsid i" ::: "memory");
    SCB_SHCSR |= SHCSR_SVCALLPENDED;
    barrier();
    shcsr_pending = SCB_SHCSR;
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    check("svcallpended");
    kv("shcsr", shcsr_pending);
    kv("svc_hits", svc_hits);
    kv("shcsr_after", SCB_SHCSR);
    endl();
}

/* ---- PendSV ---- */
static volatile uint32_t pendsv_hits, pendsv_shcsr, pendsv_icsr;

void PendSV_Handler(void)
{
    pendsv_hits++;
    pendsv_shcsr = SCB_SHCSR;
    pendsv_icsr = SCB_ICSR;
    note('P');
}

static void check_pendsv(void)
{
    uint32_t icsr_pending, icsr_cleared, hits_cleared;

    log_clear();
    pendsv_hits = 0;
    SCB_ICSR = ICSR_PENDSVSET;  /* from thread mode at priority 0: taken at once */
    barrier();
    check("pendsv");
    kv("hits_now", pendsv_hits);
    kv("shcsr_in", pendsv_shcsr);
    kv("icsr_in", pendsv_icsr);
    __asm volatile("cpsid i" ::: "memory");
    SCB_ICSR = ICSR_PENDSVSET;
    barrier();
    icsr_pending = SCB_ICSR;
    SCB_ICSR = ICSR_PENDSVCLR;
    barrier();
    icsr_cleared = SCB_ICSR;
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    hits_cleared = pendsv_hits;
    kv("icsr_pending", icsr_pending);
    kv("icsr_cleared", icsr_cleared);
    kv("hits_after_clear", hits_cleared);
    endl();
}

int main(void)
{
    probe_init("svc");
    check_numbers();
    check_nested();
    check_pendsv();
    check_primask_blocks();
    check_basepri_blocks();
    check_equal_priority_blocks();
    check_svcall_pended();
    done();
}
