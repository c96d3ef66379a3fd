%% weft_dist_bench: the Erlang distribution peer of weft-bench's remote_*
%% shapes. Node A (the one tools/bench/erlang/dist.sh starts with -run) starts
%% node B as a second OS process on 127.0.0.1 (OTP's peer module), runs one
%% measurement between them over distribution (TCP loopback), prints one JSON
%% line with the fields of the matching weft-bench shape and halts. B stops
%% with A: peer:stop/1, and B's own watchdog if A vanished.
%%
%%   remote_oneway   N records {Seq, tag} sent with `!` to a process registered
%%                   on B; B checks the order and reports when it has all N.
%%                   msgs_per_s = N / (first send -> B's report of the last
%%                   one, received on A); send_ms: how long A took to send
%%                   them all; done_ms: first send -> that report; recv_ms: B's
%%                   own span from the first record to the last (each VM has
%%                   its own monotonic clock, so B measures on B).
%%   remote_pingpong gen_server:call-like: {call, self(), Seq} to a process on
%%                   B that answers {reply, Seq}; 2000 warm-up round trips,
%%                   then N timed ones: p50_us, p99_us, rt_per_s.
%%   service_pingpong gen_server:call({weft_echo_srv, B}, {ping, Seq}) to a
%%                   gen_server (this module's callbacks) registered on B,
%%                   one at a time: 1000 warm-up calls, then N timed ones:
%%                   p50_us, p99_us, rt_per_s (the peer of weft-bench
%%                   service_pingpong: a service call to another node).
%%   remote_transfer one 16 MiB binary sent to B, which checks its size and
%%                   acknowledges; R transfers one after the other; us_per_msg
%%                   and ms_per_msg are the median over R.
%%
%% Every wait has a deadline: a run that cannot finish prints the reason on
%% stderr and halts with status 1.
-module(weft_dist_bench).
-behaviour(gen_server).
-export([main/1, deadline/0, sink/2, echo/0, taker/1]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(WARMUP, 2000).
-define(MIB, 1048576).
-define(DEADLINE_MS, 120000).

main([Shape, NStr, RepStr, Dir]) ->
    N = list_to_integer(NStr),
    Rep = list_to_integer(RepStr),
    {ok, _} = timer:apply_after(?DEADLINE_MS, ?MODULE, deadline, []),
    Code = try run(Shape, N, Rep, Dir) of
               ok -> 0
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "erlang ~s: ~p:~p~n~p~n",
                             [Shape, Class, Reason, Stack]),
                   1
           end,
    erlang:halt(Code);
main(Args) ->
    io:format(standard_error, "usage: weft_dist_bench Shape N Rep EbinDir (got ~p)~n", [Args]),
    erlang:halt(2).

run(Shape, N, Rep, Dir) ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    Name = list_to_atom("weft_b_" ++ os:getpid()),
    Cookie = atom_to_list(erlang:get_cookie()),
    {ok, Peer, B} = peer:start(#{name => Name, host => Host, longnames => true,
                                 args => ["-setcookie", Cookie, "-pa", Dir]}),
    try
        measure(Shape, B, N, Rep)
    after
        peer:stop(Peer)
    end.

%% ---- remote_oneway --------------------------------------------------------

measure("remote_oneway", B, N, Rep) ->
    Self = self(),
    Sink = spawn(B, ?MODULE, sink, [Self, N]),
    receive {ready, Sink} -> ok after 10000 -> error(sink_not_ready) end,
    T0 = now_us(),
    send_records({weft_sink, B}, 0, N),
    T1 = now_us(),
    receive
        {done, Sink, Count, Bad, SpanUs} ->
            T2 = now_us(),
            (Count =:= N andalso Bad =:= 0) orelse error({sink_saw, Count, Bad}),
            emit("remote_oneway", Rep,
                 "\"msgs_per_s\":~b,\"n\":~b,\"send_ms\":~.1f,\"done_ms\":~.1f,"
                 "\"recv_ms\":~.1f",
                 [round(N * 1.0e6 / max(1, T2 - T0)), N, (T1 - T0) / 1.0e3, (T2 - T0) / 1.0e3,
                  SpanUs / 1.0e3])
    after ?DEADLINE_MS -> error(sink_not_done)
    end;

%% ---- remote_pingpong ------------------------------------------------------

measure("remote_pingpong", B, N, Rep) ->
    Echo = spawn(B, ?MODULE, echo, []),
    ping(Echo, 0, ?WARMUP, []),
    T0 = now_us(),
    Lat = ping(Echo, 0, N, []),
    T1 = now_us(),
    Echo ! stop,
    Sorted = lists:sort(Lat),
    emit("remote_pingpong", Rep,
         "\"p50_us\":~.2f,\"p99_us\":~.2f,\"rt_per_s\":~b,\"n\":~b",
         [pct(Sorted, N, 50), pct(Sorted, N, 99), round(N * 1.0e6 / max(1, T1 - T0)), N]);

%% ---- service_pingpong -----------------------------------------------------

measure("service_pingpong", B, N, Rep) ->
    {ok, _} = erpc:call(B, gen_server, start, [{local, weft_echo_srv}, ?MODULE, [], []]),
    Srv = {weft_echo_srv, B},
    call(Srv, 0, 1000, []),
    T0 = now_us(),
    Lat = call(Srv, 0, N, []),
    T1 = now_us(),
    ok = gen_server:stop(Srv),
    Sorted = lists:sort(Lat),
    emit("service_pingpong", Rep,
         "\"p50_us\":~.2f,\"p99_us\":~.2f,\"rt_per_s\":~b,\"n\":~b",
         [pct(Sorted, N, 50), pct(Sorted, N, 99), round(N * 1.0e6 / max(1, T1 - T0)), N]);

%% ---- remote_transfer ------------------------------------------------------

measure("remote_transfer", B, R, Rep) ->
    Size = 16 * ?MIB,
    Bin = binary:copy(<<"weft">>, Size div 4),
    Taker = spawn(B, ?MODULE, taker, [Size]),
    Times = [transfer(Taker, Bin) || _ <- lists:seq(1, R)],
    Taker ! stop,
    Med = pct(lists:sort(Times), R, 50),
    emit("remote_transfer", Rep,
         "\"size_mib\":16,\"alloc\":\"binary\",\"us_per_msg\":~.1f,\"ms_per_msg\":~.2f,"
         "\"min_ms\":~.2f,\"max_ms\":~.2f,\"n\":~b",
         [Med, Med / 1.0e3, lists:min(Times) / 1.0e3, lists:max(Times) / 1.0e3, R]);

measure(Shape, _B, _N, _Rep) ->
    error({unknown_shape, Shape}).

send_records(_To, N, N) -> ok;
send_records(To, Seq, N) ->
    To ! {Seq, tag},
    send_records(To, Seq + 1, N).

ping(_Echo, N, N, Acc) -> Acc;
ping(Echo, I, N, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    Echo ! {call, self(), I},
    receive
        {reply, I} ->
            T1 = erlang:monotonic_time(nanosecond),
            ping(Echo, I + 1, N, [(T1 - T0) / 1.0e3 | Acc])
    after 10000 -> error({no_reply, I})
    end.

call(_Srv, N, N, Acc) -> Acc;
call(Srv, I, N, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    {pong, I} = gen_server:call(Srv, {ping, I}, 10000),
    T1 = erlang:monotonic_time(nanosecond),
    call(Srv, I + 1, N, [(T1 - T0) / 1.0e3 | Acc]).

transfer(Taker, Bin) ->
    T0 = erlang:monotonic_time(nanosecond),
    Taker ! {bin, self(), Bin},
    receive
        {ack, Taker, ok} -> (erlang:monotonic_time(nanosecond) - T0) / 1.0e3;
        {ack, Taker, Bad} -> error({taker_saw, Bad})
    after 60000 -> error(no_ack)
    end.

%% ---- node B's processes ---------------------------------------------------

%% A's watchdog: halts A (and so B, through peer) if the run overstays.
deadline() ->
    io:format(standard_error, "erlang: deadline of ~b ms passed~n", [?DEADLINE_MS]),
    erlang:halt(1).

%% sink(Parent, N): registered as weft_sink; counts {Seq, tag} in order.
sink(Parent, N) ->
    true = register(weft_sink, self()),
    Parent ! {ready, self()},
    sink_loop(Parent, N, 0, 0, undefined).

sink_loop(Parent, N, N, Bad, T0) ->
    Parent ! {done, self(), N, Bad, now_us() - T0};
sink_loop(Parent, N, Next, Bad, T0) ->
    receive
        {Seq, tag} ->
            T = case T0 of undefined -> now_us(); _ -> T0 end,
            sink_loop(Parent, N, Next + 1, Bad + bool(Seq =/= Next), T)
    after ?DEADLINE_MS -> exit(sink_timeout)
    end.

echo() ->
    receive
        {call, From, Seq} -> From ! {reply, Seq}, echo();
        stop -> ok
    after ?DEADLINE_MS -> exit(echo_timeout)
    end.

taker(Size) ->
    receive
        {bin, From, Bin} ->
            From ! {ack, self(), case byte_size(Bin) of Size -> ok; S -> {size, S} end},
            taker(Size);
        stop -> ok
    after ?DEADLINE_MS -> exit(taker_timeout)
    end.

%% The gen_server of service_pingpong: answers {ping, Seq} with {pong, Seq}.
init([]) -> {ok, nostate}.
handle_call({ping, Seq}, _From, S) -> {reply, {pong, Seq}, S}.
handle_cast(_Msg, S) -> {noreply, S}.

%% ---- helpers --------------------------------------------------------------

now_us() -> erlang:monotonic_time(microsecond).

bool(true) -> 1;
bool(false) -> 0.

%% The p-th percentile of a sorted list of N, as weft-bench's
%% bench_percentile: the element at round(p/100 * (N-1)).
pct(Sorted, N, P) ->
    lists:nth(trunc(P / 100 * (N - 1) + 0.5) + 1, Sorted).

emit(Shape, Rep, Fields, Args) ->
    io:format("{\"shape\":\"~s\",\"impl\":\"erlang\",\"rep\":~b,"
              "\"otp\":\"~s\"," ++ Fields ++ "}~n",
              [Shape, Rep, erlang:system_info(otp_release) | Args]).
