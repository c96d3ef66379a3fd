/* balancer_bpf.c: steering of the reuseport policy (balancer_int.h). The
 * kernel picks one socket of a SO_REUSEPORT group for each new connection by
 * a hash of its addresses and ports, so W listeners get connections like
 * coin flips (64 over 2: 1.21 busiest/quietest at the median). An eBPF
 * program attached to the group replaces the hash: it hands connections out
 * in turn, from a counter incremented atomically for each SYN, so N
 * connections opened one after another land N/W on each listener.
 *
 * Which program. BPF_PROG_TYPE_SK_REUSEPORT with a
 * BPF_MAP_TYPE_REUSEPORT_SOCKARRAY (slot i holds listener i) and
 * bpf_sk_select_reuseport, rather than a socket filter whose return value is
 * an index into the group: the socket array names our sockets, so the turn
 * is right whatever the group's order. The group's order is the order
 * sockets started listening, but another socket of the same user bound to
 * the same address and port joins the same group, before or after ours, and
 * a socket that leaves it (the balancer closing) is replaced by the group's
 * last one at its index: a filter's index would then name a foreign socket
 * or the wrong one. A socket that closes leaves the array by itself; its
 * turn then finds no socket, the program selects nothing, and the kernel
 * falls back to its hash for that connection (over the sockets still
 * listening). Both kinds need the same privileges in practice (CAP_BPF to
 * load, CAP_NET_ADMIN for the socket array; root has them).
 *
 * The program (21 instructions, written out by hand: no libbpf):
 *   r6 = ctx; key = 0; r0 = lookup(counter, &key); if !r0 goto pass;
 *   r1 = fetch_add(*r0, 1) % n; key2 = r1;
 *   bpf_sk_select_reuseport(r6, socks, &key2, 0);
 *   pass: return SK_PASS
 * SK_PASS with no socket selected (the helper failed) means "use the hash";
 * the program never refuses a connection.
 *
 * The maps and the program are referenced by the group once attached: the
 * fds made here are all closed before returning, and nothing outlives the
 * last listener. No state; the balancer's thread. */
#include <errno.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "balancer_int.h"

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif

enum { R0 = 0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 };

#define INSN(c, d, s, o, i) \
  ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

static long sys_bpf(int cmd, union bpf_attr *attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

/* why = "what: strerror(err)[; detail]" */
static int fail(int err, const char *what, const char *detail, char *why, size_t cap) {
  snprintf(why, cap, "%s: %s%s%s", what, strerror(err), detail ? "; " : "", detail ? detail : "");
  return -err;
}

static int map_new(unsigned type, unsigned value_size, unsigned n) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_type = type;
  a.key_size = sizeof(uint32_t);
  a.value_size = value_size;
  a.max_entries = n;
  return (int)sys_bpf(BPF_MAP_CREATE, &a);
}

/* The verifier's verdict: the last line of its log that is not a summary
 * ("processed N insns ...", "verification time ..."), cut in place; NULL if
 * none. */
static const char *log_tail(char *log) {
  for (;;) {
    size_t len = strlen(log);
    while (len > 0 && (log[len - 1] == '\n' || log[len - 1] == ' '))
      log[--len] = '\0';
    if (len == 0)
      return NULL;
    char *nl = strrchr(log, '\n');
    char *line = nl ? nl + 1 : log;
    if (strncmp(line, "processed ", 10) != 0 && strncmp(line, "verification time", 17) != 0)
      return line;
    *line = '\0';
  }
}

static int prog_load(int counter, int socks, uint32_t n, char *why, size_t cap) {
  const struct bpf_insn insns[] = {
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, R6, R1, 0, 0),           /* r6 = ctx */
      INSN(BPF_ST | BPF_MEM | BPF_W, R10, 0, -4, 0),              /* key at fp-4 = 0 */
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, R2, R10, 0, 0),
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, R2, 0, 0, -4),            /* r2 = &key */
      INSN(BPF_LD | BPF_DW | BPF_IMM, R1, BPF_PSEUDO_MAP_FD, 0, counter),
      INSN(0, 0, 0, 0, 0),                                        /* r1 = counter map */
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
      INSN(BPF_JMP | BPF_JEQ | BPF_K, R0, 0, 11, 0),              /* NULL: goto pass */
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, R1, 0, 0, 1),
      INSN(BPF_STX | BPF_DW | BPF_ATOMIC, R0, R1, 0, BPF_ADD | BPF_FETCH),  /* r1 = old */
      INSN(BPF_ALU64 | BPF_MOD | BPF_K, R1, 0, 0, (int32_t)n),
      INSN(BPF_STX | BPF_MEM | BPF_W, R10, R1, -8, 0),            /* key2 at fp-8 */
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, R1, R6, 0, 0),
      INSN(BPF_LD | BPF_DW | BPF_IMM, R2, BPF_PSEUDO_MAP_FD, 0, socks),
      INSN(0, 0, 0, 0, 0),                                        /* r2 = socket array */
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, R3, R10, 0, 0),
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, R3, 0, 0, -8),            /* r3 = &key2 */
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, R4, 0, 0, 0),
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_select_reuseport),
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, R0, 0, 0, SK_PASS),       /* pass: */
      INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  char log[4096];  /* the verifier's words, only on failure */
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.prog_type = BPF_PROG_TYPE_SK_REUSEPORT;
  a.expected_attach_type = BPF_SK_REUSEPORT_SELECT;
  a.insns = (uint64_t)(uintptr_t)insns;
  a.insn_cnt = sizeof(insns) / sizeof(insns[0]);
  a.license = (uint64_t)(uintptr_t)"Dual MIT/GPL";
  int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
  if (fd >= 0)
    return fd;
  int err = errno;
  if (err == EPERM || err == ENOSYS)
    return fail(err, "bpf(BPF_PROG_LOAD)", NULL, why, cap);
  /* Load it again with the verifier's log, for the reason. */
  log[0] = '\0';
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof(log);
  a.log_level = 1;
  if ((fd = (int)sys_bpf(BPF_PROG_LOAD, &a)) >= 0)
    return fd;  /* loaded this time after all */
  return fail(err, "bpf(BPF_PROG_LOAD)", log_tail(log), why, cap);
}

int weft__bal_steer(const listener_t *lis, size_t n, char *why, size_t cap) {
  if (n == 0 || n > INT32_MAX)
    return fail(EINVAL, "steering", "no listeners", why, cap);
  int counter = map_new(BPF_MAP_TYPE_ARRAY, sizeof(uint64_t), 1);
  if (counter < 0)
    return fail(errno, "bpf(BPF_MAP_CREATE array)", NULL, why, cap);
  int err, prog = -1, socks = map_new(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, sizeof(uint64_t),
                                      (unsigned)n);
  if (socks < 0) {
    err = fail(errno, "bpf(BPF_MAP_CREATE reuseport_sockarray)", NULL, why, cap);
    goto fail_close_counter;
  }
  for (uint32_t i = 0; i < n; i++) {
    uint64_t fd = (uint64_t)lis[i].fd;
    union bpf_attr a;
    memset(&a, 0, sizeof(a));
    a.map_fd = (uint32_t)socks;
    a.key = (uint64_t)(uintptr_t)&i;
    a.value = (uint64_t)(uintptr_t)&fd;
    a.flags = BPF_ANY;
    if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) != 0) {
      err = fail(errno, "bpf(BPF_MAP_UPDATE_ELEM reuseport_sockarray)", NULL, why, cap);
      goto fail_close_socks;
    }
  }
  if ((prog = prog_load(counter, socks, (uint32_t)n, why, cap)) < 0) {
    err = prog;
    goto fail_close_socks;
  }
  if (setsockopt(lis[0].fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog, sizeof(prog)) != 0) {
    err = fail(errno, "setsockopt(SO_ATTACH_REUSEPORT_EBPF)", NULL, why, cap);
    goto fail_close_prog;
  }
  err = 0;  /* the group holds the program, the program its maps */
  if (cap > 0)
    why[0] = '\0';

fail_close_prog:
  close(prog);
fail_close_socks:
  close(socks);
fail_close_counter:
  close(counter);
  return err;
}
