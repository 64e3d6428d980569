// SPDX-License-Identifier: GPL-2.0
/*
 * kfuzz: the guest side of the `fuzz` test kind (kedr_build/packs/fundkind.py).
 * Built on the host with `gcc -static` (kedr_build/vm/fuzzer.py); the guest has
 * busybox and no Python.
 *
 *   kfuzz -s SEED -n COUNT -t SECONDS -j THREADS -r RECORD [-F] [-S SWEEP [-y SWEPT]] PATH...
 *                                  -F: RECORD is memory that is already there (the
 *                                  ivshmem BAR, .../resource2: kedr_build/vm/shm.py),
 *                                  opened as it is, its size checked, cleared; -y: the
 *                                  file made when the sweep is over (RECORD.swept)
 *   kfuzz -B SHM                   a heartbeat: the last 8 bytes of SHM (the ivshmem's
 *                                  memory) counted up 4 times a second until SIGTERM, then
 *                                  0 (the host stops a guest whose beat stopped: a lockup
 *                                  of the whole kernel; 0: not watched)
 *   kfuzz -z THREADS               print the bytes of shared memory a record of THREADS
 *                                  threads, or a reduction's resume state, needs (a power
 *                                  of 2: the ivshmem's size)
 *                                  PATH: a character or block device node, or
 *                                  net:NAME, a network interface
 *   kfuzz -D RECORD [-k LAST]      print what RECORD holds (the last ops of each thread)
 *   kfuzz -p SEQUENCE [-x AT] [-T] replay a sequence file in one thread (one op a line,
 *                                  as -M writes them), no PRNG; -x: the position (from 1)
 *                                  of the op being made is kept in file AT (mapped shared:
 *                                  readable while the replay hangs); -T: stop after the op
 *                                  that changed /proc/sys/kernel/tainted
 *   kfuzz -p SEQUENCE -P           replay it concurrently: each recorded thread's ops, in
 *                                  order, in a thread of its own, all started at once (the
 *                                  threads' recorded interleaving is not enforced: a race
 *                                  replayed this way may or may not hit its window)
 *   kfuzz -C RECORD                print how many operations RECORD's threads started,
 *                                  the sweep's ioctls counted
 *   kfuzz -E RECORD -o SEQUENCE    write RECORD's operations as a sequence file (what -M
 *                                  reduces), for a reduction across boots (the sweep's
 *                                  ioctl in flight, if the sweep never ended, last, after
 *                                  an open of its node). RECORD may be a resume state
 *                                  (KFUZZ_SHM below): then the candidate in flight is
 *                                  written (cut after the op in flight) and "KFUZZ resume"
 *                                  says how to go on. Reads a file only: the host runs it
 *                                  on the ivshmem's file after the guest is gone
 *   kfuzz -M RECORD -o SEQUENCE -a ATTEMPTS -c ORACLE
 *                                  reduce RECORD's operations (all threads', in thread
 *                                  order) to a short sequence that still fails: delta
 *                                  debugging (ddmin), each attempt written to SEQUENCE.try
 *                                  and judged by `sh ORACLE SEQUENCE.try` (status 0:
 *                                  still fails, 1: passes, other: stop), at most ATTEMPTS
 *                                  of them; the shortest failing one goes to SEQUENCE
 *   kfuzz -M - -m SEQUENCE0 [-R] [-g GRAN] [-A USED] [-t SECONDS] ...
 *                                  the same from a sequence file; -R: it is known to fail
 *                                  (a reduction resumed in a fresh boot); -A: attempts
 *                                  already made (counted in -a); -t: no attempt starts
 *                                  after SECONDS. Oracle status 4: still fails, and this
 *                                  kernel cannot judge another attempt (tainted, or an op
 *                                  hung): the reduction stops there, SEQUENCE holds the
 *                                  shorter sequence, "KFUZZ reduce-reboot" says where to
 *                                  resume. An oracle that writes a position K to
 *                                  SEQUENCE.try.at says the failure showed at the attempt's
 *                                  K-th op: the ops after it are dropped
 *
 * KFUZZ_SHM (environment), for -M and -p: memory the host can read after the guest is
 * gone (the ivshmem's BAR). -M writes there, before each attempt, what the reduction is
 * to resume from if the attempt ends the guest (the candidate, the granularity and the
 * attempts it would leave: what "KFUZZ reduce-reboot" says), -p the position of the op
 * it is making: a panic or a lockup of the whole kernel mid-attempt still says which
 * shorter sequence failed, and where.
 *
 * Each of THREADS threads draws its operations from its own PRNG seeded from
 * (SEED, thread number): open/close storms, read/write of random sizes and
 * offsets, ioctl with random _IOC commands (direction, type, nr and size drawn
 * over the whole space) and argument shapes (a valid buffer of the encoded
 * size, zero, NULL, an unmapped page, a kernel address, misaligned), poll, mmap,
 * lseek. Thread t's sequence depends only on SEED, t and the commands -S found
 * answered: the same seed replays the same sequences (their interleaving is the scheduler's). COUNT is the
 * operations of all threads together, SECONDS a time budget (0: none); the
 * first reached ends the run.
 *
 * -S SWEEP: before fuzzing (RECORD.swept, or -y SWEPT, is created when it is over), at most
 * SWEEP ioctls on each device node sweep the
 * _IOC space with a zero argument, in sweep_cmd()'s order: every type, nr 0-31
 * as _IO, then as _IOR/_IOW/_IOWR of 4 and 8 bytes, then nr 32-63 the same, and
 * so on (the low numbers drivers start at, and the shapes most commands have,
 * first). A command answered (neither -ENOTTY, which is also what the kernel
 * makes of -ENOIOCTLCMD in vfs_ioctl(), nor -EINVAL, many drivers' "unknown
 * command") and not one the VFS takes before the driver sees it (do_vfs_ioctl():
 * what /dev/null, which has no ioctl, does not answer -ENOTTY) is printed ("KFUZZ sweep": 0xDDSSTTNN, direction and
 * size, type, nr, "*" for any: 0x******03 is nr 3 answered for every type in
 * every shape swept, 0x8004**05 _IOR(any, 5, 4 bytes); "all" when every command
 * swept was), and the fuzzer then draws half its commands from those answered: a
 * (type, nr) answered in every shape swept with a random direction and size, any
 * other as it was answered. A driver that answers nothing, or everything, keeps
 * its seed's sequence; a node that answers every command of the first block (8192)
 * is swept no further ("all").
 *
 * A block device node is fuzzed like a character one (reads and writes go to
 * the device: the guest passes only nodes its driver under test registered,
 * never the guest's own disks). A network interface (net:NAME) is fuzzed
 * through sockets: open makes an AF_INET datagram socket, write sends the
 * buffer as a frame with sendto() on an AF_PACKET raw socket addressed to the
 * interface (the driver's ndo_start_xmit() when the interface is up; one such
 * socket a thread and interface, kept open: closing one costs an RCU grace
 * period, synchronize_net() in packet_release(), tens of ms under TCG), read
 * receives on the datagram socket, and ioctl passes a struct ifreq naming the
 * interface with a command of the device's (SIOC*: flags (SIOCSIFFLAGS brings
 * it up or down), MTU, map, ethtool, MII, hardware timestamps, WAN) or of the
 * private range SIOCDEVPRIVATE..+15 (the driver's ndo_siocdevprivate()); the
 * argument shape is then that of ifr_data, the pointer the driver is given.
 * Commands that rename the interface or change its addresses and routes are
 * not drawn: they would fuzz the stack, not the driver, and a renamed interface
 * could not be opened again. The _IOC sweep (-S) skips interfaces.
 *
 * Every operation is recorded, before it is made, in RECORD: a file mapped
 * shared (a tmpfs file), so it outlives the process when an oops kills a thread;
 * with -F, the ivshmem's memory, so it outlives the guest (a panic, a lockup). The
 * sweep's ioctl in flight is recorded too (its node and command, and a count).
 * Each thread's last LOG operations are kept, every random choice of each written
 * out (fd slot, open mode, ...), so -M can replay any subset of them exactly.
 * Output lines start with "KFUZZ ".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define MAX_THREADS 16
#define MAX_PATHS 32
#define LOG 32768		/* operations kept per thread */
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
	uint32_t slot;		/* which of the thread's FDS files */
	uint32_t flag;		/* open: mode index; mmap: read-only; lseek: whence */
	uint32_t misalign;	/* SH_MISALIGNED: bytes past the buffer's start */
	uint32_t extra;		/* storm: how many opens */
};

struct slot {
	uint64_t done;
	struct op ring[LOG];
};

struct record {
	char magic[8];
	uint64_t seed;
	uint32_t threads, npaths;
	char paths[MAX_PATHS][64];
	uint64_t swept;		/* sweep ioctls started (-S) */
	uint32_t sweep_path, sweep_cmd;	/* ... the last one's node and command */
	uint32_t sweeping;	/* 1: the sweep is not over */
	uint32_t probed;	/* ... its ioctls on /dev/null (what the VFS takes) */
	struct slot slots[];	/* threads of them */
};
#define RECORD_MAGIC "kfuzz3"

static size_t record_size(uint64_t threads)
{
	return sizeof(struct record) + threads * sizeof(struct slot);
}

static struct record *rec;
static const char *paths[MAX_PATHS];
static int npaths;

#define ANSWERED_MAX 65536	/* commands the sweep found answered, kept (the rest counted) */
static uint32_t answered[ANSWERED_MAX];
static unsigned char answered_any[ANSWERED_MAX];	/* direction and size any */
static uint64_t nanswered, ndropped;
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
	int opened[FDS];	/* the path each slot's file was opened from (-1: none) */
	int packet[MAX_PATHS];	/* net:NAME paths: an AF_PACKET socket (0: not yet) */
	int ifindex[MAX_PATHS];
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

static void *op_arg(struct thread *t, const struct op *o)
{
	switch (o->shape) {
	case SH_VALID: return t->buf;
	case SH_ZERO: return t->buf;
	case SH_NULL: return NULL;
	case SH_UNMAPPED: return unmapped;
	case SH_KERNEL: return (void *)0xffffffff81000000ull;
	default: return t->buf + o->misalign;
	}
}

static uint32_t pick_cmd(struct thread *t)
{
	uint32_t dir = (uint32_t)rnd(t, 4), type = (uint32_t)rnd(t, 256);
	uint32_t nr = (uint32_t)rnd(t, 256), size = (uint32_t)pick_size(t) & 0x3fff;

	if (nanswered && rnd(t, 2) == 0) {	/* a command the sweep found answered */
		uint64_t j = rnd(t, nanswered);

		return answered_any[j] ? (dir << 30) | (size << 16) | (answered[j] & 0xffff)
				       : answered[j];
	}
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

/* net:NAME, a network interface (its name after the prefix) */
static const char *net_name(uint32_t path)
{
	const char *p = paths[path % MAX_PATHS];

	return p && !strncmp(p, "net:", 4) ? p + 4 : NULL;
}

static int slot_is_net(const struct thread *t, int s)
{
	return t->opened[s] >= 0 && net_name((uint32_t)t->opened[s]) != NULL;
}

/* The interface's commands fuzzed besides SIOCDEVPRIVATE..+15 (include/uapi/linux/sockios.h). */
static const uint32_t net_cmds[] = {
	SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCGIFMTU, SIOCSIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX,
	SIOCGIFTXQLEN, SIOCGIFMAP, SIOCSIFMAP, SIOCETHTOOL, SIOCGMIIPHY, SIOCGMIIREG,
	SIOCSMIIREG, SIOCSHWTSTAMP, SIOCGHWTSTAMP, SIOCWANDEV,
};

static uint32_t pick_net_cmd(struct thread *t)
{
	if (rnd(t, 2))
		return SIOCDEVPRIVATE + (uint32_t)rnd(t, 16);
	return net_cmds[rnd(t, sizeof(net_cmds) / sizeof(net_cmds[0]))];
}

/* A struct ifreq naming interface NAME, the rest zero. */
static void ifreq_named(struct ifreq *ifr, const char *name)
{
	memset(ifr, 0, sizeof(*ifr));
	snprintf(ifr->ifr_name, sizeof(ifr->ifr_name), "%s", name);
}

/* A socket for interface NAME's ioctls: -1 (ENODEV) when the interface is gone. */
static int net_open(struct thread *t, const char *name)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), e;

	if (fd < 0)
		return -1;
	ifreq_named(&ifr, name);
	t->syscalls++;
	if (ioctl(fd, SIOCGIFINDEX, &ifr) == 0)
		return fd;
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

/* A frame to interface PATH: sendto() on the thread's AF_PACKET socket, addressed
 * to the interface by index (looked up once). */
static long net_send(struct thread *t, uint32_t path, const void *buf, size_t len)
{
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	uint32_t p = path % MAX_PATHS;

	if (!t->packet[p]) {
		struct ifreq ifr;
		int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		ifreq_named(&ifr, net_name(p));
		t->syscalls += 2;
		t->packet[p] = fd < 0 ? -errno : fd;
		if (fd >= 0 && ioctl(fd, SIOCGIFINDEX, &ifr) == 0)
			t->ifindex[p] = ifr.ifr_ifindex;
	}
	if (t->packet[p] < 0) {
		errno = -t->packet[p];
		return -1;
	}
	a.sll_ifindex = t->ifindex[p];	/* SOCK_RAW: the frame's header is the buffer's */
	return sendto(t->packet[p], buf, len, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof(a));
}

/* An interface's ioctl: a struct ifreq naming it, its union from the thread's buffer;
 * ifr_data (the pointer the driver gets) shaped as the op says; SIOCSIFFLAGS brings the
 * interface up (flag 1) or down (0), its other flags as they are. */
static long net_ioctl(struct thread *t, const struct op *o, int fd, const char *name, void *arg)
{
	struct ifreq ifr;

	ifreq_named(&ifr, name);
	memcpy(&ifr.ifr_ifru, t->buf + 64, sizeof(ifr.ifr_ifru));
	switch (o->cmd) {
	case SIOCSIFFLAGS:
		t->syscalls++;
		if (ioctl(fd, SIOCGIFFLAGS, &ifr))
			return -1;
		ifr.ifr_flags = (short)((ifr.ifr_flags & ~IFF_UP) | (o->flag & 1 ? IFF_UP : 0));
		break;
	case SIOCETHTOOL: case SIOCSHWTSTAMP: case SIOCGHWTSTAMP: case SIOCWANDEV:
		ifr.ifr_data = arg;
		break;
	default:
		if (o->cmd >= SIOCDEVPRIVATE && o->cmd <= SIOCDEVPRIVATE + 15)
			ifr.ifr_data = arg;
		break;
	}
	return ioctl(fd, o->cmd, &ifr);
}

/*
 * Draw the operation's every random choice into *o (in the order the first
 * versions of kfuzz drew them, so a seed keeps its sequence), then make it.
 */
static void draw(struct thread *t, struct op *o)
{
	o->slot = (uint32_t)fd_slot(t);
	o->path = (uint32_t)rnd(t, (uint64_t)npaths);
	o->shape = (uint32_t)rnd(t, SH_SHAPES);
	o->size = pick_size(t);
	o->offset = rnd(t, 4) ? 0 : rnd(t, 1 << 20);
	o->cmd = pick_cmd(t);
	if (o->shape == SH_MISALIGNED)
		o->misalign = 1 + (uint32_t)rnd(t, 7);
	if (o->shape == SH_ZERO)
		o->size = 0;
	if (t->fds[o->slot] < 0 && o->kind != OP_STORM)
		o->kind = OP_OPEN;
	switch (o->kind) {
	case OP_OPEN: o->flag = (uint32_t)rnd(t, 3); break;
	case OP_STORM: o->extra = 8 + (uint32_t)rnd(t, 24); break;
	case OP_MMAP: o->flag = (uint32_t)rnd(t, 2); break;
	case OP_LSEEK: o->flag = (uint32_t)rnd(t, 3); break;
	default: break;
	}
	if (o->kind == OP_IOCTL && slot_is_net(t, (int)o->slot)) {
		/* drawn after the rest: a character node's seed keeps its sequence */
		o->cmd = pick_net_cmd(t);
		o->flag = (uint32_t)rnd(t, 2);
	}
	if (o->kind == OP_IOCTL)
		o->size = (o->cmd >> 16) & 0x3fff;
}

static void run(struct thread *t, struct op *o)
{
	int s = (int)(o->slot % (MAX_THREADS * FDS)), fd = t->fds[s];
	void *arg = op_arg(t, o);

	__atomic_store_n(&o->ret, INT64_MIN, __ATOMIC_RELEASE);
	t->syscalls++;
	switch (o->kind) {
	case OP_OPEN: {
		static const int modes[] = { O_RDONLY, O_WRONLY, O_RDWR };
		int flags = modes[o->flag % 3] | O_NONBLOCK | O_CLOEXEC;

		const char *net = net_name(o->path);

		if (fd >= 0) {
			close(fd);
			t->syscalls++;
		}
		t->fds[s] = net ? net_open(t, net) : open(paths[o->path % MAX_PATHS], flags);
		t->opened[s] = t->fds[s] >= 0 ? (int)(o->path % MAX_PATHS) : -1;
		o->ret = result(t->fds[s]);
		break;
	}
	case OP_CLOSE:
		o->ret = result(close(fd));
		t->fds[s] = -1;
		t->opened[s] = -1;
		break;
	case OP_STORM: {
		const char *net = net_name(o->path);
		uint32_t i;

		for (i = 0; i < o->extra; i++) {
			int f = net ? net_open(t, net)
				    : open(paths[o->path % MAX_PATHS], O_RDWR | O_NONBLOCK | O_CLOEXEC);

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
		if (slot_is_net(t, s)) {
			o->ret = result(recv(fd, arg, o->size, MSG_DONTWAIT));
			break;
		}
		o->ret = o->offset ? result(pread(fd, arg, o->size, (off_t)o->offset))
				   : result(read(fd, arg, o->size));
		break;
	case OP_WRITE:
		if (slot_is_net(t, s)) {	/* a frame to the driver's ndo_start_xmit() */
			o->ret = result(net_send(t, (uint32_t)t->opened[s], arg, o->size));
			break;
		}
		o->ret = o->offset ? result(pwrite(fd, arg, o->size, (off_t)o->offset))
				   : result(write(fd, arg, o->size));
		break;
	case OP_IOCTL:
		if (slot_is_net(t, s)) {
			o->ret = result(net_ioctl(t, o, fd, net_name((uint32_t)t->opened[s]), arg));
			break;
		}
		o->ret = result(ioctl(fd, o->cmd, arg));
		break;
	case OP_POLL: {
		struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI };

		o->ret = result(poll(&p, 1, 0));
		break;
	}
	case OP_MMAP: {
		size_t len = (size_t)(o->size ? o->size : 4096);
		void *m = mmap(NULL, len, o->flag ? PROT_READ : PROT_READ | PROT_WRITE,
			       MAP_SHARED, fd, (off_t)(o->offset & ~4095ull));

		o->ret = m == MAP_FAILED ? -errno : 0;
		if (m != MAP_FAILED) {
			munmap(m, len);
			t->syscalls++;
		}
		break;
	}
	default:
		o->ret = result((long)lseek(fd, (off_t)o->offset, (int)(o->flag % 3)));
		break;
	}
}

static void *worker(void *p)
{
	struct thread *t = p;
	struct slot *slot = &rec->slots[t->id];
	uint64_t i;

	for (i = 1; i <= per_thread && !stop; i++) {
		struct op *o = &slot->ring[i % LOG];

		memset(o, 0, sizeof(*o));
		o->index = i;
		o->kind = (uint32_t)rnd(t, OP_KINDS);
		__atomic_store_n(&slot->done, i, __ATOMIC_RELEASE);
		draw(t, o);
		run(t, o);
		t->ops++;
		if (deadline_ns && (i & 63) == 0 && now_ns() > deadline_ns)
			break;
	}
	for (i = 0; i < FDS; i++)
		if (t->fds[i] >= 0)
			close(t->fds[i]);
	return NULL;
}

/* Thread id's PRNG and buffer (its bytes are what write and ioctl pass), from the seed. */
static int thread_init(struct thread *t, int id)
{
	uint64_t x = seed ^ ((uint64_t)(id + 1) * 0xd1b54a32d192ed03ull);
	int f;

	t->id = id;
	t->rng = splitmix(&x);
	t->ops = t->syscalls = 0;
	for (f = 0; f < FDS; f++)
		t->fds[f] = t->opened[f] = -1;
	memset(t->packet, 0, sizeof(t->packet));
	memset(t->ifindex, 0, sizeof(t->ifindex));
	t->buf = aligned_alloc(4096, BUF_SIZE);
	if (!t->buf)
		return -1;
	for (f = 0; f < BUF_SIZE; f++)
		t->buf[f] = (unsigned char)splitmix(&x);
	return 0;
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
	printf("KFUZZ op thread=%d index=%llu %s", t, (unsigned long long)o->index,
	       op_names[o->kind % OP_KINDS]);
	/* open and storm name a path; the others act on what the slot's last open opened */
	if (o->kind == OP_OPEN || o->kind == OP_STORM)
		printf(" path=%s", rec ? rec->paths[o->path % MAX_PATHS] : paths[o->path % MAX_PATHS]);
	printf(" fd=%u", o->slot);
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

static int map_record(const char *file, int fd)
{
	struct stat st;

	rec = MAP_FAILED;
	if (!fstat(fd, &st) && (size_t)st.st_size >= sizeof(*rec))
		rec = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (rec == MAP_FAILED || memcmp(rec->magic, RECORD_MAGIC, 7) || rec->threads > MAX_THREADS
	    || (size_t)st.st_size < record_size(rec->threads)) {
		printf("KFUZZ error: %s: not a kfuzz record\n", file);
		return 1;
	}
	return 0;
}

static int dump(const char *file, int last)
{
	int fd = open(file, O_RDONLY);
	uint32_t t;

	if (fd < 0) {
		printf("KFUZZ error: %s: %s\n", file, strerror(errno));
		return 1;
	}
	if (map_record(file, fd))
		return 1;
	for (t = 0; t < rec->threads; t++) {
		const struct slot *s = &rec->slots[t];
		uint64_t i, from = s->done > (uint64_t)last ? s->done - (uint64_t)last + 1 : 1;

		printf("KFUZZ thread=%u ops=%llu\n", t, (unsigned long long)s->done);
		for (i = from; i <= s->done; i++)
			describe((int)t, &s->ring[i % LOG]);
	}
	return 0;
}

/*
 * Sequence files: what -M writes and -p replays.
 *   kfuzz-seq seed=SEED
 *   path N NAME
 *   op THREAD INDEX KIND SLOT PATH SHAPE MISALIGN SIZE OFFSET CMD FLAG EXTRA
 */
struct entry {
	uint32_t thread;
	struct op op;
};

/*
 * A reduction's resume state, in KFUZZ_SHM: what -M resumes from in the next boot if
 * the attempt in flight ends this one (the guest dies, or locks up and the host stops
 * it). Written by -M before each attempt (inflight 1) and after it (0); -p writes at.
 */
struct resume {
	char magic[8];		/* RESUME_MAGIC */
	uint64_t seed;
	uint32_t npaths, inflight;
	char paths[MAX_PATHS][64];
	uint32_t gran, attempts, located, pad;	/* if the attempt in flight fails */
	uint64_t at;		/* the op the replay is making, from 1 (0: none yet) */
	uint64_t n;		/* the attempt's ops */
	struct entry e[];
};
#define RESUME_MAGIC "kfuzzR1"

static size_t pow2_at_least(size_t n)
{
	size_t p = 1 << 20;

	while (p < n)
		p <<= 1;
	return p;
}

/* -z: the shared memory a record of THREADS threads, or the resume state of a
 * reduction of all their ops, needs. */
static size_t shm_size(uint64_t threads)
{
	size_t a = record_size(threads), b = sizeof(struct resume) + threads * LOG * sizeof(struct entry);

	return pow2_at_least((a > b ? a : b) + sizeof(uint64_t));	/* + the beat (-B) */
}

static void *shm;		/* KFUZZ_SHM mapped (NULL: none) */
static size_t shm_len;

/* Map KFUZZ_SHM (or file) read-write as it is: -1 and an error line if it cannot be. */
static void *map_fixed(const char *file, size_t need, size_t *len)
{
	struct stat st;
	void *m;
	int fd = open(file, O_RDWR | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st)) {
		printf("KFUZZ error: %s: %s\n", file, strerror(errno));
		return NULL;
	}
	if ((size_t)st.st_size < need) {
		printf("KFUZZ error: %s: %llu bytes, %zu needed\n", file,
		       (unsigned long long)st.st_size, need);
		close(fd);
		return NULL;
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		printf("KFUZZ error: %s: mmap: %s\n", file, strerror(errno));
		return NULL;
	}
	*len = (size_t)st.st_size;
	return m;
}

static volatile sig_atomic_t beat_stop;

static void on_term(int sig)
{
	(void)sig;
	beat_stop = 1;
}

/* -B: count up in the memory's last 8 bytes until SIGTERM, then leave 0 there. */
static int heartbeat(const char *file)
{
	size_t len;
	unsigned char *m = map_fixed(file, sizeof(uint64_t), &len);
	uint64_t *beat, n = 0;
	struct timespec quarter = { 0, 250000000 };

	if (!m)
		return 2;
	beat = (uint64_t *)(m + len - sizeof(uint64_t));
	signal(SIGTERM, on_term);
	while (!beat_stop) {
		__atomic_store_n(beat, ++n, __ATOMIC_RELEASE);
		nanosleep(&quarter, NULL);
	}
	__atomic_store_n(beat, 0, __ATOMIC_RELEASE);
	return 0;
}

static void shm_open_env(void)
{
	const char *file = getenv("KFUZZ_SHM");

	if (file && *file)
		shm = map_fixed(file, sizeof(struct resume), &shm_len);
}

/* Before an attempt of n entries: the state to resume from if it ends the guest. */
static void resume_write(const struct entry *e, size_t n, size_t gran, int attempts_then)
{
	struct resume *r = shm;
	int p;

	if (!r || sizeof(*r) + n * sizeof(*e) + sizeof(uint64_t) > shm_len)	/* the beat last */
		return;
	__atomic_store_n(&r->inflight, 0, __ATOMIC_RELEASE);
	memcpy(r->magic, RESUME_MAGIC, 8);
	r->seed = seed;
	r->npaths = (uint32_t)npaths;
	for (p = 0; p < npaths; p++)
		snprintf(r->paths[p], sizeof(r->paths[p]), "%s", paths[p]);
	r->gran = (uint32_t)gran;
	r->attempts = (uint32_t)attempts_then;
	r->located = 0;
	r->at = 0;
	r->n = n;
	memcpy(r->e, e, n * sizeof(*e));
	__atomic_store_n(&r->inflight, 1, __ATOMIC_RELEASE);
}

static void resume_done(void)
{
	if (shm)
		__atomic_store_n(&((struct resume *)shm)->inflight, 0, __ATOMIC_RELEASE);
}

/* -p: the op being made, in the resume state too. */
static void resume_at(uint64_t at)
{
	if (shm)
		__atomic_store_n(&((struct resume *)shm)->at, at, __ATOMIC_RELEASE);
}

static int write_seq(const char *file, const struct entry *e, size_t n)
{
	FILE *f = fopen(file, "w");
	size_t i;
	int p;

	if (!f)
		return -1;
	fprintf(f, "kfuzz-seq seed=%llu\n", (unsigned long long)seed);
	for (p = 0; p < npaths; p++)
		fprintf(f, "path %d %s\n", p, paths[p]);
	for (i = 0; i < n; i++) {
		const struct op *o = &e[i].op;

		fprintf(f, "op %u %llu %u %u %u %u %u %llu %llu %u %u %u\n", e[i].thread,
			(unsigned long long)o->index, o->kind, o->slot, o->path, o->shape,
			o->misalign, (unsigned long long)o->size, (unsigned long long)o->offset,
			o->cmd, o->flag, o->extra);
	}
	return fclose(f);
}

static char path_names[MAX_PATHS][64];

/* Read a sequence file into *out (malloc'ed); -1 and a KFUZZ error line if it is not one. */
static long read_seq(const char *file, struct entry **out)
{
	FILE *f = fopen(file, "r");
	char line[256];
	size_t n = 0, cap = 0;
	struct entry *e = NULL;
	unsigned long long sd;

	if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "kfuzz-seq seed=%llu", &sd) != 1) {
		printf("KFUZZ error: %s: not a kfuzz sequence\n", file);
		return -1;
	}
	seed = sd;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long idx, size, off;
		struct entry x = { 0 };
		int p;

		if (sscanf(line, "path %d %63s", &p, path_names[npaths % MAX_PATHS]) == 2 &&
		    p == npaths && npaths < MAX_PATHS) {
			paths[npaths] = path_names[npaths];
			npaths++;
			continue;
		}
		if (sscanf(line, "op %u %llu %u %u %u %u %u %llu %llu %u %u %u", &x.thread, &idx,
			   &x.op.kind, &x.op.slot, &x.op.path, &x.op.shape, &x.op.misalign, &size,
			   &off, &x.op.cmd, &x.op.flag, &x.op.extra) != 12 ||
		    x.thread >= MAX_THREADS || x.op.kind >= OP_KINDS || x.op.slot >= FDS ||
		    x.op.path >= (uint32_t)npaths || x.op.shape >= SH_SHAPES || x.op.misalign > 8 ||
		    size > BUF_SIZE) {
			printf("KFUZZ error: %s: bad line: %s", file, line);
			free(e);
			return -1;
		}
		x.op.index = idx;
		x.op.size = size;
		x.op.offset = off;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			e = realloc(e, cap * sizeof(*e));
			if (!e)
				return -1;
		}
		e[n++] = x;
	}
	fclose(f);
	*out = e;
	return (long)n;
}

/* -p: make the sequence's operations in order, in this one thread; each original
 * thread keeps its own files and buffer. */
/* /proc/sys/kernel/tainted as text ("" when it cannot be read). */
static void read_taint(char *out)
{
	int fd = open("/proc/sys/kernel/tainted", O_RDONLY);
	ssize_t k = fd >= 0 ? read(fd, out, 31) : -1;

	out[k > 0 ? k : 0] = 0;
	if (fd >= 0)
		close(fd);
}

static int replay(const char *file, const char *at_file, int stop_on_taint)
{
	static struct thread ts[MAX_THREADS];
	struct entry *e;
	long n = read_seq(file, &e), i;
	char *at = NULL;	/* the position, text: "%-22ld\n" */
	char before[32] = "", now[32];
	uint32_t t;

	if (n < 0)
		return 2;
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (at_file) {
		int fd = open(at_file, O_RDWR | O_CREAT | O_TRUNC, 0600);

		if (fd < 0 || ftruncate(fd, 23) ||
		    (at = mmap(NULL, 23, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
			printf("KFUZZ error: %s: %s\n", at_file, strerror(errno));
			return 2;
		}
	}
	if (stop_on_taint)
		read_taint(before);
	for (t = 0; t < MAX_THREADS; t++)
		ts[t].buf = NULL;
	for (i = 0; i < n; i++) {
		struct thread *th = &ts[e[i].thread];

		if (!th->buf && thread_init(th, (int)e[i].thread))
			return 2;
		if (at) {
			char pos[24];

			snprintf(pos, sizeof(pos), "%-22ld\n", i + 1);
			memcpy(at, pos, 23);
		}
		resume_at((uint64_t)i + 1);
		run(th, &e[i].op);
		th->ops++;
		if (stop_on_taint && (read_taint(now), strcmp(now, before))) {
			printf("KFUZZ replay-tainted at=%ld taint=%s\n", i + 1, now);
			return 0;
		}
	}
	printf("KFUZZ replayed ops=%ld\n", n);
	return 0;
}

/* -p -P: each recorded thread's ops in a thread of its own, all released at once. */
struct strand {
	struct thread th;
	struct entry *e;	/* shared: each strand writes only its own ops' results */
	long n;
	uint32_t id;
	pthread_barrier_t *go;
};

static void *strand_run(void *p)
{
	struct strand *s = p;
	long i;

	pthread_barrier_wait(s->go);
	for (i = 0; i < s->n; i++)
		if (s->e[i].thread == s->id) {
			run(&s->th, &s->e[i].op);
			s->th.ops++;
		}
	for (i = 0; i < FDS; i++)
		if (s->th.fds[i] >= 0)
			close(s->th.fds[i]);
	return NULL;
}

static int replay_concurrent(const char *file)
{
	static struct strand ss[MAX_THREADS];
	pthread_t ids[MAX_THREADS];
	pthread_barrier_t go;
	struct entry *e;
	long n = read_seq(file, &e), i;
	uint32_t t, used = 0, k;
	int present[MAX_THREADS] = { 0 };

	if (n < 0)
		return 2;
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (i = 0; i < n; i++)
		present[e[i].thread] = 1;
	for (t = 0; t < MAX_THREADS; t++)
		used += (uint32_t)present[t];
	if (!used) {
		printf("KFUZZ replayed ops=0 threads=0\n");
		return 0;
	}
	pthread_barrier_init(&go, NULL, used);
	for (t = 0, k = 0; t < MAX_THREADS; t++) {
		if (!present[t])
			continue;
		if (thread_init(&ss[k].th, (int)t))
			return 2;
		ss[k].e = e;
		ss[k].n = n;
		ss[k].id = t;
		ss[k].go = &go;
		if (pthread_create(&ids[k], NULL, strand_run, &ss[k]))
			return 2;
		k++;
	}
	for (k = 0; k < used; k++)
		pthread_join(ids[k], NULL);
	printf("KFUZZ replayed ops=%ld threads=%u\n", n, used);
	return 0;
}

static int attempts, max_attempts, located, concurrent;
static const char *oracle;
static const char *stopped = "minimal";

/* 1: the entries still fail (the oracle said so), 2: they fail and this kernel can
 * judge no more (oracle status 4), 0: they pass, -1: stop. A failure the oracle placed
 * at the K-th op (SEQUENCE.try.at) sets *n to K: the ops after it never ran before it. */
static int fails(const char *out, const struct entry *e, size_t *n, size_t gran_if)
{
	char try[256], at[300], cmd[512];
	unsigned long long k = 0;
	FILE *f;
	int st, code;

	if (attempts >= max_attempts) {
		stopped = "budget-reached";
		return -1;
	}
	if (deadline_ns && now_ns() > deadline_ns) {
		stopped = "time-reached";
		return -1;
	}
	attempts++;
	snprintf(try, sizeof(try), "%s.try", out);
	snprintf(at, sizeof(at), "%s.at", try);
	unlink(at);
	if (write_seq(try, e, *n))
		return -1;
	snprintf(cmd, sizeof(cmd), "sh %s %s", oracle, try);
	fflush(stdout);
	resume_write(e, *n, gran_if, attempts);
	st = system(cmd);
	resume_done();
	code = st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	if (code != 0 && code != 1 && code != 4) {
		printf("KFUZZ reduce-error oracle status %d on attempt %d\n", code, attempts);
		stopped = "oracle-failed";
		return -1;
	}
	if (code == 1)
		return 0;
	f = fopen(at, "r");
	if (f) {
		if (fscanf(f, "%llu", &k) == 1 && k >= 1 && k < *n)
			*n = (size_t)k;
		fclose(f);
	}
	located = k >= 1;
	return code == 4 ? 2 : 1;
}

/*
 * -M: ddmin (Zeller and Hildebrandt, "Simplifying and isolating failure-inducing
 * input", 2002) over the recorded operations: try each of n chunks, then each
 * complement; keep the first that still fails; else split finer. It ends with
 * a 1-minimal sequence (removing any one operation makes it pass) or when the
 * attempts run out (the shortest failing one so far is kept).
 */
/* RECORD's operations (all threads', in thread order) into *out (calloc'ed). */
static long collect(const char *file, struct entry **out)
{
	struct entry *c;
	size_t n = 0, len = 0, i;
	uint32_t t;
	int fd = open(file, O_RDONLY);

	if (fd < 0) {
		printf("KFUZZ error: %s: %s\n", file, strerror(errno));
		return -1;
	}
	if (map_record(file, fd))
		return -1;
	seed = rec->seed;
	npaths = (int)rec->npaths;
	for (i = 0; i < (size_t)npaths && i < MAX_PATHS; i++)
		paths[i] = rec->paths[i];
	for (t = 0; t < rec->threads; t++)
		n += rec->slots[t].done < LOG ? rec->slots[t].done : LOG - 1;
	c = calloc(n + 2, sizeof(*c));
	if (!c)
		return -1;
	for (t = 0; t < rec->threads; t++) {
		const struct slot *s = &rec->slots[t];
		uint64_t from = s->done < LOG ? 1 : s->done - LOG + 2, x;

		for (x = from; x <= s->done; x++) {
			c[len].thread = t;
			c[len].op = s->ring[x % LOG];
			len++;
		}
	}
	if (rec->sweeping && rec->swept && rec->sweep_path < rec->npaths) {
		/* The sweep's ioctl in flight (it never ended): an open of its node (read and
		 * write, as the sweep's open_any() tries first) and the ioctl, zero argument,
		 * in a thread of their own. */
		struct op *o = &c[len].op;

		c[len].thread = c[len + 1].thread = rec->threads < MAX_THREADS ? rec->threads : 0;
		o->index = rec->swept;
		o->kind = OP_OPEN;
		o->path = rec->sweep_path;
		o->flag = 2;
		o = &c[len + 1].op;
		o->index = rec->swept;
		o->kind = OP_IOCTL;
		o->path = rec->sweep_path;
		o->shape = SH_NULL;
		o->cmd = rec->sweep_cmd;
		o->size = (rec->sweep_cmd >> 16) & 0x3fff;
		o->ret = INT64_MIN;
		len += 2;
	}
	*out = c;
	return (long)len;
}

/* -C: the operations RECORD's threads started (the fuzz step's hang watchdog). */
static int started(const char *file)
{
	uint64_t n = 0;
	uint32_t t;
	int fd = open(file, O_RDONLY);

	if (fd < 0 || map_record(file, fd))
		return 1;
	for (t = 0; t < rec->threads; t++)
		n += __atomic_load_n(&rec->slots[t].done, __ATOMIC_ACQUIRE);
	n += __atomic_load_n(&rec->swept, __ATOMIC_ACQUIRE) +
	     __atomic_load_n(&rec->probed, __ATOMIC_ACQUIRE);
	printf("%llu\n", (unsigned long long)n);
	return 0;
}

/* The op an op at position k of c (from 0) acts on: the last open of its thread's slot
 * before it (-1: none). */
static long opened_by(const struct entry *c, size_t k)
{
	size_t i;

	for (i = k; i-- > 0;)
		if (c[i].thread == c[k].thread && c[i].op.slot == c[k].op.slot &&
		    (c[i].op.kind == OP_OPEN || c[i].op.kind == OP_CLOSE))
			return c[i].op.kind == OP_OPEN ? (long)i : -1;
	return -1;
}

static int minimize(const char *file, const char *from_seq, int resumed, size_t gran,
		    const char *out)
{
	struct entry *c, *sub;
	size_t k, len, i;
	long got = from_seq ? read_seq(from_seq, &c) : collect(file, &c);
	int r = 0, whole;

	if (got < 0)
		return 2;
	len = (size_t)got;
	sub = calloc(len ? len : 1, sizeof(*c));
	if (!sub)
		return 2;
	printf("KFUZZ reduce-start ops=%zu\n", len);
	whole = resumed ? 1 : fails(out, c, &len, gran);
	if (whole < 1) {
		printf("KFUZZ reduce-none ops=%zu attempts=%d why=%s\n", len, attempts,
		       whole == 0 ? "replayed-in-one-thread-it-passes" : stopped);
		return 0;
	}
	if (whole == 2)
		goto done;
	while (len >= 2) {
		size_t chunk, start;
		int found = 0;
		long o;

		/* Located at its last op: that op with the open of its file first (a failure
		 * judged by a fresh boot costs a boot; this one try often saves the rest). */
		if (located && len > 2 && (o = opened_by(c, len - 1)) >= 0) {
			located = 0;
			sub[0] = c[o];
			sub[1] = c[len - 1];
			k = 2;
			r = fails(out, sub, &k, 2);
			if (r < 0)
				goto done;
			if (r) {
				memcpy(c, sub, k * sizeof(*c));
				len = k;
				gran = 2;
				if (r == 2)
					goto done;
				continue;
			}
		}
		located = 0;
		chunk = (len + gran - 1) / gran;
		for (start = 0; start < len && !found; start += chunk) {
			k = start + chunk > len ? len - start : chunk;
			memcpy(sub, c + start, k * sizeof(*c));
			r = fails(out, sub, &k, 2);
			if (r < 0)
				goto done;
			if (r) {
				memcpy(c, sub, k * sizeof(*c));
				len = k;
				gran = 2;
				found = r;
			}
		}
		for (start = 0; start < len && !found && gran > 2; start += chunk) {
			size_t end = start + chunk > len ? len : start + chunk;

			memcpy(sub, c, start * sizeof(*c));
			memcpy(sub + start, c + end, (len - end) * sizeof(*c));
			k = len - (end - start);
			r = fails(out, sub, &k, gran - 1 > 2 ? gran - 1 : 2);
			if (r < 0)
				goto done;
			if (r) {
				memcpy(c, sub, k * sizeof(*c));
				len = k;
				gran = gran - 1 > 2 ? gran - 1 : 2;
				found = r;
			}
		}
		if (found == 2)
			goto done;
		if (!found) {
			if (gran >= len)
				break;
			gran = 2 * gran < len ? 2 * gran : len;
		}
	}
	r = 0;
done:
	if (write_seq(out, c, len))
		return 2;
	if (r == 2 || whole == 2) {
		printf("KFUZZ reduce-reboot ops=%zu gran=%zu attempts=%d located=%d\n", len, gran,
		       attempts, located);
		for (i = 0; i < len; i++)
			describe((int)c[i].thread, &c[i].op);
		return 0;
	}
	printf("KFUZZ reduced ops=%zu attempts=%d %s\n", len, attempts, stopped);
	for (i = 0; i < len; i++)
		describe((int)c[i].thread, &c[i].op);
	return 0;
}

/* -E on a resume state: the attempt in flight, cut after its op in flight, and how to
 * resume ("KFUZZ resume": inflight 0, the guest ended between attempts). */
static int export_resume(const char *file, const struct resume *r, size_t len, const char *out)
{
	uint64_t n = r->n, at = r->at;
	uint32_t p;
	size_t i;

	if (r->npaths > MAX_PATHS || n > (len - sizeof(*r)) / sizeof(struct entry)) {
		printf("KFUZZ error: %s: not a kfuzz resume state\n", file);
		return 2;
	}
	seed = r->seed;
	npaths = (int)r->npaths;
	for (p = 0; p < r->npaths; p++) {
		memcpy(path_names[p], r->paths[p], sizeof(path_names[p]));
		path_names[p][sizeof(path_names[p]) - 1] = 0;
		paths[p] = path_names[p];
	}
	if (at >= 1 && at < n)
		n = at;
	if (write_seq(out, r->e, (size_t)n))
		return 2;
	printf("KFUZZ resume inflight=%u ops=%llu gran=%u attempts=%u located=%d at=%llu\n",
	       r->inflight, (unsigned long long)n, r->gran, r->attempts, at >= 1,
	       (unsigned long long)at);
	for (i = 0; i < n; i++)
		describe((int)r->e[i].thread, &r->e[i].op);
	return 0;
}

/* -E: a record's operations, or a resume state's attempt in flight. */
static int export_file(const char *file, const char *out)
{
	struct stat st;
	struct entry *e;
	const struct resume *r;
	long n;
	int fd = open(file, O_RDONLY);

	if (fd < 0 || fstat(fd, &st)) {
		printf("KFUZZ error: %s: %s\n", file, strerror(errno));
		return 2;
	}
	if ((size_t)st.st_size >= sizeof(*r)) {
		r = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (r != MAP_FAILED && !memcmp(r->magic, RESUME_MAGIC, 8))
			return export_resume(file, r, (size_t)st.st_size, out);
	}
	close(fd);
	n = collect(file, &e);
	return n < 0 || write_seq(out, e, (size_t)n) ? 2 : 0;
}

static int open_any(const char *path)
{
	int fd = open(path, O_RDWR | O_NONBLOCK);

	if (fd < 0)
		fd = open(path, O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		fd = open(path, O_WRONLY | O_NONBLOCK);
	return fd;
}

static int sweep_answers(int fd, uint32_t cmd)
{
	return ioctl(fd, cmd, 0UL) >= 0 || (errno != ENOTTY && errno != EINVAL);
}

/*
 * The sweep's order: blocks of 32 nr x 256 types (nr-major), each of one shape
 * (direction and size bits). For nr 0-31, then 32-63, ... up to 255: _IO, then
 * _IOR, _IOW and _IOWR of 4 and 8 bytes (an int; a long or a pointer), the
 * shapes most commands have; after nr 255, the same ranges again with sizes 1,
 * 2, 16, 32, 64, 128 and 256. A budget covers a prefix of that order.
 */
#define BLOCK (32 * 256)
#define SHAPE(dir, size) (((uint32_t)(dir) << 30) | ((uint32_t)(size) << 16))
static const uint32_t common_shapes[] = {
	0, SHAPE(2, 4), SHAPE(1, 4), SHAPE(3, 4), SHAPE(2, 8), SHAPE(1, 8), SHAPE(3, 8),
};
static const uint32_t more_sizes[] = { 1, 2, 16, 32, 64, 128, 256 };
#define NCOMMON (sizeof(common_shapes) / sizeof(common_shapes[0]))
#define NMORE (3 * sizeof(more_sizes) / sizeof(more_sizes[0]))
#define SWEEP_MAX ((uint64_t)BLOCK * 8 * (NCOMMON + NMORE))

/* Shape s (0 .. NCOMMON + NMORE - 1) and where its block for nr range r starts. */
static uint32_t shape_of(uint64_t s)
{
	if (s < NCOMMON)
		return common_shapes[s];
	s -= NCOMMON;
	return SHAPE(1 + s % 3, more_sizes[s / 3]);
}

static uint64_t sweep_index(uint32_t s, uint32_t nr, uint32_t type)
{
	uint64_t r = nr / 32, b = s < NCOMMON ? r * NCOMMON + s : 8 * NCOMMON + r * NMORE + s - NCOMMON;

	return b * BLOCK + (nr % 32) * 256 + type;
}

static uint32_t sweep_cmd(uint64_t k)
{
	uint64_t b = k / BLOCK, i = k % BLOCK, s, r;

	if (b < 8 * NCOMMON) {
		r = b / NCOMMON;
		s = b % NCOMMON;
	} else {
		r = (b - 8 * NCOMMON) / NMORE;
		s = NCOMMON + (b - 8 * NCOMMON) % NMORE;
	}
	return shape_of(s) | (uint32_t)((i % 256) << 8) | (uint32_t)(r * 32 + i / 256);
}

static void keep(uint32_t cmd, int any)
{
	if (nanswered < ANSWERED_MAX) {
		answered[nanswered] = cmd;
		answered_any[nanswered++] = (unsigned char)any;
	} else {
		ndropped++;
	}
}

/*
 * One nr's answers, printed (0xDDSSTTNN, "*" for any) and kept for pick_cmd(): a
 * (type, nr) answered in every shape swept is kept once, its direction and size
 * left to the fuzzer (printed 0x****TTNN, or 0x******NN when every type is); any
 * other command answered is kept as it is (0xDDSS**NN when every type answered
 * in that shape). A command the VFS takes (generic: FICLONE is _IOW(0x94, 9,
 * int)) counts as neither answered nor not: the driver never sees it.
 */
static void sweep_nr(const unsigned char *ans, const unsigned char *generic, uint64_t n,
		     uint32_t nr, const char **sep)
{
	uint32_t s, type, shapes = 0, all = 1;
	unsigned char any[256];

	while (shapes < NCOMMON + NMORE && sweep_index(shapes, nr, 0) < n)
		shapes++;
	if (!shapes)
		return;
	for (type = 0; type < 256; type++) {	/* answered in each shape swept (once at least) */
		uint32_t yes = 0, no = 0;

		for (s = 0; s < shapes; s++) {
			uint64_t k = sweep_index(s, nr, type);

			yes += k < n && ans[k];
			no += k < n && !ans[k] && !generic[k];
		}
		any[type] = yes && !no;
		all &= any[type];
	}
	if (all && shapes > 1) {
		printf("%s0x******%02x", *sep, nr);
		*sep = ",";
	}
	for (type = 0; type < 256; type++) {
		if (!any[type])
			continue;
		keep((type << 8) | nr, 1);
		if (!all && shapes > 1) {
			printf("%s0x****%02x%02x", *sep, type, nr);
			*sep = ",";
		}
	}
	for (s = 0; s < shapes; s++) {
		uint32_t full = 1, shape = shape_of(s);

		for (type = 0; type < 256; type++) {
			uint64_t k = sweep_index(s, nr, type);

			full &= k < n && (ans[k] || generic[k]);
		}
		if (full && (shapes == 1 || !all)) {
			printf("%s0x%04x**%02x", *sep, shape >> 16, nr);
			*sep = ",";
		}
		for (type = 0; type < 256; type++) {
			uint64_t k = sweep_index(s, nr, type);

			if (k >= n || !ans[k] || (any[type] && shapes > 1))
				continue;
			if (shapes > 1)
				keep(shape | (type << 8) | nr, 0);
			if (!full) {
				printf("%s0x%08x", *sep, shape | (type << 8) | nr);
				*sep = ",";
			}
		}
	}
}

/* The commands of -S: printed, and kept in answered[] for pick_cmd(). */
static void sweep(uint64_t budget)
{
	uint64_t k, n = budget < SWEEP_MAX ? budget : SWEEP_MAX, start = now_ns();
	unsigned char *generic = calloc(n, 1), *ans = calloc(n, 1);
	int fd = open("/dev/null", O_RDWR), p;

	if (!generic || !ans) {
		printf("KFUZZ sweep error=%d\n", ENOMEM);
		return;
	}
	/* /dev/null has no ioctl of its own: whatever it does not answer -ENOTTY, the
	 * VFS took (do_vfs_ioctl()) before any driver could see it. */
	for (k = 0; fd >= 0 && k < n; k++) {	/* counted: the watchdog's progress */
		__atomic_add_fetch(&rec->probed, 1, __ATOMIC_RELEASE);
		generic[k] = ioctl(fd, sweep_cmd(k), 0UL) >= 0 || errno != ENOTTY;
	}
	if (fd >= 0)
		close(fd);
	for (p = 0; p < npaths; p++) {
		uint64_t found = 0, taken = 0, nr, tried;
		const char *sep = "";

		if (net_name((uint32_t)p))	/* an interface's commands are the SIOC* ones */
			continue;
		fd = open_any(paths[p]);
		if (fd < 0) {
			printf("KFUZZ sweep path=%s error=%d\n", paths[p], errno);
			continue;
		}
		for (k = 0; k < n; k++) {
			if (!generic[k]) {	/* recorded before it is made (a hang's op) */
				rec->sweep_path = (uint32_t)p;
				rec->sweep_cmd = sweep_cmd(k);
				__atomic_add_fetch(&rec->swept, 1, __ATOMIC_RELEASE);
			}
			ans[k] = !generic[k] && sweep_answers(fd, sweep_cmd(k));
			found += ans[k];
			taken += generic[k];
			/* A node that answered every command of the first block answers
			 * anything: the rest would tell nothing (and a driver whose every
			 * ioctl sleeps would take minutes). */
			if (k + 1 == BLOCK && found + taken == BLOCK)
				break;
		}
		tried = k < n ? k + 1 : n;
		close(fd);
		printf("KFUZZ sweep path=%s ioctls=%llu answered=%llu cmds=", paths[p],
		       (unsigned long long)tried, (unsigned long long)found);
		if (found && found + taken == tried) {
			printf("all\n");	/* answers anything: nothing to favour */
			continue;
		}
		for (nr = 0; nr < 256 && found; nr++)
			sweep_nr(ans, generic, n, (uint32_t)nr, &sep);
		printf("\n");
		fflush(stdout);
	}
	if (ndropped)
		printf("KFUZZ sweep-full kept=%d dropped=%llu\n", ANSWERED_MAX,
		       (unsigned long long)ndropped);
	printf("KFUZZ sweep-done ms=%llu\n", (unsigned long long)((now_ns() - start) / 1000000));
	free(generic);
	free(ans);
}

int main(int argc, char **argv)
{
	uint64_t count = 10000, seconds = 0, threads = 2, last = 8;
	const char *record = "/tmp/kfuzz.rec", *show = NULL, *reduce = NULL, *seqfile = NULL;
	const char *out = "/tmp/kfuzz.seq", *count_of = NULL, *export = NULL, *from_seq = NULL;
	const char *at_file = NULL, *swept_file = NULL, *beat_file = NULL;
	uint64_t gran = 2, used = 0, size_of = 0;
	int resumed = 0, stop_on_taint = 0, fixed = 0;
	uint64_t budget = 100, sweep_budget = 0;
	struct thread ts[MAX_THREADS];
	pthread_t ids[MAX_THREADS];
	uint64_t start, elapsed, ops = 0, calls = 0;
	int c, fd;
	uint64_t i;

	while ((c = getopt(argc, argv, "s:n:t:j:r:D:k:p:M:o:a:c:S:C:E:m:Rg:A:Lx:TPFy:z:B:")) != -1) {
		switch (c) {
		case 's': if (number(optarg, "seed", &seed, UINT64_MAX)) return 2; break;
		case 'n': if (number(optarg, "count", &count, 1ull << 40)) return 2; break;
		case 't': if (number(optarg, "seconds", &seconds, 86400)) return 2; break;
		case 'j': if (number(optarg, "threads", &threads, MAX_THREADS)) return 2; break;
		case 'k': if (number(optarg, "last", &last, LOG - 1)) return 2; break;
		case 'r': record = optarg; break;
		case 'D': show = optarg; break;
		case 'p': seqfile = optarg; break;
		case 'M': reduce = optarg; break;
		case 'o': out = optarg; break;
		case 'c': oracle = optarg; break;
		case 'a': if (number(optarg, "attempts", &budget, 100000)) return 2; break;
		case 'S': if (number(optarg, "sweep", &sweep_budget, 1ull << 20)) return 2; break;
		case 'C': count_of = optarg; break;
		case 'E': export = optarg; break;
		case 'm': from_seq = optarg; break;
		case 'R': resumed = 1; break;
		case 'L': located = 1; break;
		case 'g': if (number(optarg, "granularity", &gran, 1ull << 30)) return 2; break;
		case 'A': if (number(optarg, "attempts used", &used, 100000)) return 2; break;
		case 'x': at_file = optarg; break;
		case 'T': stop_on_taint = 1; break;
		case 'P': concurrent = 1; break;
		case 'F': fixed = 1; break;
		case 'B': beat_file = optarg; break;
		case 'y': swept_file = optarg; break;
		case 'z': if (number(optarg, "threads", &size_of, MAX_THREADS)) return 2; break;
		default: fprintf(stderr, "KFUZZ error: usage: kfuzz -s SEED -n COUNT -t SECONDS "
				 "-j THREADS -r RECORD PATH... | kfuzz -D RECORD | kfuzz -p SEQUENCE [-P] | "
				 "kfuzz -M RECORD -o SEQUENCE -a ATTEMPTS -c ORACLE | kfuzz -C RECORD | "
				 "kfuzz -E RECORD -o SEQUENCE\n");
			return 2;
		}
	}
	if (show)
		return dump(show, (int)last);
	if (count_of)
		return started(count_of);
	if (export)
		return export_file(export, out);
	if (beat_file)
		return heartbeat(beat_file);
	if (size_of) {
		printf("%zu\n", shm_size(size_of));
		return 0;
	}
	if (seqfile && concurrent)
		return replay_concurrent(seqfile);
	if (seqfile) {
		shm_open_env();
		return replay(seqfile, at_file, stop_on_taint);
	}
	if (reduce) {
		if (!oracle) {
			fprintf(stderr, "KFUZZ error: -M needs -c ORACLE\n");
			return 2;
		}
		max_attempts = (int)budget;
		attempts = (int)used;
		deadline_ns = seconds ? now_ns() + seconds * 1000000000ull : 0;
		shm_open_env();
		return minimize(reduce, from_seq, resumed, gran < 2 ? 2 : (size_t)gran, out);
	}
	if (!count || !threads || optind >= argc || argc - optind > MAX_PATHS) {
		fprintf(stderr, "KFUZZ error: need a count and threads above 0 and 1 to %d "
			"paths\n", MAX_PATHS);
		return 2;
	}
	npaths = argc - optind;
	if (fixed) {	/* the ivshmem's memory: its size is the device's */
		size_t len;

		rec = map_fixed(record, record_size(threads) + sizeof(uint64_t), &len);	/* + -B's */
		if (!rec)
			return 2;
		memset(rec, 0, record_size(threads));
	} else {
		fd = open(record, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)record_size(threads))) {
			fprintf(stderr, "KFUZZ error: %s: %s\n", record, strerror(errno));
			return 2;
		}
		rec = mmap(NULL, record_size(threads), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	}
	unmapped = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rec == MAP_FAILED || unmapped == MAP_FAILED) {
		fprintf(stderr, "KFUZZ error: mmap: %s\n", strerror(errno));
		return 2;
	}
	memcpy(rec->magic, RECORD_MAGIC, 7);
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
	if (sweep_budget) {
		char swept[256];

		rec->sweeping = 1;
		sweep(sweep_budget);
		rec->sweeping = 0;
		/* RECORD.swept (-y): the sweep is over (chaos starts its unloads then) */
		snprintf(swept, sizeof(swept), "%s%s", swept_file ? swept_file : record,
			 swept_file ? "" : ".swept");
		fd = open(swept, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
	start = now_ns();
	deadline_ns = seconds ? start + seconds * 1000000000ull : 0;
	for (i = 0; i < threads; i++) {
		if (thread_init(&ts[i], (int)i))
			return 2;
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
