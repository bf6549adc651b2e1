-- service_latency: merge a batch of observations of one service into its
-- shared state, atomically, and return the merged state.
--
-- KEYS (one hash tag per service, so they share a Redis Cluster slot):
--   1 stats  hash  v, sk, count, mean, m2, min, max, ewma, ewma_at, probes,
--                  failures, consec, last_ok, last_fail, bounds, h1..hN,
--                  and the verdict: vs (status code), vsince (ns), vf, vok,
--                  vslow, vgood (runs of rounds); absent = unknown, no round
--   2 window list  the last probes, newest first: a latency or "f" (failed)
--   3 sketch hash  DDSketch bins: bin index -> count, "z" -> zero count
--   4 agents hash  agent id -> "<last applied seq>:<unix seconds>"
-- ARGV:
--   1 agent id          2 sketch mapping id   3 window
--   4 EWMA tau (s)      5 ttl (ms, 0 = none)  6 histogram bounds ("" = none)
--   7 bucket count (bounds + 1, 0 = none)
--   8 bucket thresholds: per bound, the largest sketch bin index whose value
--     is <= the bound, comma separated (used to rebuild the buckets from the
--     sketch when the stored bounds differ)
--   9 force reset ("1": discard the stored state first)
--   10 now, unix seconds (agent record pruning)
--   11 failure_threshold  12 success_threshold
--   13 degraded_latency (s, "0" = no objective)
--   14 degraded_statistic: "ewma", "avg" or a window percentile ("95")
--   15 number of observations, then 7 per observation, oldest first:
--      seq, time (unix ns, decimal), ok ("1"/"0"), latency (s), sketch bin
--      (index or "z"), bucket (1-based, "" = none), round ("" = not the
--      last observation of a round; "1"/"0" = it ends a round whose result
--      is success / not)
-- Nothing is written before the stored state has been validated: a script
-- error must not leave a half-applied batch. A malformed state is deleted
-- and rebuilt from the batch ("reset"). An observation whose seq is not
-- above the agent's last applied one was applied before and is skipped.
--
-- Returns {status, key, reason, applied, scalars, buckets, window, bins}
-- with every number as a string (Lua numbers are doubles; Redis would
-- truncate a returned number to an integer), then the verdict after the
-- batch and before its last round: {vs, vsince, vf, vok, vslow, vgood} each.
--
-- The verdict advances once per applied observation that ends a round,
-- after the round's samples, exactly as stats.Verdict.Step does: the class
-- of the round (failed; slow when the statistic of the merged state, at
-- that point, is above the objective; else good) is evaluated here, on the
-- shared state, so every agent's rounds make one sequence of rounds and
-- every agent sees the same status.

local K_STATS, K_WIN, K_SK, K_AG = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
local nobs = tonumber(ARGV[15])
local OBS0, OBSN = 16, 7
local LN2 = 0.69314718055994530942

local function fmt(x) return string.format('%.17g', x) end

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

-- a time: non-negative integer nanoseconds as a decimal string
local function nstime(s)
  if s == nil or string.match(s, '^%d+$') == nil or #s > 19 then return nil end
  return s
end

local function split_ns(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end

local function ns_less(a, b)
  local as, an = split_ns(a)
  local bs, bn = split_ns(b)
  if as ~= bs then return as < bs end
  return an < bn
end

-- (a - b) in seconds, as Go's float64(a-b)/1e9
local function ns_diff(a, b)
  local as, an = split_ns(a)
  local bs, bn = split_ns(b)
  return ((as - bs) * 1e9 + (an - bn)) / 1e9
end

local function expm1(u)
  -- full relative precision near 0 (Lua 5.1 has no expm1)
  if u == 0 then return 0 end
  local t = math.tanh(u / 2)
  return 2 * t / (1 - t)
end

-- alpha = 1 - exp(-dt/tau), decay = exp(-dt/tau), as stats.ewmaWeights
local function weights(dt)
  if not (tau > 0) then return 1, 0 end
  local u = -dt / tau
  if u > -LN2 then
    local alpha = -expm1(u)
    return alpha, 1 - alpha
  end
  local decay = math.exp(u)
  return 1 - decay, decay
end

local function keytype(k) return redis.call('TYPE', k)['ok'] end

local function fresh()
  local s = {count = 0, mean = 0, m2 = 0, min = 0, max = 0, ewma = 0, ewma_at = '0',
    probes = 0, failures = 0, consec = 0, last_ok = '0', last_fail = '0',
    vs = 0, vsince = '0', vf = 0, vok = 0, vslow = 0, vgood = 0,
    buckets = nil, rebuild = false, bins = {}, binraw = {}, win = {}}
  if nb > 0 then
    s.buckets = {}
    for i = 1, nb do s.buckets[i] = 0 end
  end
  return s
end

-- load reads and validates the stored state; it returns the state, or nil,
-- the key at fault and the reason.
local function load()
  local ty = keytype(K_STATS)
  if ty ~= 'none' and ty ~= 'hash' then return nil, K_STATS, 'wrong type ' .. ty end
  local wty = keytype(K_WIN)
  if wty ~= 'none' and wty ~= 'list' then return nil, K_WIN, 'wrong type ' .. wty end
  local sty = keytype(K_SK)
  if sty ~= 'none' and sty ~= 'hash' then return nil, K_SK, 'wrong type ' .. sty end
  local aty = keytype(K_AG)
  if aty ~= 'none' and aty ~= 'hash' then return nil, K_AG, 'wrong type ' .. aty end

  local s = fresh()
  local raw = redis.call('HGETALL', K_STATS)
  if #raw == 0 then
    if wty ~= 'none' or sty ~= 'none' then return nil, K_STATS, 'missing while the window or sketch exist' end
    return s
  end
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  if h.v ~= '1' then return nil, K_STATS, 'layout version ' .. tostring(h.v) end
  if h.sk ~= mapping then return nil, K_STATS, 'sketch mapping ' .. tostring(h.sk) .. ' differs from ' .. mapping end
  for _, f in ipairs({'count', 'probes', 'failures', 'consec'}) do
    s[f] = counter(h[f])
    if s[f] == nil then return nil, K_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
  end
  for _, f in ipairs({'mean', 'm2', 'min', 'max', 'ewma'}) do
    s[f] = num(h[f])
    if s[f] == nil or s[f] < 0 then return nil, K_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
  end
  for _, f in ipairs({'ewma_at', 'last_ok', 'last_fail'}) do
    s[f] = nstime(h[f])
    if s[f] == nil then return nil, K_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
  end
  -- the verdict (absent in a state written before it: unknown)
  if h.vs ~= nil then
    for _, f in ipairs({'vs', 'vf', 'vok', 'vslow', 'vgood'}) do
      s[f] = counter(h[f])
      if s[f] == nil then return nil, K_STATS, 'field ' .. f .. ' is ' .. tostring(h[f]) end
    end
    s.vsince = nstime(h.vsince)
    if s.vsince == nil then return nil, K_STATS, 'field vsince is ' .. tostring(h.vsince) end
    if s.vs > 3 then return nil, K_STATS, 'verdict status ' .. fmt(s.vs) end
    if (s.vf > 0 and s.vok > 0) or s.vslow + s.vgood > s.vok or (s.vslow > 0 and s.vgood > 0) then
      return nil, K_STATS, 'verdict runs do not fit'
    end
  end
  if s.count + s.failures ~= s.probes then return nil, K_STATS, 'count + failures ~= probes' end
  if s.consec > s.failures then return nil, K_STATS, 'consecutive failures exceed failures' end
  if s.count == 0 then
    if s.m2 ~= 0 or s.ewma_at ~= '0' then return nil, K_STATS, 'no sample but m2 or ewma set' end
  else
    if s.min > s.max then return nil, K_STATS, 'min > max' end
    local tol = 1e-9 * s.max
    if s.mean < s.min - tol or s.mean > s.max + tol then return nil, K_STATS, 'mean outside [min, max]' end
    if s.ewma < s.min - tol or s.ewma > s.max + tol then return nil, K_STATS, 'ewma outside [min, max]' end
    if s.count == 1 and s.m2 ~= 0 then return nil, K_STATS, 'one sample but m2 set' end
  end
  if nb > 0 and h.bounds == bounds then
    s.buckets = {}
    local sum = 0
    for i = 1, nb do
      local c = counter(h['h' .. i])
      if c == nil then return nil, K_STATS, 'field h' .. i .. ' is ' .. tostring(h['h' .. i]) end
      s.buckets[i] = c
      sum = sum + c
    end
    if sum ~= s.count then return nil, K_STATS, 'histogram buckets sum to ' .. fmt(sum) .. ', count is ' .. fmt(s.count) end
  elseif nb > 0 then
    -- stored with other bounds (another config) or none: rebuild below
    s.buckets = nil
    s.rebuild = true
  end

  -- window: validate what is returned (the newest `window` entries)
  local w = redis.call('LRANGE', K_WIN, 0, window - 1)
  local okn, failn = 0, 0
  for i = 1, #w do
    if w[i] == 'f' then
      failn = failn + 1
    else
      local x = num(w[i])
      if x == nil or x < 0 then return nil, K_WIN, 'entry ' .. i .. ' is ' .. tostring(w[i]) end
      okn = okn + 1
    end
  end
  if okn > s.count or failn > s.failures then return nil, K_WIN, 'more probes than the counters' end
  s.win = w

  local b = redis.call('HGETALL', K_SK)
  local total = 0
  for i = 1, #b, 2 do
    local f, c = b[i], num(b[i + 1])
    if (f ~= 'z' and string.match(f, '^%-?%d+$') == nil) or c == nil or c < 0 then
      return nil, K_SK, 'bin ' .. f .. ' is ' .. tostring(b[i + 1])
    end
    s.bins[f] = c
    s.binraw[f] = b[i + 1]
    total = total + c
  end
  if math.abs(total - s.count) >= 0.5 then return nil, K_SK, 'bins sum to ' .. fmt(total) .. ', count is ' .. fmt(s.count) end
  return s
end

local status, badkey, reason = 'ok', '', ''
local s, k, why
if force then
  k, why = K_STATS, 'marked malformed'
else
  s, k, why = load()
end
if s == nil then
  status, badkey, reason = 'reset', k, why
  redis.call('DEL', K_STATS, K_WIN, K_SK)
  if keytype(K_AG) ~= 'hash' then redis.call('DEL', K_AG) end
  s = fresh()
end

-- the agent's last applied seq (ignored after a reset: the discarded state
-- held what it had applied)
local last = -1
if status == 'ok' then
  local rec = redis.call('HGET', K_AG, agent)
  if rec then
    local q = string.match(rec, '^(%d+):')
    if q then last = tonumber(q) end
  end
end

local pushes = {} -- this batch's probes, oldest first

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
  for i = 1, #s.win do
    if n >= window then break end
    n = n + 1
    if s.win[i] ~= 'f' then xs[#xs + 1] = tonumber(s.win[i]) end
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
  return {fmt(s.vs), s.vsince, fmt(s.vf), fmt(s.vok), fmt(s.vslow), fmt(s.vgood)}
end

-- stats.Verdict.Step: one round of class c ('f', 's' slow, 'g' good) at t
local UNKNOWN, UP, DEGRADED, DOWN = 0, 1, 2, 3
local function step(c, t)
  if s.vsince == '0' then s.vsince = t end
  if c == 'f' then
    s.vf = s.vf + 1
    s.vok, s.vslow, s.vgood = 0, 0, 0
  elseif c == 's' then
    s.vf, s.vgood = 0, 0
    s.vok = s.vok + 1
    s.vslow = s.vslow + 1
  else
    s.vf, s.vslow = 0, 0
    s.vok = s.vok + 1
    s.vgood = s.vgood + 1
  end
  local nxt = s.vs
  if s.vf >= fail_th then
    nxt = DOWN
  elseif s.vs == UNKNOWN or s.vs == DOWN then
    if s.vok >= succ_th then
      nxt = UP
      if c == 's' then nxt = DEGRADED end
    end
  elseif s.vs == UP then
    if s.vslow >= fail_th then nxt = DEGRADED end
  elseif s.vs == DEGRADED then
    if s.vgood >= succ_th then nxt = UP end
  end
  if nxt ~= s.vs then
    s.vs = nxt
    if ns_less(s.vsince, t) then s.vsince = t end
  end
end

local applied, maxseq = 0, last
local binadd = {}
local before = nil
for i = 0, nobs - 1 do
  local o = OBS0 + i * OBSN
  local seq = tonumber(ARGV[o])
  if seq > last then
    applied = applied + 1
    if seq > maxseq then maxseq = seq end
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
      -- Welford
      if s.count == 0 then
        s.count = 1
        s.mean, s.m2, s.min, s.max = x, 0, x, x
      else
        s.count = s.count + 1
        local d = x - s.mean
        s.mean = s.mean + d / s.count
        s.m2 = s.m2 + d * (x - s.mean)
        if x < s.min then s.min = x end
        if x > s.max then s.max = x end
      end
      -- time-based EWMA
      if s.ewma_at == '0' then
        s.ewma, s.ewma_at = x, t
      else
        local dt = ns_diff(t, s.ewma_at)
        if dt > 0 then
          local alpha, decay = weights(dt)
          s.ewma = decay * s.ewma + alpha * x
          s.ewma_at = t
        end
      end
      local bin = ARGV[o + 4]
      binadd[bin] = (binadd[bin] or 0) + 1
      s.bins[bin] = (s.bins[bin] or 0) + 1
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
      step(c, t)
    end
  end
end

if nb > 0 and s.rebuild and (applied > 0 or status == 'reset') then
  -- the stored histogram has other bounds (or none): rebuild it from the
  -- sketch, each bin counted in the bucket of its value (stats.RebuildBuckets)
  local th = {}
  for v in string.gmatch(ARGV[8], '[^,]+') do th[#th + 1] = tonumber(v) end
  s.buckets = {}
  for i = 1, nb do s.buckets[i] = 0 end
  for f, c in pairs(s.bins) do
    local bi = 1
    if f ~= 'z' then
      local idx = tonumber(f)
      bi = nb
      for j = 1, nb - 1 do
        if idx <= th[j] then bi = j break end
      end
    end
    s.buckets[bi] = s.buckets[bi] + math.floor(c + 0.5)
  end
  s.rebuild = false
end

local keys = {K_STATS, K_WIN, K_SK, K_AG}
if applied > 0 or status == 'reset' then
  local hs = {'v', '1', 'sk', mapping,
    'count', fmt(s.count), 'mean', fmt(s.mean), 'm2', fmt(s.m2), 'min', fmt(s.min), 'max', fmt(s.max),
    'ewma', fmt(s.ewma), 'ewma_at', s.ewma_at, 'probes', fmt(s.probes), 'failures', fmt(s.failures),
    'consec', fmt(s.consec), 'last_ok', s.last_ok, 'last_fail', s.last_fail,
    'vs', fmt(s.vs), 'vsince', s.vsince, 'vf', fmt(s.vf), 'vok', fmt(s.vok),
    'vslow', fmt(s.vslow), 'vgood', fmt(s.vgood)}
  if nb > 0 and s.buckets then
    hs[#hs + 1] = 'bounds'
    hs[#hs + 1] = bounds
    for i = 1, nb do
      hs[#hs + 1] = 'h' .. i
      hs[#hs + 1] = fmt(s.buckets[i])
    end
  end
  redis.call('HSET', K_STATS, unpack(hs))
  for i = 1, #pushes do redis.call('LPUSH', K_WIN, pushes[i]) end
  if #pushes > 0 then redis.call('LTRIM', K_WIN, 0, window - 1) end
  for bin, c in pairs(binadd) do
    local v = redis.call('HINCRBYFLOAT', K_SK, bin, c)
    s.bins[bin] = tonumber(v)
    s.binraw[bin] = v
  end
  if maxseq >= 0 then
    redis.call('HSET', K_AG, agent, fmt(maxseq) .. ':' .. fmt(now_s))
  end
  -- forget agents idle for longer than the ttl (or a week)
  if redis.call('HLEN', K_AG) > 32 then
    local horizon = now_s - math.max(ttl / 1000, 7 * 86400)
    local all = redis.call('HGETALL', K_AG)
    for i = 1, #all, 2 do
      local ts = tonumber(string.match(all[i + 1], ':(%d+)$') or '0')
      if ts < horizon then redis.call('HDEL', K_AG, all[i]) end
    end
  end
  for _, key in ipairs(keys) do
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('PERSIST', key) end
  end
end

-- the window as LRANGE would now return it: this batch's probes, newest
-- first, then the stored ones
local win = s.win
if #pushes > 0 then
  win = {}
  for i = #pushes, 1, -1 do
    if #win < window then win[#win + 1] = pushes[i] end
  end
  for i = 1, #s.win do
    if #win >= window then break end
    win[#win + 1] = s.win[i]
  end
end
local bins = {}
for f, raw in pairs(s.binraw) do
  bins[#bins + 1] = f
  bins[#bins + 1] = raw
end
local buckets = {}
if nb > 0 and s.buckets then
  for i = 1, nb do buckets[i] = fmt(s.buckets[i]) end
end
return {status, badkey, reason, fmt(applied),
  {fmt(s.count), fmt(s.mean), fmt(s.m2), fmt(s.min), fmt(s.max), fmt(s.ewma), s.ewma_at,
   fmt(s.probes), fmt(s.failures), fmt(s.consec), s.last_ok, s.last_fail},
  buckets, win, bins, verdict_of(), before or verdict_of()}
