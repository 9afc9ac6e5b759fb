/* Rule group 4 (FP): the Cortex-M4F extended exception frame, on mps2-an386.
 *  - reset values of CPACR, FPCCR (ASPEN and LSPEN set), FPDSCR, MVFR0/1; CPUID;
 *  - CONTROL.FPCA is set by the first FP instruction (ASPEN) and clear in a handler;
 *  - with FPCA set an exception pushes the 26-word frame (S0-S15, FPSCR, a reserved word) and
 *    EXC_RETURN has bit 4 clear: 0xFFFFFFE9 (thread, MSP), 0xFFFFFFED (thread, PSP), 0xFFFFFFE1
 *    (nested, the preempted handler having used the FPU);
 *  - lazy stacking (LSPEN=1): the FP part of the frame is reserved but not written; FPCCR.LSPACT
 *    is set and FPCAR points at it, until the handler's first FP instruction writes it;
 *    with LSPEN=0 it is written at once; with ASPEN=0 FPCA stays clear and frames are basic;
 *  - the return restores S0 and FPSCR from the frame whatever the handler did to them. */
#include "probe.h"

#define MVFR0           REG(0xE000EF40u)
#define MVFR1           REG(0xE000EF44u)
#define FPCCR_LSPACT    (1u << 0)
#define FPCCR_LSPEN     (1u << 30)
#define FPCCR_ASPEN     (1u << 31)
#define IRQ_A           (SWIRQ0 + 0)
#define IRQ_B           (SWIRQ0 + 1)
#define MARK            0xdeadbeefu

static inline void set_s0(uint32_t v) { __asm volatile("vmov s0, %0" :: "r"(v) : "memory"); }
static inline uint32_t get_s0(void)
{
    uint32_t v;

    __asm volatile("vmov %0, s0" : "=r"(v) :: "memory");
    return v;
}
static inline void set_fpscr(uint32_t v) { __asm volatile("vmsr fpscr, %0" :: "r"(v) : "memory"); }
static inline uint32_t get_fpscr(void)
{
    uint32_t v;

    __asm volatile("vmrs %0, fpscr" : "=r"(v) :: "memory");
    return v;
}

/* What the IRQ A handler saw. */
static volatile uint32_t a_ret, a_off, a_fpccr, a_fpcar_off, a_control, a_slot_before, a_slot_after;
static volatile uint32_t a_fpccr_after, a_fpscr_slot, b_ret, use_fp_in_a, nest_b, a_frame;

void irq_c(uint32_t *frame, uint32_t exc_return)
{
    uint32_t irq = get_ipsr() - 16u;

    if (irq == IRQ_B) {
        b_ret = exc_return;
        return;
    }
    a_ret = exc_return;
    a_frame = (uint32_t)frame;
    a_fpccr = FPCCR;
    a_fpcar_off = FPCAR - (uint32_t)frame;
    a_control = get_control();
    a_slot_before = (exc_return & 0x10u) ? 0 : frame[8];    /* S0's slot */
    if (use_fp_in_a) {
        set_s0(0x11111111u);    /* first FP instruction: the lazy save happens before it */
        set_fpscr(0);
        a_slot_after = (exc_return & 0x10u) ? 0 : frame[8];
        a_fpscr_slot = (exc_return & 0x10u) ? 0 : frame[24];
        a_fpccr_after = FPCCR;
        if (nest_b)
            pend_irq(IRQ_B);
    }
}
FRAME_SHIM(IRQ_Handler, irq_c)

static void reset_records(void)
{
    a_ret = a_off = a_fpccr = a_fpcar_off = a_control = a_slot_before = a_slot_after = 0;
    a_fpccr_after = a_fpscr_slot = b_ret = a_frame = 0;
}

/* Fill the 0x80 bytes below SP with MARK and take IRQ A, in one asm block (no C code may push
 * there in between); returns SP before the entry minus the frame address. */
static uint32_t take_a(void)
{
    uint32_t sp_at;

    __asm volatile("mov %[sp], sp\n\t"
                   "sub r2, %[sp], #0x80\n"
                   "1: str %[mark], [r2], #4\n\t"
                   "cmp r2, %[sp]\n\t"
                   "bne 1b\n\t"
                   "str %[bit], [%[ispr]]\n\t"
                   "dsb\n\t"
                   "isb"
                   : [sp] "=&r"(sp_at)
                   : [mark] "r"(MARK), [bit] "r"(1u << IRQ_A), [ispr] "r"(&NVIC_ISPR(0))
                   : "r2", "memory");
    return sp_at - a_frame;
}

static void report(const char *name, uint32_t off)
{
    check(name);
    kv("exc_return", a_ret);
    kv("frame_size", off);
    kv("fpccr", a_fpccr);
    kv("fpcar_off", a_fpcar_off);
    kv("control_in", a_control);
    kv("s0_slot", a_slot_before);
    kv("s0_slot_after_fp", a_slot_after);
    kv("fpscr_slot", a_fpscr_slot);
    kv("fpccr_after_fp", a_fpccr_after);
}

static void check_reset(void)
{
    check("reset");
    kv("cpuid", SCB_CPUID);
    kv("cpacr", SCB_CPACR);
    kv("fpccr", FPCCR);
    kv("fpcar", FPCAR);
    kv("fpdscr", FPDSCR);
    kv("mvfr0", MVFR0);
    kv("mvfr1", MVFR1);
    kv("control", get_control());
    endl();
}

static void check_lazy(void)
{
    uint32_t ctl_before, ctl_after_fp, off;

    SCB_CPACR = 0xfu << 20;     /* CP10, CP11: full access */
    barrier();
    ctl_before = get_control();
    set_fpscr(0x00c00000u);     /* RMode = round towards zero: stacked and restored */
    set_s0(0x3f800000u);
    ctl_after_fp = get_control();
    check("fpca");
    kv("cpacr", SCB_CPACR);
    kv("control_before_fp", ctl_before);
    kv("control_after_fp", ctl_after_fp);
    endl();

    reset_records();
    use_fp_in_a = 1;
    off = take_a();
    report("lazy", off);
    kv("s0_restored", get_s0());
    kv("fpscr_restored", get_fpscr());
    kv("control_after", get_control());
    kv("fpccr_after", FPCCR);
    endl();

    reset_records();
    use_fp_in_a = 0;
    off = take_a();
    report("lazy_unused", off);
    kv("s0_kept", get_s0());
    kv("fpccr_after", FPCCR);
    endl();
}

static void check_immediate(void)
{
    uint32_t off;

    FPCCR = FPCCR_ASPEN;        /* LSPEN clear: FP registers stacked at once */
    set_s0(0x40000000u);
    reset_records();
    use_fp_in_a = 1;
    off = take_a();
    report("immediate", off);
    kv("s0_restored", get_s0());
    endl();
    FPCCR = FPCCR_ASPEN | FPCCR_LSPEN;
}

static void check_no_aspen(void)
{
    uint32_t off, ctl;

    set_control(0);             /* FPCA clear */
    FPCCR = 0;
    set_s0(0x40400000u);
    ctl = get_control();
    reset_records();
    use_fp_in_a = 1;
    off = take_a();
    report("no_aspen", off);
    kv("control_after_fp", ctl);
    kv("s0_after", get_s0());
    endl();
    FPCCR = FPCCR_ASPEN | FPCCR_LSPEN;
}

/* Thread on PSP with FPCA set: 0xFFFFFFED. The handler uses the FPU and pends B (nested): B gets
 * 0xFFFFFFE1. */
static uint32_t psp_stack[128] __attribute__((aligned(8)));

static void check_psp_nested(void)
{
    uint32_t top = (uint32_t)&psp_stack[128];

    reset_records();
    use_fp_in_a = 1;
    nest_b = 1;
    set_s0(0x40800000u);        /* FPCA set again */
    __asm volatile("msr psp, %[top]\n\t"
                   "mrs r0, control\n\t"
                   "orr r0, r0, #2\n\t"
                   "msr control, r0\n\t"
                   "isb\n\t"
                   "str %[bit], [%[ispr]]\n\t"
                   "dsb\n\t"
                   "isb\n\t"
                   "mrs r0, control\n\t"
                   "bic r0, r0, #2\n\t"
                   "msr control, r0\n\t"
                   "isb"
                   :: [top] "r"(top), [bit] "r"(1u << IRQ_A), [ispr] "r"(&NVIC_ISPR(0))
                   : "r0", "memory");
    nest_b = 0;
    check("psp_nested");
    kv("a_exc_return", a_ret);
    kv("a_frame_size", top - a_frame);
    kv("b_exc_return", b_ret);
    kv("s0_restored", get_s0());
    endl();
}

int main(void)
{
    probe_init("fpframe");
    NVIC_IPR8(IRQ_A) = 0x80;
    NVIC_IPR8(IRQ_B) = 0x40;
    enable_irq(IRQ_A);
    enable_irq(IRQ_B);
    check_reset();
    check_lazy();
    check_immediate();
    check_no_aspen();
    check_psp_nested();
    done();
}
