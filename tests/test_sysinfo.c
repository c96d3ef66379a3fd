/* test_sysinfo.c: weft_available_parallelism (affinity, and a cgroup v1 CPU
 * quota when the test may create a cgroup), weft_version_string and the
 * monotonic clock. Limits are applied in forked children, so the test process
 * itself is never confined. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "weft_impl.h"

static int no_leaks(void **state) {
  (void)state;
  assert_int_equal(testutil_alloc_outstanding(), 0);
  return 0;
}

static void version_string(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof(want), "%d.%d.%d", WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR,
           WEFT_VERSION_PATCH);
  assert_string_equal(weft_version_string(), want);
  assert_string_equal(weft_version_string(), "0.1.0");
}

static void clock_is_monotonic(void **state) {
  (void)state;
  uint64_t a = weft__now_ns();
  uint64_t b = weft__now_ns();
  assert_true(a > 0);
  assert_true(b >= a);
}

static void parallelism_within_affinity(void **state) {
  (void)state;
  cpu_set_t set;
  assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
  unsigned n = weft_available_parallelism();
  assert_true(n >= 1);
  assert_true(n <= (unsigned)CPU_COUNT(&set));
}

/* Runs weft_available_parallelism in a child after prepare(arg); returns the
 * child's answer (its exit status), or -1 if prepare failed there. */
static int in_child(int (*prepare)(const void *arg), const void *arg) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (prepare(arg) != 0)
      _exit(255);
    unsigned n = weft_available_parallelism();
    _exit(n > 250 ? 250 : (int)n);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  return WEXITSTATUS(status) == 255 ? -1 : WEXITSTATUS(status);
}

static int pin_to_first_cpu(const void *arg) {
  (void)arg;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0)
    return -1;
  int first = 0;
  while (!CPU_ISSET(first, &set))
    first++;
  CPU_ZERO(&set);
  CPU_SET(first, &set);
  return sched_setaffinity(0, sizeof(set), &set);
}

static void parallelism_follows_affinity(void **state) {
  (void)state;
  assert_int_equal(in_child(pin_to_first_cpu, NULL), 1);
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int join_cgroup(const void *dir) {
  char path[256], pid[32];
  snprintf(path, sizeof(path), "%s/cgroup.procs", (const char *)dir);
  snprintf(pid, sizeof(pid), "%d", (int)getpid());
  return write_file(path, pid);
}

/* Quotas of 1.5 and 0.5 CPUs on a parent cgroup; the child sits in a nested,
 * unlimited cgroup, so the ancestor's quota must be found. Skipped unless a v1
 * cpu hierarchy is mounted at /sys/fs/cgroup/cpu and writable (root). */
static void parallelism_follows_cgroup_v1_quota(void **state) {
  (void)state;
  char parent[128], child[160], quota[192];
  snprintf(parent, sizeof(parent), "/sys/fs/cgroup/cpu/weft_test_%d", (int)getpid());
  snprintf(child, sizeof(child), "%s/inner", parent);
  snprintf(quota, sizeof(quota), "%s/cpu.cfs_quota_us", parent);
  if (access("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", F_OK) != 0 || mkdir(parent, 0755) != 0)
    skip();
  if (mkdir(child, 0755) != 0) {
    rmdir(parent);
    skip();
  }
  int a = write_file(quota, "150000") == 0 ? in_child(join_cgroup, child) : -1;
  int b = write_file(quota, "50000") == 0 ? in_child(join_cgroup, child) : -1;
  assert_int_equal(rmdir(child), 0);
  assert_int_equal(rmdir(parent), 0);
  cpu_set_t set;
  assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
  int cpus = CPU_COUNT(&set);
  assert_int_equal(a, cpus < 2 ? cpus : 2);
  assert_int_equal(b, 1);
}

int main(void) {
  testutil_alloc_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(version_string, no_leaks),
      cmocka_unit_test_teardown(clock_is_monotonic, no_leaks),
      cmocka_unit_test_teardown(parallelism_within_affinity, no_leaks),
      cmocka_unit_test_teardown(parallelism_follows_affinity, no_leaks),
      cmocka_unit_test_teardown(parallelism_follows_cgroup_v1_quota, no_leaks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
