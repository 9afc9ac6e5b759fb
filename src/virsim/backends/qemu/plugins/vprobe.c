/*
 * vprobe: virsim's always-loaded QEMU TCG plugin for a single-node session: the virtual clock and
 * the Cortex-M faults, at no cost while the firmware runs.
 *
 * Clock. It adds a QMP command, x-virsim-clock, answering {"ns": QEMU_CLOCK_VIRTUAL, "icount":
 * instructions}. QMP's query-replay gives the instruction count only; with -icount shift=S,sleep=off
 * a sleeping CPU (WFI) skips to its next timer, so the virtual clock, which is what the firmware's
 * timers and virsim's timeouts count, is not instructions << S. And x-virsim-stop-at {"ns": T}
 * stops the VM at virtual time T (as QMP `stop` would): a QEMU timer on the virtual clock, which
 * icount never runs past, so the VM stops within one instruction of T whatever the host is doing
 * (virsim run's virtual-time deadlines); {"after_ns": D} stops it D after now; {"ns": 0} cancels.
 *
 * Faults and the exceptions taken. virsim passes the addresses of the fault handlers (HardFault,
 * MemManage, BusFault, UsageFault) and of every handler (all from the image's vector table). When
 * QEMU translates a block that starts at one, the plugin adds a call at its start; no other block
 * gets anything, so there is no per-block or per-instruction cost anywhere else (the gdb stub's
 * breakpoint on a handler made code in the same page run one instruction per block). The call
 * reads IPSR: 0 is a handler called as a function, not an exception. Every exception entry goes
 * into the table's ring of exceptions taken (`virsim session exceptions`), with SP, LR and the
 * stacked return address; its clock is not exact (the vCPU's count at the start of its icount
 * budget: exact for a timer's interrupt, taken as its budget starts, early for others), so the
 * entry says so. At a fault handler entered for a fault (a handler shared with ordinary IRQs is
 * entered for them too) the call also reads the fault status registers and the stacked exception
 * frame, and writes a fault record (virsim/backends/faults.py: the same layout the built-in engine
 * writes). A handler that spins on itself (`b .`) re-enters its block without a new exception: an
 * entry or record identical to the last one is not written again. When the table's halt flag is
 * set (virsim's debugger is attached), the plugin also stops the VM (vm_stop(RUN_STATE_DEBUG)) at
 * a fault: the gdb stub reports the stop and virsim shows it as a fault stop.
 *
 * QEMU 7.2's plugin API has none of this. Debian's qemu-system binaries export QEMU's own
 * functions, so the plugin looks up what it needs by name (qmp_register_command, qmp_commands,
 * qdict_new, qdict_put_int, qdict_get_try_int, timer_init_full, timer_mod, timer_del,
 * runstate_is_running, run_on_cpu, cpu_is_stopped, qemu_in_vcpu_thread, main_loop_poll_add_notifier,
 * qemu_clock_get_ns, icount_get_raw, current_cpu, qemu_get_cpu,
 * arm_cpu_gdb_read_register, cpu_memory_rw_debug, vm_stop and glib's GByteArray), and leaves out a
 * part whose functions are missing (saying so on stderr) instead of failing QEMU's start.
 * Limitation: QEMU 7.2 exposes no PSP, so the frame of a fault taken from a thread running on the
 * process stack is not read (the record says so).
 *
 * Loaded with:  -plugin vprobe.so[,table=FILE,handlers=ADDR:ADDR...,vectors=ADDR:ADDR...]
 */
#define _GNU_SOURCE
#include "virsim_plugin.h"
#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>


/* virsim/backends/faults.py: header "<8sQIIQI28x" (64 bytes), records "<IIQQ12I8x" (80 bytes),
 * entries "<IIQQ4I" (40 bytes). */
#define MAGIC "VFAULT01"
#define HEADER_SIZE 64
#define RECORD_SIZE 80
#define ENTRY_SIZE 40
#define FLAG_FRAME 1u      /* the stacked frame was read */
#define FLAG_PSP 2u        /* the frame is on the process stack */
#define FLAG_STATUS 4u     /* CFSR/HFSR/MMFAR/BFAR were read */
#define FLAG_CLOCK_EARLY 8u /* an entry's clock is the count at its icount budget's start */
#define MAX_HANDLERS 8
#define MAX_VECTORS 512
#define RUN_STATE_DEBUG 0
#define RUN_STATE_PAUSED 4
#define SCALE_NS 1
#define QCO_NO_OPTIONS 0

struct record {
    uint32_t exception, flags;
    uint64_t virtual_ns, instructions;
    uint32_t handler, sp, lr, xpsr;
    uint32_t cfsr, hfsr, mmfar, bfar;
    uint32_t stacked_pc, stacked_lr, stacked_xpsr, stacked_r0;
    uint8_t reserved[8];
};

struct entry {
    uint32_t exception, flags;
    uint64_t virtual_ns, instructions;
    uint32_t handler, sp, lr, return_pc;
};

typedef struct { uint8_t *data; unsigned int len; } GByteArray;

static void (*q_register_command)(void *cmds, const char *name, void (*fn)(void *, void **, void **),
                                  int options, unsigned special_features);
static void *q_commands;
static void *(*q_qdict_new)(void);
static void (*q_qdict_put_int)(void *dict, const char *key, int64_t value);
static int64_t (*q_clock_get_ns)(int type);
static int64_t (*q_icount_get_raw)(void);
static int (*q_gdb_read_register)(void *cpu, GByteArray *buf, int n);
static int (*q_memory_rw_debug)(void *cpu, uint64_t addr, void *ptr, size_t len, int is_write);
static int (*q_vm_stop)(int state);
static int64_t (*q_qdict_get_try_int)(const void *dict, const char *key, int64_t def);
static void (*q_timer_init_full)(void *ts, void *group, int type, int scale, int attributes,
                                 void (*cb)(void *), void *opaque);
static void (*q_timer_mod)(void *ts, int64_t expire);
static void (*q_timer_del)(void *ts);
static uint64_t stop_timer[32]; /* a QEMUTimer (7 words in QEMU 7.2), with room to spare */
static int stop_timer_ready;
static _Bool (*q_runstate_is_running)(void); /* QEMU's bool */
static void (*q_run_on_cpu)(void *cpu, void (*fn)(void *cpu, void *data), void *data);
static GByteArray *(*g_byte_array_new_)(void);
static void *(*g_byte_array_free_)(GByteArray *array, int free_segment);
static GByteArray *(*g_byte_array_set_size_)(GByteArray *array, unsigned int length);

static uint8_t *table;
static uint32_t capacity;
static uint32_t taken_capacity;
static uint32_t handlers[MAX_HANDLERS], n_handlers;
static uint32_t vectors[MAX_VECTORS], n_vectors; /* sorted */
static struct record last;
static int have_last;
static struct entry last_entry;
static int have_last_entry;

static volatile uint64_t *count(void) { return (volatile uint64_t *)(table + 8); }
static volatile uint64_t *taken(void) { return (volatile uint64_t *)(table + 24); }
static volatile uint32_t *halt_flag(void) { return (volatile uint32_t *)(table + 16); }

static int64_t virtual_clock(int64_t *insns)
{
    return virsim_virtual_clock(q_clock_get_ns, q_icount_get_raw, insns);
}

/* QMP x-virsim-clock (main loop, big lock held). */
static void qmp_clock(void *args, void **ret, void **errp)
{
    int64_t insns = 0;
    int64_t ns = virtual_clock(&insns);
    void *dict = q_qdict_new();
    (void)args;
    (void)errp;
    q_qdict_put_int(dict, "ns", ns);
    q_qdict_put_int(dict, "icount", insns);
    *ret = dict; /* a QDict starts with its QObject header */
}

/* A stop the vCPU makes itself (a gdb breakpoint or step, the stop timer in the vCPU thread, a
 * fault halt) is a request the main loop carries out later: the vCPU is stopped at once, the run
 * state says "running" until then. icount takes a stopped vCPU for an idle one, and with
 * sleep=off the main loop, woken by that very request, warps the virtual clock to the next
 * timer's deadline before it stops the VM (QEMU 7.2 main_loop_wait: icount_start_warp_timer,
 * then the requests): seen, 160 s of virtual time gone at a breakpoint, which the firmware's
 * timers then see too. The main loop's poll notifier runs just before that warp; it completes
 * such a stop there (vm_stop from the main loop, as the request would), so the warp finds the VM
 * stopped. The state is the one the vCPU asked for: DEBUG for gdb (its stop reply), unless ours
 * (stop_state) says otherwise. */
static int stop_state = -1;
static void *(*q_get_cpu)(int index);
static _Bool (*q_cpu_is_stopped)(void *cpu);
static _Bool (*q_in_vcpu_thread)(void);
static void (*q_poll_add_notifier)(void *notifier);
static void *poll_notifier[3]; /* a Notifier: notify(Notifier *, void *), then a list entry */

static void complete_vcpu_stop(void)
{
    void *cpu = q_get_cpu ? q_get_cpu(0) : NULL;
    if (!q_runstate_is_running || !q_runstate_is_running()) {
        __atomic_store_n(&stop_state, -1, __ATOMIC_SEQ_CST); /* carried out already */
        return;
    }
    if (cpu && q_cpu_is_stopped && q_cpu_is_stopped(cpu)) {
        int state = __atomic_exchange_n(&stop_state, -1, __ATOMIC_SEQ_CST);
        q_vm_stop(state >= 0 ? state : RUN_STATE_DEBUG);
    }
}

static void on_main_loop_poll(void *notifier, void *data)
{
    (void)notifier;
    (void)data;
    complete_vcpu_stop();
}

/* Stop the VM in `state` from wherever this runs: at once from the main loop; from the vCPU
 * thread as a request (the vCPU stops now, complete_vcpu_stop carries it out). */
static void stop_vm(int state)
{
    if (q_in_vcpu_thread && q_in_vcpu_thread())
        __atomic_store_n(&stop_state, state, __ATOMIC_SEQ_CST);
    q_vm_stop(state);
}

static void at_stop_time(void *opaque)
{
    (void)opaque;
    stop_vm(RUN_STATE_PAUSED); /* as QMP stop: virsim shows the session paused */
}

/* Where x-virsim-stop-at's work runs: the deadline asked for and the one set. */
struct stop_request {
    int64_t ns, after;
};

static void set_stop_timer(struct stop_request *request)
{
    if (request->after > 0)
        request->ns = virtual_clock(NULL) + request->after;
    if (!stop_timer_ready) {
        q_timer_init_full(stop_timer, NULL, QEMU_CLOCK_VIRTUAL, SCALE_NS, 0, at_stop_time, NULL);
        stop_timer_ready = 1;
    }
    if (request->ns > 0)
        q_timer_mod(stop_timer, request->ns);
    else
        q_timer_del(stop_timer);
}

/* run_on_cpu's callback: (CPUState *, run_on_cpu_data), the data a pointer-sized union. */
static void set_stop_timer_on_cpu(void *cpu, void *data)
{
    (void)cpu;
    set_stop_timer(data);
}

/* QMP x-virsim-stop-at {"ns": T} or {"after_ns": D}: stop the VM at virtual time T, or D after now;
 * neither, or 0, cancels. Answers {"ns": the deadline set, 0 for none}.
 * While the VM runs, the timer is set from the vCPU thread between two blocks (run_on_cpu, as the
 * gdb stub does): "now" is then exact, and the vCPU's next instruction budget (or its warp to the
 * next timer, asleep) already counts this timer; armed from the main loop while the vCPU runs,
 * icount would honour it only at its next budget. Not with the vCPUs paused (pause_all_vcpus):
 * a paused vCPU counts as idle, so arming a virtual timer then warps the clock to the earliest
 * deadline under sleep=off, and QEMU's vCPU loop re-enables the clock pause_all_vcpus disabled
 * (seen: seconds of virtual time gone in one call). */
static void qmp_stop_at(void *args, void **ret, void **errp)
{
    struct stop_request request = { q_qdict_get_try_int(args, "ns", 0), q_qdict_get_try_int(args, "after_ns", 0) };
    void *dict = q_qdict_new();
    void *cpu = q_get_cpu(0);
    (void)errp;
    complete_vcpu_stop(); /* a vCPU stopped on its own counts as idle: arming a timer would warp */
    if (q_runstate_is_running() && cpu)
        q_run_on_cpu(cpu, set_stop_timer_on_cpu, &request);
    else
        set_stop_timer(&request);
    q_qdict_put_int(dict, "ns", request.ns > 0 ? request.ns : 0);
    *ret = dict;
}

static uint32_t reg(void *cpu, GByteArray *buf, int n)
{
    uint32_t value = 0;
    g_byte_array_set_size_(buf, 0);
    if (q_gdb_read_register(cpu, buf, n) >= 4 && buf->len >= 4)
        memcpy(&value, buf->data, 4);
    return value;
}

static int word(void *cpu, uint32_t address, uint32_t *value)
{
    return q_memory_rw_debug(cpu, address, value, 4, 0) == 0;
}

/* Append an exception entry to the table's ring; `insns` is the count at the budget's start. */
static void record_entry(void *cpu, uint32_t handler, uint32_t exception, uint32_t sp, uint32_t lr)
{
    struct entry e;
    uint32_t frame_pc = 0;
    int64_t insns = 0;
    uint64_t at;

    if (taken_capacity == 0)
        return;
    memset(&e, 0, sizeof e);
    e.exception = exception;
    e.handler = handler;
    e.sp = sp;
    e.lr = lr;
    if (!((lr >> 28) == 0xF && (lr & 4)) && q_memory_rw_debug(cpu, sp + 24, &frame_pc, 4, 0) == 0) {
        e.flags |= FLAG_FRAME;
        e.return_pc = frame_pc;
    }
    e.flags |= FLAG_CLOCK_EARLY;
    e.virtual_ns = (uint64_t)virtual_clock(&insns);
    e.instructions = (uint64_t)insns;
    /* A handler spinning on itself within one budget: the same entry again. */
    if (have_last_entry && memcmp(&e, &last_entry, sizeof e) == 0)
        return;
    last_entry = e;
    have_last_entry = 1;
    at = *taken();
    memcpy(table + HEADER_SIZE + (size_t)capacity * RECORD_SIZE + (size_t)(at % taken_capacity) * ENTRY_SIZE, &e,
           sizeof e);
    __sync_synchronize(); /* the entry before the count that publishes it */
    *taken() = at + 1;
}

static int is_fault_handler(uint32_t address)
{
    uint32_t i;
    for (i = 0; i < n_handlers; i++)
        if (handlers[i] == address)
            return 1;
    return 0;
}

static void on_handler(unsigned int vcpu_index, void *userdata)
{
    uint32_t handler = (uint32_t)(uintptr_t)userdata;
    void *cpu = q_get_cpu((int)vcpu_index);
    GByteArray *buf;
    struct record r;
    uint32_t frame[8];
    int64_t insns = 0;
    uint64_t at;

    if (cpu == NULL || table == NULL)
        return;
    buf = g_byte_array_new_();
    memset(&r, 0, sizeof r);
    r.xpsr = reg(cpu, buf, 25);
    r.exception = r.xpsr & 0x1FF;
    if (r.exception == 0) { /* called as a function, in thread mode */
        g_byte_array_free_(buf, 1);
        return;
    }
    r.sp = reg(cpu, buf, 13);
    r.lr = reg(cpu, buf, 14);
    g_byte_array_free_(buf, 1);
    record_entry(cpu, handler, r.exception, r.sp, r.lr);
    if (r.exception < 3 || r.exception > 6 || !is_fault_handler(handler)) /* shared with ordinary interrupts */
        return;
    r.handler = handler;
    if (word(cpu, 0xE000ED28, &r.cfsr) && word(cpu, 0xE000ED2C, &r.hfsr) && word(cpu, 0xE000ED34, &r.mmfar)
        && word(cpu, 0xE000ED38, &r.bfar))
        r.flags |= FLAG_STATUS;
    if ((r.lr >> 28) == 0xF && (r.lr & 4)) {
        r.flags |= FLAG_PSP; /* QEMU 7.2 gives no PSP: the frame cannot be read */
    } else if (q_memory_rw_debug(cpu, r.sp, frame, sizeof frame, 0) == 0) {
        r.flags |= FLAG_FRAME;
        r.stacked_r0 = frame[0];
        r.stacked_lr = frame[5];
        r.stacked_pc = frame[6];
        r.stacked_xpsr = frame[7];
    }
    /* A handler looping on itself enters this block again and again for one fault. */
    if (have_last && memcmp(&r, &last, offsetof(struct record, reserved)) == 0)
        return;
    last = r; /* its clock fields stay 0, as r's are until now */
    have_last = 1;
    r.virtual_ns = (uint64_t)virtual_clock(&insns);
    r.instructions = (uint64_t)insns;
    at = *count();
    memcpy(table + HEADER_SIZE + (size_t)(at % capacity) * RECORD_SIZE, &r, sizeof r);
    __sync_synchronize(); /* the record before the count that publishes it */
    *count() = at + 1;
    if (*halt_flag() && q_vm_stop)
        stop_vm(RUN_STATE_DEBUG);
}

static int compare_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint32_t vaddr = (uint32_t)qemu_plugin_tb_vaddr(tb);
    (void)id;
    if (is_fault_handler(vaddr) || bsearch(&vaddr, vectors, n_vectors, sizeof vectors[0], compare_u32)) {
        /* R_REGS: QEMU writes the guest registers back to the CPU state before the call. */
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_handler, QEMU_PLUGIN_CB_R_REGS, (void *)(uintptr_t)vaddr);
    }
}

/* "ADDR:ADDR:..." into `out` (at most `max`), each with its Thumb bit cleared; returns the count. */
static uint32_t parse_addresses(const char *list, uint32_t *out, uint32_t max)
{
    uint32_t n = 0;
    while (list && *list && n < max) {
        char *end;
        out[n++] = (uint32_t)strtoul(list, &end, 0) & ~1u;
        if (*end != ':')
            break;
        list = end + 1;
    }
    return n;
}

static void *need(const char *name, const char *part)
{
    void *p = dlsym(RTLD_DEFAULT, name);
    if (p == NULL)
        fprintf(stderr, "vprobe: this QEMU does not export %s: no %s\n", name, part);
    return p;
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *table_path = NULL, *list = NULL, *vector_list = NULL;
    struct stat st;
    int i, fd;

    (void)info;
    for (i = 0; i < argc; i++) {
        if (strncmp(argv[i], "table=", 6) == 0)
            table_path = argv[i] + 6;
        else if (strncmp(argv[i], "handlers=", 9) == 0)
            list = argv[i] + 9;
        else if (strncmp(argv[i], "vectors=", 8) == 0)
            vector_list = argv[i] + 8;
    }
    q_clock_get_ns = (int64_t(*)(int))need("qemu_clock_get_ns", "x-virsim-clock");
    q_icount_get_raw = (int64_t(*)(void))dlsym(RTLD_DEFAULT, "icount_get_raw");
    q_register_command = (void (*)(void *, const char *, void (*)(void *, void **, void **), int, unsigned))
        need("qmp_register_command", "x-virsim-clock");
    q_commands = need("qmp_commands", "x-virsim-clock");
    q_qdict_new = (void *(*)(void))need("qdict_new", "x-virsim-clock");
    q_qdict_put_int = (void (*)(void *, const char *, int64_t))need("qdict_put_int", "x-virsim-clock");
    if (q_clock_get_ns && q_register_command && q_commands && q_qdict_new && q_qdict_put_int)
        q_register_command(q_commands, "x-virsim-clock", qmp_clock, QCO_NO_OPTIONS, 0);
    q_vm_stop = (int (*)(int))need("vm_stop", "halting at a fault, x-virsim-stop-at");
    q_qdict_get_try_int = (int64_t(*)(const void *, const char *, int64_t))need("qdict_get_try_int",
                                                                             "x-virsim-stop-at");
    q_timer_init_full = (void (*)(void *, void *, int, int, int, void (*)(void *), void *))need(
        "timer_init_full", "x-virsim-stop-at");
    q_timer_mod = (void (*)(void *, int64_t))need("timer_mod", "x-virsim-stop-at");
    q_timer_del = (void (*)(void *))need("timer_del", "x-virsim-stop-at");
    q_runstate_is_running = (_Bool (*)(void))need("runstate_is_running", "x-virsim-stop-at");
    q_run_on_cpu = (void (*)(void *, void (*)(void *, void *), void *))need("run_on_cpu", "x-virsim-stop-at");
    q_get_cpu = (void *(*)(int))need("qemu_get_cpu", "x-virsim-stop-at");
    q_cpu_is_stopped = (_Bool (*)(void *))need("cpu_is_stopped", "exact virtual time at a stop");
    q_in_vcpu_thread = (_Bool (*)(void))need("qemu_in_vcpu_thread", "exact virtual time at a stop");
    q_poll_add_notifier = (void (*)(void *))need("main_loop_poll_add_notifier", "exact virtual time at a stop");
    if (q_cpu_is_stopped && q_in_vcpu_thread && q_poll_add_notifier && q_runstate_is_running && q_get_cpu
        && q_vm_stop) {
        poll_notifier[0] = (void *)on_main_loop_poll;
        q_poll_add_notifier(poll_notifier);
    }
    if (q_register_command && q_commands && q_qdict_new && q_qdict_put_int && q_vm_stop && q_qdict_get_try_int
        && q_timer_init_full && q_timer_mod && q_timer_del && q_runstate_is_running && q_run_on_cpu
        && q_get_cpu)
        q_register_command(q_commands, "x-virsim-stop-at", qmp_stop_at, QCO_NO_OPTIONS, 0);

    q_gdb_read_register = (int (*)(void *, GByteArray *, int))need("arm_cpu_gdb_read_register", "fault records");
    q_memory_rw_debug = (int (*)(void *, uint64_t, void *, size_t, int))need("cpu_memory_rw_debug", "fault records");
    g_byte_array_new_ = (GByteArray * (*)(void)) need("g_byte_array_new", "fault records");
    g_byte_array_free_ = (void *(*)(GByteArray *, int))need("g_byte_array_free", "fault records");
    g_byte_array_set_size_ = (GByteArray * (*)(GByteArray *, unsigned int)) need("g_byte_array_set_size",
                                                                               "fault records");
    if (!(q_get_cpu && q_gdb_read_register && q_memory_rw_debug && g_byte_array_new_ && g_byte_array_free_
          && g_byte_array_set_size_ && q_clock_get_ns) || table_path == NULL || (list == NULL && vector_list == NULL))
        return 0; /* the clock alone */
    fd = open(table_path, O_RDWR);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < HEADER_SIZE + RECORD_SIZE) {
        fprintf(stderr, "vprobe: cannot open the fault table %s: no fault records\n", table_path);
        if (fd >= 0)
            close(fd);
        return 0;
    }
    table = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (table == MAP_FAILED || memcmp(table, MAGIC, 8) != 0) {
        fprintf(stderr, "vprobe: %s is not a fault table: no fault records\n", table_path);
        table = NULL;
        return 0;
    }
    memcpy(&capacity, table + 20, 4);
    memcpy(&taken_capacity, table + 32, 4);
    if (capacity == 0 || (size_t)st.st_size < HEADER_SIZE + (size_t)capacity * RECORD_SIZE) {
        table = NULL;
        return 0;
    }
    if ((size_t)st.st_size < HEADER_SIZE + (size_t)capacity * RECORD_SIZE + (size_t)taken_capacity * ENTRY_SIZE)
        taken_capacity = 0; /* an older table: faults only */
    n_handlers = parse_addresses(list, handlers, MAX_HANDLERS);
    n_vectors = parse_addresses(vector_list, vectors, MAX_VECTORS);
    qsort(vectors, n_vectors, sizeof vectors[0], compare_u32);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    return 0;
}
