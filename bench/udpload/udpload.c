/* udpload: the UDP load generator and echo backend of bench/udp.py (Linux, C99, no library).
 *
 *   udpload echo PORT                      echo every datagram back to its sender
 *                                          (recvmmsg/sendmmsg, 64 at a time; one thread)
 *   udpload client HOST PORT [options]     closed-loop round trips, then one JSON line
 *     -s SIZE      datagram size in bytes (24 to 65507; default 64)
 *     -f FLOWS     client sockets, i.e. distinct source ports (default 1)
 *     -b BASE      bind the flows to ports BASE .. BASE+FLOWS-1 (default: ephemeral ports);
 *                  with fixed ports a forwarder's flows outlive one run and are reused
 *     -w INFLIGHT  datagrams in flight, all flows together (default 64); each new datagram
 *                  leaves on the next flow in turn, so every flow carries traffic
 *     -d SECONDS   measured duration (default 3)
 *     -n COUNT     stop after COUNT answered round trips (default: unbounded, the time bounds)
 *     -t MS        a datagram unanswered after MS ms is lost and replaced (default 500)
 *     -P SECONDS   give up priming the flows after this long (default 30)
 *     -c N         flows primed at once (default 1: one after the other; socat's fork hands
 *                  its listening socket, with whatever other clients' datagrams wait in it,
 *                  to the child it makes for the first client, so several at once go astray)
 *
 * The client first primes every flow (one datagram answered on each, -c flows at a time), so
 * that a forwarder's per-flow set-up (a socket, a process for socat) is out of the
 * measurement; it then prints "ready" on its own line, and after the run one JSON line:
 * {"sent","received","lost","late","seconds","rtps","p50_us","p90_us","p99_us","p999_us",
 *  "max_us","prime_seconds"}.  Each datagram carries a run nonce, its slot, its slot's
 * generation and the time it left; an answer whose slot has moved on (it came after its
 * timeout) counts as late and is not measured.
 * Bounded: at most -d seconds measured (plus the priming, at most -P) and -n round trips.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAXDGRAM 65536
#define HIST_US 2000000 /* 1 us buckets up to 2 s; longer round trips land in the last one */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void raise_nofile(void) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void bufsize(int fd, int bytes) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

/* ---- echo ------------------------------------------------------------------------------- */

static _Noreturn void echo(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bufsize(fd, 8 << 20);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    static char bufs[BATCH][MAXDGRAM];
    static struct sockaddr_in peers[BATCH];
    static struct iovec iov[BATCH];
    static struct mmsghdr msgs[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = MAXDGRAM;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &peers[i];
            msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("recvmmsg");
        }
        for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
        int off = 0;
        while (off < n) {
            int m = sendmmsg(fd, msgs + off, n - off, 0);
            if (m < 0) {
                if (errno == EINTR) continue;
                break; /* ECONNREFUSED from an earlier ICMP, ENOBUFS: drop the rest */
            }
            off += m;
        }
    }
}

/* ---- client ----------------------------------------------------------------------------- */

struct hdr { /* the first 24 bytes of every datagram */
    uint64_t nonce;
    uint32_t slot;
    uint32_t gen;
    uint64_t sent;
};

struct slot {
    uint32_t gen;
    uint64_t sent;
};

static int nflows, size, inflight, timeout_ms;
static int *fds;
static struct slot *slots;
static uint64_t nonce;
static uint32_t next_flow;
static uint64_t sent_total, lost, late;
static char *txbuf;

/* Sends slot `s`'s next datagram on the next flow. */
static void send_slot(uint32_t s, uint64_t t) {
    slots[s].gen++;
    slots[s].sent = t;
    struct hdr h = {nonce, s, slots[s].gen, t};
    memcpy(txbuf, &h, sizeof h);
    int fd = fds[next_flow];
    next_flow = (next_flow + 1) % (uint32_t)nflows;
    for (;;) {
        ssize_t r = send(fd, txbuf, size, 0);
        if (r >= 0 || errno != EINTR) break;
    }
    /* A failed send (ECONNREFUSED after an ICMP, ENOBUFS) is left to the timeout. */
    sent_total++;
}

/* Sends many slots at once; on one flow they go out in a single sendmmsg. */
static void send_slots(const uint32_t *ss, int k, uint64_t t) {
    if (nflows > 1 || k == 1) {
        for (int i = 0; i < k; i++) send_slot(ss[i], t);
        return;
    }
    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH];
    static struct hdr hs[BATCH];
    static char *bodies[BATCH];
    for (int i = 0; i < k; i++) {
        uint32_t s = ss[i];
        slots[s].gen++;
        slots[s].sent = t;
        hs[i] = (struct hdr){nonce, s, slots[s].gen, t};
        if (!bodies[i]) {
            bodies[i] = calloc(1, size);
            if (!bodies[i]) die("calloc");
        }
        memcpy(bodies[i], &hs[i], sizeof hs[i]);
        iov[i].iov_base = bodies[i];
        iov[i].iov_len = size;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int off = 0;
    while (off < k) {
        int m = sendmmsg(fds[0], msgs + off, k - off, 0);
        if (m < 0) {
            if (errno == EINTR) continue;
            break;
        }
        off += m;
    }
    sent_total += k;
}

static uint64_t pct(const uint32_t *hist, uint64_t total, double q) {
    if (!total) return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total) want = total - 1;
    uint64_t acc = 0;
    for (int i = 0; i < HIST_US; i++) {
        acc += hist[i];
        if (acc > want) return (uint64_t)i;
    }
    return HIST_US - 1;
}

static void usage(void) {
    fprintf(stderr, "usage: udpload echo PORT | udpload client HOST PORT [-s SIZE] [-f FLOWS] [-b BASE] "
                    "[-w INFLIGHT] [-d SECONDS] [-n COUNT] [-t MS] [-P SECONDS] [-c N]\n");
    exit(2);
}

static int client(int argc, char **argv) {
    if (argc < 2) usage();
    const char *host = argv[0];
    int port = atoi(argv[1]);
    size = 64;
    nflows = 1;
    inflight = 64;
    timeout_ms = 500;
    double duration = 3, prime_limit = 30;
    int prime_conc = 1;
    uint64_t count = UINT64_MAX;
    int base = 0;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *o = argv[i], *v = argv[++i];
        if (!strcmp(o, "-s")) size = atoi(v);
        else if (!strcmp(o, "-f")) nflows = atoi(v);
        else if (!strcmp(o, "-b")) base = atoi(v);
        else if (!strcmp(o, "-w")) inflight = atoi(v);
        else if (!strcmp(o, "-d")) duration = atof(v);
        else if (!strcmp(o, "-n")) count = strtoull(v, NULL, 10);
        else if (!strcmp(o, "-t")) timeout_ms = atoi(v);
        else if (!strcmp(o, "-P")) prime_limit = atof(v);
        else if (!strcmp(o, "-c")) prime_conc = atoi(v);
        else usage();
    }
    if (size < (int)sizeof(struct hdr) || size > 65507 || nflows < 1 || inflight < 1 || duration <= 0 ||
        prime_conc < 1)
        usage();
    raise_nofile();
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1) usage();

    fds = calloc(nflows, sizeof *fds);
    slots = calloc(inflight, sizeof *slots);
    txbuf = calloc(1, size);
    static char rxbuf[BATCH][MAXDGRAM];
    uint32_t *hist = calloc(HIST_US, sizeof *hist);
    uint32_t *resend = calloc(inflight > BATCH ? inflight : BATCH, sizeof *resend);
    if (!fds || !slots || !txbuf || !hist || !resend) die("calloc");
    nonce = now_ns() ^ ((uint64_t)getpid() << 32);

    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < nflows; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) die("socket");
        bufsize(fd, nflows > 1 ? 256 << 10 : 8 << 20);
        if (base) {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(base + i)};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind (-b)");
        }
        if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) die("connect");
        fds[i] = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
    struct epoll_event *evs = calloc(nflows < 1024 ? nflows : 1024, sizeof *evs);
    int maxev = nflows < 1024 ? nflows : 1024;

    /* ---- priming: every flow answers once (-c outstanding, each resent every 200 ms) */
    uint64_t t0 = now_ns();
    {
        char *primed = calloc(nflows, 1);
        uint64_t *when = calloc(nflows, sizeof *when);
        int done = 0, next = 0, out = 0;
        struct hdr h = {nonce, UINT32_MAX, 0, 0};
        while (done < nflows) {
            uint64_t t = now_ns();
            if ((double)(t - t0) / 1e9 > prime_limit) {
                fprintf(stderr, "udpload: only %d of %d flows answered within %.0f s\n", done, nflows, prime_limit);
                return 3;
            }
            while (out < prime_conc && next < nflows) {
                h.gen = next;
                memcpy(txbuf, &h, sizeof h);
                send(fds[next], txbuf, size, 0);
                when[next] = t;
                next++;
                out++;
            }
            for (int i = 0; i < next; i++) {
                if (!primed[i] && t - when[i] > 200000000ull) {
                    h.gen = i;
                    memcpy(txbuf, &h, sizeof h);
                    send(fds[i], txbuf, size, 0);
                    when[i] = t;
                }
            }
            int n = epoll_wait(ep, evs, maxev, 20);
            for (int e = 0; e < n; e++) {
                int f = evs[e].data.u32;
                for (;;) {
                    ssize_t r = recv(fds[f], rxbuf[0], MAXDGRAM, 0);
                    if (r < 0) break;
                    struct hdr g;
                    if (r < (ssize_t)sizeof g) continue;
                    memcpy(&g, rxbuf[0], sizeof g);
                    if (g.nonce == nonce && g.slot == UINT32_MAX && (int)g.gen == f && !primed[f]) {
                        primed[f] = 1;
                        done++;
                        out--;
                    }
                }
            }
        }
        free(primed);
        free(when);
    }
    double prime_s = (double)(now_ns() - t0) / 1e9;
    /* stragglers of the priming (resent twice) are read and dropped by the loop below */
    printf("ready\n");
    fflush(stdout);

    /* ---- the measured run */
    uint64_t start = now_ns(), end = start + (uint64_t)(duration * 1e9);
    uint64_t received = 0, measured = 0;
    uint64_t timeout_ns = (uint64_t)timeout_ms * 1000000ull, last_scan = start;
    for (uint32_t s = 0; s < (uint32_t)inflight; s++) resend[s] = s;
    for (int off = 0; off < inflight; off += BATCH)
        send_slots(resend + off, inflight - off < BATCH ? inflight - off : BATCH, start);

    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH];
    uint64_t t = start;
    while (t < end && received < count) {
        int n = epoll_wait(ep, evs, maxev, 5);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            int f = evs[e].data.u32;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    iov[i].iov_base = rxbuf[i];
                    iov[i].iov_len = MAXDGRAM;
                    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                    msgs[i].msg_hdr.msg_iov = &iov[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                }
                int m = recvmmsg(fds[f], msgs, BATCH, MSG_DONTWAIT, NULL);
                if (m <= 0) break;
                t = now_ns();
                int k = 0;
                for (int i = 0; i < m; i++) {
                    struct hdr g;
                    if (msgs[i].msg_len < sizeof g) continue;
                    memcpy(&g, rxbuf[i], sizeof g);
                    if (g.nonce != nonce || g.slot >= (uint32_t)inflight) continue; /* priming echo */
                    if (g.gen != slots[g.slot].gen) {
                        late++;
                        continue;
                    }
                    if (msgs[i].msg_len != (unsigned)size) {
                        fprintf(stderr, "udpload: a %u-byte answer to a %d-byte datagram\n", msgs[i].msg_len, size);
                        return 4;
                    }
                    uint64_t us = (t - g.sent) / 1000;
                    hist[us < HIST_US ? us : HIST_US - 1]++;
                    measured++;
                    received++;
                    resend[k++] = g.slot;
                }
                if (t < end && k) send_slots(resend, k, t);
                if (m < BATCH) break;
            }
        }
        t = now_ns();
        if (t - last_scan > 10000000ull) { /* every 10 ms: replace what timed out */
            last_scan = t;
            int k = 0;
            for (uint32_t s = 0; s < (uint32_t)inflight; s++) {
                if (t - slots[s].sent > timeout_ns) {
                    lost++;
                    resend[k++] = s;
                    if (k == BATCH) {
                        if (t < end) send_slots(resend, k, t);
                        k = 0;
                    }
                }
            }
            if (k && t < end) send_slots(resend, k, t);
        }
    }
    double secs = (double)(now_ns() - start) / 1e9;
    printf("{\"sent\":%llu,\"received\":%llu,\"lost\":%llu,\"late\":%llu,\"seconds\":%.4f,\"rtps\":%.1f,"
           "\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,\"p999_us\":%llu,\"max_us\":%llu,"
           "\"prime_seconds\":%.3f}\n",
           (unsigned long long)sent_total, (unsigned long long)received, (unsigned long long)lost,
           (unsigned long long)late, secs, (double)received / secs, (unsigned long long)pct(hist, measured, 0.50),
           (unsigned long long)pct(hist, measured, 0.90), (unsigned long long)pct(hist, measured, 0.99),
           (unsigned long long)pct(hist, measured, 0.999), (unsigned long long)pct(hist, measured, 1.0),
           prime_s);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "echo")) echo(atoi(argv[2]));
    if (argc >= 2 && !strcmp(argv[1], "client")) return client(argc - 2, argv + 2);
    usage();
    return 2;
}
