/* Cortex-M exception-model self-test for QEMU's mps2-an385. Each check prints "PASS <name>" or
 * "FAIL <name> key=value ...", then "DONE <passes>/<total>"; then the CPU sleeps in WFI.
 * The report does not depend on timing, so it is identical with and without -icount.
 *
 * External IRQs 2-5 (UART1/UART2 RX/TX on this board, never driven since those UARTs stay
 * disabled) are raised by writing NVIC_ISPR. Priorities use only the top three bits
 * (0x20/0x40/0x80), so they mean the same on any implemented number of priority bits.
 * Reuses the UART driver and linker script of examples/hello, but has its own vector table. */
#include <stdint.h>
#include "uart.h"

#define REG(addr)       (*(volatile uint32_t *)(addr))
#define NVIC_ISER0      REG(0xE000E100u)
#define NVIC_ISPR0      REG(0xE000E200u)
#define NVIC_ICPR0      REG(0xE000E280u)
#define NVIC_IPR        ((volatile uint8_t *)0xE000E400u)   /* one byte per IRQ */
#define SYST_CSR        REG(0xE000E010u)
#define SYST_RVR        REG(0xE000E014u)
#define SYST_CVR        REG(0xE000E018u)
#define SCB_ICSR        REG(0xE000ED04u)
#define SCB_VTOR        REG(0xE000ED08u)
#define SCB_CCR         REG(0xE000ED14u)
#define SCB_SHCSR       REG(0xE000ED24u)
#define SCB_CFSR        REG(0xE000ED28u)
#define SCB_HFSR        REG(0xE000ED2Cu)
#define SCB_BFAR        REG(0xE000ED38u)

#define ICSR_PENDSVSET  (1u << 28)
#define ICSR_PENDSTSET  (1u << 26)
#define CCR_STKALIGN    (1u << 9)
#define CCR_DIV_0_TRP   (1u << 4)
#define SHCSR_BUSFAULTENA (1u << 17)
#define SHCSR_USGFAULTENA (1u << 18)
#define CFSR_PRECISERR  (1u << 9)
#define CFSR_BFARVALID  (1u << 15)
#define CFSR_DIVBYZERO  (1u << 25)
#define CSR_COUNTFLAG   (1u << 16)
#define XPSR_STACKALIGN (1u << 9)       /* stacked xPSR: the frame was realigned by 4 bytes */
#define EXC_RETURN_THREAD_PSP 0xFFFFFFFDu

/* Nothing is mapped here on mps2-an385 (see `info mtree`): QEMU answers with a decode error,
 * which becomes a precise BusFault. */
#define UNMAPPED_ADDR   0xF0000000u

#define N_VECTORS       (16 + 32)

static inline void barrier(void) { __asm volatile("dsb\n\tisb" ::: "memory"); }

/* Software-pend external IRQs; dsb+isb make a pending, enabled, unmasked IRQ of high enough
 * priority run before the next instruction. */
static void pend(uint32_t irq_bits)
{
    NVIC_ISPR0 = irq_bits;
    barrier();
}

static uint32_t ipsr(void)
{
    uint32_t v;
    __asm volatile("mrs %0, ipsr" : "=r"(v));
    return v & 0x1ffu;
}

static void set_basepri(uint32_t v) { __asm volatile("msr basepri, %0\n\tisb" :: "r"(v) : "memory"); }

/* ---- event log: handlers append "[n" on entry and "]" on exit ---- */
static volatile char order[32];
static volatile unsigned int order_len;

static void note(char c)
{
    if (order_len < sizeof(order) - 1)
        order[order_len++] = c;
    order[order_len] = '\0';
}

static void clear_order(void) { order_len = 0; order[0] = '\0'; }

static int order_is(const char *want)
{
    unsigned int i;

    for (i = 0; want[i]; i++)
        if (order[i] != want[i])
            return 0;
    return order[i] == '\0';
}

/* ---- report ---- */
static unsigned int passes, total;
static int cur_ok;

static void puthex(uint32_t v)
{
    int i;

    uart_puts("0x");
    for (i = 28; i >= 0; i -= 4)
        uart_putc("0123456789abcdef"[(v >> i) & 0xfu]);
}

static void begin(const char *name, int ok)
{
    cur_ok = ok;
    total++;
    passes += ok ? 1 : 0;
    uart_puts(ok ? "PASS " : "FAIL ");
    uart_puts(name);
}

/* Details are printed only for a failing check, so a passing report stays fixed. */
static void kv(const char *key, uint32_t v)
{
    if (!cur_ok) {
        uart_putc(' ');
        uart_puts(key);
        uart_putc('=');
        puthex(v);
    }
}

static void show_order(void)
{
    if (!cur_ok) {
        uart_puts(" order=");
        uart_puts((const char *)order);
    }
}

static void end(void) { uart_putc('\n'); }

/* ---- handlers ---- */
enum scenario { NONE, NESTED, TAILCHAIN, PSP_MODE, STACK_ALIGN };
static volatile enum scenario scenario;
static volatile uint32_t *irq_frame;            /* stacked frame seen by the last IRQ */
static volatile uint32_t irq_xpsr;              /* and its stacked xPSR */
static volatile uint32_t irq_exc_return;        /* its EXC_RETURN (LR on entry) */
static volatile unsigned int vtor_hits;

/* Entry shim: EXC_RETURN bit 2 says which stack the frame was pushed to. Hands the C handler
 * that frame and EXC_RETURN; the C handler returns with LR still holding EXC_RETURN. */
#define FRAME_SHIM(name, c_handler)                                       \
    __attribute__((naked)) void name(void)                                \
    {                                                                     \
        __asm volatile("tst lr, #4\n\t"                                   \
                       "ite eq\n\t"                                       \
                       "mrseq r0, msp\n\t"                                \
                       "mrsne r0, psp\n\t"                                \
                       "mov r1, lr\n\t"                                   \
                       "b " #c_handler);                                  \
    }

void irq_c(uint32_t *frame, uint32_t exc_return)
{
    uint32_t irq = ipsr() - 16;

    note('[');
    note((char)('0' + irq));
    irq_frame = frame;
    irq_xpsr = frame[7];
    irq_exc_return = exc_return;
    if (scenario == NESTED && irq == 2)
        pend(1u << 3);          /* higher priority: runs right here */
    if (scenario == TAILCHAIN && irq == 3)
        pend((1u << 2) | (1u << 4) | (1u << 5));    /* equal/lower: must wait */
    note(']');
}
FRAME_SHIM(IRQ_Handler, irq_c)

/* SVC: the immediate is the low byte of the 16-bit SVC instruction just before the stacked PC.
 * The result goes back into the stacked r0, which the caller sees as r0 after the svc. */
void svc_c(uint32_t *frame)
{
    uint32_t number = ((const uint8_t *)frame[6])[-2];

    frame[0] = (frame[0] << 8) | number;
}
FRAME_SHIM(SVC_Handler, svc_c)

static volatile uint32_t fault_cfsr, fault_bfar, fault_pc, fault_width;

/* BusFault and UsageFault: record the status, clear it (write 1 to clear), and resume after the
 * faulting instruction. A halfword whose top five bits are 0b11101/0b11110/0b11111 starts a
 * 32-bit Thumb-2 instruction. */
void fault_c(uint32_t *frame)
{
    uint16_t first = *(const uint16_t *)frame[6];

    fault_cfsr = SCB_CFSR;
    fault_bfar = SCB_BFAR;      /* read before clearing BFARVALID */
    SCB_CFSR = fault_cfsr;
    fault_pc = frame[6];
    fault_width = (first & 0xf800u) >= 0xe800u ? 4 : 2;
    frame[6] += fault_width;
}
FRAME_SHIM(BusFault_Handler, fault_c)
FRAME_SHIM(UsageFault_Handler, fault_c)

/* Anything escalating to HardFault ends the run with a FAIL line instead of a silent hang. */
void hardfault_c(uint32_t *frame)
{
    begin("hardfault", 0);
    kv("hfsr", SCB_HFSR);
    kv("cfsr", SCB_CFSR);
    kv("pc", frame[6]);
    end();
    for (;;)
        __asm volatile("wfi");
}
FRAME_SHIM(HardFault_Handler, hardfault_c)

static volatile uint32_t pendsv_active, systick_active;

void PendSV_Handler(void)
{
    pendsv_active = SCB_ICSR & 0x1ffu;  /* VECTACTIVE */
    note('[');
    note('P');
    note(']');
}

void SysTick_Handler(void)
{
    systick_active = SCB_ICSR & 0x1ffu;
    note('[');
    note('S');
    note(']');
}

/* Installed only in the RAM copy of the vector table (check "vtor"). */
static void vtor_irq_handler(void) { vtor_hits++; }

static void Default_Handler(void)
{
    begin("unexpected_exception", 0);
    kv("ipsr", ipsr());
    end();
    for (;;)
        __asm volatile("wfi");
}

/* ---- startup ---- */
extern uint32_t __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[];
extern uint32_t __bss_start[], __bss_end[];
void Reset_Handler(void);
typedef void (*vector_t)(void);

__attribute__((section(".isr_vector"), used))
const vector_t vector_table[N_VECTORS] = {
    [0] = (vector_t)__stack_top,
    [1] = Reset_Handler,
    [2] = Default_Handler,              /* NMI */
    [3] = HardFault_Handler,
    [4] = Default_Handler,              /* MemManage */
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [11] = SVC_Handler,
    [12] = Default_Handler,             /* DebugMon */
    [14] = PendSV_Handler,
    [15] = SysTick_Handler,
    [16 + 0 ... 16 + 1] = Default_Handler,
    [16 + 2 ... 16 + 5] = IRQ_Handler,  /* the IRQs the checks pend */
    [16 + 6 ... N_VECTORS - 1] = Default_Handler,
};

/* ---- checks ---- */
static void check_svc(void)
{
    register uint32_t r0 __asm("r0") = 0x1234;

    __asm volatile("svc #7" : "+r"(r0) :: "memory");
    begin("svc", r0 == 0x123407);
    kv("r0", r0);
    end();
}

static void check_nested(void)
{
    NVIC_IPR[2] = 0x80;
    NVIC_IPR[3] = 0x40;
    clear_order();
    scenario = NESTED;
    pend(1u << 2);
    scenario = NONE;
    begin("nested_preemption", order_is("[2[3]]"));
    show_order();
    end();
}

/* IRQ3 (0x40) pends IRQ2 (0x40), IRQ4 (0x80) and IRQ5 (0x40): none may preempt it; afterwards
 * they run by priority, and the lower exception number first among equal priorities. */
static void check_tailchain(void)
{
    NVIC_IPR[2] = 0x40;
    NVIC_IPR[3] = 0x40;
    NVIC_IPR[4] = 0x80;
    NVIC_IPR[5] = 0x40;
    clear_order();
    scenario = TAILCHAIN;
    pend(1u << 3);
    scenario = NONE;
    begin("no_preempt_equal_lower", order_is("[3][2][5][4]"));
    show_order();
    end();
}

static void check_primask(void)
{
    unsigned int before, pending, after;

    clear_order();
    __asm volatile("cpsid i" ::: "memory");
    pend(1u << 2);
    before = order_len;
    pending = (NVIC_ISPR0 >> 2) & 1u;
    __asm volatile("cpsie i\n\tisb" ::: "memory");
    after = order_len;          /* the IRQ must already have run */
    begin("primask", before == 0 && pending && order_is("[2]") && after == 3);
    kv("before", before);
    kv("pending", pending);
    kv("after", after);
    show_order();
    end();
}

/* BASEPRI=0x40 masks priorities 0x40..0xff: IRQ4 (0x80) waits, IRQ2 (0x20) runs. */
static void check_basepri(void)
{
    unsigned int masked_ok;

    NVIC_IPR[2] = 0x20;
    NVIC_IPR[4] = 0x80;
    clear_order();
    set_basepri(0x40);
    pend(1u << 4);
    pend(1u << 2);
    masked_ok = order_is("[2]") && ((NVIC_ISPR0 >> 4) & 1u);
    set_basepri(0);
    begin("basepri", masked_ok && order_is("[2][4]"));
    kv("masked_ok", masked_ok);
    show_order();
    end();
}

/* Thread mode on the process stack: the IRQ frame goes to PSP, EXC_RETURN is 0xFFFFFFFD, and the
 * return lands back on PSP. Done in one asm block because C code must not run with SP moved. */
static uint32_t psp_stack[64] __attribute__((aligned(8)));

static void check_psp(void)
{
    uint32_t top = (uint32_t)&psp_stack[64];
    uint32_t sp_after, control_after;

    scenario = PSP_MODE;
    irq_exc_return = 0;
    __asm volatile("msr psp, %[top]\n\t"
                   "movs r0, #2\n\t"
                   "msr control, r0\n\t"        /* SPSEL=1: thread mode uses PSP */
                   "isb\n\t"
                   "str %[bit], [%[ispr]]\n\t"
                   "dsb\n\t"
                   "isb\n\t"                    /* IRQ taken here */
                   "mov %[sp], sp\n\t"
                   "mrs %[ctl], control\n\t"
                   "movs r0, #0\n\t"
                   "msr control, r0\n\t"        /* back to MSP */
                   "isb"
                   : [sp] "=&r"(sp_after), [ctl] "=&r"(control_after)
                   : [top] "r"(top), [bit] "r"(1u << 2), [ispr] "r"(&NVIC_ISPR0)
                   : "r0", "memory");
    scenario = NONE;
    begin("psp_thread_mode", irq_exc_return == EXC_RETURN_THREAD_PSP
          && irq_frame == (uint32_t *)(top - 32) && sp_after == top && control_after == 2);
    kv("exc_return", irq_exc_return);
    kv("frame", (uint32_t)irq_frame);
    kv("sp_after", sp_after);
    kv("control", control_after);
    end();
}

/* With SP only 4-byte aligned, the core (CCR.STKALIGN=1) pushes the frame 4 bytes lower to keep
 * it 8-byte aligned and flags that in stacked xPSR bit 9, so the return restores SP exactly. */
static void check_stack_align(void)
{
    uint32_t sp_before, sp_after;

    SCB_CCR |= CCR_STKALIGN;
    scenario = STACK_ALIGN;
    irq_frame = 0;
    __asm volatile("mov r3, sp\n\t"
                   "bic r2, r3, #7\n\t"
                   "subs r2, r2, #4\n\t"       /* 8-byte aligned minus 4 */
                   "mov sp, r2\n\t"
                   "str %[bit], [%[ispr]]\n\t"
                   "dsb\n\t"
                   "isb\n\t"                    /* IRQ taken here */
                   "mov %[after], sp\n\t"
                   "mov %[before], r2\n\t"
                   "mov sp, r3"
                   : [after] "=&r"(sp_after), [before] "=&r"(sp_before)
                   : [bit] "r"(1u << 2), [ispr] "r"(&NVIC_ISPR0)
                   : "r2", "r3", "memory");
    scenario = NONE;
    begin("stack_align", irq_frame == (uint32_t *)(sp_before - 36)
          && (irq_xpsr & XPSR_STACKALIGN) && sp_after == sp_before);
    kv("sp_before", sp_before);
    kv("frame", (uint32_t)irq_frame);
    kv("xpsr", irq_xpsr);
    kv("sp_after", sp_after);
    end();
}

/* Both at the default priority 0: PendSV (14) runs before SysTick (15). SysTick stays disabled;
 * PENDSTSET pends its exception anyway. */
static void check_pendsv_systick(void)
{
    SYST_CSR = 0;
    clear_order();
    SCB_ICSR = ICSR_PENDSVSET | ICSR_PENDSTSET;
    barrier();
    begin("pendsv_systick", order_is("[P][S]") && pendsv_active == 14 && systick_active == 15);
    kv("pendsv_vectactive", pendsv_active);
    kv("systick_vectactive", systick_active);
    show_order();
    end();
}

/* SysTick on the processor clock without interrupt. A wrap is seen as CVR going up, but only
 * after CVR has left 0: the first reload, from the 0 the CVR write left, is no count to 0 and
 * does not set COUNTFLAG (QEMU models that too). The counter is stopped before COUNTFLAG is
 * read, so no further wrap can set it again between the two reads. */
static void check_systick_count(void)
{
    uint32_t cvr_cleared, prev, now, i, wrapped = 0, flag1, flag2;

    SYST_CSR = 0;
    SYST_RVR = 999;
    SYST_CVR = 123;             /* any write clears the counter (and COUNTFLAG) */
    cvr_cleared = SYST_CVR;
    SYST_CSR = 5;               /* CLKSOURCE=processor, ENABLE, no TICKINT */
    for (i = 0; i < 10000000u && (prev = SYST_CVR) == 0; i++) {
    }
    for (; i < 10000000u && !wrapped; i++) {
        now = SYST_CVR;
        wrapped = now > prev;
        prev = now;
    }
    SYST_CSR = 4;               /* stop; COUNTFLAG is kept */
    flag1 = SYST_CSR & CSR_COUNTFLAG;
    flag2 = SYST_CSR & CSR_COUNTFLAG;   /* the first read cleared it */
    begin("systick_countflag", cvr_cleared == 0 && wrapped && flag1 && !flag2);
    kv("cvr_after_write", cvr_cleared);
    kv("wrapped", wrapped);
    kv("flag1", flag1);
    kv("flag2", flag2);
    end();
}

static void check_busfault(void)
{
    uint32_t cfsr_after;

    SCB_SHCSR |= SHCSR_BUSFAULTENA;
    fault_cfsr = fault_bfar = fault_width = 0;
    __asm volatile("str %1, [%0]" :: "r"(UNMAPPED_ADDR), "r"(0x5a5a5a5au) : "memory");
    cfsr_after = SCB_CFSR;
    begin("busfault_precise", (fault_cfsr & (CFSR_PRECISERR | CFSR_BFARVALID))
          == (CFSR_PRECISERR | CFSR_BFARVALID) && fault_bfar == UNMAPPED_ADDR
          && fault_width != 0 && cfsr_after == 0);
    kv("cfsr", fault_cfsr);
    kv("bfar", fault_bfar);
    kv("width", fault_width);
    kv("cfsr_after", cfsr_after);
    end();
}

static void check_divzero(void)
{
    volatile int32_t zero = 0;
    int32_t q = 1;

    SCB_CCR |= CCR_DIV_0_TRP;
    SCB_SHCSR |= SHCSR_USGFAULTENA;
    fault_cfsr = fault_width = 0;
    __asm volatile("sdiv %0, %1, %2" : "+r"(q) : "r"(100), "r"(zero) : "memory");
    SCB_CCR &= ~CCR_DIV_0_TRP;
    begin("usagefault_divbyzero", (fault_cfsr & CFSR_DIVBYZERO) && fault_width == 4);
    kv("cfsr", fault_cfsr);
    kv("width", fault_width);
    end();
}

/* VTOR needs an alignment of at least the table size rounded up to a power of two: 256 here. */
static uint32_t ram_vectors[N_VECTORS] __attribute__((aligned(256)));

static void check_vtor(void)
{
    uint32_t old = SCB_VTOR, readback;
    unsigned int i;

    for (i = 0; i < N_VECTORS; i++)
        ram_vectors[i] = (uint32_t)vector_table[i];
    ram_vectors[16 + 2] = (uint32_t)vtor_irq_handler;
    NVIC_IPR[2] = 0x40;
    clear_order();
    vtor_hits = 0;
    SCB_VTOR = (uint32_t)ram_vectors;
    barrier();
    readback = SCB_VTOR;
    pend(1u << 2);
    SCB_VTOR = old;
    barrier();
    begin("vtor", readback == (uint32_t)ram_vectors && vtor_hits == 1 && order_len == 0);
    kv("vtor", readback);
    kv("hits", vtor_hits);
    show_order();
    end();
}

int main(void)
{
    uart_init();
    NVIC_ICPR0 = 0x3cu;
    NVIC_ISER0 = 0x3cu;         /* IRQs 2-5 */

    check_svc();
    check_nested();
    check_tailchain();
    check_primask();
    check_basepri();
    check_psp();
    check_stack_align();
    check_pendsv_systick();
    check_systick_count();
    check_busfault();
    check_divzero();
    check_vtor();

    uart_puts("DONE ");
    uart_putu(passes);
    uart_putc('/');
    uart_putu(total);
    uart_putc('\n');
    for (;;)
        __asm volatile("wfi");
}

void Reset_Handler(void)
{
    uint32_t *src = __data_load;
    uint32_t *dst = __data_start;

    while (dst < __data_end)
        *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++)
        *dst = 0;
    main();
}
