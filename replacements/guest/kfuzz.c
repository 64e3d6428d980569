// SPDX-License-Identifier: GPL-2.0
/*
 * kfuzz: the guest side of the `fuzz` test kind (kedr_build/packs/fundkind.py).
 * Built on the host with `gcc -static` (kedr_build/vm/fuzzer.py); the guest has
 * busybox and no Python.
 *
 *   kfuzz -s SEED -n COUNT -t SECONDS -j THREADS -r RECORD PATH...
 *   kfuzz -D RECORD [-k LAST]      print what RECORD holds (the last ops of each thread)
 *
 * Each of THREADS threads draws its operations from its own PRNG seeded from
 * (SEED, thread number): open/close storms, read/write of random sizes and
 * offsets, ioctl with random _IOC commands (direction, type, nr and size drawn
 * over the whole space) and argument shapes (a valid buffer of the encoded
 * size, zero, NULL, an unmapped page, a kernel address, misaligned), poll, mmap,
 * lseek. Thread t's sequence depends only on SEED and t: the same seed replays
 * the same sequences (their interleaving is the scheduler's). COUNT is the
 * operations of all threads together, SECONDS a time budget (0: none); the
 * first reached ends the run.
 *
 * Every operation is recorded, before it is made, in RECORD: a file mapped
 * shared (a tmpfs file), so it outlives the process when an oops kills a thread.
 * Output lines start with "KFUZZ ".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 16
#define MAX_PATHS 32
#define RING 64
#define FDS 4
#define BUF_SIZE (1 << 16)

enum op_kind { OP_OPEN, OP_CLOSE, OP_STORM, OP_READ, OP_WRITE, OP_IOCTL, OP_POLL, OP_MMAP,
	       OP_LSEEK, OP_KINDS };
static const char *const op_names[] = { "open", "close", "storm", "read", "write", "ioctl",
					"poll", "mmap", "lseek" };
enum shape { SH_VALID, SH_ZERO, SH_NULL, SH_UNMAPPED, SH_KERNEL, SH_MISALIGNED, SH_SHAPES };
static const char *const shape_names[] = { "valid", "zero", "null", "unmapped", "kernel",
					   "misaligned" };

struct op {
	uint64_t index;		/* the thread's op number, from 1 */
	uint32_t kind, shape, path, cmd;
	uint64_t size, offset;
	int64_t ret;		/* -errno; INT64_MIN: not returned (yet) */
};

struct slot {
	uint64_t done;
	struct op ring[RING];
};

struct record {
	char magic[8];
	uint64_t seed;
	uint32_t threads, npaths;
	char paths[MAX_PATHS][64];
	struct slot slots[MAX_THREADS];
};

static struct record *rec;
static const char *paths[MAX_PATHS];
static int npaths;
static uint64_t seed, per_thread, deadline_ns;
static volatile int stop;
static unsigned char *unmapped;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct thread {
	int id;
	uint64_t rng;
	int fds[FDS];
	unsigned char *buf;
	uint64_t ops, syscalls;
};

static uint64_t rnd(struct thread *t, uint64_t n)
{
	return n ? splitmix(&t->rng) % n : 0;
}

static uint64_t pick_size(struct thread *t)
{
	static const uint64_t sizes[] = { 0, 1, 2, 4, 8, 16, 32, 63, 64, 65, 100, 128, 255,
					  256, 512, 1024, 4095, 4096, 4097, 8192 };

	if (rnd(t, 4) == 0)
		return rnd(t, BUF_SIZE / 2);
	return sizes[rnd(t, sizeof(sizes) / sizeof(sizes[0]))];
}

static void *pick_arg(struct thread *t, uint32_t shape)
{
	switch (shape) {
	case SH_VALID: return t->buf;
	case SH_ZERO: return t->buf;
	case SH_NULL: return NULL;
	case SH_UNMAPPED: return unmapped;
	case SH_KERNEL: return (void *)0xffffffff81000000ull;
	default: return t->buf + 1 + rnd(t, 7);
	}
}

static uint32_t pick_cmd(struct thread *t)
{
	uint32_t dir = (uint32_t)rnd(t, 4), type = (uint32_t)rnd(t, 256);
	uint32_t nr = (uint32_t)rnd(t, 256), size = (uint32_t)pick_size(t) & 0x3fff;

	switch (rnd(t, 8)) {
	case 0: return (uint32_t)splitmix(&t->rng);	/* anything at all */
	case 1: nr = (uint32_t)rnd(t, 16); break;	/* the low numbers drivers start at */
	default: break;
	}
	return (dir << 30) | (size << 16) | (type << 8) | nr;
}

static int fd_slot(struct thread *t)
{
	return (int)rnd(t, FDS);
}

static int64_t result(long r)
{
	return r < 0 ? -errno : r;
}

static void one(struct thread *t, struct op *o)
{
	int s = fd_slot(t), fd = t->fds[s];
	void *arg;

	o->path = (uint32_t)rnd(t, (uint64_t)npaths);
	o->shape = (uint32_t)rnd(t, SH_SHAPES);
	o->size = pick_size(t);
	o->offset = rnd(t, 4) ? 0 : rnd(t, 1 << 20);
	o->cmd = pick_cmd(t);
	arg = pick_arg(t, o->shape);
	if (o->shape == SH_ZERO)
		o->size = 0;
	if (fd < 0 && o->kind != OP_STORM)
		o->kind = OP_OPEN;
	__atomic_store_n(&o->ret, INT64_MIN, __ATOMIC_RELEASE);
	t->syscalls++;
	switch (o->kind) {
	case OP_OPEN: {
		static const int modes[] = { O_RDONLY, O_WRONLY, O_RDWR };
		int flags = modes[rnd(t, 3)] | O_NONBLOCK | O_CLOEXEC;

		if (fd >= 0) {
			close(fd);
			t->syscalls++;
		}
		t->fds[s] = open(paths[o->path], flags);
		o->ret = result(t->fds[s]);
		break;
	}
	case OP_CLOSE:
		o->ret = result(close(fd));
		t->fds[s] = -1;
		break;
	case OP_STORM: {
		int i, n = 8 + (int)rnd(t, 24);

		for (i = 0; i < n; i++) {
			int f = open(paths[o->path], O_RDWR | O_NONBLOCK | O_CLOEXEC);

			t->syscalls++;
			if (f >= 0) {
				close(f);
				t->syscalls++;
			}
			o->ret = result(f);
		}
		break;
	}
	case OP_READ:
		o->ret = o->offset ? result(pread(fd, arg, o->size, (off_t)o->offset))
				   : result(read(fd, arg, o->size));
		break;
	case OP_WRITE:
		o->ret = o->offset ? result(pwrite(fd, arg, o->size, (off_t)o->offset))
				   : result(write(fd, arg, o->size));
		break;
	case OP_IOCTL:
		o->size = (o->cmd >> 16) & 0x3fff;
		o->ret = result(ioctl(fd, o->cmd, arg));
		break;
	case OP_POLL: {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI };

		o->ret = result(poll(&p, 1, 0));
		break;
	}
	case OP_MMAP: {
		size_t len = (size_t)(o->size ? o->size : 4096);
		void *m = mmap(NULL, len, rnd(t, 2) ? PROT_READ : PROT_READ | PROT_WRITE,
			       MAP_SHARED, fd, (off_t)(o->offset & ~4095ull));

		o->ret = m == MAP_FAILED ? -errno : 0;
		if (m != MAP_FAILED) {
			munmap(m, len);
			t->syscalls++;
		}
		break;
	}
	default:
		o->ret = result((long)lseek(fd, (off_t)o->offset, (int)rnd(t, 3)));
		break;
	}
}

static void *worker(void *p)
{
	struct thread *t = p;
	struct slot *slot = &rec->slots[t->id];
	uint64_t i;

	for (i = 1; i <= per_thread && !stop; i++) {
		struct op *o = &slot->ring[i % RING];

		memset(o, 0, sizeof(*o));
		o->index = i;
		o->kind = (uint32_t)rnd(t, OP_KINDS);
		__atomic_store_n(&slot->done, i, __ATOMIC_RELEASE);
		one(t, o);
		t->ops++;
		if (deadline_ns && (i & 63) == 0 && now_ns() > deadline_ns)
			break;
	}
	for (i = 0; i < FDS; i++)
		if (t->fds[i] >= 0)
			close(t->fds[i]);
	return NULL;
}

static int number(const char *text, const char *what, uint64_t *out, uint64_t max)
{
	char *end;

	errno = 0;
	if (!*text || *text == '-') {
		fprintf(stderr, "KFUZZ error: %s %s: not a number from 0 to %llu\n", what, text,
			(unsigned long long)max);
		return -1;
	}
	*out = strtoull(text, &end, 0);
	if (errno || *end || *out > max) {
		fprintf(stderr, "KFUZZ error: %s %s: not a number from 0 to %llu\n", what, text,
			(unsigned long long)max);
		return -1;
	}
	return 0;
}

static void describe(int t, const struct op *o)
{
	char ret[32];

	if (o->ret == INT64_MIN)
		snprintf(ret, sizeof(ret), "none (did not return)");
	else
		snprintf(ret, sizeof(ret), "%lld", (long long)o->ret);
	printf("KFUZZ op thread=%d index=%llu %s path=%s", t, (unsigned long long)o->index,
	       op_names[o->kind % OP_KINDS], rec->paths[o->path % MAX_PATHS]);
	if (o->kind == OP_IOCTL)
		printf(" cmd=0x%08x", o->cmd);
	if (o->kind == OP_READ || o->kind == OP_WRITE || o->kind == OP_IOCTL)
		printf(" arg=%s", shape_names[o->shape % SH_SHAPES]);
	if (o->kind == OP_READ || o->kind == OP_WRITE || o->kind == OP_MMAP || o->kind == OP_IOCTL)
		printf(" size=%llu", (unsigned long long)o->size);
	if (o->offset && o->kind != OP_IOCTL && o->kind != OP_POLL && o->kind != OP_OPEN)
		printf(" offset=%llu", (unsigned long long)o->offset);
	printf(" ret=%s\n", ret);
}

static int dump(const char *file, int last)
{
	int fd = open(file, O_RDONLY);
	uint32_t t;

	if (fd < 0) {
		printf("KFUZZ error: %s: %s\n", file, strerror(errno));
		return 1;
	}
	rec = mmap(NULL, sizeof(*rec), PROT_READ, MAP_SHARED, fd, 0);
	if (rec == MAP_FAILED || memcmp(rec->magic, "kfuzz1", 7)) {
		printf("KFUZZ error: %s: not a kfuzz record\n", file);
		return 1;
	}
	for (t = 0; t < rec->threads && t < MAX_THREADS; t++) {
		const struct slot *s = &rec->slots[t];
		uint64_t i, from = s->done > (uint64_t)last ? s->done - (uint64_t)last + 1 : 1;

		printf("KFUZZ thread=%u ops=%llu\n", t, (unsigned long long)s->done);
		for (i = from; i <= s->done; i++)
			describe((int)t, &s->ring[i % RING]);
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t count = 10000, seconds = 0, threads = 2, last = 8;
	const char *record = "/tmp/kfuzz.rec", *show = NULL;
	struct thread ts[MAX_THREADS];
	pthread_t ids[MAX_THREADS];
	uint64_t start, elapsed, ops = 0, calls = 0;
	int c, fd;
	uint64_t i;

	while ((c = getopt(argc, argv, "s:n:t:j:r:D:k:")) != -1) {
		switch (c) {
		case 's': if (number(optarg, "seed", &seed, UINT64_MAX)) return 2; break;
		case 'n': if (number(optarg, "count", &count, 1ull << 40)) return 2; break;
		case 't': if (number(optarg, "seconds", &seconds, 86400)) return 2; break;
		case 'j': if (number(optarg, "threads", &threads, MAX_THREADS)) return 2; break;
		case 'k': if (number(optarg, "last", &last, RING - 1)) return 2; break;
		case 'r': record = optarg; break;
		case 'D': show = optarg; break;
		default: fprintf(stderr, "KFUZZ error: usage: kfuzz -s SEED -n COUNT -t SECONDS "
				 "-j THREADS -r RECORD PATH... | kfuzz -D RECORD\n");
			return 2;
		}
	}
	if (show)
		return dump(show, (int)last);
	if (!count || !threads || optind >= argc || argc - optind > MAX_PATHS) {
		fprintf(stderr, "KFUZZ error: need a count and threads above 0 and 1 to %d "
			"paths\n", MAX_PATHS);
		return 2;
	}
	npaths = argc - optind;
	fd = open(record, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, sizeof(*rec))) {
		fprintf(stderr, "KFUZZ error: %s: %s\n", record, strerror(errno));
		return 2;
	}
	rec = mmap(NULL, sizeof(*rec), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rec == MAP_FAILED || unmapped == MAP_FAILED) {
		fprintf(stderr, "KFUZZ error: mmap: %s\n", strerror(errno));
		return 2;
	}
	memcpy(rec->magic, "kfuzz1", 7);
	rec->seed = seed;
	rec->threads = (uint32_t)threads;
	rec->npaths = (uint32_t)npaths;
	for (c = 0; c < npaths; c++) {
		paths[c] = argv[optind + c];
		snprintf(rec->paths[c], sizeof(rec->paths[c]), "%s", paths[c]);
	}
	per_thread = (count + threads - 1) / threads;
	printf("KFUZZ start seed=%llu count=%llu seconds=%llu threads=%llu paths=%d\n",
	       (unsigned long long)seed, (unsigned long long)count,
	       (unsigned long long)seconds, (unsigned long long)threads, npaths);
	fflush(stdout);
	start = now_ns();
	deadline_ns = seconds ? start + seconds * 1000000000ull : 0;
	for (i = 0; i < threads; i++) {
		uint64_t x = seed ^ ((i + 1) * 0xd1b54a32d192ed03ull);
		int f;

		ts[i].id = (int)i;
		ts[i].rng = splitmix(&x);
		ts[i].ops = ts[i].syscalls = 0;
		for (f = 0; f < FDS; f++)
			ts[i].fds[f] = -1;
		ts[i].buf = aligned_alloc(4096, BUF_SIZE);
		if (!ts[i].buf)
			return 2;
		for (f = 0; f < BUF_SIZE; f++)
			ts[i].buf[f] = (unsigned char)splitmix(&x);
		pthread_create(&ids[i], NULL, worker, &ts[i]);
	}
	for (i = 0; i < threads; i++) {
		pthread_join(ids[i], NULL);
		ops += ts[i].ops;
		calls += ts[i].syscalls;
	}
	elapsed = now_ns() - start;
	printf("KFUZZ done ops=%llu syscalls=%llu elapsed_ms=%llu rate=%llu\n",
	       (unsigned long long)ops, (unsigned long long)calls,
	       (unsigned long long)(elapsed / 1000000),
	       (unsigned long long)(elapsed ? calls * 1000000000ull / elapsed : 0));
	return 0;
}
