/* Rule group 10c: the CMSDK APB UART0 (console) registers and its TX interrupt (IRQ 1).
 * DATA +0, STATE +4 (TX full, RX full, TX/RX overrun), CTRL +8 (TX en, RX en, TX int en, RX int en,
 * TX/RX overrun int en, high-speed test), INTSTATUS/INTCLEAR +0xC, BAUDDIV +0x10, IDs +0xFD0.
 *  - register values after uart_init, which CTRL/BAUDDIV bits are kept, ID registers;
 *  - TXINTEN: whether INTSTATUS.TX rises when it is set, and after a byte is sent; INTCLEAR;
 *    the NVIC line (pending although disabled there) and the handler, once per byte.
 * Values are recorded with interrupts off and printed after, since printing sends bytes too.
 * RX needs input from outside the probe and is not covered. */
#include "probe.h"

#define U_DATA          REG(0x40004000u)
#define U_STATE         REG(0x40004004u)
#define U_CTRL          REG(0x40004008u)
#define U_INT           REG(0x4000400Cu)
#define U_BAUDDIV       REG(0x40004010u)
#define U_ID(i)         REG(0x40004FD0u + 4u * (i))
#define CTRL_TX_EN      (1u << 0)
#define CTRL_RX_EN      (1u << 1)
#define CTRL_TX_INTEN   (1u << 2)
#define TX_IRQ          1u

static volatile uint32_t hits, int_in_handler;

void IRQ1_Handler(void)
{
    int_in_handler = U_INT;
    U_INT = 1;                  /* INTCLEAR: TX */
    hits++;
}

static void send(char c)
{
    while (U_STATE & 1u) {
    }
    U_DATA = (uint8_t)c;
}

static void check_registers(void)
{
    uint32_t state = U_STATE, ctrl = U_CTRL, intst = U_INT, baud = U_BAUDDIV, ctrl_ff, baud_ff, i;

    U_BAUDDIV = 0xffffffffu;
    baud_ff = U_BAUDDIV;
    U_BAUDDIV = 16;
    U_CTRL = 0xff & ~(CTRL_TX_INTEN | (1u << 3) | (1u << 4) | (1u << 5));  /* no interrupt enables */
    ctrl_ff = U_CTRL;
    U_CTRL = CTRL_TX_EN | CTRL_RX_EN;
    check("registers");
    kv("state", state);
    kv("ctrl", ctrl);
    kv("intstatus", intst);
    kv("bauddiv", baud);
    kv("bauddiv_ffffffff", baud_ff);
    kv("ctrl_c3", ctrl_ff);
    kvs("ids", "");
    for (i = 0; i < 12; i++) {
        uart_putc("0123456789abcdef"[(U_ID(i) >> 4) & 0xfu]);
        uart_putc("0123456789abcdef"[U_ID(i) & 0xfu]);
    }
    endl();
}

static void check_tx_intstatus(void)
{
    uint32_t on_enable, after_byte, pend, cleared, pend_after;

    disable_irq(TX_IRQ);
    unpend_irq(TX_IRQ);
    U_INT = 0xf;
    U_CTRL = CTRL_TX_EN | CTRL_RX_EN | CTRL_TX_INTEN;
    on_enable = U_INT;
    send('.');
    after_byte = U_INT;
    pend = irq_pending(TX_IRQ);
    U_INT = 1;
    cleared = U_INT;
    pend_after = irq_pending(TX_IRQ);
    U_CTRL = CTRL_TX_EN | CTRL_RX_EN;
    U_INT = 0xf;
    unpend_irq(TX_IRQ);
    endl();
    check("tx_intstatus");
    kv("on_txinten", on_enable);
    kv("after_byte", after_byte);
    kv("nvic_pending", pend);
    kv("after_intclear", cleared);
    kv("nvic_pending_after", pend_after);
    endl();
}

static void check_tx_irq(void)
{
    uint32_t n0, n3;

    hits = 0;
    unpend_irq(TX_IRQ);
    U_INT = 0xf;
    U_CTRL = CTRL_TX_EN | CTRL_RX_EN | CTRL_TX_INTEN;
    enable_irq(TX_IRQ);
    n0 = hits;
    send('a');
    send('b');
    send('c');
    n3 = hits;
    disable_irq(TX_IRQ);
    U_CTRL = CTRL_TX_EN | CTRL_RX_EN;
    U_INT = 0xf;
    unpend_irq(TX_IRQ);
    endl();
    check("tx_irq");
    kv("hits_on_enable", n0);
    kv("hits_after_3_bytes", n3);
    kv("intstatus_in_handler", int_in_handler);
    endl();
}

int main(void)
{
    probe_init("uartirq");
    check_registers();
    check_tx_intstatus();
    check_tx_irq();
    done();
}
