/* The database one network hop away, on one machine (flask flashsale --db-hop-us).
 *
 * A TCP relay on the loopback in front of PostgreSQL: every byte, each way, is
 * passed on ONE_WAY_US microseconds after it arrived, as a link with that
 * one-way latency would (a round trip gains twice that). Per connection and
 * direction, a reader stamps what it reads with its due time and queues it; a
 * writer sleeps until that time (CLOCK_MONOTONIC, absolute) and writes it. Data
 * is never reordered or merged across the delay, and a close is passed on
 * after the data before it.
 *
 * usage: relay ONE_WAY_US TARGET
 *   TARGET: host:port, or the path of a Unix socket (the embedded database's).
 * Prints the loopback port it listens on, then serves until killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

struct chunk {
    struct chunk *next;
    struct timespec due;
    size_t len;
    char data[];
};

struct direction {
    int from, to;
    pthread_mutex_t lock;
    pthread_cond_t ready;
    struct chunk *head, *tail;
    int ended; /* the reader saw the end (or an error) */
    struct link *link;
};

struct link {
    struct direction up, down;
    pthread_mutex_t lock;
    int open_writers; /* the sockets close when both writers are done */
};

static long one_way_ns;
static const char *target;

static int connect_target(void) {
    int fd;
    if (target[0] == '/') {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        if (strlen(target) >= sizeof addr.sun_path) return -1;
        strcpy(addr.sun_path, target);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }
    char host[256];
    const char *colon = strrchr(target, ':');
    if (colon == NULL || (size_t)(colon - target) >= sizeof host) return -1;
    memcpy(host, target, colon - target);
    host[colon - target] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found;
    if (getaddrinfo(host, colon + 1, &hints, &found) != 0) return -1;
    fd = socket(found->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void *read_side(void *arg) {
    struct direction *d = arg;
    char buffer[CHUNK];
    for (;;) {
        ssize_t n = read(d->from, buffer, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        struct chunk *c = n > 0 ? malloc(sizeof *c + (size_t)n) : NULL;
        pthread_mutex_lock(&d->lock);
        if (c == NULL) { /* the end, an error, or no memory: end this way */
            d->ended = 1;
            pthread_cond_signal(&d->ready);
            pthread_mutex_unlock(&d->lock);
            return NULL;
        }
        memcpy(c->data, buffer, (size_t)n);
        c->len = (size_t)n;
        c->next = NULL;
        clock_gettime(CLOCK_MONOTONIC, &c->due);
        c->due.tv_nsec += one_way_ns;
        c->due.tv_sec += c->due.tv_nsec / 1000000000L;
        c->due.tv_nsec %= 1000000000L;
        if (d->tail) d->tail->next = c; else d->head = c;
        d->tail = c;
        pthread_cond_signal(&d->ready);
        pthread_mutex_unlock(&d->lock);
    }
}

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *write_side(void *arg) {
    struct direction *d = arg;
    int failed = 0;
    for (;;) {
        pthread_mutex_lock(&d->lock);
        while (d->head == NULL && !d->ended) pthread_cond_wait(&d->ready, &d->lock);
        struct chunk *c = d->head;
        if (c) {
            d->head = c->next;
            if (d->head == NULL) d->tail = NULL;
        }
        pthread_mutex_unlock(&d->lock);
        if (c == NULL) break; /* ended, everything before the end written */
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &c->due, NULL) == EINTR) {
        }
        if (!failed && write_all(d->to, c->data, c->len) != 0) {
            failed = 1; /* the other side went away: stop its reader too */
            shutdown(d->from, SHUT_RD);
        }
        free(c);
    }
    shutdown(d->to, SHUT_WR);
    struct link *link = d->link;
    pthread_mutex_lock(&link->lock);
    int last = --link->open_writers == 0;
    pthread_mutex_unlock(&link->lock);
    if (last) {
        close(link->up.from);
        close(link->up.to);
        free(link);
    }
    return NULL;
}

static void start(void *(*run)(void *), void *arg) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&thread, &attr, run, arg) != 0) {
        perror("relay: pthread_create");
        exit(1);
    }
    pthread_attr_destroy(&attr);
}

static void direction_init(struct direction *d, int from, int to, struct link *link) {
    d->from = from;
    d->to = to;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->ready, NULL);
    d->head = d->tail = NULL;
    d->ended = 0;
    d->link = link;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: relay ONE_WAY_US TARGET\n");
        return 2;
    }
    one_way_ns = atol(argv[1]) * 1000L;
    target = argv[2];
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1024) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("relay: listen");
        return 1;
    }
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    for (;;) {
        int client = accept(listener, NULL, NULL);
        if (client < 0) continue;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int server = connect_target();
        if (server < 0) {
            close(client);
            continue;
        }
        struct link *link = calloc(1, sizeof *link);
        pthread_mutex_init(&link->lock, NULL);
        link->open_writers = 2;
        direction_init(&link->up, client, server, link);
        direction_init(&link->down, server, client, link);
        start(read_side, &link->up);
        start(write_side, &link->up);
        start(read_side, &link->down);
        start(write_side, &link->down);
    }
}
