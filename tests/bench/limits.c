/* The physical limits the Coven benchmarks compare the daemon with, and their load tools.
 *
 * Built at run time by tests/bench/native.py with `cc -O2`; every mode prints one JSON line.
 *
 *   limits gen BYTES                      terminal-like text on stdout, in whole 64 KiB blocks
 *   limits count BYTES                    what `gen BYTES` writes: {"written":N,"pty":N}
 *   limits drain -- ARGV...               run ARGV in a fresh pty, read it dry: bytes and time
 *   limits launch COUNT PARALLEL -- ARGV  fork/exec ARGV in ptys, PARALLEL at once: µs to first byte
 *   limits echo COUNT                     `cat` in a pty: write one byte, read its echo, µs each
 *   limits load SOCKET REQFILE CONC SECONDS keepalive|close
 *                                         HTTP/1.1 load over a Unix socket: CONC threads send
 *                                         REQFILE's bytes, read Content-Length-framed answers
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 65536

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* ---- gen / count: one block of whole lines, written again and again ---- */

static size_t make_block(char *buf, size_t *newlines) {
    /* Lines like a build log: a colored counter, a middle dot (2 UTF-8 bytes), varying length. */
    size_t used = 0, lines = 0;
    for (unsigned i = 0;; i++) {
        char line[256];
        int fill = 20 + (int)((i * 37u) % 90u);
        int n = snprintf(line, sizeof line, "\x1b[1;32m%06u\x1b[0m step \xc2\xb7 compiling module_%03u.c ", i, i % 997);
        for (int k = 0; k < fill; k++) line[n++] = (char)('a' + (i + k) % 26);
        line[n++] = '\n';
        if (used + (size_t)n > BLOCK) break;
        memcpy(buf + used, line, (size_t)n);
        used += (size_t)n;
        lines++;
    }
    *newlines = lines;
    return used;
}

static int cmd_gen(long long total, int count_only) {
    static char buf[BLOCK];
    size_t newlines;
    size_t size = make_block(buf, &newlines);
    long long blocks = (total + (long long)size - 1) / (long long)size;
    if (count_only) {
        printf("{\"written\":%lld,\"pty\":%lld}\n", blocks * (long long)size,
               blocks * (long long)(size + newlines));
        return 0;
    }
    for (long long b = 0; b < blocks; b++) {
        size_t off = 0;
        while (off < size) {
            ssize_t w = write(1, buf + off, size - off);
            if (w < 0) {
                if (errno == EINTR) continue;
                return 1;
            }
            off += (size_t)w;
        }
    }
    return 0;
}

/* ---- ptys ---- */

static pid_t spawn_pty(char **argv, int *master) {
    struct winsize ws = {.ws_row = 24, .ws_col = 80};
    pid_t pid = forkpty(master, NULL, NULL, &ws);
    if (pid < 0) die("forkpty");
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmd_drain(char **argv) {
    static char buf[BLOCK];
    int master;
    double cpu0 = cpu_seconds();
    double t0 = now();
    pid_t pid = spawn_pty(argv, &master);
    long long bytes = 0, reads = 0;
    for (;;) {
        ssize_t r = read(master, buf, sizeof buf);
        if (r > 0) {
            bytes += r;
            reads++;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            break; /* EIO: the slave side is closed */
        }
    }
    double t1 = now();
    int status;
    waitpid(pid, &status, 0);
    printf("{\"bytes\":%lld,\"seconds\":%.6f,\"reads\":%lld,\"readerCpu\":%.6f,\"status\":%d}\n",
           bytes, t1 - t0, reads, cpu_seconds() - cpu0, status);
    return 0;
}

static void drain_and_reap(int master, pid_t pid) {
    char buf[4096];
    for (;;) {
        ssize_t r = read(master, buf, sizeof buf);
        if (r > 0 || (r < 0 && errno == EINTR)) continue;
        break;
    }
    close(master);
    waitpid(pid, NULL, 0);
}

static int cmd_launch(int count, int parallel, char **argv) {
    int *masters = calloc((size_t)parallel, sizeof(int));
    pid_t *pids = calloc((size_t)parallel, sizeof(pid_t));
    struct pollfd *fds = calloc((size_t)parallel, sizeof(struct pollfd));
    printf("{\"latencyUs\":[");
    int printed = 0;
    for (int done = 0; done < count; done += parallel) {
        int batch = count - done < parallel ? count - done : parallel;
        double t0 = now();
        int spawned = 0, waiting = 0;
        /* Spawn one after another, as a server would, noting first bytes in between. */
        while (spawned < batch || waiting > 0) {
            if (spawned < batch) {
                pids[spawned] = spawn_pty(argv, &masters[spawned]);
                fds[spawned].fd = masters[spawned];
                fds[spawned].events = POLLIN;
                spawned++;
                waiting++;
            }
            int ready = poll(fds, (nfds_t)spawned, spawned < batch ? 0 : 10000);
            if (ready < 0 || (ready == 0 && spawned == batch)) die("poll");
            double t = now();
            for (int i = 0; ready > 0 && i < spawned; i++) {
                if (fds[i].fd >= 0 && fds[i].revents) {
                    printf("%s%.1f", printed++ ? "," : "", (t - t0) * 1e6);
                    fds[i].fd = -1;
                    waiting--;
                }
            }
        }
        for (int i = 0; i < batch; i++) drain_and_reap(masters[i], pids[i]);
    }
    printf("]}\n");
    return 0;
}

static int cmd_echo(int count) {
    char *argv[] = {"cat", NULL};
    int master;
    pid_t pid = spawn_pty(argv, &master);
    usleep(50000);
    char buf[8192];
    printf("{\"latencyUs\":[");
    for (int i = 0; i < count; i++) {
        if (i && i % 50 == 0) {
            /* End the line so the canonical buffer never fills; wait for cat's copy. */
            if (write(master, "\r", 1) != 1) die("write");
            int newlines = 0; /* the echoed CR LF, then cat's copy of the line */
            while (newlines < 2) {
                ssize_t r = read(master, buf, sizeof buf);
                if (r <= 0) die("read");
                for (ssize_t k = 0; k < r; k++) newlines += buf[k] == '\n';
            }
        }
        char c = (char)('a' + i % 26);
        double t0 = now();
        if (write(master, &c, 1) != 1) die("write");
        for (;;) {
            ssize_t r = read(master, buf, sizeof buf);
            if (r <= 0) die("read");
            if (memchr(buf, c, (size_t)r)) break;
        }
        printf("%s%.2f", i ? "," : "", (now() - t0) * 1e6);
    }
    printf("]}\n");
    kill(pid, SIGKILL);
    close(master);
    waitpid(pid, NULL, 0);
    return 0;
}

/* ---- load ---- */

static const char *sock_path;
static char *request;
static size_t request_len;
static int keepalive;
static volatile int stop_flag;
static atomic_llong total_requests, total_errors, total_bytes;
static atomic_llong expect_len = -1;

static int connect_socket(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, sock_path, sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One request on fd; returns the body length, or -1 if the exchange failed. */
static long long exchange(int fd, char *buf, size_t cap) {
    size_t off = 0;
    while (off < request_len) {
        ssize_t w = write(fd, request + off, request_len - off);
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == cap) return -1;
        ssize_t r = read(fd, buf + have, cap - have);
        if (r <= 0) return -1;
        have += (size_t)r;
        end = memmem(buf, have, "\r\n\r\n", 4);
    }
    if (strncmp(buf, "HTTP/1.1 200 ", 13) != 0) return -1;
    char *cl = memmem(buf, (size_t)(end - buf), "Content-Length: ", 16);
    if (!cl) return -1;
    long long length = atoll(cl + 16);
    size_t head = (size_t)(end - buf) + 4;
    long long body = (long long)(have - head);
    while (body < length) {
        ssize_t r = read(fd, buf, cap);
        if (r <= 0) return -1;
        body += r;
    }
    if (body != length) return -1; /* a pipelined extra answer: not ours */
    return length;
}

static void *load_thread(void *arg) {
    (void)arg;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    int fd = -1;
    while (!stop_flag) {
        if (fd < 0) fd = connect_socket();
        if (fd < 0) {
            atomic_fetch_add(&total_errors, 1);
            usleep(1000);
            continue;
        }
        long long length = exchange(fd, buf, cap);
        long long want = atomic_load(&expect_len);
        if (length >= 0 && want < 0) {
            atomic_compare_exchange_strong(&expect_len, &want, length);
            want = atomic_load(&expect_len);
        }
        if (length < 0 || length != want) {
            atomic_fetch_add(&total_errors, 1);
            close(fd);
            fd = -1;
            continue;
        }
        atomic_fetch_add(&total_requests, 1);
        atomic_fetch_add(&total_bytes, length);
        if (!keepalive) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0) close(fd);
    free(buf);
    return NULL;
}

static int cmd_load(const char *path, const char *reqfile, int conc, double seconds, const char *mode) {
    sock_path = path;
    keepalive = strcmp(mode, "keepalive") == 0;
    FILE *f = fopen(reqfile, "rb");
    if (!f) die("request file");
    request = malloc(1 << 16);
    request_len = fread(request, 1, 1 << 16, f);
    fclose(f);
    pthread_t *threads = calloc((size_t)conc, sizeof(pthread_t));
    double t0 = now();
    for (int i = 0; i < conc; i++) pthread_create(&threads[i], NULL, load_thread, NULL);
    struct timespec ts = {.tv_sec = (time_t)seconds, .tv_nsec = (long)((seconds - (time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    stop_flag = 1;
    for (int i = 0; i < conc; i++) pthread_join(threads[i], NULL);
    double elapsed = now() - t0;
    printf("{\"requests\":%lld,\"errors\":%lld,\"bytes\":%lld,\"seconds\":%.6f,\"bodyBytes\":%lld}\n",
           (long long)total_requests, (long long)total_errors, (long long)total_bytes, elapsed,
           (long long)expect_len);
    return 0;
}

static char **after_dashes(int argc, char **argv, int from) {
    for (int i = from; i < argc; i++)
        if (strcmp(argv[i], "--") == 0 && i + 1 < argc) return argv + i + 1;
    fprintf(stderr, "missing -- ARGV\n");
    exit(2);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) goto usage;
    const char *mode = argv[1];
    if (!strcmp(mode, "gen") && argc == 3) return cmd_gen(atoll(argv[2]), 0);
    if (!strcmp(mode, "count") && argc == 3) return cmd_gen(atoll(argv[2]), 1);
    if (!strcmp(mode, "drain")) return cmd_drain(after_dashes(argc, argv, 2));
    if (!strcmp(mode, "launch") && argc > 4) return cmd_launch(atoi(argv[2]), atoi(argv[3]), after_dashes(argc, argv, 4));
    if (!strcmp(mode, "echo") && argc == 3) return cmd_echo(atoi(argv[2]));
    if (!strcmp(mode, "load") && argc == 7) return cmd_load(argv[2], argv[3], atoi(argv[4]), atof(argv[5]), argv[6]);
usage:
    fprintf(stderr, "usage: see the comment at the top of limits.c\n");
    return 2;
}
