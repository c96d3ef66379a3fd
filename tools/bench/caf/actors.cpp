// actors.cpp: the CAF peer of weft-bench's actor shapes, measured in the same
// run (tools/bench/run.sh), so that the actor goals are ratios to this run:
//
//   caf-actors <actor_spawn|actor_pingpong|actor_ring|actor_oneway> [--n N] [--rep I]
//
//   actor_spawn     N event-based actors spawned from the main thread:
//                   spawns/s and RSS growth per idle actor; then every 1000th
//                   answers a request (they work); then all are killed and
//                   awaited (teardown_ms)
//   actor_pingpong  two actors send an int back and forth: round trips/s
//   actor_ring      1000 actors forward a token: hops/s
//   actor_oneway    one actor sends N ints to another, which checks their
//                   order: msgs/s from the first send to the last receipt
//
// CAF 0.17 (Debian's libcaf-dev), 2 scheduler threads (this machine's
// cores; weft's actor shapes use one). Prints one JSON line per run:
// {"shape":...,"impl":"caf","rep":...}. Build: tools/bench/caf/build.sh.
// Bounded: a 120 s alarm ends the process if an actor never answers.
#include <caf/all.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

using namespace caf;

namespace {

constexpr int ring_size = 1000;
constexpr int check_every = 1000;

double now_s() {
  auto t = std::chrono::steady_clock::now().time_since_epoch();
  return std::chrono::duration<double>(t).count();
}

long rss_kib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr)
    return 0;
  long size = 0, resident = 0;
  int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * sysconf(_SC_PAGESIZE) / 1024 : 0;
}

void emit(const char* shape, int rep, const std::string& fields) {
  std::printf("{\"shape\":\"%s\",\"impl\":\"caf\",\"rep\":%d,%s}\n", shape, rep,
              fields.c_str());
  std::fflush(stdout);
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), f, a, b, c);
  return buf;
}

// ---- actor_spawn ------------------------------------------------------------

behavior idle_actor(event_based_actor*) {
  return {[](int x) { return x; }};
}

int run_spawn(actor_system& sys, int n, int rep) {
  std::vector<actor> addr;
  addr.reserve(n);
  long rss0 = rss_kib();
  double t0 = now_s();
  for (int i = 0; i < n; i++)
    addr.push_back(sys.spawn(idle_actor));
  double t1 = now_s();
  long rss1 = rss_kib();
  int answered = 0;
  {
    scoped_actor self{sys};
    for (int i = 0; i < n; i += check_every)
      self->request(addr[i], infinite, i).receive([&](int x) { answered += x == i; },
                                                  [&](error&) {});
  }
  double t2 = now_s();
  for (auto& a : addr)
    anon_send_exit(a, exit_reason::kill);
  addr.clear();
  sys.await_all_actors_done();
  double t3 = now_s();
  if (answered != (n + check_every - 1) / check_every) {
    std::fprintf(stderr, "caf actor_spawn: %d actors answered\n", answered);
    return 1;
  }
  (void)t2;
  emit("actor_spawn", rep,
       fmt("\"spawns_per_s\":%.0f,\"bytes_per_actor\":%.1f,\"n\":%.0f", n / (t1 - t0),
           double(rss1 - rss0) * 1024.0 / n, n) +
           fmt(",\"teardown_ms\":%.1f", (t3 - t2) * 1e3));
  return 0;
}

// ---- actor_pingpong ---------------------------------------------------------

behavior pong_actor(event_based_actor* self) {
  return {[=](int x) { self->send(actor_cast<actor>(self->current_sender()), x); }};
}

behavior ping_actor(event_based_actor* self, actor pong, actor main, int n) {
  return {[=](int x) {
    if (x == n) {
      self->send(main, x);
      self->quit();
      self->send_exit(pong, exit_reason::user_shutdown);
      return;
    }
    self->send(pong, x + 1);
  }};
}

int run_pingpong(actor_system& sys, int n, int rep) {
  scoped_actor self{sys};
  auto pong = sys.spawn(pong_actor);
  auto ping = sys.spawn(ping_actor, pong, actor{self}, n);
  double t0 = now_s();
  anon_send(ping, 0);
  int got = -1;
  self->receive([&](int x) { got = x; });
  double t1 = now_s();
  if (got != n)
    return std::fprintf(stderr, "caf actor_pingpong: ended at %d\n", got), 1;
  emit("actor_pingpong", rep, fmt("\"rt_per_s\":%.0f,\"n\":%.0f", n / (t1 - t0), n));
  return 0;
}

// ---- actor_ring -------------------------------------------------------------

struct node_state {
  actor next;
};

behavior ring_node(stateful_actor<node_state>* self, actor main, int n) {
  return {
      [=](actor next) { self->state.next = std::move(next); },
      [=](int hops) {
        if (hops == n)
          self->send(main, hops);
        else
          self->send(self->state.next, hops + 1);
      },
  };
}

int run_ring(actor_system& sys, int n, int rep) {
  scoped_actor self{sys};
  std::vector<actor> nodes;
  for (int i = 0; i < ring_size; i++)
    nodes.push_back(sys.spawn(ring_node, actor{self}, n));
  for (int i = 0; i < ring_size; i++)
    anon_send(nodes[i], nodes[(i + 1) % ring_size]);
  double t0 = now_s();
  anon_send(nodes[0], 0);
  int got = -1;
  self->receive([&](int x) { got = x; });
  double t1 = now_s();
  for (auto& a : nodes)
    anon_send_exit(a, exit_reason::user_shutdown);
  if (got != n)
    return std::fprintf(stderr, "caf actor_ring: ended at %d\n", got), 1;
  emit("actor_ring", rep,
       fmt("\"hops_per_s\":%.0f,\"n\":%.0f,\"actors\":%.0f", n / (t1 - t0), n, ring_size));
  return 0;
}

// ---- actor_oneway -----------------------------------------------------------

struct sink_state {
  int count = 0, bad = 0;
};

behavior sink_actor(stateful_actor<sink_state>* self, actor main, int n) {
  return {[=](int seq) {
    self->state.bad += seq != self->state.count;
    if (++self->state.count == n) {
      self->send(main, self->state.bad);
      self->quit();
    }
  }};
}

behavior source_actor(event_based_actor* self, actor sink, int n) {
  return {[=](int) {
    for (int i = 0; i < n; i++)
      self->send(sink, i);
    self->quit();
  }};
}

int run_oneway(actor_system& sys, int n, int rep) {
  scoped_actor self{sys};
  auto sink = sys.spawn(sink_actor, actor{self}, n);
  auto source = sys.spawn(source_actor, sink, n);
  double t0 = now_s();
  anon_send(source, 0);
  int bad = -1;
  self->receive([&](int x) { bad = x; });
  double t1 = now_s();
  if (bad != 0)
    return std::fprintf(stderr, "caf actor_oneway: %d out of order\n", bad), 1;
  emit("actor_oneway", rep, fmt("\"msgs_per_s\":%.0f,\"n\":%.0f", n / (t1 - t0), n));
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc % 2 != 0) {
    std::fprintf(stderr, "usage: caf-actors <actor_spawn|actor_pingpong|actor_ring|actor_oneway>"
                         " [--n N] [--rep I]\n");
    return 2;
  }
  std::string shape = argv[1];
  long n = 0, rep = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    long v = std::strtol(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--n") == 0 && v > 0 && v < 2000000000L)
      n = v;
    else if (std::strcmp(argv[i], "--rep") == 0 && v >= 0)
      rep = v;
    else
      return std::fprintf(stderr, "caf-actors: bad argument %s\n", argv[i]), 2;
  }
  alarm(120);
  actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  actor_system sys{cfg};
  if (shape == "actor_spawn")
    return run_spawn(sys, n ? int(n) : 1000000, int(rep));
  if (shape == "actor_pingpong")
    return run_pingpong(sys, n ? int(n) : 2000000, int(rep));
  if (shape == "actor_ring")
    return run_ring(sys, n ? int(n) : 10000000, int(rep));
  if (shape == "actor_oneway")
    return run_oneway(sys, n ? int(n) : 2000000, int(rep));
  std::fprintf(stderr, "caf-actors: unknown shape '%s'\n", shape.c_str());
  return 2;
}
