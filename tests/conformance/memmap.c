/* The mps2-an385 memory map as QEMU builds it (`info mtree`), beyond the RAM the examples use:
 *  - mirrors: SSRAM1 at 0x00400000, the 16 KiB block RAM at 0x01000000 three times over, SSRAM2/3
 *    at 0x20400000 — a write through one address reads back through the others;
 *  - the 16 MiB PSRAM at 0x21000000;
 *  - bit-band aliases: a word at 0x22000000 + 32*offset + 4*bit is one bit of SRAM, read as 0 or 1,
 *    and a write changes that bit alone;
 *  - reserved space QEMU decodes as an unimplemented device: reads zero, writes are ignored, no
 *    fault;
 *  - truly unmapped space: a precise BusFault (BFAR). */
#include "probe.h"

#define SHCSR_BUSFAULTENA (1u << 17)

static volatile uint32_t bf_hits, bf_cfsr, bf_bfar;

void bf_c(uint32_t *frame)
{
    bf_hits++;
    bf_cfsr = SCB_CFSR;
    bf_bfar = SCB_BFAR;
    SCB_CFSR = bf_cfsr;
    frame[6] += 4;  /* past the 32-bit load that faulted */
}
FRAME_SHIM(BusFault_Handler, bf_c)

static uint32_t bit_alias(uint32_t address, uint32_t bit)
{
    return 0x22000000u + (address - 0x20000000u) * 32u + bit * 4u;
}

static uint32_t load_w(uint32_t address)
{
    uint32_t v;
    __asm volatile("ldr.w %0, [%1]" : "=r"(v) : "r"(address) : "memory");
    return v;
}

int main(void)
{
    probe_init("memmap");

    REG(0x003F0000u) = 0x11223344u;
    REG(0x007F0004u) = 0x55667788u;
    check("ssram1_mirror");
    kv("via_mirror", REG(0x007F0000u));
    kv("via_base", REG(0x003F0004u));
    endl();

    REG(0x01000010u) = 0xA5A5A5A5u;
    check("blockram_mirrors");
    kv("m1", REG(0x01004010u));
    kv("m2", REG(0x01008010u));
    kv("m3", REG(0x0100C010u));
    REG(0x0100C014u) = 0x5A5A5A5Au;
    kv("back", REG(0x01000014u));
    endl();

    REG(0x20300000u) = 0xCAFEF00Du;
    check("ssram23_mirror");
    kv("via_mirror", REG(0x20700000u));
    endl();

    REG(0x21000000u) = 0x01020304u;
    REG(0x21FFFFFCu) = 0x0A0B0C0Du;
    check("psram");
    kv("first", REG(0x21000000u));
    kv("last", REG(0x21FFFFFCu));
    endl();

    REG(0x200F0000u) = 0x000000F0u;
    REG(bit_alias(0x200F0000u, 1)) = 1u;
    REG(bit_alias(0x200F0000u, 5)) = 0u;
    check("bitband");
    kv("word", REG(0x200F0000u));
    kv("bit1", REG(bit_alias(0x200F0000u, 1)));
    kv("bit5", REG(bit_alias(0x200F0000u, 5)));
    kv("bit4", REG(bit_alias(0x200F0000u, 4)));
    REG(bit_alias(0x200F0003u, 7)) = 0xFFFFFFFFu;  /* only bit 0 of the value counts */
    kv("high_byte_bit7", REG(0x200F0000u));
    endl();

    SCB_SHCSR |= SHCSR_BUSFAULTENA;
    barrier();
    check("reserved");
    REG(0x00800000u) = 0x12345678u;
    kv("hole1", load_w(0x00800000u));
    kv("hole2", load_w(0x1F000000u));
    kv("hole3", load_w(0x20800000u));
    kv("faults", bf_hits);
    endl();

    check("unmapped");
    kv("value", load_w(0x60000000u));
    kv("faults", bf_hits);
    kv("cfsr", bf_cfsr);
    kv("bfar", bf_bfar);
    endl();
    done();
}
