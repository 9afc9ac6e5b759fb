/*
 * vsync: virsim's QEMU TCG plugin that makes a QEMU node take part in a multi-node lockstep.
 *
 * QEMU runs with -icount shift=S,sleep=off: every instruction is 2^S ns of virtual time and a
 * sleeping CPU skips to the next timer, so the node's clock depends on nothing but the guest. The
 * plugin puts one timer of its own on that clock at the end of the current quantum. In icount
 * mode QEMU never runs past a timer's deadline (it ends the instruction budget there, splitting a
 * block if it must), so the timer fires at the first instruction boundary at or after the quantum
 * end: the node's skew is below one instruction (2^S ns). A sleeping CPU (WFI) skips straight to
 * it. The callback meets the other nodes at the barrier in the shared segment
 * (virsim/sync/lockstep.py: same layout, same protocol), raises the interrupt lines the other
 * nodes sent this node in that quantum, and sets the timer to the next quantum end. No callback
 * runs per instruction or per block: between barriers QEMU runs at full speed.
 *
 * The callback runs with the big QEMU lock held, so QMP does not answer while the node waits at
 * a barrier; virsim reads a QEMU node's state from the segment instead. QEMU must never be stopped
 * over QMP while it is in lockstep either: use the segment's PAUSE command.
 *
 * The QEMU 7.2 plugin API has no timers, no clock and no interrupt lines. Debian's qemu-system
 * binaries export QEMU's own functions, so the plugin looks up the few it needs by name at load
 * time (timer_init_full, timer_mod, qemu_clock_get_ns, icount_get_raw, object_resolve_path,
 * qdev_get_gpio_in, qemu_set_irq, current_cpu, qemu_chr_find, qemu_chr_be_can_write,
 * qemu_chr_be_write) and refuses to load, naming the missing one, on a
 * QEMU that does not export them.
 *
 * UART links: a linked UART's output goes to a file chardev; at each barrier the plugin sends the
 * bytes it transmitted during the quantum as events (stamped with the quantum's start) and hands
 * the UART's receiver the next byte other nodes sent it, whenever the receiver can take one
 * (qemu_chr_be_write): one byte per quantum at most.
 *
 * Console: at each barrier the plugin appends the bytes QEMU logged on the node's console during
 * the quantum to the node's console.timeline, stamped with the quantum's start (the merged
 * console orders lines across nodes to within one quantum).
 *
 * Header commands: RUN; STOP (leave the barrier for good, run free until QEMU quits); PAUSE
 * (hold at the barrier).
 *
 * Loaded with:  -plugin vsync.so,seg=F,index=N,hz=HZ,console=LOG,timeline=F,max_quantum=N,irq_dev=PATH
 *                       [,link=SLOT/CHARDEV/TARGET/TARGET_SLOT/TXFILE ...]
 */
#define _GNU_SOURCE
#include "virsim_plugin.h"
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#define MAGIC "VSYNC001"
#define HEADER_SIZE 64
#define SLOT_SIZE 64
#define EVENT_SIZE 24
#define COUNT_SIZE 8
#define CMD_RUN 0
#define CMD_STOP 1
#define CMD_PAUSE 2
#define KIND_IRQ 1
#define KIND_UART 2
#define MAX_LINKS 8
#define MAX_INBOX 4096
#define SCALE_NS 1
#define MAX_IRQ 496
#define NS_PER_S 1000000000ull

/* The node slot (lockstep.py SLOT): arrived @0, reached @16; QEMU nodes add their statistics. */
struct slot {
    uint64_t arrived;     /* quanta completed (published last, with release semantics) */
    uint32_t status;
    uint32_t pad;
    uint64_t reached;     /* clock (cycles) at the last barrier */
    uint64_t skew_max;    /* most ns a barrier was met past the quantum's end */
    uint64_t skew_total;  /* sum over barriers, for the mean */
    uint64_t wait_ns;     /* host time spent waiting at barriers */
    uint64_t insns;       /* instructions executed */
    uint64_t pad2;
};

struct event { /* lockstep.py EVENT "<QHHHHII" */
    uint64_t cycle;
    uint16_t source, target, kind, pad;
    uint32_t a, b;
};

/* QEMU's own functions (see the top of the file). */
static void (*q_timer_init_full)(void *ts, void *group, int type, int scale, int attributes,
                                 void (*cb)(void *), void *opaque);
static void (*q_timer_mod)(void *ts, int64_t expire);
static int64_t (*q_clock_get_ns)(int type);
static int64_t (*q_icount_get_raw)(void);
static void *(*q_resolve_path)(const char *path, int *ambiguous);
static void *(*q_gpio_in)(void *dev, int n);
static void (*q_set_irq)(void *irq, int level);
static int (*q_shutdown_requested)(void);  /* optional: SIGTERM/quit while waiting ends the wait */
static void *(*q_chr_find)(const char *name);
static int (*q_chr_be_can_write)(void *chr);
static void (*q_chr_be_write)(void *chr, const uint8_t *buf, int len);

/* A UART of this node linked to another node's UART (interconnect.uart_links): what QEMU's UART
 * transmits goes to a file chardev (read at each barrier and sent as events); what the other node
 * sends is queued and handed to the UART's receiver, a byte at a barrier whenever it can take one. */
struct link {
    uint32_t slot;          /* this UART's index among the node's peripherals (events name it so) */
    char chardev[32];       /* QEMU chardev id of the UART */
    char tx_path[512];      /* the file chardev its output goes to */
    uint32_t target, target_slot;
    void *chr;
    int tx_fd;
    off_t tx_seen;
    uint8_t rx[65536];
    uint32_t rx_head, rx_tail;  /* queue of received bytes (head == tail: empty) */
};
static struct link links[MAX_LINKS];
static uint32_t n_links;

static uint8_t *seg;
static uint32_t nodes, max_events, self;
static uint64_t quantum, max_quantum, current_quantum;
static uint64_t hz = 25000000;
static size_t node_size;
static const char *irq_dev_path = "/machine/armv7m";
static void *irq_dev;
static int irq_level[MAX_IRQ];
static uint64_t timer[32];      /* a QEMUTimer (7 words in QEMU 7.2), with room to spare */
static int hooked, armed;

static uint64_t target;         /* end of the current quantum, cycles */
static uint64_t target_ns;      /* ... as QEMU virtual time */
static uint64_t quanta;         /* barriers passed */
static uint64_t quantum_start;  /* clock at the last barrier, cycles: the stamp of console bytes */
static int running_free;        /* STOP seen: no more barriers */

static int console_fd = -1, timeline_fd = -1;
static const char *console_path;
static off_t console_seen;

static struct slot *slot_of(uint32_t n) { return (struct slot *)(seg + HEADER_SIZE + (size_t)n * node_size); }
static volatile uint32_t *command(void) { return (volatile uint32_t *)(seg + 24); }

static uint8_t *outbox(uint32_t n, uint64_t q)
{
    return (uint8_t *)slot_of(n) + SLOT_SIZE + (q & 1) * (COUNT_SIZE + (size_t)max_events * EVENT_SIZE);
}

static uint64_t cycles_of(uint64_t ns) { return (uint64_t)((unsigned __int128)ns * hz / NS_PER_S); }
static uint64_t ns_of(uint64_t cycles) { return (uint64_t)(((unsigned __int128)cycles * NS_PER_S + hz - 1) / hz); }

static uint64_t host_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* QEMU's virtual clock and instruction count, read as the main loop would (at a timer the vCPU is
 * out of its execution loop, so the count it last published is exact). */
static int64_t virtual_clock(int64_t *insns)
{
    return virsim_virtual_clock(q_clock_get_ns, q_icount_get_raw, insns);
}

static void write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/* Append what QEMU logged on the console since the last look to the timeline, stamped `at`. */
static void console_to_timeline(uint64_t at)
{
    struct stat st;
    uint8_t buf[4096];

    if (timeline_fd < 0 || console_path == NULL)
        return;
    if (console_fd < 0) {
        console_fd = open(console_path, O_RDONLY);
        if (console_fd < 0)
            return;
    }
    if (fstat(console_fd, &st) != 0 || st.st_size <= console_seen)
        return;
    while (console_seen < st.st_size) {
        size_t left = (size_t)(st.st_size - console_seen);
        ssize_t n = pread(console_fd, buf, left < sizeof buf ? left : sizeof buf, console_seen);
        uint8_t rec[10];
        if (n <= 0)
            return;
        memcpy(rec, &at, 8); /* TIMELINE "<QH": cycle, length, then the bytes (little-endian host) */
        rec[8] = (uint8_t)(n & 0xff);
        rec[9] = (uint8_t)(n >> 8);
        write_all(timeline_fd, rec, sizeof rec);
        write_all(timeline_fd, buf, (size_t)n);
        console_seen += n;
    }
}

static int event_before(const struct event *x, const struct event *y, uint32_t xi, uint32_t yi)
{
    if (x->cycle != y->cycle)
        return x->cycle < y->cycle;
    if (x->source != y->source)
        return x->source < y->source;
    return xi < yi;
}

/* Raise/lower the interrupt lines the other nodes sent this node in quantum `q`, and queue the
 * bytes they sent its linked UARTs, in the same (cycle, source, sequence) order the built-in
 * engine applies them. */
static void deliver(uint64_t q)
{
    static struct event ev[MAX_INBOX];
    static uint32_t seq[MAX_INBOX];
    uint32_t n_ev = 0, n, i, j, l;

    for (n = 0; n < nodes; n++) {
        uint8_t *box = outbox(n, q);
        uint32_t c = *(volatile uint32_t *)box;
        for (i = 0; i < c && n_ev < MAX_INBOX; i++) {
            struct event e;
            memcpy(&e, box + COUNT_SIZE + (size_t)i * EVENT_SIZE, sizeof e);
            if (e.target != self || (e.kind != KIND_IRQ && e.kind != KIND_UART))
                continue;
            for (j = n_ev; j > 0 && event_before(&e, &ev[j - 1], i, seq[j - 1]); j--) {
                ev[j] = ev[j - 1];
                seq[j] = seq[j - 1];
            }
            ev[j] = e;
            seq[j] = i;
            n_ev++;
        }
    }
    int any_irq = 0;
    for (i = 0; i < n_ev; i++) {
        if (ev[i].kind != KIND_UART) {
            any_irq = 1;
            continue;
        }
        for (l = 0; l < n_links; l++) {
            struct link *k = &links[l];
            if (k->slot == ev[i].a && (uint32_t)(k->rx_tail + 1) % sizeof k->rx != k->rx_head) {
                k->rx[k->rx_tail] = (uint8_t)ev[i].b;
                k->rx_tail = (k->rx_tail + 1) % sizeof k->rx;
            }
        }
    }
    if (!any_irq)
        return;
    if (irq_dev == NULL) {
        irq_dev = q_resolve_path(irq_dev_path, NULL);
        if (irq_dev == NULL) {
            fprintf(stderr, "vsync: no device %s: interrupts from other nodes cannot be raised\n", irq_dev_path);
            return;
        }
    }
    for (i = 0; i < n_ev; i++) {
        int line = (int)ev[i].a, level = ev[i].b != 0;
        if (ev[i].kind != KIND_IRQ || line < 0 || line >= MAX_IRQ)
            continue;
        if (irq_level[line] != level) {
            irq_level[line] = level;
            q_set_irq(q_gpio_in(irq_dev, line), level); /* the CPU takes it at its next instruction */
        }
    }
}

/* The bytes this node's linked UARTs transmitted during the quantum, as events into `box`
 * (stamped with the quantum's start); returns their count. Bytes beyond the outbox wait. */
static uint32_t send_uart(uint8_t *box)
{
    uint32_t count = 0, l;
    uint8_t buf[256];

    for (l = 0; l < n_links; l++) {
        struct link *k = &links[l];
        struct stat st;
        if (k->tx_fd < 0)
            k->tx_fd = open(k->tx_path, O_RDONLY);
        if (k->tx_fd < 0 || fstat(k->tx_fd, &st) != 0)
            continue;
        while (k->tx_seen < st.st_size && count < max_events) {
            size_t want = (size_t)(st.st_size - k->tx_seen);
            ssize_t n, i;
            if (want > sizeof buf)
                want = sizeof buf;
            if (want > max_events - count)
                want = max_events - count;
            n = pread(k->tx_fd, buf, want, k->tx_seen);
            if (n <= 0)
                break;
            for (i = 0; i < n; i++) {
                struct event e = {quantum_start, (uint16_t)self, (uint16_t)k->target, KIND_UART, 0, k->target_slot,
                                  buf[i]};
                memcpy(box + COUNT_SIZE + (size_t)count * EVENT_SIZE, &e, sizeof e);
                count++;
            }
            k->tx_seen += n;
        }
    }
    return count;
}

/* Hand each linked UART the next received byte if its receiver can take one (BQL held). */
static void feed_uarts(void)
{
    uint32_t l;
    for (l = 0; l < n_links; l++) {
        struct link *k = &links[l];
        if (k->rx_head == k->rx_tail)
            continue;
        if (k->chr == NULL && (k->chr = q_chr_find(k->chardev)) == NULL)
            continue;
        if (q_chr_be_can_write(k->chr) > 0) {
            q_chr_be_write(k->chr, &k->rx[k->rx_head], 1);
            k->rx_head = (k->rx_head + 1) % sizeof k->rx;
        }
    }
}

/* One barrier with the clock at `now_ns`. Returns -1 once STOP was seen. */
static int barrier(uint64_t now_ns, uint64_t insns)
{
    struct slot *me = slot_of(self);
    uint64_t want = quanta + 1, traffic = 0, t0 = 0, reached = cycles_of(now_ns);
    uint32_t spins = 0, n;

    console_to_timeline(quantum_start);
    *(volatile uint32_t *)outbox(self, quanta) = send_uart(outbox(self, quanta));
    if (reached < target)
        reached = target; /* a fraction of a cycle: ns -> cycles rounding */
    me->reached = reached;
    me->insns = insns;
    me->skew_total += now_ns - target_ns;
    if (now_ns - target_ns > me->skew_max)
        me->skew_max = now_ns - target_ns;
    __atomic_store_n(&me->arrived, want, __ATOMIC_RELEASE);
    for (;;) {
        int all = 1;
        uint32_t cmd = *command();
        if (cmd == CMD_STOP) {
            running_free = 1;
            return -1;
        }
        for (n = 0; n < nodes && all; n++)
            if (n != self && __atomic_load_n(&slot_of(n)->arrived, __ATOMIC_ACQUIRE) < want)
                all = 0;
        if (all && cmd != CMD_PAUSE)
            break;
        if (spins == 0)
            t0 = host_ns();
        spins++;
        if (spins % 1024 == 0 && q_shutdown_requested != NULL && q_shutdown_requested()) {
            running_free = 1; /* QEMU was told to quit (SIGTERM, with no STOP from virsim): let it */
            return -1;
        }
        if (spins < 2000)
            continue;
        if (spins < 4000) {
            sched_yield();
        } else {
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    if (spins)
        me->wait_ns += host_ns() - t0;
    for (n = 0; n < nodes; n++)
        traffic += *(volatile uint32_t *)outbox(n, quanta);
    deliver(quanta);
    feed_uarts();
    quanta = want;
    quantum_start = reached;
    if (max_quantum) /* event mode: the same doubling rule as the built-in engine (_next_quantum) */
        current_quantum = traffic ? quantum : (current_quantum * 2 < max_quantum ? current_quantum * 2 : max_quantum);
    target += current_quantum;
    target_ns = ns_of(target);
    return 0;
}

/* The plugin's timer: the node's clock reached the end of the quantum (big QEMU lock held). */
static void on_quantum_end(void *opaque)
{
    int64_t insns, now = virtual_clock(&insns);
    (void)opaque;
    while (!running_free && (uint64_t)now >= target_ns)
        barrier((uint64_t)now, (uint64_t)insns);
    if (!running_free)
        q_timer_mod(timer, (int64_t)target_ns);
}

/* The first block executes: put the first quantum's end on QEMU's virtual clock. (Earlier, at
 * CPU creation, arming a timer kicks a vCPU thread that does not exist yet.) */
static void on_first_block(unsigned int vcpu, void *userdata)
{
    (void)vcpu;
    (void)userdata;
    if (armed)
        return;
    armed = 1;
    q_timer_init_full(timer, NULL, QEMU_CLOCK_VIRTUAL, SCALE_NS, 0, on_quantum_end, NULL);
    q_timer_mod(timer, (int64_t)target_ns);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    if (!hooked) { /* only the very first block gets a callback */
        hooked = 1;
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_first_block, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    console_to_timeline(quantum_start); /* the tail printed after the last barrier */
}

static int resolve(void)
{
    static const char *names[] = {"timer_init_full", "timer_mod", "qemu_clock_get_ns", "icount_get_raw",
                                  "object_resolve_path", "qdev_get_gpio_in", "qemu_set_irq", "current_cpu",
                                  "qemu_chr_find", "qemu_chr_be_can_write", "qemu_chr_be_write"};
    void *found[11];
    size_t i;
    for (i = 0; i < 11; i++) {
        found[i] = dlsym(RTLD_DEFAULT, names[i]);
        if (found[i] == NULL) {
            fprintf(stderr, "vsync: this QEMU does not export %s, which lockstep needs\n", names[i]);
            return -1;
        }
    }
    q_timer_init_full = (void (*)(void *, void *, int, int, int, void (*)(void *), void *))found[0];
    q_timer_mod = (void (*)(void *, int64_t))found[1];
    q_clock_get_ns = (int64_t(*)(int))found[2];
    q_icount_get_raw = (int64_t(*)(void))found[3];
    q_resolve_path = (void *(*)(const char *, int *))found[4];
    q_gpio_in = (void *(*)(void *, int))found[5];
    q_set_irq = (void (*)(void *, int))found[6];
    q_chr_find = (void *(*)(const char *))found[8];
    q_chr_be_can_write = (int (*)(void *))found[9];
    q_chr_be_write = (void (*)(void *, const uint8_t *, int))found[10];
    q_shutdown_requested = (int (*)(void))dlsym(RTLD_DEFAULT, "qemu_shutdown_requested_get");
    return 0;
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *seg_path = NULL, *timeline_path = NULL;
    struct stat st;
    void *map;
    int fd, i;

    (void)info;
    for (i = 0; i < argc; i++) {
        if (strncmp(argv[i], "seg=", 4) == 0)
            seg_path = argv[i] + 4;
        else if (strncmp(argv[i], "index=", 6) == 0)
            self = (uint32_t)strtoul(argv[i] + 6, NULL, 10);
        else if (strncmp(argv[i], "hz=", 3) == 0)
            hz = strtoull(argv[i] + 3, NULL, 10);
        else if (strncmp(argv[i], "console=", 8) == 0)
            console_path = argv[i] + 8;
        else if (strncmp(argv[i], "timeline=", 9) == 0)
            timeline_path = argv[i] + 9;
        else if (strncmp(argv[i], "max_quantum=", 12) == 0)
            max_quantum = strtoull(argv[i] + 12, NULL, 10);
        else if (strncmp(argv[i], "irq_dev=", 8) == 0)
            irq_dev_path = argv[i] + 8;
        else if (strncmp(argv[i], "link=", 5) == 0 && n_links < MAX_LINKS) {
            /* link=<slot>/<chardev id>/<target node>/<target slot>/<tx file> */
            struct link *k = &links[n_links];
            int used = 0;
            if (sscanf(argv[i] + 5, "%u/%31[^/]/%u/%u/%n", &k->slot, k->chardev, &k->target, &k->target_slot,
                       &used) != 4 || used == 0) {
                fprintf(stderr, "vsync: bad link= option %s\n", argv[i]);
                return -1;
            }
            snprintf(k->tx_path, sizeof k->tx_path, "%s", argv[i] + 5 + used);
            k->tx_fd = -1;
            n_links++;
        }
    }
    if (seg_path == NULL || hz == 0) {
        fprintf(stderr, "vsync: seg=<lockstep segment> and hz=<node frequency> are required\n");
        return -1;
    }
    if (resolve() != 0)
        return -1;
    fd = open(seg_path, O_RDWR);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < HEADER_SIZE) {
        fprintf(stderr, "vsync: cannot open the lockstep segment %s\n", seg_path);
        return -1;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED || memcmp(map, MAGIC, 8) != 0) {
        fprintf(stderr, "vsync: %s is not a lockstep segment\n", seg_path);
        return -1;
    }
    seg = map;
    memcpy(&nodes, seg + 8, 4);
    memcpy(&max_events, seg + 12, 4);
    memcpy(&quantum, seg + 16, 8);
    node_size = SLOT_SIZE + 2 * (COUNT_SIZE + (size_t)max_events * EVENT_SIZE);
    if (self >= nodes || (size_t)st.st_size < HEADER_SIZE + nodes * node_size) {
        fprintf(stderr, "vsync: node index %u outside the segment's %u nodes\n", self, nodes);
        return -1;
    }
    current_quantum = quantum;
    target = quantum;
    target_ns = ns_of(target);
    if (console_path != NULL) {
        console_fd = open(console_path, O_RDONLY);
        if (console_fd >= 0 && fstat(console_fd, &st) == 0)
            console_seen = st.st_size; /* an appended log: earlier runs' bytes are not this run's */
    }
    if (timeline_path != NULL)
        timeline_fd = open(timeline_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
