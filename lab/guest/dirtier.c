/*
 * dirtier: the lab guest's workload, a memory (and optional disk) writer with a
 * known, steady dirty rate, so that recorded migrations have a ground truth.
 *
 * Parameters come from the kernel command line (/proc/cmdline):
 *   lab.mb=N        hot set, MiB: the region rewritten in a sequential sweep
 *   lab.fill=N      MiB filled with non-zero data at start (so QEMU cannot send
 *                   them as zero pages); the region is max(mb, fill) MiB
 *   lab.rate=N      MiB/s dirtied: one 8-byte word per 4 KiB page, paced every
 *                   5 ms, never catching up after a stall (a paused or
 *                   post-copy-faulting guest must not burst afterwards)
 *   lab.report=S    seconds between status lines (default 2)
 *   lab.verify=1    check every page's first word against its expected tag
 *                   before rewriting it, and the whole region at each report
 *   lab.diskrate=N  MiB/s of random 4 KiB writes to /dev/vda, if present
 *
 * Each page's first word is a tag (generation << 32 | page index): the
 * generation is the number of writes the page has had, computable from the
 * sweep counter and the cursor, so verification needs no extra memory.
 *
 * Output (serial console), one line each, parsed by lab/labctl.py:
 *   dirtier: filled 400 MiB in 2.66s, hot set 400 MiB, rate=0 MiB/s
 *   dirtier: t=24.0s dirtied=1230584 pages (200.0 MiB/s over last 2.0s) sweeps=18 verify=ok
 *   dirtier: VERIFY FAIL page=123 got=0x... want=0x...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1024UL * 1024UL)
#define TICK_S 0.005
/* A tick longer than this is a stall (guest paused, post-copy faults): the
 * time is dropped instead of being caught up. */
#define STALL_S 0.05

struct params {
    unsigned long mb, fill, rate, diskrate;
    double report;
    int verify;
};

struct state {
    uint64_t *mem;          /* region base, viewed as words */
    unsigned long npages;   /* region pages = max(hot, fill) */
    unsigned long hot;      /* hot set pages */
    unsigned long filled;   /* pages tagged at start */
    unsigned long cursor;   /* next hot page to write */
    unsigned long sweeps;   /* completed sweeps over the hot set */
    unsigned long dirtied;  /* total page writes */
    int verify_failed;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static unsigned long cmdline_ulong(const char *cmdline, const char *key, unsigned long dflt)
{
    const char *p = strstr(cmdline, key);
    return p ? strtoul(p + strlen(key), NULL, 10) : dflt;
}

static struct params read_params(void)
{
    char buf[4096] = "";
    /* DIRTIER_CMDLINE lets the program be exercised on the host. */
    const char *override = getenv("DIRTIER_CMDLINE");
    if (override) {
        snprintf(buf, sizeof buf, "%s", override);
        goto parse;
    }
    FILE *f = fopen("/proc/cmdline", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = '\0';
        fclose(f);
    }
parse:;
    struct params p = {
        .mb = cmdline_ulong(buf, "lab.mb=", 64),
        .fill = cmdline_ulong(buf, "lab.fill=", 0),
        .rate = cmdline_ulong(buf, "lab.rate=", 0),
        .diskrate = cmdline_ulong(buf, "lab.diskrate=", 0),
        .report = (double)cmdline_ulong(buf, "lab.report=", 2),
        .verify = (int)cmdline_ulong(buf, "lab.verify=", 0),
    };
    if (p.report <= 0)
        p.report = 2;
    return p;
}

static inline uint64_t tag(uint64_t generation, uint64_t page)
{
    return generation << 32 | page;
}

/* Expected first word of a page: its write count, from fill + sweeps. */
static uint64_t expected(const struct state *s, unsigned long page)
{
    uint64_t gen = page < s->filled ? 1 : 0;
    if (page < s->hot)
        gen += s->sweeps + (page < s->cursor ? 1 : 0);
    return gen ? tag(gen, page) : 0;
}

static void check_page(struct state *s, unsigned long page)
{
    uint64_t got = s->mem[page * (PAGE / 8)], want = expected(s, page);
    if (got == want)
        return;
    if (s->verify_failed < 10) /* bounded: a corrupt region must not flood the console */
        printf("dirtier: VERIFY FAIL page=%lu got=0x%llx want=0x%llx\n", page,
               (unsigned long long)got, (unsigned long long)want);
    s->verify_failed++;
}

static void fill_region(struct state *s)
{
    for (unsigned long i = 0; i < s->filled; i++) {
        uint64_t *w = &s->mem[i * (PAGE / 8)];
        w[0] = tag(1, i);
        w[PAGE / 8 - 1] = ~tag(1, i); /* second non-zero word: not a zero page either end */
    }
}

static void write_hot_page(struct state *s, int verify)
{
    if (s->hot == 0)
        return;
    if (verify)
        check_page(s, s->cursor);
    uint64_t next_generation = (expected(s, s->cursor) >> 32) + 1;
    s->mem[s->cursor * (PAGE / 8)] = tag(next_generation, s->cursor);
    s->dirtied++;
    if (++s->cursor == s->hot) {
        s->cursor = 0;
        s->sweeps++;
    }
}

static void verify_region(struct state *s)
{
    for (unsigned long i = 0; i < s->npages; i++)
        check_page(s, i);
}

/* Random 4 KiB writes through the page cache, like an application would. */
struct disk {
    int fd;
    unsigned long blocks;
    char buf[PAGE];
};

static void disk_open(struct disk *d)
{
    d->fd = open("/dev/vda", O_RDWR);
    d->blocks = 0;
    if (d->fd < 0)
        return;
    off_t size = lseek(d->fd, 0, SEEK_END);
    d->blocks = size > 0 ? (unsigned long)size / PAGE : 0;
    memset(d->buf, 0xa5, sizeof d->buf);
}

static void disk_write_block(struct disk *d, unsigned long n)
{
    unsigned long block = (unsigned long)random() % d->blocks;
    memcpy(d->buf, &n, sizeof n); /* vary the content, so no block dedups */
    if (pwrite(d->fd, d->buf, PAGE, (off_t)(block * PAGE)) < 0)
        perror("dirtier: pwrite /dev/vda");
}

static void report(const struct state *s, double t, unsigned long pages_in_period, double period)
{
    printf("dirtier: t=%.1fs dirtied=%lu pages (%.1f MiB/s over last %.1fs) sweeps=%lu verify=%s\n",
           t, s->dirtied, (double)pages_in_period * PAGE / MIB / period, period, s->sweeps,
           s->verify_failed ? "FAIL" : "ok");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct params p = read_params();
    unsigned long region_mb = p.mb > p.fill ? p.mb : p.fill;
    struct state s = {
        .npages = region_mb * MIB / PAGE,
        .hot = p.mb * MIB / PAGE,
        .filled = p.fill * MIB / PAGE,
    };
    s.mem = mmap(NULL, region_mb * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s.mem == MAP_FAILED) {
        perror("dirtier: mmap");
        return 1;
    }

    double t0 = now_s();
    fill_region(&s);
    printf("dirtier: filled %lu MiB in %.2fs, hot set %lu MiB, rate=%lu MiB/s\n", p.fill,
           now_s() - t0, p.mb, p.rate);

    struct disk d = { .fd = -1 };
    if (p.diskrate)
        disk_open(&d);
    if (p.diskrate && d.blocks)
        printf("dirtier: disk /dev/vda %lu MiB, %lu MiB/s random writes\n", d.blocks * PAGE / MIB,
               p.diskrate);

    const double pages_per_s = (double)p.rate * MIB / PAGE;
    const double blocks_per_s = d.blocks ? (double)p.diskrate * MIB / PAGE : 0;
    double start = now_s(), last = start, last_report = start;
    double mem_budget = 0, disk_budget = 0;
    unsigned long dirtied_at_report = 0, disk_writes = 0;

    for (;;) {
        sleep_s(TICK_S);
        double t = now_s(), dt = t - last;
        last = t;
        if (dt > STALL_S)
            dt = TICK_S; /* no catch-up burst after a stall */
        mem_budget += pages_per_s * dt;
        for (; mem_budget >= 1; mem_budget -= 1)
            write_hot_page(&s, p.verify);
        disk_budget += blocks_per_s * dt;
        for (; disk_budget >= 1; disk_budget -= 1)
            disk_write_block(&d, ++disk_writes);

        if (t - last_report >= p.report) {
            if (p.verify)
                verify_region(&s);
            report(&s, t - start, s.dirtied - dirtied_at_report, t - last_report);
            dirtied_at_report = s.dirtied;
            last_report = t;
        }
    }
}
