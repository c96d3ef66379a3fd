%% weft_actor_bench: the Erlang peer of weft-bench's actor shapes, measured
%% in the same run (tools/bench/run.sh via actors.sh), one VM with its
%% default schedulers (one per core):
%%
%%   actor_spawn     N processes spawned by one process: spawns/s and the
%%                   growth of erlang:memory(processes) per idle process;
%%                   then every 1000th answers a ping (they work); then all
%%                   are told to stop and their exits awaited (teardown_ms)
%%   actor_pingpong  two processes send an integer back and forth: round
%%                   trips/s
%%   actor_ring      1000 processes forward a token: hops/s
%%   actor_oneway    one process sends N integers to another, which checks
%%                   their order: msgs/s from the first send to the last
%%                   receipt
%%
%% Prints one JSON line {"shape":...,"impl":"erlang","rep":...} and halts;
%% every wait has a deadline (a failure halts with status 1).
-module(weft_actor_bench).
-export([main/1, deadline/0]).

-define(RING, 1000).
-define(CHECK_EVERY, 1000).
-define(DEADLINE_MS, 120000).

main([Shape, NStr, RepStr]) ->
    N = list_to_integer(NStr),
    Rep = list_to_integer(RepStr),
    {ok, _} = timer:apply_after(?DEADLINE_MS, ?MODULE, deadline, []),
    Code = try run(Shape, N, Rep) of
               ok -> 0
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "erlang ~s: ~p:~p~n~p~n",
                             [Shape, Class, Reason, Stack]),
                   1
           end,
    erlang:halt(Code);
main(Args) ->
    io:format(standard_error, "usage: weft_actor_bench Shape N Rep (got ~p)~n", [Args]),
    erlang:halt(2).

deadline() ->
    io:format(standard_error, "erlang: deadline of ~b ms passed~n", [?DEADLINE_MS]),
    erlang:halt(1).

now_us() -> erlang:monotonic_time(microsecond).

emit(Shape, Rep, Fmt, Args) ->
    io:format("{\"shape\":\"~s\",\"impl\":\"erlang\",\"rep\":~b," ++ Fmt ++ "}~n",
              [Shape, Rep | Args]).

wait(Msg) ->
    receive Msg -> ok after ?DEADLINE_MS -> error({timeout, Msg}) end.

%% ---- actor_spawn ---------------------------------------------------------

idle() ->
    receive
        {ping, From, I} -> From ! {pong, I}, idle();
        stop -> ok
    end.

run("actor_spawn", N, Rep) ->
    erlang:garbage_collect(),
    M0 = erlang:memory(processes),
    T0 = now_us(),
    Pids = [spawn(fun idle/0) || _ <- lists:seq(1, N)],
    T1 = now_us(),
    M1 = erlang:memory(processes),
    Checked = [P || {I, P} <- lists:zip(lists:seq(0, N - 1), Pids), I rem ?CHECK_EVERY =:= 0],
    lists:foldl(fun(P, I) -> P ! {ping, self(), I}, wait({pong, I}), I + 1 end, 0, Checked),
    T2 = now_us(),
    Refs = [monitor(process, P) || P <- Pids],
    [P ! stop || P <- Pids],
    [wait({'DOWN', R, process, P, normal}) || {R, P} <- lists:zip(Refs, Pids)],
    T3 = now_us(),
    emit("actor_spawn", Rep,
         "\"spawns_per_s\":~b,\"bytes_per_actor\":~.1f,\"n\":~b,\"teardown_ms\":~.1f",
         [round(N * 1.0e6 / max(1, T1 - T0)), (M1 - M0) / N, N, (T3 - T2) / 1.0e3]);

%% ---- actor_pingpong ------------------------------------------------------

run("actor_pingpong", N, Rep) ->
    Main = self(),
    Pong = spawn(fun Loop() -> receive {P, X} -> P ! X, Loop(); stop -> ok end end),
    Ping = spawn(fun() -> ping(Pong, Main, N) end),
    T0 = now_us(),
    Ping ! 0,
    wait({done, N}),
    T1 = now_us(),
    Pong ! stop,
    emit("actor_pingpong", Rep, "\"rt_per_s\":~b,\"n\":~b",
         [round(N * 1.0e6 / max(1, T1 - T0)), N]);

%% ---- actor_ring ----------------------------------------------------------

run("actor_ring", N, Rep) ->
    Main = self(),
    Nodes = [spawn(fun() -> receive {next, Next} -> ring(Next, Main, N) end end)
             || _ <- lists:seq(1, ?RING)],
    [First | Rest] = Nodes,
    [P ! {next, Next} || {P, Next} <- lists:zip(Nodes, Rest ++ [First])],
    T0 = now_us(),
    First ! 0,
    wait({done, N}),
    T1 = now_us(),
    [P ! stop || P <- Nodes],
    emit("actor_ring", Rep, "\"hops_per_s\":~b,\"n\":~b,\"actors\":~b",
         [round(N * 1.0e6 / max(1, T1 - T0)), N, ?RING]);

%% ---- actor_oneway --------------------------------------------------------

run("actor_oneway", N, Rep) ->
    Main = self(),
    Sink = spawn(fun() -> sink(Main, N, 0, 0) end),
    Source = spawn(fun() -> receive go -> send_n(Sink, 0, N) end end),
    T0 = now_us(),
    Source ! go,
    Bad = receive {sunk, B} -> B after ?DEADLINE_MS -> error(sink_not_done) end,
    T1 = now_us(),
    Bad =:= 0 orelse error({out_of_order, Bad}),
    emit("actor_oneway", Rep, "\"msgs_per_s\":~b,\"n\":~b",
         [round(N * 1.0e6 / max(1, T1 - T0)), N]);

run(Shape, _, _) ->
    error({unknown_shape, Shape}).

ping(_Pong, Main, N) ->
    receive
        N -> Main ! {done, N};
        X -> _Pong ! {self(), X + 1}, ping(_Pong, Main, N)
    end.

ring(Next, Main, N) ->
    receive
        N -> Main ! {done, N}, ring(Next, Main, N);
        X when is_integer(X) -> Next ! X + 1, ring(Next, Main, N);
        stop -> ok
    end.

sink(Main, N, N, Bad) -> Main ! {sunk, Bad};
sink(Main, N, Count, Bad) ->
    receive Seq -> sink(Main, N, Count + 1, Bad + (if Seq =:= Count -> 0; true -> 1 end)) end.

send_n(_, N, N) -> ok;
send_n(Sink, I, N) -> Sink ! I, send_n(Sink, I + 1, N).
