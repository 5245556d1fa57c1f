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
 * At most QUEUED_MAX bytes wait per direction: past it the reader stops
 * reading (the sender is held back by TCP, as by a slow link).
 *
 * usage: relay ONE_WAY_US TARGET
 *   TARGET: host:port, or the path of a Unix socket (the embedded database's).
 * Prints the loopback port it listens on, then serves until its standard input
 * ends (its parent closed it, or exited): then it prints how many connections
 * it relayed and exits.
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
#define QUEUED_MAX (4 * 1024 * 1024)

struct chunk {
    struct chunk *next;
    struct timespec due;
    size_t len;
    char data[];
};

struct direction {
    int from, to;
    pthread_mutex_t lock;
    pthread_cond_t ready; /* something queued, or the end */
    pthread_cond_t room;  /* the queue went below QUEUED_MAX */
    struct chunk *head, *tail;
    size_t queued;
    int ended;   /* the reader saw the end (or an error), and returned */
    int gave_up; /* the writer cannot write: the reader need not wait for room */
    struct link *link;
};

struct link {
    struct direction up, down;
    pthread_mutex_t lock;
    int open_writers; /* the sockets close when both writers are done */
};

static long one_way_ns;
static const char *target;
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long relayed;

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
    fd = -1;
    for (struct addrinfo *a = found; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
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
        while (d->queued >= QUEUED_MAX && !d->gave_up) pthread_cond_wait(&d->room, &d->lock);
        memcpy(c->data, buffer, (size_t)n);
        c->len = (size_t)n;
        d->queued += c->len;
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
            d->queued -= c->len;
            pthread_cond_signal(&d->room);
        }
        pthread_mutex_unlock(&d->lock);
        if (c == NULL) break; /* ended, everything before the end written */
        if (!failed) {
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &c->due, NULL) == EINTR) {
            }
            if (write_all(d->to, c->data, c->len) != 0) {
                failed = 1; /* the other side went away: stop its reader too */
                shutdown(d->from, SHUT_RD);
                pthread_mutex_lock(&d->lock);
                d->gave_up = 1; /* a reader waiting for room reads on, to its end */
                pthread_cond_signal(&d->room);
                pthread_mutex_unlock(&d->lock);
            }
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

static int start(void *(*run)(void *), void *arg) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int failed = pthread_create(&thread, &attr, run, arg);
    pthread_attr_destroy(&attr);
    return failed;
}

/* Until the standard input ends: then the count, and the end of the relay. */
static void *watch_parent(void *unused) {
    (void)unused;
    char byte;
    while (read(STDIN_FILENO, &byte, 1) > 0 || errno == EINTR) {
    }
    pthread_mutex_lock(&count_lock);
    printf("%ld\n", relayed);
    fflush(stdout);
    _exit(0);
}

static void end_direction(struct direction *d) {
    pthread_mutex_lock(&d->lock);
    d->ended = 1;
    pthread_cond_signal(&d->ready);
    pthread_cond_signal(&d->room);
    pthread_mutex_unlock(&d->lock);
}

static void direction_init(struct direction *d, int from, int to, struct link *link) {
    d->from = from;
    d->to = to;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->ready, NULL);
    pthread_cond_init(&d->room, NULL);
    d->head = d->tail = NULL;
    d->queued = 0;
    d->ended = 0;
    d->gave_up = 0;
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
    if (start(watch_parent, NULL) != 0) {
        perror("relay: pthread_create");
        return 1;
    }
    for (;;) {
        int client = accept(listener, NULL, NULL);
        if (client < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
                struct timespec pause = {.tv_nsec = 10000000L}; /* not a busy loop */
                nanosleep(&pause, NULL);
            }
            continue;
        }
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int server = connect_target();
        struct link *link = server >= 0 ? calloc(1, sizeof *link) : NULL;
        if (link == NULL) {
            close(client);
            if (server >= 0) close(server);
            continue;
        }
        pthread_mutex_init(&link->lock, NULL);
        link->open_writers = 2;
        direction_init(&link->up, client, server, link);
        direction_init(&link->down, server, client, link);
        /* The writers first: a writer without its reader would wait for ever. */
        if (start(write_side, &link->up) != 0) {
            close(client);
            close(server);
            free(link);
            continue;
        }
        if (start(write_side, &link->down) != 0) {
            link->open_writers = 1; /* the up writer alone: it closes both and frees */
            end_direction(&link->up);
            continue;
        }
        /* A reader that started ends by itself once its socket is shut down;
         * the direction of one that did not is ended here. */
        int up_reader = start(read_side, &link->up) == 0;
        int down_reader = up_reader && start(read_side, &link->down) == 0;
        if (!down_reader) {
            shutdown(client, SHUT_RDWR);
            shutdown(server, SHUT_RDWR);
            if (!up_reader) end_direction(&link->up);
            end_direction(&link->down);
            continue;
        }
        pthread_mutex_lock(&count_lock);
        relayed++;
        pthread_mutex_unlock(&count_lock);
    }
}
