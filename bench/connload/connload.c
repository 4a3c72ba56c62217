/* connload: short TCP connections spread at random over a range of ports (Linux, C99, no library).
 *
 *   connload HOST LOPORT HIPORT [options]
 *     -c INFLIGHT  connections in flight at once (default 4)
 *     -n COUNT     stop after COUNT connections finished, answered or failed (default 20000)
 *     -d SECONDS   stop after this long, whichever comes first (default 5)
 *     -r REQUEST   the bytes sent on each connection (default "GET / HTTP/1.0\r\n\r\n")
 *     -m MINBYTES  an answer of fewer bytes counts as a failure (default 1)
 *     -t MS        a connection unfinished after MS ms fails and is replaced (default 2000)
 *     -s SEED      the random generator's seed (default: from the clock)
 *     -P PORTFILE  the ports to dial, one a line, instead of every port of LOPORT..HIPORT
 *
 * Each connection: a non-blocking connect to HOST and a port drawn at random (uniformly) from
 * the range or the file, the request once connected, then every byte of the answer until the
 * peer closes, then close(). The time of a connection runs from connect() to the end of the
 * answer. One thread, one epoll set. After the run, one JSON line:
 * {"ok","failed","refused","reset","timeouts","short","seconds","cps","p50_us","p90_us",
 *  "p99_us","max_us","bytes"}.
 * Bounded: at most -d seconds and -n connections.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HIST_US 2000000 /* 1 us buckets up to 2 s */
#define MAXSLOTS 1024

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* xorshift64*: fast, good enough to spread ports */
static uint64_t rng;
static uint64_t rnd(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

struct slot {
    int fd;
    int sent;        /* request written */
    uint64_t start;  /* ns */
    uint64_t bytes;  /* answer bytes so far */
};

static struct slot slots[MAXSLOTS];
static uint32_t *hist;
static int epfd;
static struct sockaddr_in dst;
static uint16_t *ports;
static size_t nports;
static const char *request = "GET / HTTP/1.0\r\n\r\n";
static size_t reqlen;
static uint64_t ok, failed, refused, reset, timeouts, shortans, total_bytes, started;
static uint64_t minbytes = 1;

static void open_one(int k) {
    struct slot *s = &slots[k];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = dst;
    a.sin_port = htons(ports[rnd() % nports]);
    s->fd = fd;
    s->sent = 0;
    s->bytes = 0;
    s->start = now_ns();
    started++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)k};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        /* refused at once is still reported through the epoll set on loopback; other errors too */
    }
}

/* ends slot k: good (answered) or with the given failure counter bumped */
static void end_one(int k, uint64_t *why) {
    struct slot *s = &slots[k];
    if (why == NULL) {
        uint64_t us = (now_ns() - s->start) / 1000;
        hist[us < HIST_US ? us : HIST_US - 1]++;
        ok++;
        total_bytes += s->bytes;
    } else {
        (*why)++;
        failed++;
    }
    close(s->fd); /* also removes it from the epoll set */
    s->fd = -1;
}

static void handle(int k, uint32_t events) {
    struct slot *s = &slots[k];
    if (s->fd < 0) return;
    if (!s->sent) {
        int err = 0;
        socklen_t len = sizeof err;
        if (events & (EPOLLERR | EPOLLHUP)) {
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            end_one(k, err == ECONNREFUSED ? &refused : &reset);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        ssize_t w = write(s->fd, request, reqlen);
        if (w != (ssize_t)reqlen) {
            end_one(k, errno == ECONNREFUSED ? &refused : &reset);
            return;
        }
        s->sent = 1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)k};
        epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
        /* fall through: the answer may be there already */
    }
    char buf[16384];
    for (;;) {
        ssize_t r = read(s->fd, buf, sizeof buf);
        if (r > 0) {
            s->bytes += (uint64_t)r;
            continue;
        }
        if (r == 0) {
            end_one(k, s->bytes >= minbytes ? NULL : &shortans);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        end_one(k, errno == ECONNREFUSED ? &refused : &reset);
        return;
    }
}

static uint64_t pct(uint64_t n, double p) {
    if (n == 0) return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)n + 0.999999);
    if (want == 0) want = 1;
    uint64_t seen = 0;
    for (uint64_t us = 0; us < HIST_US; us++) {
        seen += hist[us];
        if (seen >= want) return us;
    }
    return HIST_US;
}

static void read_ports(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    size_t cap = 1024;
    ports = malloc(cap * sizeof *ports);
    unsigned p;
    while (fscanf(f, "%u", &p) == 1) {
        if (p == 0 || p > 65535) continue;
        if (nports == cap) ports = realloc(ports, (cap *= 2) * sizeof *ports);
        ports[nports++] = (uint16_t)p;
    }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: connload HOST LOPORT HIPORT [-c INFLIGHT] [-n COUNT] [-d SECONDS] "
                        "[-r REQUEST] [-m MINBYTES] [-t MS] [-s SEED] [-P PORTFILE]\n");
        return 2;
    }
    int inflight = 4;
    uint64_t count = 20000;
    double seconds = 5.0;
    uint64_t timeout_ms = 2000;
    const char *portfile = NULL;
    rng = now_ns() | 1;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
        fprintf(stderr, "connload: %s is not an IPv4 address\n", argv[1]);
        return 2;
    }
    long lo = atol(argv[2]), hi = atol(argv[3]);
    for (int i = 4; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc) { fprintf(stderr, "connload: %s needs a value\n", o); return 2; }
        const char *v = argv[++i];
        if (!strcmp(o, "-c")) inflight = atoi(v);
        else if (!strcmp(o, "-n")) count = strtoull(v, NULL, 10);
        else if (!strcmp(o, "-d")) seconds = atof(v);
        else if (!strcmp(o, "-r")) request = v;
        else if (!strcmp(o, "-m")) minbytes = strtoull(v, NULL, 10);
        else if (!strcmp(o, "-t")) timeout_ms = strtoull(v, NULL, 10);
        else if (!strcmp(o, "-s")) rng = strtoull(v, NULL, 10) | 1;
        else if (!strcmp(o, "-P")) portfile = v;
        else { fprintf(stderr, "connload: unknown option %s\n", o); return 2; }
    }
    if (inflight < 1 || inflight > MAXSLOTS) { fprintf(stderr, "connload: -c 1..%d\n", MAXSLOTS); return 2; }
    if (portfile) {
        read_ports(portfile);
    } else {
        if (lo < 1 || hi > 65535 || hi < lo) { fprintf(stderr, "connload: bad port range\n"); return 2; }
        nports = (size_t)(hi - lo + 1);
        ports = malloc(nports * sizeof *ports);
        for (size_t k = 0; k < nports; k++) ports[k] = (uint16_t)(lo + (long)k);
    }
    if (nports == 0) { fprintf(stderr, "connload: no port to dial\n"); return 2; }
    reqlen = strlen(request);
    hist = calloc(HIST_US, sizeof *hist);
    if (!hist) die("calloc");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");

    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9), tmo = timeout_ms * 1000000ull;
    for (int k = 0; k < inflight; k++) slots[k].fd = -1;
    for (int k = 0; k < inflight && started < count; k++) open_one(k);
    struct epoll_event evs[MAXSLOTS];
    uint64_t last_sweep = t0;
    for (;;) {
        uint64_t t = now_ns();
        int open = 0;
        for (int k = 0; k < inflight; k++) open += slots[k].fd >= 0;
        if (open == 0 || t >= end) break;
        int n = epoll_wait(epfd, evs, MAXSLOTS, 10);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) handle((int)evs[i].data.u32, evs[i].events);
        t = now_ns();
        if (t - last_sweep > 10000000ull) { /* every 10 ms: the connections gone quiet too long */
            last_sweep = t;
            for (int k = 0; k < inflight; k++)
                if (slots[k].fd >= 0 && t - slots[k].start > tmo) end_one(k, &timeouts);
        }
        if (t < end)
            for (int k = 0; k < inflight; k++)
                if (slots[k].fd < 0 && started < count) open_one(k);
    }
    uint64_t t1 = now_ns();
    for (int k = 0; k < inflight; k++)
        if (slots[k].fd >= 0) close(slots[k].fd); /* cut off by the time bound: not counted */
    double secs = (double)(t1 - t0) / 1e9;
    printf("{\"ok\":%llu,\"failed\":%llu,\"refused\":%llu,\"reset\":%llu,\"timeouts\":%llu,\"short\":%llu,"
           "\"seconds\":%.4f,\"cps\":%.1f,\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,\"max_us\":%llu,"
           "\"bytes\":%llu}\n",
           (unsigned long long)ok, (unsigned long long)failed, (unsigned long long)refused,
           (unsigned long long)reset, (unsigned long long)timeouts, (unsigned long long)shortans, secs,
           (double)ok / secs, (unsigned long long)pct(ok, 50), (unsigned long long)pct(ok, 90),
           (unsigned long long)pct(ok, 99), (unsigned long long)pct(ok, 100), (unsigned long long)total_bytes);
    return 0;
}
