-- service_latency: merge a batch of observations of one service into its
-- shared state, atomically, and return what the agent needs to emit the
-- merged state (layout 2).
--
-- KEYS (one hash tag per service, so they share a Redis Cluster slot):
--   1 state  hash  "s" -> the scalar state, one MessagePack array (see
--                  BLOB below); "a:<agent id>" -> "<last applied seq>:<unix
--                  seconds>" (idempotence); "b<bin index>" / "bz" -> DDSketch
--                  bin count (an integer: HINCRBY, or read and written with
--                  the state by the fast path)
--   2 window list  the last probes, newest first: a latency or "f" (failed);
--                  the first ARGV[3] entries are the window, up to 15 more
--                  wait for the next trim (see TRIM_EVERY)
--   3..6  the previous layout (1): stats hash, window list, sketch hash,
--         agents hash; read once when the state key does not exist yet,
--         migrated into 1 and 2, and deleted
-- ARGV:
--   1 agent id          2 sketch mapping id   3 window
--   4 EWMA tau (s)      5 ttl (ms, 0 = none)  6 histogram bounds ("" = none)
--   7 bucket count (bounds + 1, 0 = none)
--   8 bucket thresholds: per bound, the largest sketch bin index whose value
--     is <= the bound, comma separated (used to rebuild the buckets from the
--     sketch when the stored bounds differ)
--   9 force reset ("1": discard the stored state first)
--   10 now, unix seconds (agent record pruning, TTL refresh)
--   11 failure_threshold  12 success_threshold
--   13 degraded_latency (s, "0" = no objective)
--   14 degraded_statistic: "ewma", "avg" or a window percentile ("95")
--   15 the agent's copy: generation ("" = none: send the full state),
--   16 its probes count, 17 the agent's sequence record it was returned with,
--   18 the packed state (BLOB) it was decoded from ("" = none): a stored
--      blob equal to it was written and returned by this script, validated
--      then, and is not validated again
--   19 number of observations, then 7 per observation, oldest first:
--      seq, time (unix ns, decimal), ok ("1"/"0"), latency (s), sketch bin
--      (index or "z"), bucket (1-based, "" = none), round ("" = not the
--      last observation of a round; "1"/"0" = it ends a round whose result
--      is success / not)
--
-- BLOB (MessagePack array; numbers exact: integers, float32 only when the
-- double is one, else float64; nanosecond times as decimal strings):
--   1 layout 2, 2 sketch mapping, 3 generation, 4 count, 5 mean, 6 m2,
--   7 min, 8 max, 9 ewma, 10 ewma_at, 11 probes, 12 failures, 13 consec,
--   14 last_ok, 15 last_fail, 16 vs, 17 vsince, 18 vf, 19 vok, 20 vslow,
--   21 vgood, 22 bounds ("" = none), 23 buckets (array, "" = none),
--   24 the window the list was last trimmed to, 25 the probes count when
--   that changed, 26 agent records, 27 unix seconds of the last TTL
--   refresh, 28 the TTL (ms) then
--
-- Nothing is written before the stored state has been validated, and a
-- write that fails (a key of the wrong type, a bin that is no integer)
-- discards the state: a malformed state is deleted and rebuilt from the
-- batch ("reset"). An observation whose seq is not above the agent's last
-- applied one was applied before and is skipped.
--
-- The window is read only when needed: the agent's copy (generation,
-- probes count, sequence record) is the state as of its last write when
-- the generation, its record and the window length match; then only the
-- probes written since ("delta": this batch's and the other agents') are
-- returned, and the agent pushes them into its window and its sketch (the
-- bin of a latency is a function of it). Otherwise the whole window and
-- every sketch bin are read, validated and returned ("full").
--
-- Cost (issue 17): the common call, an agent writing on top of its own
-- last write, takes the fast path (see there): one HMGET (the state, the
-- agent's record and the bins it adds to), one LPUSH (LTRIM when the list
-- outgrows the window), one HSET (the state, the record, the bins), no
-- closure of the general path made. Every other call takes the general
-- path, which is the full logic.
--
-- Returns {status, key, reason, blob, before, record, mode, probes, bins}:
-- blob the merged scalar state; before the verdict before the batch's last
-- round ({vs, vsince, vf, vok, vslow, vgood} packed, "" = the blob's);
-- record the agent's sequence record now; mode "d" (probes: those since the
-- agent's copy, newest first; bins empty) or "f" (probes: the window,
-- newest first; bins: index, count, ...).
--
-- The verdict advances once per applied observation that ends a round,
-- after the round's samples, exactly as stats.Verdict.Step does: the class
-- of the round (failed; slow when the statistic of the merged state, at
-- that point, is above the objective; else good) is evaluated here, on the
-- shared state, so every agent's rounds make one sequence of rounds and
-- every agent sees the same status.

local K_S, K_W = KEYS[1], KEYS[2]
local agent = ARGV[1]
local mapping = ARGV[2]
local window = tonumber(ARGV[3])
local tau = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local bounds = ARGV[6]
local nb = tonumber(ARGV[7])
local force = ARGV[9] == '1'
local now_s = tonumber(ARGV[10])
local fail_th = math.max(tonumber(ARGV[11]) or 1, 1)
local succ_th = math.max(tonumber(ARGV[12]) or 1, 1)
local objective = tonumber(ARGV[13]) or 0
local statistic = ARGV[14]
local sync_gen, sync_ver, sync_seq, sync_blob = ARGV[15], tonumber(ARGV[16]) or -1, ARGV[17], ARGV[18]
local nobs = tonumber(ARGV[19])
local OBS0, OBSN = 20, 7
local AF = 'a:' .. agent
local LN2 = 0.69314718055994530942


local function ns_less(a, b)
  if #a ~= #b then return #a < #b end -- canonical decimals (no leading 0)
  return a < b
end

-- (a - b) in seconds, as Go's float64(a-b)/1e9: each split into whole
-- seconds and nanoseconds, exact in a double
local function ns_diff(a, b)
  local la, lb = #a, #b
  local as, an, bs, bn
  if la > 9 then
    as, an = tonumber(string.sub(a, 1, la - 9)), tonumber(string.sub(a, la - 8))
  else
    as, an = 0, tonumber(a)
  end
  if lb > 9 then
    bs, bn = tonumber(string.sub(b, 1, lb - 9)), tonumber(string.sub(b, lb - 8))
  else
    bs, bn = 0, tonumber(b)
  end
  return ((as - bs) * 1e9 + (an - bn)) / 1e9
end

-- alpha = 1 - exp(-dt/tau), decay = exp(-dt/tau), as stats.ewmaWeights
local function weights(dt)
  if not (tau > 0) then return 1, 0 end
  local u = -dt / tau
  if u > -LN2 then
    -- alpha = -expm1(u), at full relative precision near 0 (Lua 5.1 has
    -- no expm1): expm1(u) = 2 tanh(u/2) / (1 - tanh(u/2))
    local th = math.tanh(u / 2)
    local alpha = -(2 * th / (1 - th))
    return alpha, 1 - alpha
  end
  local decay = math.exp(u)
  return 1 - decay, decay
end

-- sample folds one successful probe x at time t (unix ns, decimal) into
-- the counters, Welford's mean and m2, min, max and the time-based EWMA,
-- as stats.State.Observe does (bit for bit, the EWMA to a few ulps).
local function sample(count, mean, m2, mn, mx, ewma, ewma_at, x, t)
  if count == 0 then
    count, mean, m2, mn, mx = 1, x, 0, x, x
  else
    count = count + 1
    local d = x - mean
    mean = mean + d / count
    m2 = m2 + d * (x - mean)
    if x < mn then mn = x end
    if x > mx then mx = x end
  end
  if ewma_at == '0' then
    ewma, ewma_at = x, t
  else
    local dt = ns_diff(t, ewma_at)
    if dt > 0 then
      local alpha, decay = weights(dt)
      ewma = decay * ewma + alpha * x
      ewma_at = t
    end
  end
  return count, mean, m2, mn, mx, ewma, ewma_at
end

-- step is stats.Verdict.Step: the verdict (status vs since its time
-- vsince, runs vf failed / vok ok / vslow slow / vgood good rounds) after
-- one round of class c ('f' failed, 's' slow, 'g' good) at t.
local UNKNOWN, UP, DEGRADED, DOWN = 0, 1, 2, 3
local function step(vs, vsince, vf, vok, vslow, vgood, c, t)
  if vsince == '0' then vsince = t end
  if c == 'f' then
    vf = vf + 1
    vok, vslow, vgood = 0, 0, 0
  elseif c == 's' then
    vf, vgood = 0, 0
    vok = vok + 1
    vslow = vslow + 1
  else
    vf, vslow = 0, 0
    vok = vok + 1
    vgood = vgood + 1
  end
  local nxt = vs
  if vf >= fail_th then
    nxt = DOWN
  elseif vs == UNKNOWN or vs == DOWN then
    if vok >= succ_th then
      nxt = UP
      if c == 's' then nxt = DEGRADED end
    end
  elseif vs == UP then
    if vslow >= fail_th then nxt = DEGRADED end
  elseif vs == DEGRADED then
    if vgood >= succ_th then nxt = UP end
  end
  if nxt ~= vs then
    vs = nxt
    if ns_less(vsince, t) then vsince = t end
  end
  return vs, vsince, vf, vok, vslow, vgood
end

-- ---------------------------------------------------------------- fast path
-- The common call: this agent's copy is the state as of its own last
-- write (no other agent wrote since), the stored state is a valid layout 2
-- with this agent's window and histogram bounds, and no round needs the
-- window (a percentile objective). EVAL runs the whole body on every call,
-- and every function statement makes a closure each time: this path is
-- inline, creates none of the general path's functions, reads the state
-- and the sketch bins it adds to in one HMGET (a bin that is no counter is
-- found before anything is written), works on the decoded array itself,
-- packs it once for the write and the reply, and returns a delta.
-- Anything else (a new agent, another agent's writes, a malformed,
-- missing or layout-1 state, a histogram to rebuild, a window key of the
-- wrong type) breaks out with nothing written, and the general path below
-- does it all from the start.
local TRIM_EVERY = 16
repeat
  if force or sync_gen == '' then break end
  -- the HMGET fields: the state, the agent's record, then the distinct
  -- bins of the batch's successes (binat: bin -> its position)
  local fields, nf, binat, needwin = {'s', AF}, 2, {}, false
  for o = OBS0, OBS0 + (nobs - 1) * OBSN, OBSN do
    if ARGV[o + 2] == '1' then
      local bin = ARGV[o + 4]
      if binat[bin] == nil then
        nf = nf + 1
        fields[nf], binat[bin] = 'b' .. bin, nf
      end
    end
    if ARGV[o + 6] ~= '' and objective > 0 and statistic ~= 'ewma' and statistic ~= 'avg' then needwin = true end
  end
  if needwin then break end
  local r = redis.pcall('HMGET', K_S, unpack(fields, 1, nf))
  if r.err or not r[1] or not r[2] then break end
  local lastraw = string.match(r[2], '^(%d+):')
  if lastraw == nil or lastraw ~= sync_seq then break end
  -- the state must be the blob this script wrote and returned at the
  -- agent's last write, validated then (Lua interns strings: this is one
  -- pointer comparison); any other is validated by the general path
  if r[1] ~= sync_blob then break end
  local t = cmsgpack.unpack(r[1])
  local p0 = t[11]
  if t[3] ~= sync_gen or t[24] ~= window or t[25] > sync_ver or p0 ~= sync_ver then break end
  if nb == 0 then
    t[22], t[23] = '', ''
  else
    -- the stored buckets, when they are this agent's (else a rebuild)
    local bk = t[23]
    if t[22] ~= bounds or type(bk) ~= 'table' or #bk ~= nb then break end
    local copy, sum = {}, 0
    for i = 1, nb do
      copy[i] = bk[i]
      sum = sum + (bk[i] or 0 / 0) -- a hole: NaN, no match
    end
    if sum ~= t[4] then break end
    t[23] = copy
  end
  -- the bins' counts (a missing bin is 0)
  local binc, okb = {}, true
  for i = 3, nf do
    local v = r[i]
    if not v then
      binc[i] = 0
    elseif #v > 15 or string.find(v, '^%d+$') == nil then
      okb = false
    else
      binc[i] = tonumber(v)
    end
  end
  if not okb then break end

  -- apply, as apply() below does
  local last = tonumber(lastraw)
  local maxseq, maxraw, applied = last, lastraw, 0
  local pushes, np, before = {}, 0, nil
  for o = OBS0, OBS0 + (nobs - 1) * OBSN, OBSN do
    local seq = tonumber(ARGV[o])
    if seq > last then
      applied = applied + 1
      if seq > maxseq then maxseq, maxraw = seq, ARGV[o] end
      local tm = ARGV[o + 1]
      t[11] = t[11] + 1
      np = np + 1
      if ARGV[o + 2] ~= '1' then
        t[12], t[13] = t[12] + 1, t[13] + 1
        if ns_less(t[15], tm) then t[15] = tm end
        pushes[np] = 'f'
      else
        local xs = ARGV[o + 3]
        t[13] = 0
        if ns_less(t[14], tm) then t[14] = tm end
        t[4], t[5], t[6], t[7], t[8], t[9], t[10] = sample(t[4], t[5], t[6], t[7], t[8], t[9], t[10], tonumber(xs), tm)
        local bi = binat[ARGV[o + 4]]
        binc[bi] = binc[bi] + 1
        if nb > 0 then
          local k = tonumber(ARGV[o + 5])
          t[23][k] = t[23][k] + 1
        end
        pushes[np] = xs
      end
      local round = ARGV[o + 6]
      if round ~= '' then
        before = {t[16], t[17], t[18], t[19], t[20], t[21]}
        local c = 'f'
        if round == '1' then
          c = 'g'
          -- the objective's statistic is the EWMA or the mean here
          local x = t[5]
          if statistic == 'ewma' then x = t[9] end
          if objective > 0 and t[4] > 0 and x > objective then c = 's' end
        end
        t[16], t[17], t[18], t[19], t[20], t[21] = step(t[16], t[17], t[18], t[19], t[20], t[21], c, tm)
      end
    end
  end

  -- write what changed, as write_inc() below does
  local packed
  if applied > 0 then
    local n = redis.pcall('LPUSH', K_W, unpack(pushes, 1, np))
    if type(n) ~= 'number' then break end -- the window is of another type: the general path resets
    -- trimmed every TRIM_EVERY pushes, not on each one once it is full
    -- (an LTRIM costs as much as the LPUSH): every reader takes the first
    -- window entries only
    if n >= window + TRIM_EVERY then redis.call('LTRIM', K_W, 0, window - 1) end
    -- the TTL: refreshed at most every 1 % of it (expire_due below)
    local slack = math.floor(ttl / 100)
    local due = not (t[28] == ttl and (ttl == 0 or (slack >= 1000 and now_s >= t[27] and (now_s - t[27]) * 1000 < slack)))
    if due then t[27], t[28] = now_s, ttl end
    packed = cmsgpack.pack(t)
    -- the state, the agent's record and the bins read (those of skipped
    -- observations unchanged); one success per call is the common case
    local rec = maxraw .. ':' .. ARGV[10]
    if nf == 3 then
      redis.call('HSET', K_S, 's', packed, AF, rec, fields[3], binc[3])
    else
      local hs, nh = {'s', packed, AF, rec}, 4
      for i = 3, nf do
        hs[nh + 1], hs[nh + 2] = fields[i], binc[i]
        nh = nh + 2
      end
      redis.call('HSET', K_S, unpack(hs, 1, nh))
    end
    if due then
      if ttl > 0 then
        redis.call('PEXPIRE', K_S, ttl + slack)
        redis.call('PEXPIRE', K_W, ttl + slack)
      else
        redis.call('PERSIST', K_S)
        redis.call('PERSIST', K_W)
      end
    end
  else
    packed = cmsgpack.pack(t)
  end
  local probes_out = pushes -- newest first: reversed (one is itself)
  if np > 1 then
    probes_out = {}
    for i = np, 1, -1 do probes_out[np - i + 1] = pushes[i] end
  end
  local before_out = ''
  if before then before_out = cmsgpack.pack(before) end
  do return {'ok', '', '', packed, before_out, maxraw, 'd', probes_out, {}} end
until true

-- ---------------------------------------------------------------- general path
local function fmt(x) return string.format('%.17g', x) end

-- a time: non-negative integer nanoseconds as a decimal string
local function nstime(s)
  if type(s) ~= 'string' or #s > 19 or (s ~= '0' and string.match(s, '^[1-9]%d*$') == nil) then return nil end
  return s
end

-- a counter as unpacked from the blob
local function bcount(x)
  if type(x) ~= 'number' or x < 0 or x > 9007199254740992 or x ~= math.floor(x) then return nil end
  return x
end

-- check validates the scalar invariants of a state in the BLOB's array
-- form (both layouts); nil when they hold
local function check(t)
  local count, probes, failures, consec = t[4], t[11], t[12], t[13]
  local vs, vf, vok, vslow, vgood = t[16], t[18], t[19], t[20], t[21]
  if vs > 3 then return 'verdict status ' .. fmt(vs) end
  if (vf > 0 and vok > 0) or vslow + vgood > vok or (vslow > 0 and vgood > 0) then
    return 'verdict runs do not fit'
  end
  if count + failures ~= probes then return 'count + failures ~= probes' end
  if consec > failures then return 'consecutive failures exceed failures' end
  if count == 0 then
    if t[6] ~= 0 or t[10] ~= '0' then return 'no sample but m2 or ewma set' end
  else
    local mean, mn, mx, ewma = t[5], t[7], t[8], t[9]
    if mn > mx then return 'min > max' end
    local tol = 1e-9 * mx
    if mean < mn - tol or mean > mx + tol then return 'mean outside [min, max]' end
    if ewma < mn - tol or ewma > mx + tol then return 'ewma outside [min, max]' end
    if count == 1 and t[6] ~= 0 then return 'one sample but m2 set' end
  end
  return nil
end

-- check_blob validates a decoded layout-2 state (the BLOB array): nil when
-- it is one, else why. A value of the wrong type makes a comparison or an
-- addition fail: the caller runs it under pcall (malformed).
local function check_blob(t)
  if t[1] ~= 2 then return 'layout version ' .. tostring(t[1]) end
  if t[2] ~= mapping then return 'sketch mapping ' .. tostring(t[2]) .. ' differs from ' .. mapping end
  if type(t[3]) ~= 'string' then return 'generation is ' .. tostring(t[3]) end
  local count, probes, failures, consec = t[4], t[11], t[12], t[13]
  local vs, vf, vok, vslow, vgood = t[16], t[18], t[19], t[20], t[21]
  local wt, wc, na, ex, et = t[24], t[25], t[26], t[27], t[28]
  local c = count + probes + failures + consec + vs + vf + vok + vslow + vgood + wt + wc + na + ex + et
  -- x % 1 is 0 for a whole x, in (0, 1) for a fraction (the sum of
  -- non-negative finite counters is finite, so none is NaN here)
  if c ~= math.floor(c) or c > 9007199254740992 or count < 0 or probes < 0 or failures < 0 or consec < 0
    or vs < 0 or vf < 0 or vok < 0 or vslow < 0 or vgood < 0 or wt < 0 or wc < 0 or na < 0 or ex < 0 or et < 0
    or type(count) ~= 'number' or type(probes) ~= 'number'
    or count % 1 + probes % 1 + failures % 1 + consec % 1 + vs % 1 + vf % 1 + vok % 1 + vslow % 1 + vgood % 1
      + wt % 1 + wc % 1 + na % 1 + ex % 1 + et % 1 ~= 0 then
    return 'counters are not integers'
  end
  local mean, m2, mn, mx, ewma = t[5], t[6], t[7], t[8], t[9]
  local f = mean + m2 + mn + mx + ewma
  if f ~= f or f == math.huge or mean < 0 or m2 < 0 or mn < 0 or mx < 0 or ewma < 0 or type(mean) ~= 'number' then
    return 'a statistic is not a finite non-negative number'
  end
  -- a time equal to one already checked is that string (Lua interns
  -- them): the last success is usually the EWMA's time
  local ewma_at, last_ok, last_fail, vsince = t[10], t[14], t[15], t[17]
  if not (nstime(ewma_at) and (last_ok == ewma_at or nstime(last_ok))
    and (last_fail == '0' or last_fail == ewma_at or nstime(last_fail))
    and (vsince == '0' or vsince == ewma_at or vsince == last_fail or nstime(vsince))) then
    return 'a time is not nanoseconds'
  end
  if type(t[22]) ~= 'string' then return 'bounds are ' .. tostring(t[22]) end
  local why = check(t)
  if why then return why end
  local bk = t[23]
  if bk ~= '' then
    if type(bk) ~= 'table' then return 'buckets are ' .. tostring(bk) end
    for i = 1, #bk do
      if bcount(bk[i]) == nil then return 'bucket ' .. i .. ' is ' .. tostring(bk[i]) end
    end
  end
  return nil
end

local function num(s)
  if s == nil then return nil end
  local x = tonumber(s)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end

-- a non-negative integer counter (exact in a double)
local function counter(s)
  if s == nil or string.match(s, '^%d+$') == nil or #s > 15 then return nil end
  return tonumber(s)
end

local function fresh(gen)
  local s = {count = 0, mean = 0, m2 = 0, min = 0, max = 0, ewma = 0, ewma_at = '0',
    probes = 0, failures = 0, consec = 0, last_ok = '0', last_fail = '0',
    vs = 0, vsince = '0', vf = 0, vok = 0, vslow = 0, vgood = 0,
    gen = gen, bounds = '', buckets = nil, wt = window, wc = 0, na = 0, ex = 0, et = 0,
    rebuild = false}
  if nb > 0 then
    s.bounds = bounds
    s.buckets = {}
    for i = 1, nb do s.buckets[i] = 0 end
  end
  return s
end

-- the stored buckets when their bounds are this agent's, else a rebuild
local function take_buckets(s, stored_bounds, stored)
  if nb == 0 then
    s.bounds, s.buckets = '', nil
    return nil
  end
  if stored_bounds == bounds and type(stored) == 'table' then
    s.buckets = {}
    local sum = 0
    for i = 1, nb do
      local c = stored[i]
      if c == nil then return 'bucket ' .. i .. ' is missing' end
      s.buckets[i] = c
      sum = sum + c
    end
    if #stored ~= nb then return 'histogram of ' .. #stored .. ' buckets' end
    if sum ~= s.count then return 'histogram buckets sum to ' .. fmt(sum) .. ', count is ' .. fmt(s.count) end
    s.bounds = bounds
  else
    s.bounds, s.buckets, s.rebuild = bounds, nil, true
  end
  return nil
end

-- unblob decodes and validates the stored scalar state (a wrong type
-- makes a comparison or a length fail: caught, malformed)
local function unblob_(raw)
  local t = cmsgpack.unpack(raw)
  local why = check_blob(t)
  if why then return nil, why end
  local s = {gen = t[3], count = t[4], mean = t[5], m2 = t[6], min = t[7], max = t[8], ewma = t[9],
    ewma_at = t[10], probes = t[11], failures = t[12], consec = t[13], last_ok = t[14], last_fail = t[15],
    vs = t[16], vsince = t[17], vf = t[18], vok = t[19], vslow = t[20], vgood = t[21],
    wt = t[24], wc = t[25], na = t[26], ex = t[27], et = t[28], rebuild = false}
  why = take_buckets(s, t[22], t[23])
  if why then return nil, why end
  return s
end

local function unblob(raw)
  local okp, s, why = pcall(unblob_, raw)
  if not okp then return nil, 'state does not decode' end
  return s, why
end

-- as_array is s in the BLOB's array form
local function as_array(s)
  local bk = ''
  if s.buckets then bk = s.buckets end
  return {2, mapping, s.gen, s.count, s.mean, s.m2, s.min, s.max, s.ewma, s.ewma_at,
    s.probes, s.failures, s.consec, s.last_ok, s.last_fail, s.vs, s.vsince, s.vf, s.vok, s.vslow, s.vgood,
    s.bounds, bk, s.wt, s.wc, s.na, s.ex, s.et}
end

local function blob(s) return cmsgpack.pack(as_array(s)) end

-- window entries (newest first): nil when they are valid for s, else why
local function check_win(w, s)
  local okn, failn = 0, 0
  for i = 1, #w do
    if w[i] == 'f' then
      failn = failn + 1
    else
      local x = num(w[i])
      if x == nil or x < 0 then return 'entry ' .. i .. ' is ' .. tostring(w[i]) end
      okn = okn + 1
    end
  end
  if okn > s.count or failn > s.failures then return 'more probes than the counters' end
  return nil
end

-- the previous layout (1), validated as the previous script did; returns
-- the state, its bins, window and agent records, or nil, key, reason
local function load_v1()
  local O_STATS, O_WIN, O_SK, O_AG = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
  for _, k in ipairs({O_STATS, O_SK, O_AG}) do
    local ty = redis.call('TYPE', k)['ok']
    if ty ~= 'none' and ty ~= 'hash' then return nil, k, 'wrong type ' .. ty end
  end
  local wty = redis.call('TYPE', O_WIN)['ok']
  if wty ~= 'none' and wty ~= 'list' then return nil, O_WIN, 'wrong type ' .. wty end
  local raw = redis.call('HGETALL', O_STATS)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  if h.v ~= '1' then return nil, O_STATS, 'layout version ' .. tostring(h.v) end
  if h.sk ~= mapping then return nil, O_STATS, 'sketch mapping ' .. tostring(h.sk) .. ' differs from ' .. mapping end
  local s = fresh('')
  for _, f in ipairs({'count', 'probes', 'failures', 'consec'}) do
    s[f] = counter(h[f])
    if s[f] == nil then return nil, O_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
  end
  for _, f in ipairs({'mean', 'm2', 'min', 'max', 'ewma'}) do
    s[f] = num(h[f])
    if s[f] == nil or s[f] < 0 then return nil, O_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
  end
  for _, f in ipairs({'ewma_at', 'last_ok', 'last_fail'}) do
    s[f] = nstime(h[f])
    if s[f] == nil then return nil, O_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
  end
  if h.vs ~= nil then
    for _, f in ipairs({'vs', 'vf', 'vok', 'vslow', 'vgood'}) do
      s[f] = counter(h[f])
      if s[f] == nil then return nil, O_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
    end
    s.vsince = nstime(h.vsince)
    if s.vsince == nil then return nil, O_STATS, 'field vsince is ' .. tostring(h.vsince) end
  end
  local why = check(as_array(s))
  if why then return nil, O_STATS, why end
  local stored
  if nb > 0 and h.bounds == bounds then
    stored = {}
    for i = 1, nb do
      stored[i] = counter(h['h' .. i])
      if stored[i] == nil then return nil, O_STATS, 'field h' .. i .. ' is ' .. tostring(h['h' .. i]) end
    end
  end
  why = take_buckets(s, h.bounds, stored)
  if why then return nil, O_STATS, why end
  local w = redis.call('LRANGE', O_WIN, 0, window - 1)
  why = check_win(w, s)
  if why then return nil, O_WIN, why end
  local bins, total = {}, 0
  local b = redis.call('HGETALL', O_SK)
  for i = 1, #b, 2 do
    local f, c = b[i], num(b[i + 1])
    if (f ~= 'z' and string.match(f, '^%-?%d+$') == nil) or c == nil or c < 0 or c ~= math.floor(c) then
      return nil, O_SK, 'bin ' .. f .. ' is ' .. tostring(b[i + 1])
    end
    bins[f] = c
    total = total + c
  end
  if total ~= s.count then return nil, O_SK, 'bins sum to ' .. fmt(total) .. ', count is ' .. fmt(s.count) end
  local recs = redis.call('HGETALL', O_AG)
  return s, bins, w, recs
end

-- the first observation's seq names a new generation of the state
local function newgen()
  return agent .. ':' .. (ARGV[OBS0] or '') .. ':' .. ARGV[10]
end

-- ---------------------------------------------------------------- load
local status, badkey, reason = 'ok', '', ''
local s             -- the state
local mode = 'inc'  -- 'inc': write what changed; 'all': rewrite the keys
local last, lastraw = -1, nil
local bins = nil    -- every sketch bin (index -> count), when read
local win = nil     -- the whole window, newest first, when read
local records = nil -- agent records to write ('all'), flat
local migrated = false
local function bad(k, why)
  status, badkey, reason = 'reset', k, why
end

if force then
  bad(K_S, 'marked malformed')
else
  local r = redis.pcall('HMGET', K_S, 's', AF)
  if r.err then
    bad(K_S, 'wrong type')
  elseif not r[1] then
    if redis.call('EXISTS', K_S, K_W) > 0 then
      bad(K_S, 'state missing while the keys exist')
    elseif redis.call('EXISTS', KEYS[3], KEYS[4], KEYS[5], KEYS[6]) > 0 then
      -- written by the previous version: migrate
      migrated = true
      local old, b, w, recs = load_v1()
      redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
      if old == nil then
        bad(b, w)
      else
        s, bins, win, records = old, b, w, recs
        s.gen = newgen()
        s.na = #recs / 2
        for i = 2, #recs, 2 do
          if recs[i - 1] == agent then
            local q = string.match(recs[i], '^(%d+):')
            if q then last, lastraw = tonumber(q), q end
          end
        end
      end
    else
      s, bins, win = fresh(newgen()), {}, {}
    end
    mode = 'all'
  else
    local why
    s, why = unblob(r[1])
    if s == nil then
      bad(K_S, why)
    elseif r[2] then
      local q = string.match(r[2], '^(%d+):')
      if q then last, lastraw = tonumber(q), q end
    end
  end
end
if status == 'reset' then
  s, bins, win, records, mode, last, lastraw = fresh(newgen()), {}, {}, nil, 'all', -1, nil
end

-- the agent's copy is the state as of its last write: only the probes
-- written since go back
local p0 = s.probes
local delta = mode == 'inc' and sync_gen ~= '' and sync_gen == s.gen and lastraw ~= nil and lastraw == sync_seq
  and s.wt == window and s.wc <= sync_ver and sync_ver <= p0 and p0 - sync_ver <= window and not s.rebuild
local others = nil -- the other agents' probes since the agent's copy, newest first

local anyround = false
if objective > 0 and statistic ~= 'ewma' and statistic ~= 'avg' then
  for i = 0, nobs - 1 do
    if ARGV[OBS0 + i * OBSN + 6] ~= '' then anyround = true break end
  end
end

if mode == 'inc' and (not delta or anyround) then
  -- the whole window
  local w = redis.pcall('LRANGE', K_W, 0, window - 1)
  if w.err then
    bad(K_W, 'wrong type')
  else
    local why = check_win(w, s)
    if why then bad(K_W, why) else win = w end
  end
end
-- every sketch bin, validated
local function read_bins()
  local all = redis.call('HGETALL', K_S)
  local total = 0
  bins = {}
  for i = 1, #all, 2 do
    local f = all[i]
    if f ~= 's' and string.sub(f, 1, 2) ~= 'a:' then
      local c = counter(all[i + 1])
      local idx = string.sub(f, 2)
      if string.sub(f, 1, 1) ~= 'b' or (idx ~= 'z' and string.match(idx, '^%-?%d+$') == nil) or c == nil then
        bad(K_S, 'field ' .. f .. ' is ' .. tostring(all[i + 1]))
        return
      end
      bins[idx] = c
      total = total + c
    end
  end
  if total ~= s.count then bad(K_S, 'bins sum to ' .. fmt(total) .. ', count is ' .. fmt(s.count)) end
end
if status == 'ok' and mode == 'inc' and not delta then read_bins() end
if status == 'ok' and delta and p0 > sync_ver then
  local k = p0 - sync_ver
  if win then
    others = {}
    for i = 1, math.min(k, #win) do others[i] = win[i] end
  else
    local w = redis.pcall('LRANGE', K_W, 0, k - 1)
    if w.err then
      bad(K_W, 'wrong type')
    else
      local why = check_win(w, s)
      if why then bad(K_W, why) else others = w end
    end
  end
  if others and #others < k then
    -- the list is shorter than the agent's copy needs (trimmed by another
    -- window or deleted): send the whole state
    others, delta = nil, false
    if not win then
      win = redis.call('LRANGE', K_W, 0, window - 1)
      local why = check_win(win, s)
      if why then bad(K_W, why) end
    end
    if status == 'ok' then read_bins() end
  end
end
if status == 'reset' and mode == 'inc' then
  s, bins, win, records, mode, last, lastraw, delta, others = fresh(newgen()), {}, {}, nil, 'all', -1, nil, false, nil
end

-- ---------------------------------------------------------------- apply
local pushes, binadd, before, applied, maxseq, maxraw

-- the statistic of the objective on the state as it is now (the stored
-- window then this batch's probes so far), and whether it has data:
-- stats.State.Statistic
local function statistic_now()
  if statistic == 'ewma' then return s.ewma, s.count > 0 end
  if statistic == 'avg' then return s.mean, s.count > 0 end
  local p = tonumber(statistic)
  local xs = {}
  local n = 0
  for i = #pushes, 1, -1 do
    if n >= window then break end
    n = n + 1
    if pushes[i] ~= 'f' then xs[#xs + 1] = tonumber(pushes[i]) end
  end
  for i = 1, #win do
    if n >= window then break end
    n = n + 1
    if win[i] ~= 'f' then xs[#xs + 1] = tonumber(win[i]) end
  end
  if #xs == 0 then return 0, false end
  table.sort(xs)
  -- stats.PercentileR7
  local h = (#xs - 1) * p / 100
  local lo = math.floor(h)
  if lo >= #xs - 1 then return xs[#xs], true end
  return xs[lo + 1] + (h - lo) * (xs[lo + 2] - xs[lo + 1]), true
end

local function verdict_of()
  return {s.vs, s.vsince, s.vf, s.vok, s.vslow, s.vgood}
end

local function verdict_step(c, t)
  s.vs, s.vsince, s.vf, s.vok, s.vslow, s.vgood = step(s.vs, s.vsince, s.vf, s.vok, s.vslow, s.vgood, c, t)
end

local function apply()
  pushes, binadd, before, applied, maxseq, maxraw = {}, {}, nil, 0, last, lastraw
  for i = 0, nobs - 1 do
    local o = OBS0 + i * OBSN
    local seq = tonumber(ARGV[o])
    if seq > last then
      applied = applied + 1
      if seq > maxseq then maxseq, maxraw = seq, ARGV[o] end
      local t = ARGV[o + 1]
      s.probes = s.probes + 1
      if ARGV[o + 2] ~= '1' then
        s.failures = s.failures + 1
        s.consec = s.consec + 1
        if ns_less(s.last_fail, t) then s.last_fail = t end
        pushes[#pushes + 1] = 'f'
      else
        local xs = ARGV[o + 3]
        local x = tonumber(xs)
        s.consec = 0
        if ns_less(s.last_ok, t) then s.last_ok = t end
        s.count, s.mean, s.m2, s.min, s.max, s.ewma, s.ewma_at =
          sample(s.count, s.mean, s.m2, s.min, s.max, s.ewma, s.ewma_at, x, t)
        local bin = ARGV[o + 4]
        binadd[bin] = (binadd[bin] or 0) + 1
        if nb > 0 and not s.rebuild then
          local bi = tonumber(ARGV[o + 5])
          s.buckets[bi] = s.buckets[bi] + 1
        end
        pushes[#pushes + 1] = xs
      end
      local round = ARGV[o + 6]
      if round ~= '' then
        before = verdict_of()
        local c = 'f'
        if round == '1' then
          c = 'g'
          if objective > 0 then
            local x, has = statistic_now()
            if has and x > objective then c = 's' end
          end
        end
        verdict_step(c, t)
      end
    end
  end
  if bins then
    for bin, c in pairs(binadd) do bins[bin] = (bins[bin] or 0) + c end
  end
  if nb > 0 and s.rebuild and (applied > 0 or status == 'reset') then
    -- the stored histogram has other bounds (or none): rebuild it from the
    -- sketch, each bin counted in the bucket of its value
    -- (stats.RebuildBuckets)
    local th = {}
    for v in string.gmatch(ARGV[8], '[^,]+') do th[#th + 1] = tonumber(v) end
    s.buckets = {}
    for i = 1, nb do s.buckets[i] = 0 end
    for f, c in pairs(bins) do
      local bi = 1
      if f ~= 'z' then
        local idx = tonumber(f)
        bi = nb
        for j = 1, nb - 1 do
          if idx <= th[j] then bi = j break end
        end
      end
      s.buckets[bi] = s.buckets[bi] + c
    end
    s.bounds, s.rebuild = bounds, false
  end
  if s.wt ~= window then s.wt, s.wc = window, s.probes end
end

apply()

-- ---------------------------------------------------------------- write
local function rec() return (maxraw or '0') .. ':' .. ARGV[10] end

-- the TTL: refreshed at most every 1 % of it (the keys live between ttl
-- and 1.01 ttl after the last write)
local slack = math.floor(ttl / 100)
local function expire_due()
  return not (s.et == ttl and (ttl == 0 or (slack >= 1000 and now_s >= s.ex and (now_s - s.ex) * 1000 < slack)))
end
local function expire()
  for _, key in ipairs({K_S, K_W}) do
    if ttl > 0 then redis.call('PEXPIRE', key, ttl + slack) else redis.call('PERSIST', key) end
  end
end

local function prune(all)
  -- forget agents idle for longer than the ttl (or a week)
  local horizon = now_s - math.max(ttl / 1000, 7 * 86400)
  local n = 0
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'a:' then
      local ts = tonumber(string.match(all[i + 1], ':(%d+)$') or '0')
      if ts < horizon and all[i] ~= AF then redis.call('HDEL', K_S, all[i]) else n = n + 1 end
    end
  end
  s.na = n
end

local function write_inc()
  if #pushes > 0 then
    local n = redis.pcall('LPUSH', K_W, unpack(pushes))
    if type(n) ~= 'number' then return K_W, 'wrong type' end
    if n > window then redis.call('LTRIM', K_W, 0, window - 1) end
  end
  for bin, c in pairs(binadd) do
    local v = redis.pcall('HINCRBY', K_S, 'b' .. bin, c)
    if type(v) ~= 'number' then return K_S, 'sketch bin b' .. bin .. ' is not an integer' end
  end
  if lastraw == nil and maxraw ~= nil then
    s.na = s.na + 1
    if s.na > 32 then prune(redis.call('HGETALL', K_S)) end
  end
  local due = expire_due()
  if due then s.ex, s.et = now_s, ttl end
  redis.call('HSET', K_S, 's', blob(s), AF, rec())
  if due then expire() end
  return nil
end

-- the window as it is now (as LRANGE would return it after this batch):
-- this batch's probes, newest first, then the stored ones, at most window
local function window_now()
  local w = {}
  for i = #pushes, 1, -1 do
    if #w < window then w[#w + 1] = pushes[i] end
  end
  for i = 1, #win do
    if #w >= window then break end
    w[#w + 1] = win[i]
  end
  return w
end

local function write_all()
  redis.call('DEL', K_S, K_W)
  local hs = {}
  if records then
    for i = 1, #records, 2 do
      if records[i] ~= agent then
        hs[#hs + 1] = 'a:' .. records[i]
        hs[#hs + 1] = records[i + 1]
      end
    end
  end
  s.na = #hs / 2
  if maxraw ~= nil then
    hs[#hs + 1] = AF
    hs[#hs + 1] = rec()
    s.na = s.na + 1
  end
  for f, c in pairs(bins) do
    hs[#hs + 1] = 'b' .. f
    hs[#hs + 1] = fmt(c)
  end
  local w = window_now()
  win = w
  s.ex, s.et = now_s, ttl
  hs[#hs + 1] = 's'
  hs[#hs + 1] = blob(s)
  redis.call('HSET', K_S, unpack(hs))
  if #w > 0 then redis.call('RPUSH', K_W, unpack(w)) end
  expire()
end

local out_blob
if mode == 'inc' and applied > 0 then
  local k, why = write_inc()
  if k then
    -- a write failed: nothing of the state can be trusted
    bad(k, why)
    s, bins, win, records, mode, last, lastraw, delta, others = fresh(newgen()), {}, {}, nil, 'all', -1, nil, false, nil
    apply()
    write_all()
  end
elseif mode == 'all' and (applied > 0 or status == 'reset' or migrated) then
  write_all()
end
out_blob = blob(s)

local probes_out = {}
local bins_out = {}
local m = 'f'
if delta then
  m = 'd'
  for i = #pushes, 1, -1 do probes_out[#probes_out + 1] = pushes[i] end
  if others then
    for i = 1, #others do probes_out[#probes_out + 1] = others[i] end
  end
else
  if mode == 'inc' then
    -- the window as LRANGE would now return it
    probes_out = window_now()
  else
    probes_out = win
  end
  for f, c in pairs(bins) do
    bins_out[#bins_out + 1] = f
    bins_out[#bins_out + 1] = fmt(c)
  end
end
local before_out = ''
if before then before_out = cmsgpack.pack(before) end
local record = ''
if maxraw then record = maxraw end
return {status, badkey, reason, out_blob, before_out, record, m, probes_out, bins_out}
