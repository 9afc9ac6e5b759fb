/* Rule group 4: the EXC_RETURN values.
 *  - entry: 0xFFFFFFF9 (from thread on MSP), 0xFFFFFFFD (thread on PSP, frame on PSP),
 *    0xFFFFFFF1 (nested);
 *  - switching thread mode to the process stack by returning with 0xFFFFFFFD onto a prepared PSP
 *    frame (as an RTOS starts its first task), and back to MSP with 0xFFFFFFF9.
 * Invalid exception returns are in invpc.c. */
#include "probe.h"

#define IRQ_A   (SWIRQ0 + 0)
#define IRQ_B   (SWIRQ0 + 1)

enum scenario { PLAIN, PSP_FRAME, NESTED };
static volatile enum scenario scenario;

static volatile uint32_t a_ret, b_ret, a_frame, b_frame, msp_in_a;

uint32_t irq_c(uint32_t *frame, uint32_t exc_return)
{
    uint32_t irq = get_ipsr() - 16u;

    if (irq == IRQ_A) {
        a_ret = exc_return;
        a_frame = (uint32_t)frame;
        msp_in_a = get_msp();
        if (scenario == NESTED)
            pend_irq(IRQ_B);
    } else if (irq == IRQ_B) {
        b_ret = exc_return;
        b_frame = (uint32_t)frame;
    }
    return exc_return;
}
RETURN_SHIM(IRQ_Handler, irq_c)

static void reset_records(enum scenario s)
{
    a_ret = b_ret = a_frame = b_frame = msp_in_a = 0;
    scenario = s;
}

static void check_entry_values(void)
{
    static uint32_t psp_stack[64] __attribute__((aligned(8)));
    uint32_t top = (uint32_t)&psp_stack[64], msp_before, msp_seen, psp_after;

    reset_records(PLAIN);
    pend_irq(IRQ_A);
    check("thread_msp");
    kv("exc_return", a_ret);
    endl();

    reset_records(NESTED);
    pend_irq(IRQ_A);
    check("nested");
    kv("a", a_ret);
    kv("b", b_ret);
    kv("b_frame_below_a", a_frame > b_frame);
    endl();

    reset_records(PSP_FRAME);
    msp_before = get_msp();
    __asm volatile("msr psp, %[top]\n\t"
                   "movs r0, #2\n\t"
                   "msr control, r0\n\t"
                   "isb\n\t"
                   "str %[bit], [%[ispr]]\n\t"
                   "dsb\n\t"
                   "isb\n\t"
                   "movs r0, #0\n\t"
                   "msr control, r0\n\t"
                   "isb"
                   :: [top] "r"(top), [bit] "r"(1u << IRQ_A), [ispr] "r"(&NVIC_ISPR(0))
                   : "r0", "memory");
    msp_seen = msp_in_a;
    psp_after = get_psp();
    check("thread_psp");
    kv("exc_return", a_ret);
    kv("frame_off", top - a_frame);
    kv("psp_restored", psp_after == top);
    kv("handler_on_msp", msp_seen < msp_before && msp_seen > msp_before - 256);
    endl();
}

/* ---- switching to PSP through EXC_RETURN (SVC 1) and back (SVC 2) ---- */
static uint32_t task_stack[128] __attribute__((aligned(8)));
static volatile uint32_t task_control, task_sp, task_arg, svc2_ret, svc2_frame_off;
static volatile uint32_t svc1_ret;

void task_entry(uint32_t arg)
{
    uint32_t sp;

    __asm volatile("mov %0, sp" : "=r"(sp));
    task_sp = sp;
    task_control = get_control();
    task_arg = arg;
    __asm volatile("svc #2" ::: "memory");
    for (;;) {
    }
}

uint32_t svc_c(uint32_t *frame, uint32_t exc_return)
{
    uint32_t number = ((const uint8_t *)frame[6])[-2];
    uint32_t top = (uint32_t)&task_stack[128];
    uint32_t *task_frame;

    if (number == 1) {
        svc1_ret = exc_return;
        task_frame = (uint32_t *)(top - 32);
        task_frame[0] = 0x1234;                     /* r0: task_entry's argument */
        task_frame[1] = task_frame[2] = task_frame[3] = task_frame[4] = 0;
        task_frame[5] = 0xFFFFFFFFu;                /* lr: never returns */
        task_frame[6] = (uint32_t)task_entry & ~1u;
        task_frame[7] = 1u << 24;                   /* xPSR: Thumb */
        set_psp((uint32_t)task_frame);
        return 0xFFFFFFFDu;
    }
    if (number == 2) {
        svc2_ret = exc_return;
        svc2_frame_off = top - (uint32_t)frame;
        return 0xFFFFFFF9u;     /* the SVC 1 frame is still on the main stack */
    }
    return exc_return;
}
RETURN_SHIM(SVC_Handler, svc_c)

static void check_switch_to_psp(void)
{
    uint32_t msp_before, msp_after, control_after, r0_after;
    register uint32_t r0 __asm("r0") = 0x5a5a;

    msp_before = get_msp();
    __asm volatile("svc #1"
                   : "+r"(r0) :: "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "memory");
    r0_after = r0;
    msp_after = get_msp();
    control_after = get_control();
    check("switch_psp");
    kv("svc1_ret", svc1_ret);
    kv("task_control", task_control);
    kv("task_sp_off", (uint32_t)&task_stack[128] - task_sp);
    kv("task_arg", task_arg);
    kv("svc2_ret", svc2_ret);
    kv("svc2_frame_off", svc2_frame_off);
    kv("r0_kept", r0_after);
    kv("msp_restored", msp_after == msp_before);
    kv("control_after", control_after);
    endl();
}

int main(void)
{
    probe_init("excreturn");
    NVIC_IPR8(IRQ_A) = 0x80;
    NVIC_IPR8(IRQ_B) = 0x40;
    enable_irq(IRQ_A);
    enable_irq(IRQ_B);
    check_entry_values();
    check_switch_to_psp();
    done();
}
